"""Generators of Angermann et al. (004): ResNet18 (Table 6), U-net (Table 7), style transfer.

Paper ↔ code: G_y (RGB→depth) is built with in_channels=3, out_channels=1; G_x the reverse.
All take H, W divisible by 32 and return the same H, W in [−1, 1] (tanh).
"""

import torch
from torch import nn

from depthlab.nn.blocks import check_width, conv, conv_norm_act, he_init_, up_conv_norm_act
from depthlab.registry import Registry

GENERATORS = Registry("generator")


class ResBlock(nn.Module):
    """ResNet basic block as in the authors' code (Table 8 differs, see `paper_skip`)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, paper_skip: bool):
        super().__init__()
        # The stride sits on the first conv only: Table 8's stride on both convs would
        # downsample by 4 per stage and break the skip sizes of Table 6.
        self.branch = nn.Sequential(
            conv_norm_act(in_channels, out_channels, 3, stride, act="relu"),
            conv_norm_act(out_channels, out_channels, 3),
        )
        # Code: a 1×1 conv-norm shortcut only where the shape changes; Table 8: always.
        reshape = stride != 1 or in_channels != out_channels
        self.skip = (
            conv_norm_act(in_channels, out_channels, 1, stride)
            if reshape or paper_skip
            else nn.Identity()
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.branch(x) + self.skip(x))


class UpBlock(nn.Module):
    """Monodepth2-style decoder step: nearest ×2, conv-norm-ELU, concat skip, conv-norm-ELU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv1 = conv_norm_act(in_channels, out_channels, 3, act="elu")
        self.conv2 = conv_norm_act(out_channels + skip_channels, out_channels, 3, act="elu")

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.up(x))  # (B, C_out, 2H, 2W)
        return self.conv2(torch.cat([x, skip], dim=1))


