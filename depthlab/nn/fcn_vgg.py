"""Huang & Yu (002): trimmed VGG-19 encoder and a transposed-conv decoder (Sec. 3, Fig. 1).

Paper ↔ code:
  "fully convolutional layers trimmed VGG-19"   ↔ `encoder` = VGG-19 `features[0:36]`
                                                   (conv1_1 … conv5_4 + its activation,
                                                   pool5 dropped: stride 16, METHODS §4)
  "replaced relu with leaky relu"               ↔ every encoder ReLU → LeakyReLU(`slope`)
  A1 "3 transpose convolution layers"           ↔ decoder="tconv"
  A2/A3 "a convolution layer after each
         transpose convolution layer"           ↔ decoder="tconv_conv"
  "batch normalization in the up-sampling"      ↔ BatchNorm2d after every decoder conv
  "normal random value, 0 mean, 1 variance"     ↔ decoder_init="paper" (N(0, 1) weights)
  160×120 in → 80×60 out                        ↔ output = floor(H/2) × floor(W/2)

Where the paper is silent (our choices): transposed convs are 4×4 stride 2 padding 1,
the interleaved convs 3×3 'same'; decoder widths 256/128/64 at width 1; conv biases are
dropped where batch norm follows (BN's β replaces them); the head is a 3×3 conv to one
channel with a bias and no activation, so depth in metres is regressed directly. Input is
RGB as the encoder expects it (ImageNet-normalised for pretrained weights); the network
does not normalise it.
"""

from pathlib import Path

import torch
from torch import nn

from depthlab.nn.backbones import vgg_features, vgg_stage_ends
from depthlab.nn.blocks import he_init_
from depthlab.registry import Registry

DECODERS = Registry("fcn-vgg decoder")

# Table 1's three rows; `augment` is read by the method's data pipeline, not the network.
ABLATIONS = {
    "A1": dict(decoder="tconv", augment=True),
    "A2": dict(decoder="tconv_conv", augment=False),
    "A3": dict(decoder="tconv_conv", augment=True),
}

DECODER_CHANNELS = (256, 128, 64)  # not in the paper: halves per ×2 step from VGG's 512
DECODER_INITS = ("paper", "kaiming")
MIN_INPUT_SIZE = 16  # the encoder's stride: a smaller side pools away to nothing


def _bn_lrelu(channels: int, slope: float) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels), nn.LeakyReLU(slope, inplace=True)]


@DECODERS.register("tconv")
def _no_refinement(channels: int, slope: float) -> nn.Module:
    """A1: the transposed conv stands alone."""
    return nn.Identity()


@DECODERS.register("tconv_conv")
def _conv_refinement(channels: int, slope: float) -> nn.Module:
    """A2/A3: a 3×3 conv-BN-LReLU after each transposed conv, against its 'blocks' (Sec. 3)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, bias=False), *_bn_lrelu(channels, slope)
    )


class UpStep(nn.Module):
    """ConvTranspose 4×4/2 + BN + LReLU to an explicit size, then the decoder's refinement."""

    def __init__(self, in_channels: int, out_channels: int, slope: float, decoder: str):
        super().__init__()
        # k=4, s=2, p=1 gives 2·n + output_padding; output_size picks that padding (0 or 1).
        self.tconv = nn.ConvTranspose2d(in_channels, out_channels, 4, 2, padding=1, bias=False)
        self.post = nn.Sequential(*_bn_lrelu(out_channels, slope))
        self.refine = DECODERS.get_or_raise(decoder)(out_channels, slope)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = self.post(self.tconv(x, output_size=size))  # (B, C_out, size[0], size[1])
        return self.refine(x)


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))  # the backbone's rounding, so widths agree


def leaky_encoder(width: float, slope: float, pretrained: str | Path | None) -> nn.Sequential:
    """VGG-19 conv1_1 … conv5_4 (stride 16) with every ReLU swapped for LeakyReLU(slope)."""
    features = vgg_features(19, width, pretrained)
    pool5 = vgg_stage_ends(features)[-1]
    encoder = features[:pool5]  # keeps torchvision's indices 0…35, so state-dict keys match
    for i, layer in enumerate(encoder):
        if isinstance(layer, nn.ReLU):
            # An activation has no parameters: swapping it leaves `features.N.*` keys intact.
            encoder[i] = nn.LeakyReLU(slope, inplace=True)
    return encoder


