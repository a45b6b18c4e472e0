"""Das et al. (001), after Li, Klein & Yao: three-scale depth network with skips 1.1 / 1.2.

Poster / reference code (rgb-depth `architecture/model.py`) ↔ this file:
  scale 1 "VGG-16 + 2 FC"        ↔ `vgg` (torchvision `features.*` names) + `fc`
  skip 1.1 (pool3), 1.2 (pool4)  ↔ `skip1_1`, `skip1_2` (conv5×5 → 64·w, no ReLU, as the code)
  scale 2: 2.1 | 2.2–2.3 | 2.4–2.5 | 2.6–2.8 | 2.9
                                 ↔ `conv2_1` | `conv2_2_3` | `conv2_4_5` | `conv2_6_8` | `conv2_9`
  scale 3: 3.1 | 3.2 | 3.3–3.5 | 3.6
                                 ↔ `conv3_1` | `conv3_2` | `conv3_3_5` | `conv3_6`
  scale_1/2/3_section_* lrs      ↔ `REFERENCE_LR` keyed by `layer_groups()` names
  train_upsampler / freeze       ↔ `stage_parameters(1)` (scales 1+2), `stage_parameters(2)`

Sizes (input H × W, both multiples of 32): pool3 H/8, pool4 H/16, pool5 H/32; scale 2 at
H/4 (`scale2_size`), scale 3 at H/2 (`scale3_size`). The code's 9×9 stride-2 convs have
no padding, which gives H/4 − 2 and H/2 − 5 at such sizes; we pad them by 4 so the maps
are exactly H/2 before pooling, and pad the stride-1 max-pool of 3.1 by one zero row and
column at the bottom/right (after a ReLU that is TF 'same' pooling), so every resize is
the poster's exact ×2 (skip 1.1, scale 2 → 3) or ×4 (skip 1.2). Resizes are bilinear with
align_corners=True, the code's `UpsamplingBilinear2d`. Only the convs 2.x, 3.x and VGG's
own convs have ReLUs; the skips and FCs are linear, as in the code. New layers start
He-normal with zero bias (`init="he"`, our choice: the paper is silent); `init="torch"`
keeps PyTorch's default as the code does, under which activations shrink layer by layer
and the ReLU output (2.9) starts at exactly zero everywhere (measured at width 0.25: the
mean |input| of 2.9 is 0.016 and its bias −0.04), the "all zero predictions" the poster
reports. The network does not normalise its input.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from depthlab.nn.backbones import vgg_features, vgg_stage_ends
from depthlab.nn.blocks import he_init_

# Per-layer Adam learning rates of the reference trainer (METHODS §3), by `layer_groups()` name.
REFERENCE_LR = {
    "vgg": 1e-4,
    "fc": 1e-1,
    "skip": 1e-2,
    "conv2_1": 1e-3,
    "conv2_2_to_2_8": 1e-2,
    "conv2_9": 1e-3,
    "conv3_1": 1e-3,
    "conv3_2_to_3_5": 1e-2,
    "conv3_6": 1e-3,
}
# Stage 1 trains scales 1+2 (100 epochs); stage 2 freezes them and trains scale 3 (50 epochs).
STAGE_GROUPS = {
    1: ("vgg", "fc", "skip", "conv2_1", "conv2_2_to_2_8", "conv2_9"),
    2: ("conv3_1", "conv3_2_to_3_5", "conv3_6"),
}
INITS = ("he", "torch")  # of the layers after VGG (see the module docstring)
SIZE_MULTIPLE = 32  # VGG-16's five 2× pools
# The nearest multiple of 32 to the code's 92×120 input (`Rmrc.dim()`): our paper size.
PAPER_IMAGE_SIZE = (96, 128)


def upsample_to(depth: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=True, as the code's UpsamplingBilinear2d) to `size`."""
    if tuple(depth.shape[-2:]) == tuple(size):
        return depth
    return F.interpolate(depth, size=tuple(size), mode="bilinear", align_corners=True)


def _channels(base: int, width: float) -> int:
    return max(1, round(base * width))  # the rounding `vgg_features` uses


