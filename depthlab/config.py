"""Shared frozen configs: training-loop settings and study budgets, built strictly from dicts."""

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


def from_dict(cls: type[T], values: dict[str, Any] | None) -> T:
    """Build a frozen dataclass from a dict; unknown keys are an error naming them."""
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{cls.__qualname__}: unknown field(s) {unknown}; known: {sorted(names)}")
    for f in dataclasses.fields(cls):
        # JSON/Tune round trips turn tuples into lists; frozen configs want tuples back.
        if f.name in values and isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    return cls(**values)


def to_dict(config: Any) -> dict[str, Any]:
    """A config as a plain dict of primitives (for MLflow params and checkpoints)."""
    return dataclasses.asdict(config)


def require(condition: bool, owner: str, field_name: str, value: Any, expected: str) -> None:
    """Raise a ValueError naming the field, its value and what was expected."""
    if not condition:
        raise ValueError(f"{owner}.{field_name} = {value!r}: expected {expected}")


def require_positive(owner: str, **values: float) -> None:
    """Every given value must be a finite number > 0."""
    for name, value in values.items():
        ok = isinstance(value, int | float) and math.isfinite(value) and value > 0
        require(ok, owner, name, value, "a finite number > 0")


@dataclass(frozen=True)
class TrainSettings:
    """What the one training loop needs, for every method.

    `steps` counts optimizer updates of the method's main model (n_G
    generator updates for the GAN of paper 004).
    """

    steps: int = 10_000
    eval_every: int = 85  # paper 004's code evaluates once per epoch of 85 steps
    eval_samples: int = 211  # paper 004: 211 registered surface pairs
    seed: int = 0
    grad_clip: float = 0.0  # max global grad norm per optimizer step; 0 = off
    threads: int = 0  # torch intra-op threads per worker; 0 = leave torch's default
    device: str = "auto"  # auto | cpu | cuda

    def __post_init__(self) -> None:
        require_positive("TrainSettings", steps=self.steps, eval_every=self.eval_every,
                         eval_samples=self.eval_samples)
        require(self.grad_clip >= 0 and math.isfinite(self.grad_clip), "TrainSettings",
                "grad_clip", self.grad_clip, "a finite number >= 0 (0 = off)")
        require(self.threads >= 0, "TrainSettings", "threads", self.threads, ">= 0")
        require(self.device in ("auto", "cpu", "cuda"), "TrainSettings", "device",
                self.device, "one of auto, cpu, cuda")


@dataclass(frozen=True)
class Budget:
    """How big a study is: image size, training length, number of trials, CPU-size overrides."""

    name: str
    image_size: tuple[int, int]
    steps: int
    eval_every: int
    eval_samples: int
    num_trials: int
    method_overrides: dict[str, Any] = field(default_factory=dict)
    data_counts: dict[str, int] = field(default_factory=dict)  # per split; empty = catalog's
    grace_fraction: float = 0.25  # ASHA's first rung, as a fraction of steps
    note: str = ""
    # The study's metric for this budget, when it differs from the paper's (short runs).
    metric: str | None = None
    mode: str | None = None
    # A search space (and its starting points) for this budget, when the study's is sized
    # for the paper's networks (a CPU budget searching pix2pixHD's ngf 64 would not fit).
    search_space: Callable[[Any], dict | None] | None = None
    points_to_evaluate: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        require_positive(f"Budget[{self.name}]", steps=self.steps, eval_every=self.eval_every,
                         eval_samples=self.eval_samples, num_trials=self.num_trials)
        require((self.metric is None) == (self.mode is None), f"Budget[{self.name}]", "mode",
                self.mode, "set together with metric")
        require(self.mode in (None, "min", "max"), f"Budget[{self.name}]", "mode", self.mode,
                "'min' or 'max'")

    def train_settings(self, **overrides: Any) -> TrainSettings:
        """The loop settings this budget implies."""
        values = dict(steps=self.steps, eval_every=self.eval_every,
                      eval_samples=self.eval_samples)
        values.update(overrides)
        return from_dict(TrainSettings, values)
