"""Methods, one module per paper; importing this package registers them all."""

from depthlab.methods import wgan_perceptual  # noqa: F401  (registers "wgan_perceptual")
from depthlab.methods.protocol import DataInfo, Method
from depthlab.methods.registry import METHODS

__all__ = ["METHODS", "DataInfo", "Method"]