def decoder_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Target (H, W) of the three ×2 steps: input/8, /4, /2, floored like the pools."""
    # The encoder map is floor(H/16); floor(H/8) is twice that plus 0 or 1, so each
    # transposed conv reaches it with output_padding 0/1: 120 → 7 → 15 → 30 → 60.
    return [(height // f, width // f) for f in (8, 4, 2)]


class FcnVgg(nn.Module):
    """(B, 3, H, W) RGB → (B, 1, H//2, W//2) depth in metres; 160×120 → 80×60 as in the paper."""

    def __init__(
        self,
        decoder: str = "tconv_conv",
        width: float = 1.0,
        slope: float = 0.2,
        decoder_channels: tuple[int, int, int] = DECODER_CHANNELS,
        pretrained: str | Path | None = None,
        decoder_init: str = "paper",
    ):
        super().__init__()
        _check_args(decoder, width, slope, decoder_channels, pretrained, decoder_init)
        self.encoder = leaky_encoder(width, slope, pretrained)
        channels = [_scaled(512, width)] + [_scaled(c, width) for c in decoder_channels]
        self.steps = nn.ModuleList(
            UpStep(c_in, c_out, slope, decoder)
            for c_in, c_out in zip(channels[:-1], channels[1:], strict=True)
        )
        self.head = nn.Conv2d(channels[-1], 1, 3, padding=1)  # linear: metres, any sign
        init_decoder_(self.steps, self.head, decoder_init, slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or min(x.shape[-2:]) < MIN_INPUT_SIZE:
            raise ValueError(f"FcnVgg input must be (B, 3, H, W) with H, W >= "
                             f"{MIN_INPUT_SIZE}, got {tuple(x.shape)}")
        sizes = decoder_sizes(*x.shape[-2:])
        x = self.encoder(x)  # (B, 512·width, H//16, W//16)
        for step, size in zip(self.steps, sizes, strict=True):
            x = step(x, size)  # (B, C_i, H//8 | H//4 | H//2, …)
        return self.head(x)  # (B, 1, H//2, W//2)


def init_decoder_(steps: nn.Module, head: nn.Module, kind: str, slope: float) -> None:
    """'paper': N(0, 1) weights and zero biases (Sec. 4, as written); 'kaiming': He-normal."""
    if kind == "kaiming":
        he_init_(steps, nonlinearity="leaky_relu", slope=slope)
        he_init_(head, nonlinearity="linear")
        return
    # σ = 1 scales activations by ~√fan_in per layer; the BN after each conv renormalises
    # them in training, and only the unnormalised head's output stays large (tens of m).
    for m in [*steps.modules(), head]:
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, 1.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _check_args(decoder, width, slope, decoder_channels, pretrained, decoder_init) -> None:
    DECODERS.get_or_raise(decoder)
    if isinstance(width, bool) or not isinstance(width, int | float) or not width > 0:
        raise ValueError(f"FcnVgg width must be a number > 0, got {width!r}")
    if isinstance(slope, bool) or not isinstance(slope, int | float) or not 0 <= slope < 1:
        raise ValueError(f"FcnVgg slope must be in [0, 1), got {slope!r}")
    if not isinstance(decoder_channels, tuple | list) or len(decoder_channels) != 3 or not all(
        isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in decoder_channels
    ):
        raise ValueError(f"FcnVgg decoder_channels must be 3 positive ints (one per ×2 "
                         f"step), got {decoder_channels!r}")
    if pretrained is not None and width != 1:
        raise ValueError(f"FcnVgg pretrained={str(pretrained)!r} needs width 1 (VGG-19's "
                         f"own channel counts), got width {width!r}")
    if decoder_init not in DECODER_INITS:
        raise ValueError(f"FcnVgg decoder_init must be one of {DECODER_INITS}, "
                         f"got {decoder_init!r}")
