"""ImageNet backbones of the supervised papers (VGG-16 for 001, VGG-19 for 002), random
initialisation by default, optionally loaded from a local torchvision state dict.

The layers are torchvision's own (`torchvision.models.vgg.make_layers`) so a full-width
stack has exactly torchvision's `features.N` parameter names and a downloaded
`vgg16-397923af.pth` / `vgg19-dcbb9e9d.pth` loads into it. A width multiplier shrinks
every conv for CPU budgets (pretrained weights then no longer fit: an error says so).
"""

from pathlib import Path

import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

VGG_CONFIGS = {16: "D", 19: "E"}  # torchvision's names for VGG-16 / VGG-19


def _scaled(config: list, width: float) -> list:
    return [v if v == "M" else max(1, round(v * width)) for v in config]


def vgg_features(depth: int, width: float = 1.0, pretrained: str | Path | None = None
                 ) -> nn.Sequential:
    """VGG-`depth` conv/pool stack (torchvision layout, no batch norm), (B, 3, H, W) in,
    (B, 512·width, H/32, W/32) out; `pretrained` = a local torchvision VGG state dict."""
    if depth not in VGG_CONFIGS:
        raise ValueError(f"VGG depth must be one of {sorted(VGG_CONFIGS)}, got {depth!r}")
    if not width > 0:
        raise ValueError(f"VGG width multiplier must be > 0, got {width!r}")
    features = make_layers(_scaled(cfgs[VGG_CONFIGS[depth]], width), batch_norm=False)
    if pretrained is not None:
        load_vgg_weights(features, depth, pretrained)
    else:
        _torchvision_init(features)
    return features


def _torchvision_init(features: nn.Sequential) -> None:
    """torchvision's VGG init (`VGG.__init__`): He normal, fan_out; zero bias. PyTorch's
    default conv init shrinks activations through 13–16 plain convs to nearly zero."""
    for module in features.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)


def load_vgg_weights(features: nn.Sequential, depth: int, path: str | Path) -> None:
    """Load the `features.*` tensors of a torchvision VGG state dict file into `features`."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--pretrained {path}: no such file (expected a torchvision "
                         f"VGG-{depth} state dict, e.g. vgg{depth}-*.pth)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"--pretrained {path}: expected a state dict, got {type(state).__name__}")
    ours = features.state_dict()
    theirs = {k.removeprefix("features."): v for k, v in state.items()
              if k.startswith("features.")}
    missing = sorted(set(ours) - set(theirs))
    if missing:
        raise ValueError(f"--pretrained {path}: not a torchvision VGG-{depth} state dict "
                         f"(missing {missing[:3]}...)")
    wrong = [k for k in ours if ours[k].shape != theirs[k].shape]
    if wrong:
        raise ValueError(f"--pretrained {path}: {wrong[0]} has shape "
                         f"{tuple(theirs[wrong[0]].shape)}, the network "
                         f"{tuple(ours[wrong[0]].shape)}: pretrained weights need width 1")
    features.load_state_dict({k: theirs[k] for k in ours})


def vgg_stage_ends(features: nn.Sequential) -> list[int]:
    """Indices of the max-pool layers: pool1 … pool5 end at these positions of `features`."""
    return [i for i, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d)]