def _conv_relu(in_channels: int, out_channels: int, kernel: int = 5, stride: int = 1,
               padding: int = 2) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel, stride, padding), nn.ReLU(inplace=True)]


def _conv_stack(in_channels: int, out_channels: int, layers: int) -> nn.Sequential:
    """`layers` conv5×5 'same' + ReLU; the first maps in_channels → out_channels."""
    modules = []
    for i in range(layers):
        modules += _conv_relu(in_channels if i == 0 else out_channels, out_channels)
    return nn.Sequential(*modules)


def _last_conv_channels(features: nn.Sequential, end: int) -> int:
    """Output channels of the last conv in features[:end]."""
    return [m for m in list(features)[:end] if isinstance(m, nn.Conv2d)][-1].out_channels


def _check_image_size(image_size) -> tuple[int, int]:
    ok = (isinstance(image_size, tuple | list) and len(image_size) == 2
          and all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                  and s % SIZE_MULTIPLE == 0 for s in image_size))
    if not ok:
        raise ValueError(f"image_size must be (H, W), positive multiples of {SIZE_MULTIPLE}, got "
                         f"{image_size!r} (the paper size is {PAPER_IMAGE_SIZE}, nearest to the "
                         f"reference code's 92×120)")
    return int(image_size[0]), int(image_size[1])


