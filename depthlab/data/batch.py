"""The one typed batch passed between data, methods and metrics."""

from dataclasses import dataclass, field

import torch


@dataclass
class DepthBatch:
    """A minibatch. Depth is float32 metres with NaN where invalid.

    For unpaired data `image` and `depth` come from different samples
    (`paired` is False); either may be None when a split holds one modality.
    """

    image: torch.Tensor | None  # (B, 3, H, W) float32 in [0, 1]
    depth: torch.Tensor | None  # (B, 1, H, W) float32 metres, NaN = invalid
    paired: bool = True
    intrinsics: torch.Tensor | None = None  # (B, 3, 3) or None
    ids: list[str] = field(default_factory=list)

    @property
    def valid(self) -> torch.Tensor | None:
        """Boolean mask of finite depth pixels, (B, 1, H, W)."""
        return None if self.depth is None else torch.isfinite(self.depth)

    def to(self, device: torch.device | str) -> "DepthBatch":
        """Move the tensors to a device."""
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return DepthBatch(move(self.image), move(self.depth), self.paired,
                          move(self.intrinsics), self.ids)
