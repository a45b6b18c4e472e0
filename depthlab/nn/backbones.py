"""ImageNet backbones: VGG-16 (paper 001), VGG-19 (002), ResNet-50 (003's tile features);
random initialisation by default, optionally loaded from a local torchvision state dict.

The layers are torchvision's own (`torchvision.models.vgg.make_layers`) so a full-width
stack has exactly torchvision's `features.N` parameter names and a downloaded
`vgg16-397923af.pth` / `vgg19-dcbb9e9d.pth` loads into it. A width multiplier shrinks
every conv for CPU budgets (pretrained weights then no longer fit: an error says so).
"""

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, conv1x1
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
    _load_torchvision(features, path, f"VGG-{depth}", f"vgg{depth}-*.pth", prefix="features.")


def _load_torchvision(module: nn.Module, path: str | Path, what: str, example: str,
                      prefix: str = "") -> None:
    """Load the tensors `module` has from a torchvision state dict file (keys under
    `prefix`), with errors that name the file and what was expected."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--pretrained {path}: no such file (expected a torchvision "
                         f"{what} state dict, e.g. {example})")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"--pretrained {path}: expected a state dict, got {type(state).__name__}")
    ours = module.state_dict()
    theirs = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    missing = sorted(set(ours) - set(theirs))
    if missing:
        raise ValueError(f"--pretrained {path}: not a torchvision {what} state dict "
                         f"(missing {missing[:3]}...)")
    wrong = [k for k in ours if ours[k].shape != theirs[k].shape]
    if wrong:
        raise ValueError(f"--pretrained {path}: {wrong[0]} has shape "
                         f"{tuple(theirs[wrong[0]].shape)}, the network "
                         f"{tuple(ours[wrong[0]].shape)}: not a {what} at width 1")
    module.load_state_dict({k: theirs[k] for k in ours})


def vgg_stage_ends(features: nn.Sequential) -> list[int]:
    """Indices of the max-pool layers: pool1 … pool5 end at these positions of `features`."""
    return [i for i, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d)]


# ---------------------------------------------------------------- ResNet-50 (paper 003)

# torchvision's ResNet-50: (planes, blocks, stride) of layer1 … layer4; outputs are 4 × planes.
RESNET50_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
# Where the feature vector is read: a stage's output averaged over the image (layer2,
# layer3), layer4 averaged (torchvision's `avgpool`, the 2048-d vector), or the logits.
RESNET_LAYERS = ("layer2", "layer3", "avgpool", "fc")


def resnet50_features(layer: str = "avgpool", width: float = 1.0,
                      pretrained: str | Path | None = None) -> nn.Sequential:
    """ResNet-50 up to `layer` (torchvision names: conv1 … layer4, avgpool, fc), (B, 3, H, W)
    ImageNet-normalised in, (B, C) out: C = 512·w, 1024·w, 2048·w at layer2, layer3, avgpool,
    1000 at fc; `pretrained` = a local torchvision ResNet-50 state dict (width 1 only)."""
    if layer not in RESNET_LAYERS:
        raise ValueError(f"ResNet-50 layer must be one of {RESNET_LAYERS}, got {layer!r}")
    if not width > 0:
        raise ValueError(f"ResNet-50 width multiplier must be > 0, got {width!r}")
    if pretrained is not None and width != 1:
        raise ValueError(f"--pretrained {pretrained}: pretrained weights need width 1, "
                         f"got width {width}")
    stem = max(1, round(64 * width))
    parts: OrderedDict[str, nn.Module] = OrderedDict(
        conv1=nn.Conv2d(3, stem, 7, 2, 3, bias=False), bn1=nn.BatchNorm2d(stem),
        relu=nn.ReLU(inplace=True), maxpool=nn.MaxPool2d(3, 2, 1))
    last = {"layer2": 2, "layer3": 3}.get(layer, 4)
    channels = stem
    for i, (planes, blocks, stride) in enumerate(RESNET50_STAGES[:last], 1):
        parts[f"layer{i}"], channels = _bottleneck_stage(channels, max(1, round(planes * width)),
                                                         blocks, stride)
    parts["avgpool"] = nn.AdaptiveAvgPool2d(1)
    parts["flatten"] = nn.Flatten(1)  # (B, C, 1, 1) → (B, C), as ResNet.forward's flatten
    if layer == "fc":
        parts["fc"] = nn.Linear(channels, 1000)
    features = nn.Sequential(parts)
    features.eval()  # BN uses its running statistics: a tile's features never depend on its batch
    if pretrained is not None:
        load_resnet_weights(features, pretrained)
    else:
        _torchvision_resnet_init(features)
    return features


def _bottleneck_stage(inplanes: int, planes: int, blocks: int, stride: int
                      ) -> tuple[nn.Sequential, int]:
    """torchvision's `ResNet._make_layer` for Bottleneck blocks; (stage, output channels)."""
    out = planes * Bottleneck.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(conv1x1(inplanes, out, stride), nn.BatchNorm2d(out))
    layers = [Bottleneck(inplanes, planes, stride, downsample)]
    layers += [Bottleneck(out, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers), out


def _torchvision_resnet_init(features: nn.Sequential) -> None:
    """torchvision's ResNet init: He normal (fan_out) convs, BN weight 1 / bias 0; the fc
    layer keeps PyTorch's default, as in `ResNet.__init__` (no zero-init residuals)."""
    for module in features.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def load_resnet_weights(features: nn.Sequential, path: str | Path) -> None:
    """Load the tensors of a torchvision ResNet-50 state dict file that `features` has
    (the layers past the chosen one are not in it)."""
    _load_torchvision(features, path, "ResNet-50", "resnet50-*.pth")