class MultiScaleNet(nn.Module):
    """Scales 1–3 of Das et al. / Li, Klein & Yao; forward returns each scale's own map.

    `skips=False` is the poster's ablation (experiment 5): no skip 1.1 / 1.2, and convs
    2.2 and 2.4 take only the scale-2 path's channels. `pretrained` is a local torchvision
    VGG-16 state dict (width 1 only); without it the VGG convs start random.
    """

    def __init__(self, image_size: tuple[int, int], width: float = 1.0, skips: bool = True,
                 pretrained: str | Path | None = None, init: str = "he"):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        self.image_size = _check_image_size(image_size)
        h, w = self.image_size
        self.scale2_size = (h // 4, w // 4)
        self.scale3_size = (h // 2, w // 2)
        self.skips = bool(skips)
        self.vgg = vgg_features(16, width, pretrained)
        pool3, pool4, pool5 = vgg_stage_ends(self.vgg)[2:]
        self._taps = (pool3, pool4, pool5)
        c96, c64 = _channels(96, width), _channels(64, width)

        # Scale 1: FC sizes follow image_size, the coarse map has scale 2's resolution.
        coarse_pixels = self.scale2_size[0] * self.scale2_size[1]
        vgg_out = _last_conv_channels(self.vgg, pool5) * (h // 32) * (w // 32)
        self.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(vgg_out, coarse_pixels),
                                nn.Dropout(0.5), nn.Linear(coarse_pixels, coarse_pixels))
        skip_channels = c64 if self.skips else 0
        if self.skips:
            self.skip1_1 = nn.Conv2d(_last_conv_channels(self.vgg, pool3), c64, 5, padding=2)
            self.skip1_2 = nn.Conv2d(_last_conv_channels(self.vgg, pool4), c64, 5, padding=2)

        # Scale 2 (H/4): pad 4 makes 9×9 stride 2 give exactly H/2 (see the module docstring).
        self.conv2_1 = nn.Sequential(*_conv_relu(3, c96, 9, 2, 4), nn.MaxPool2d(2))
        self.conv2_2_3 = _conv_stack(c96 + skip_channels, c64, 2)
        self.conv2_4_5 = _conv_stack(c64 + skip_channels, c64, 2)
        self.conv2_6_8 = _conv_stack(c64 + 1, c64, 3)
        self.conv2_9 = nn.Sequential(*_conv_relu(c64, 1))

        # Scale 3 (H/2): the bottom/right zero pad keeps the stride-1 pool at H/2; after the
        # ReLU the inputs are ≥ 0, so a zero pad acts as the −∞ pad of max-pooling.
        self.conv3_1 = nn.Sequential(*_conv_relu(3, c96, 9, 2, 4), nn.ZeroPad2d((0, 1, 0, 1)),
                                     nn.MaxPool2d(2, stride=1))
        self.conv3_2 = nn.Sequential(*_conv_relu(c96, c64))
        self.conv3_3_5 = _conv_stack(c64 + 1, c64, 3)
        self.conv3_6 = nn.Sequential(*_conv_relu(c64, 1))
        if init == "he":
            for module in self._group_modules().values():
                for m in module:
                    if m is not self.vgg:
                        he_init_(m)

    def _vgg_taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """pool3, pool4 and pool5 outputs of the VGG stack."""
        taps = []
        for i, layer in enumerate(self.vgg):
            x = layer(x)
            if i in self._taps:
                taps.append(x)
        return taps

    def _check_input(self, x: torch.Tensor, scales: int) -> None:
        if scales not in (2, 3):
            raise ValueError(f"scales must be 2 or 3, got {scales!r}")
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(f"input must be (B, 3, {self.image_size[0]}, {self.image_size[1]}) "
                             f"(the FC sizes are fixed by image_size), got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor, scales: int = 3) -> dict[str, torch.Tensor]:
        """{'scale1', 'scale2': (B, 1, H/4, W/4), 'scale3': (B, 1, H/2, W/2) if scales == 3}."""
        self._check_input(x, scales)
        pool3, pool4, pool5 = self._vgg_taps(x)
        coarse = self.fc(pool5.flatten(1)).view(-1, 1, *self.scale2_size)  # (B, 1, H/4, W/4)

        s2 = self.conv2_1(x)  # (B, 96w, H/4, W/4)
        if self.skips:
            s2 = torch.cat([s2, upsample_to(self.skip1_1(pool3), self.scale2_size)], dim=1)
        s2 = self.conv2_2_3(s2)
        if self.skips:
            s2 = torch.cat([s2, upsample_to(self.skip1_2(pool4), self.scale2_size)], dim=1)
        s2 = self.conv2_4_5(s2)
        s2 = self.conv2_9(self.conv2_6_8(torch.cat([s2, coarse], dim=1)))  # (B, 1, H/4, W/4)
        outputs = {"scale1": coarse, "scale2": s2}
        if scales == 3:
            s3 = self.conv3_2(self.conv3_1(x))  # (B, 64w, H/2, W/2)
            s3 = torch.cat([s3, upsample_to(s2, self.scale3_size)], dim=1)
            outputs["scale3"] = self.conv3_6(self.conv3_3_5(s3))  # (B, 1, H/2, W/2)
        return outputs

    def predict(self, x: torch.Tensor, scales: int = 3) -> torch.Tensor:
        """The finest requested scale, upsampled to the input size: (B, 1, H, W)."""
        return upsample_to(self(x, scales)[f"scale{scales}"], self.image_size)

    def _group_modules(self) -> dict[str, list[nn.Module]]:
        groups = {
            "vgg": [self.vgg],
            "fc": [self.fc],
            "skip": [self.skip1_1, self.skip1_2] if self.skips else [],
            "conv2_1": [self.conv2_1],
            "conv2_2_to_2_8": [self.conv2_2_3, self.conv2_4_5, self.conv2_6_8],
            "conv2_9": [self.conv2_9],
            "conv3_1": [self.conv3_1],
            "conv3_2_to_3_5": [self.conv3_2, self.conv3_3_5],
            "conv3_6": [self.conv3_6],
        }
        return {name: modules for name, modules in groups.items() if modules}

    def layer_groups(self, stage: int | None = None) -> dict[str, list[nn.Parameter]]:
        """Parameters by `REFERENCE_LR` name (all, or one stage's); without skips no 'skip'."""
        names = STAGE_GROUPS[_check_stage(stage)] if stage is not None else tuple(REFERENCE_LR)
        return {name: [p for m in modules for p in m.parameters()]
                for name, modules in self._group_modules().items() if name in names}

    def stage_parameters(self, stage: int) -> list[nn.Parameter]:
        """Stage 1: scales 1+2 (VGG, FCs, skips, 2.x); stage 2: scale 3 only."""
        return [p for params in self.layer_groups(stage).values() for p in params]


def _check_stage(stage) -> int:
    if stage not in STAGE_GROUPS:
        raise ValueError(f"stage must be 1 (scales 1+2) or 2 (scale 3), got {stage!r}")
    return stage