@GENERATORS.register("resnet18")
class ResNet18Generator(nn.Module):
    """Table 6: ResNet18 encoder, four up-blocks with skips, and a full-resolution head.

    paper_resblock=True applies Table 8's "1×1 conv-norm skip in every block"; its stride
    on both convs is not implemented, as it would shrink the maps 4× per stage.
    """

    def __init__(
        self, in_channels: int, out_channels: int, width: int = 64, paper_resblock: bool = False
    ):
        super().__init__()
        f = check_width(width)
        self.stem = conv_norm_act(in_channels, f, 7, 2, act="relu")  # con1 [skip0]
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        stages, c_in = [], f
        for i, c_out in enumerate([f, 2 * f, 4 * f, 8 * f]):  # res1–2, res3–4, res5–6, res7–8
            stride = 1 if i == 0 else 2
            stages.append(
                nn.Sequential(
                    ResBlock(c_in, c_out, stride, paper_resblock),
                    ResBlock(c_out, c_out, 1, paper_resblock),
                )
            )
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        # (in, skip, out): skips are res6 (4f), res4 (2f), res2 (f) and con1 (f).
        ups = [(8 * f, 4 * f, 8 * f), (8 * f, 2 * f, 4 * f), (4 * f, f, 2 * f), (2 * f, f, f)]
        self.ups = nn.ModuleList([UpBlock(*u) for u in ups])
        half = max(f // 2, 1)
        self.head = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            conv_norm_act(f, half, 3, act="elu"),  # con10
            conv_norm_act(half, half, 3, act="elu"),  # con11
            conv(half, out_channels, 3),
            nn.Tanh(),
        )
        he_init_(self, "relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]  # con1: (B, f, H/2, W/2)
        y = self.pool(skips[0])  # (B, f, H/4, W/4)
        for stage in self.stages:
            y = stage(y)
            skips.append(y)  # res2, res4, res6, res8 at H/4 … H/32
        for up, skip in zip(self.ups, reversed(skips[:-1]), strict=True):
            y = up(y, skip)  # (B, 8f, H/16, W/16) … (B, f, H/2, W/2)
        return self.head(y)  # (B, out, H, W)


class UNetEncoderStage(nn.Module):
    """Table 7 encoder stage: conv, conv (skip taken here), conv stride 2; all IN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.convs = nn.Sequential(
            conv_norm_act(in_channels, out_channels, 3, act="relu"),
            conv_norm_act(out_channels, out_channels, 3, act="relu"),
        )
        self.down = conv_norm_act(out_channels, out_channels, 3, 2, act="relu")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.convs(x)
        return self.down(skip), skip  # (B, C, H/2, W/2), (B, C, H, W)


class UNetDecoderStage(nn.Module):
    """Table 7 decoder stage: trans-conv s2 + IN + ReLU, concat skip, 2× conv + IN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.up = up_conv_norm_act(in_channels, out_channels)
        self.convs = nn.Sequential(
            conv_norm_act(2 * out_channels, out_channels, 3, act="relu"),
            conv_norm_act(out_channels, out_channels, 3, act="relu"),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)  # (B, C_out, 2H, 2W)
        return self.convs(torch.cat([x, skip], dim=1))


@GENERATORS.register("unet")
class UNetGenerator(nn.Module):
    """Table 7: four encoder stages (f…8f), a 16f bottleneck, four decoder stages, tanh."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 48):
        super().__init__()
        f = check_width(width)
        chans = [f, 2 * f, 4 * f, 8 * f]
        self.encoder = nn.ModuleList(
            [
                UNetEncoderStage(c_in, c_out)
                for c_in, c_out in zip([in_channels, *chans[:-1]], chans, strict=True)
            ]
        )
        self.bottleneck = nn.Sequential(  # con51, con52
            conv_norm_act(8 * f, 16 * f, 3, act="relu"),
            conv_norm_act(16 * f, 16 * f, 3, act="relu"),
        )
        self.decoder = nn.ModuleList([UNetDecoderStage(2 * c, c) for c in reversed(chans)])
        self.out = nn.Sequential(conv(f, out_channels, 3), nn.Tanh())
        he_init_(self, "relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for stage in self.encoder:
            x, skip = stage(x)
            skips.append(skip)
        x = self.bottleneck(x)  # (B, 16f, H/16, W/16)
        for stage, skip in zip(self.decoder, reversed(skips), strict=True):
            x = stage(x, skip)
        return self.out(x)  # (B, out, H, W)


class PlainResBlock(nn.Module):
    """Style-transfer residual block as in the authors' code: conv-ReLU-conv + x, no norm."""

    def __init__(self, channels: int):
        super().__init__()
        self.branch = nn.Sequential(
            conv(channels, channels, 3), nn.ReLU(inplace=True), conv(channels, channels, 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)  # no ReLU after the add


@GENERATORS.register("style")
class StyleTransferGenerator(nn.Module):
    """Johnson-style net from the authors' code (its table is missing from the paper)."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 64, n_blocks: int = 9):
        super().__init__()
        f = check_width(width)
        # The code's norm here is GroupNorm(min(f, norm)) groups, i.e. group norm on the
        # 2f/4f layers; we use instance norm throughout (same parameter count).
        self.net = nn.Sequential(
            conv_norm_act(in_channels, f, 7, act="relu"),  # c7s1-f, (B, f, H, W)
            conv_norm_act(f, 2 * f, 3, 2, act="relu"),  # (B, 2f, H/2, W/2)
            conv_norm_act(2 * f, 4 * f, 3, 2, act="relu"),  # (B, 4f, H/4, W/4)
            *[PlainResBlock(4 * f) for _ in range(n_blocks)],
            up_conv_norm_act(4 * f, 2 * f),  # (B, 2f, H/2, W/2)
            up_conv_norm_act(2 * f, f),  # (B, f, H, W)
            conv(f, out_channels, 7),
            nn.Tanh(),
        )
        he_init_(self, "relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
