"""What the supervised methods (papers 000, 001, 002) share: input normalisation, ground
truth at the network's output size, tanh ↔ metres, learning-rate schedules, state dicts.

Plain functions, no base class: each method file stays readable on its own.
"""

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

# torchvision's ImageNet statistics: what a pretrained VGG expects (and harmless at random init).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalise(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] → ImageNet-normalised, as torchvision's VGG weights expect."""
    mean = image.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = image.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (image - mean) / std


def depth_at(depth: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Ground truth (B, 1, H, W) at a network's output size: nearest, so invalid (NaN)
    pixels stay invalid and no depth is blended across an edge."""
    if tuple(depth.shape[-2:]) == tuple(size):
        return depth
    return F.interpolate(depth, size=tuple(size), mode="nearest")


def upsample(pred: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A lower-resolution prediction bilinearly at `size` (the evaluation protocol's way)."""
    if tuple(pred.shape[-2:]) == tuple(size):
        return pred
    return F.interpolate(pred, size=tuple(size), mode="bilinear", align_corners=False)


def to_tanh(depth: torch.Tensor, max_depth: float) -> torch.Tensor:
    """Metres in [0, max_depth] → [−1, 1] (a tanh generator's range)."""
    return depth / max_depth * 2 - 1


def from_tanh(y: torch.Tensor, max_depth: float) -> torch.Tensor:
    """[−1, 1] → metres in [0, max_depth]."""
    return (y + 1) / 2 * max_depth


def step_decay(every: int, factor: float) -> Callable[[int], float]:
    """LR multiplier: × `factor` after every `every` steps (paper 001's per-epoch ×0.1)."""
    return lambda step: factor ** (step // every) if every > 0 else 1.0


def linear_decay(total: int, decay_fraction: float) -> Callable[[int], float]:
    """LR multiplier: 1, then linearly to 0 over the last `decay_fraction` of `total` steps
    (pix2pixHD's niter + niter_decay)."""
    start = total * (1 - decay_fraction)

    def multiplier(step: int) -> float:
        if decay_fraction <= 0 or step < start:
            return 1.0
        return max(0.0, 1.0 - (step - start) / (total - start))

    return multiplier


def modules_state(modules: dict[str, torch.nn.Module], optimizers: dict[str, Any]
                  ) -> dict[str, Any]:
    """Weights and optimizer states under their names."""
    state = {name: m.state_dict() for name, m in modules.items()}
    state.update({name: o.state_dict() for name, o in optimizers.items()})
    return state


def load_modules_state(state: dict[str, Any], modules: dict[str, torch.nn.Module],
                       optimizers: dict[str, Any]) -> None:
    """Restore what `modules_state` returned."""
    for name, thing in {**modules, **optimizers}.items():
        thing.load_state_dict(state[name])
