"""What the training loop needs from a method: a small protocol, not a base class."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from depthlab.data.batch import DepthBatch
from depthlab.data.datasets import SplitArrays


@dataclass(frozen=True)
class DataInfo:
    """Facts about the dataset a method trains on (from its catalog entry)."""

    name: str
    version: str
    depth_range_m: tuple[float, float]  # range mapped to [−1, 1] for tanh outputs
    display_unit: str  # unit metrics are reported in
    display_scale: float  # metres → display unit
    image_size: tuple[int, int]
    # Evaluation protocol of the dataset (catalog `[evaluation]`), metres and pixels of
    # image_size; None = no floor / cap / crop.
    min_depth_m: float | None = None
    max_depth_m: float | None = None
    crop: tuple[int, int, int, int] | None = None  # top, bottom, left, right (half-open)
    pooled: bool = False  # paper 004's pooled relative-depth protocol (catalog `pooled`)
    train_samples: int = 0  # size of the training split (epochs in steps); 0 = unknown


class Method(Protocol):
    """A method owns its networks, optimizers and schedule; the loop owns everything else."""

    name: ClassVar[str]

    def train_step(self, batches: Iterator[DepthBatch], step: int) -> dict[str, float]:
        """One update of the main model (drawing as many batches as it needs); returns losses."""

    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B, 1, H, W) depth in metres."""

    def state_dict(self) -> dict[str, Any]:
        """Weights and optimizer states."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


@runtime_checkable
class FitsData(Protocol):
    """Optional: a method that needs the whole training split once, before the loop (paper
    003 indexes it for retrieval). `trial.train_trial` calls it when a method has it."""

    def fit_data(self, train: SplitArrays, cache_dir: Path) -> None:
        """Take the decoded training split; `cache_dir` is for what can be reused across
        trials on the same dataset build (a file per key the method computes)."""
