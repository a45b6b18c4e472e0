"""One trial without Ray: a plan of plain values → data, method, the one loop.

The same function runs in a test, a benchmark and a Ray Train worker; Ray and
MLflow stay outside (the caller's `report` decides where metrics go).
"""

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from depthlab.catalog import CatalogEntry
from depthlab.config import TrainSettings, from_dict
from depthlab.data.datasets import RandomBatches, SplitArrays, eval_batches, load_splits
from depthlab.data.transforms import AUGMENTATIONS
from depthlab.loop import Evaluation, evaluate, fit, resolve_device, score, seed_everything
from depthlab.methods import METHODS, DataInfo
from depthlab.methods.protocol import FitsData
from depthlab.nn.optim import Stepper

EVAL_BATCH = 32


@dataclass(frozen=True)
class EvalSet:
    """A further evaluation set of a trial: `label/…` metrics on other data (e.g. real frames)."""

    label: str
    data_path: str
    splits: tuple[str, ...]
    data: dict[str, Any]  # its DataInfo as a dict


@dataclass(frozen=True)
class TrialPlan:
    """Everything a trial needs, as plain values (it crosses process boundaries)."""

    method: str
    method_config: dict[str, Any]
    settings: dict[str, Any]
    data_path: str
    data: dict[str, Any]
    train_splits: tuple[str, str]  # (rgb split, depth split); one name twice = paired data
    eval_split: str
    primary: str
    extra_evals: tuple[dict[str, Any], ...] = field(default_factory=tuple)  # EvalSet dicts


def data_info(entry: CatalogEntry, size: tuple[int, int],
              max_depth_m: float | None = None) -> DataInfo:
    """The facts a method needs about its dataset, with its evaluation protocol at `size`.

    The protocol's crop is given on `crop_frame` pixels (NYU: 480×640); data
    prepared at another size gets the crop scaled to it. `max_depth_m`
    overrides the protocol's cap (real frames scored like the training data).
    """
    protocol, metres = entry.evaluation, entry.unit_to_metres
    crop = protocol.crop
    if crop is not None and protocol.crop_frame is not None:
        (h0, w0), (h, w) = protocol.crop_frame, size
        top, bottom, left, right = crop
        crop = (round(top * h / h0), round(bottom * h / h0),
                round(left * w / w0), round(right * w / w0))
    cap = protocol.max_depth * metres if protocol.max_depth is not None else None
    floor = protocol.min_depth * metres if protocol.min_depth is not None else None
    return DataInfo(entry.name, str(entry.version), tuple(entry.depth_range_m),
                    entry.display_unit, entry.display_scale, tuple(size),
                    min_depth_m=floor, max_depth_m=max_depth_m or cap, crop=crop,
                    pooled=protocol.pooled)


def first(split: SplitArrays, count: int) -> SplitArrays:
    """The first `count` samples of a split."""
    take = lambda a: None if a is None else a[:count]  # noqa: E731
    return replace(split, images=take(split.images), depth=take(split.depth),
                   ids=split.ids[:count])


def build_method(plan: TrialPlan, device: torch.device, stepper: Stepper,
                 train_samples: int = 0):
    """The method object of a plan (config validated by its frozen dataclass)."""
    method_cls = METHODS.get_or_raise(plan.method)
    config = from_dict(method_cls.Config, plan.method_config)
    settings = from_dict(TrainSettings, plan.settings)
    data = replace(DataInfo(**plan.data), train_samples=train_samples)
    return method_cls(config, settings, data, device, stepper), config, settings


def training_splits(plan: TrialPlan) -> tuple[SplitArrays, SplitArrays]:
    """The (rgb, depth) training splits; the same split name twice is one paired split."""
    rgb_split, depth_split = plan.train_splits
    rgb = load_splits(plan.data_path, (rgb_split,))
    depth = rgb if depth_split == rgb_split else load_splits(plan.data_path, (depth_split,))
    return rgb, depth


def training_batches(rgb: SplitArrays, depth: SplitArrays, config: Any,
                     seed: int) -> RandomBatches:
    """The endless, augmented minibatch stream of a method config (`batch_size`,
    `augmentation`); `rgb is depth` means paired samples."""
    return RandomBatches(rgb, depth, config.batch_size, seed=seed,
                         augmentation=AUGMENTATIONS.get_or_raise(config.augmentation))


def evaluation_sets(plan: TrialPlan, eval_samples: int
                    ) -> list[tuple[str, SplitArrays, DataInfo]]:
    """(metric prefix, samples, protocol) of the evaluation split ("" prefix, its first
    `eval_samples`) and of each extra set ("label/")."""
    sets = [("", first(load_splits(plan.data_path, (plan.eval_split,)), eval_samples),
             DataInfo(**plan.data))]
    for extra in (EvalSet(**d) for d in plan.extra_evals):
        sets.append((f"{extra.label}/", load_splits(extra.data_path, tuple(extra.splits)),
                     DataInfo(**extra.data)))
    return sets


def evaluator(plan: TrialPlan, method, eval_samples: int) -> Callable[[], Evaluation]:
    """A function scoring the method on the plan's evaluation split and its extra sets."""
    (_, main, info), *extras = evaluation_sets(plan, eval_samples)

    def run_eval() -> Evaluation:
        result = evaluate(method, eval_batches(main, EVAL_BATCH), info)
        for prefix, split, extra_info in extras:
            extra = evaluate(method, eval_batches(split, EVAL_BATCH), extra_info, keep=0)
            result.metrics.update({f"{prefix}{k}": v for k, v in extra.metrics.items()})
        return result

    return run_eval


def train_trial(plan: TrialPlan, report: Callable[..., None], rank: int = 0) -> Any:
    """Load data, build the method, give it the training split if it wants it whole
    (`FitsData`), run the loop.

    `report(method, step, metrics, evaluation, improved)` is the loop's reporter
    with the method in front, so a reporter can save its weights.
    """
    settings = from_dict(TrainSettings, plan.settings)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    seed_everything(settings.seed + rank)
    device = resolve_device(settings.device)
    config = from_dict(METHODS.get_or_raise(plan.method).Config, plan.method_config)
    rgb, depth = training_splits(plan)
    batches = training_batches(rgb, depth, config, settings.seed + rank)
    method, _, _ = build_method(plan, device, Stepper(settings.grad_clip), batches.samples)
    if isinstance(method, FitsData):  # e.g. paper 003's retrieval index, built (or read) once
        method.fit_data(rgb, Path(plan.data_path) / "cache")  # inside the build: dies with it
    run_eval = evaluator(plan, method, settings.eval_samples)
    return fit(method, batches, run_eval, settings, partial(report, method), plan.primary)


def constant_baseline(plan: TrialPlan) -> dict[str, float]:
    """Scores of the trivial predictor (the training depth mean everywhere) on every
    evaluation set, under the same protocol as the trials."""
    mean = float(np.nanmean(load_splits(plan.data_path, plan.train_splits[1:]).depth))
    out = {}
    for prefix, truth, info in evaluation_sets(plan, plan.settings["eval_samples"]):
        depth = torch.from_numpy(truth.depth)
        scores = score(torch.full_like(depth, mean), depth, info)
        out.update({f"baseline/{prefix}constant_{k}": v for k, v in scores.items()})
    return out
