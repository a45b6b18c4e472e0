"""Small layer factories shared by the critics and generators of Angermann et al. (004)."""

import math

import torch
import torch.nn.functional as F
from torch import nn

# tensorflow_addons GroupNormalization's default epsilon; the authors' code never changes it.
NORM_EPS = 1e-3
# Leaky-ReLU slope of both critics (Tables 4 and 5).
LRELU_SLOPE = 0.2


def check_width(width: int) -> int:
    """Return the base channel width f, or raise a ValueError naming the field."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    return width


def make_norm(kind: str, channels: int) -> nn.Module:
    """Norm layer by name: 'instance', 'layer' or 'none'."""
    # GroupNorm(C, C) is instance norm with learned γ, β, and unlike InstanceNorm2d it
    # does not refuse the 1×1 maps a small smoke-run input reaches at the bottleneck.
    if kind == "instance":
        return nn.GroupNorm(channels, channels, eps=NORM_EPS)
    if kind == "layer":
        return nn.GroupNorm(1, channels, eps=NORM_EPS)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'instance', 'layer' or 'none', got {kind!r}")


def tf_same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of one axis for TensorFlow 'same'; the odd pixel goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class TFConv2d(nn.Conv2d):
    """Conv2d with TensorFlow padding: 'same' (asymmetric for even kernels) or 'valid'.

    With padding='valid' and same_below=n, an input smaller than n px on either side is
    padded 'same' instead, so small smoke-run inputs are not collapsed to nothing.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: str = "same",
        same_below: int = 0,
    ):
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0)
        self.tf_padding = padding
        self.same_below = same_below

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.tf_padding == "same" or min(h, w) < self.same_below:
            k, s = self.kernel_size[0], self.stride[0]
            top, bottom = tf_same_pad(h, k, s)
            left, right = tf_same_pad(w, k, s)
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Module:
    """'same'-padded conv: symmetric padding for odd kernels, TF-style for even ones."""
    if kernel % 2 == 1:
        # Same output size as TF 'same'; at stride 2 TF would put the one pad pixel
        # only on the bottom/right, which shifts the sampling grid by half a pixel.
        return nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2)
    return TFConv2d(in_channels, out_channels, kernel, stride)


def make_act(kind: str) -> nn.Module:
    """Activation by name: 'relu', 'elu', 'lrelu' or 'none'."""
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "elu":
        return nn.ELU(inplace=True)
    if kind == "lrelu":
        # Not in place: the critics keep pre-activations for φ and need double backward (GP).
        return nn.LeakyReLU(LRELU_SLOPE)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"act must be 'relu', 'elu', 'lrelu' or 'none', got {kind!r}")


def conv_norm_act(
    in_channels: int,
    out_channels: int,
    kernel: int,
    stride: int = 1,
    norm: str = "instance",
    act: str = "none",
) -> nn.Sequential:
    """The papers' 'conv-norm' layer followed by an activation."""
    return nn.Sequential(
        conv(in_channels, out_channels, kernel, stride),
        make_norm(norm, out_channels),
        make_act(act),
    )


def up_conv_norm_act(in_channels: int, out_channels: int, norm: str = "instance") -> nn.Sequential:
    """Transposed conv 3×3 stride 2 that exactly doubles H and W, then norm and ReLU."""
    # padding=1 with output_padding=1 gives out = 2·in, like Keras Conv2DTranspose 'same'.
    trans = nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1)
    return nn.Sequential(trans, make_norm(norm, out_channels), make_act("relu"))


def he_init_(module: nn.Module, nonlinearity: str = "relu", slope: float = 0.0) -> None:
    """He-normal (fan_in) weights and zero biases on every conv and linear layer."""
    # The paper is silent on initialisation; the authors' code uses he_normal with zero
    # biases (Keras defaults) on nearly every layer, so we do the same everywhere.
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.kaiming_normal_(m.weight, a=slope, mode="fan_in", nonlinearity=nonlinearity)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
