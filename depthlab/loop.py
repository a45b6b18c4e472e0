"""The one training loop: steps, evaluation cadence, NaN detection, best-so-far, seeding,
and the progress and RNG states it resumes from.

Plain PyTorch: the same function runs in a test, a notebook and a Ray Train worker.
"""

import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from depthlab.config import TrainSettings
from depthlab.data.batch import DepthBatch
from depthlab.methods.protocol import DataInfo, Method
from depthlab.metrics import compute, compute_signed

HIGHER_IS_BETTER = {"corr", "delta1", "delta2", "delta3", "psnr"}


def mode_for(metric: str) -> str:
    """"max" for metrics where higher is better (δ, correlation, PSNR), else "min";
    `metric` may carry prefixes (best/real/delta1)."""
    return "max" if metric.rsplit("/", 1)[-1] in HIGHER_IS_BETTER else "min"


@dataclass
class Evaluation:
    """Metrics on the evaluation split (display units) and a few samples to draw."""

    metrics: dict[str, float]
    images: np.ndarray  # (N, H, W, 3) in [0, 1]
    predictions: np.ndarray  # (N, H, W) display unit
    truths: np.ndarray  # (N, H, W) display unit


@dataclass
class FitResult:
    steps_done: int
    diverged: bool
    best: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Progress:
    """Where the loop stands after an evaluation: enough for `fit` to continue from there."""

    step: int
    best: dict[str, float]  # best value of each evaluation metric so far
    last: dict[str, float]  # the metrics reported at `step`


Report = Callable[[int, dict[str, float], Evaluation | None, bool], None]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(*generators: torch.Generator) -> dict[str, Any]:
    """Python's, NumPy's and torch's global RNG states (CUDA too) and those of `generators`,
    as tensors and plain values: a checkpoint loads them with weights_only."""
    version, mt, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": (version, torch.tensor(mt, dtype=torch.int64), gauss),
             "numpy": (torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
             "torch": torch.get_rng_state(),
             "generators": [g.get_state() for g in generators]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], *generators: torch.Generator) -> None:
    """Put back what `rng_state` returned (same generators, same order)."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt.tolist()), gauss))
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    saved = state["generators"]
    if len(saved) != len(generators):
        raise ValueError(f"RNG state holds {len(saved)} generator(s), {len(generators)} given")
    for generator, value in zip(generators, saved, strict=True):
        generator.set_state(value)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resolve_device(name: str) -> torch.device:
    """"auto" → CUDA when present, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA device is available")
    return torch.device(name)


def score(pred: torch.Tensor, truth: torch.Tensor, data: DataInfo) -> dict[str, float]:
    """The dataset's protocol: relative depth (paper 004) pooled, no alignment; positive
    depth per image with the catalog's floor, cap and crop. RMSE/MAE in display units."""
    unit, scale = data.display_unit, data.display_scale
    if data.pooled:
        raw = compute_signed(pred, truth, scale=scale)
        return {f"rmse_{unit}": raw["rmse"], f"mae_{unit}": raw["mae"], "corr": raw["corr"]}
    cap = data.max_depth_m if data.max_depth_m is not None else data.depth_range_m[1]
    floor = data.min_depth_m if data.min_depth_m is not None else 1e-3
    metrics = compute(pred, truth, crop=data.crop, min_depth=floor, max_depth=cap)
    for key in ("rmse", "mae"):
        metrics[f"{key}_{unit}"] = metrics.pop(key) * scale
    return metrics


def evaluate(method: Method, batches: Iterator[DepthBatch], data: DataInfo,
             keep: int = 4) -> Evaluation:
    """Predict every evaluation batch and score it with the dataset's protocol; keep the
    first `keep` samples for a panel."""
    preds, truths, images = [], [], []
    for batch in batches:
        preds.append(method.predict(batch.image).cpu())
        truths.append(batch.depth)
        images.append(batch.image[:keep])
    pred, truth = torch.cat(preds), torch.cat(truths)
    image = torch.cat(images)[:keep].permute(0, 2, 3, 1).numpy()
    scale = data.display_scale
    return Evaluation(score(pred, truth, data), image, pred[:keep, 0].numpy() * scale,
                      truth[:keep, 0].numpy() * scale)


def _improves(key: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value > best if key in HIGHER_IS_BETTER else value < best


def fit(method: Method, batches: Iterator[DepthBatch], run_eval: Callable[[], Evaluation],
        settings: TrainSettings, report: Report, primary: str, start: Progress | None = None,
        save: Callable[[Progress], None] | None = None) -> FitResult:
    """Train `settings.steps` steps, evaluating at step 0 (unless the method's `learns` is
    False) and every `eval_every` steps.

    `report(step, metrics, evaluation, improved)` receives train/… (means since the
    last report), eval/… and best/… metrics; `improved` says the evaluation metric
    named by `primary` ("best/rmse_um" or "rmse_um") reached a new best (the moment
    to save the best checkpoint). A non-finite loss stops training and reports
    `diverged = 1`.

    `save(progress)` runs at each evaluation, before its report (a reporter can hand on
    what it wrote). `start`, a saved progress (with the method's state and RNG already
    restored by the caller), continues after its step; one that is already at the end
    reports its last metrics once more, so a caller that lost them gets them.
    """
    primary_key = primary.split("/", 1)[-1]  # "best/rmse_um" → evaluation metric "rmse_um"
    best: dict[str, float] = dict(start.best) if start else {}
    running: dict[str, list[float]] = defaultdict(list)
    last: dict[str, float] = dict(start.last) if start else {}

    def evaluate_and_report(step: int) -> None:
        nonlocal last
        evaluation = run_eval()
        improved = _improves(primary_key, evaluation.metrics[primary_key],
                             best.get(primary_key))
        for name, value in evaluation.metrics.items():
            if _improves(name, value, best.get(name)):
                best[name] = value
        last = {f"train/{k}": sum(v) / len(v) for k, v in running.items()}
        last.update({f"eval/{k}": v for k, v in evaluation.metrics.items()})
        last.update({f"best/{k}": v for k, v in best.items()})
        running.clear()
        if save is not None:
            save(Progress(step, dict(best), dict(last)))
        report(step, dict(last), evaluation, improved)

    first = start.step if start else 0
    if start is None and getattr(method, "learns", True):  # a step-0 score of a method that
        evaluate_and_report(0)  # learns nothing (paper 003's index) would repeat the last one
    elif first >= settings.steps:
        report(first, dict(last), None, False)
        return FitResult(first, False, best, last)
    for step in range(first, settings.steps):
        losses = method.train_step(batches, step)
        bad = sorted(k for k, v in losses.items() if not math.isfinite(v))
        if bad:
            report(step + 1, {"diverged": 1.0, **{f"train/{k}": losses[k] for k in bad}},
                   None, False)
            return FitResult(step + 1, True, best, last)
        for key, value in losses.items():
            running[key].append(value)
        if (step + 1) % settings.eval_every == 0 or step + 1 == settings.steps:
            evaluate_and_report(step + 1)
    return FitResult(settings.steps, False, best, last)
