"""Methods, one module per paper; importing this package registers them all."""

# Each import registers its method under the name it gives @register.
from depthlab.methods import fcn_vgg, knn_transfer, multiscale, pix2pixhd, wgan_perceptual  # noqa: F401
from depthlab.methods.protocol import DataInfo, Method
from depthlab.methods.registry import METHODS

__all__ = ["METHODS", "DataInfo", "Method"]
