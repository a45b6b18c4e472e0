"""Networks of Angermann et al. (004): critics and generators, built by name."""

from torch import nn

from depthlab.nn.blocks import check_width
from depthlab.nn.critics import CRITICS
from depthlab.nn.generators import GENERATORS

__all__ = ["CRITICS", "GENERATORS", "build_critic", "build_generator", "count_parameters"]


def _width_kwargs(width: int | None) -> dict[str, int]:
    """Constructor kwargs for a width; None keeps the network's paper width."""
    return {} if width is None else {"width": check_width(width)}


def build_critic(name: str, in_channels: int, width: int | None = None) -> nn.Module:
    """Critic by registry name ('dcgan', 'patchgan'); width None = paper width."""
    return CRITICS.get_or_raise(name)(in_channels, **_width_kwargs(width))


def build_generator(
    name: str, in_channels: int, out_channels: int, width: int | None = None
) -> nn.Module:
    """Generator by registry name ('resnet18', 'unet', 'style'); width None = paper width."""
    return GENERATORS.get_or_raise(name)(in_channels, out_channels, **_width_kwargs(width))


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
