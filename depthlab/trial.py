"""One trial without Ray: a plan of plain values → data, method, the one loop.

The same function runs in a test, a benchmark and a Ray Train worker; Ray and
MLflow stay outside (the caller's `report` decides where metrics go). A trial
given a `state_dir` saves its whole state at every evaluation (`step-N/trial_state.pt`)
and continues from a saved one (`resume`).
"""

import shutil
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from depthlab import checkpoint
from depthlab.catalog import CatalogEntry
from depthlab.config import TrainSettings, from_dict
from depthlab.data.datasets import RandomBatches, SplitArrays, eval_batches, load_splits
from depthlab.data.remote import local_folder
from depthlab.data.transforms import AUGMENTATIONS
from depthlab.loop import (
    Evaluation,
    Progress,
    evaluate,
    fit,
    resolve_device,
    restore_rng,
    rng_state,
    score,
    seed_everything,
)
from depthlab.methods import METHODS, DataInfo
from depthlab.methods.protocol import FitsData
from depthlab.nn.optim import Stepper

EVAL_BATCH = 32
STATE_FILE = "trial_state.pt"
KEEP_STATES = 2  # the newest and one before it, in case the newest is damaged


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


def local_data(plan: TrialPlan) -> TrialPlan:
    """`plan` with its datasets in local folders: one on object storage is fetched once per
    node (`remote.local_copy`), so loading and the knn cache see a local path."""
    extras = tuple({**extra, "data_path": str(local_folder(extra["data_path"]))}
                   for extra in plan.extra_evals)
    return replace(plan, data_path=str(local_folder(plan.data_path)), extra_evals=extras)


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


@dataclass(frozen=True)
class SavedState:
    """A trial state read back from disk (checksum verified): where, and what it holds."""

    path: Path
    payload: dict[str, Any]

    @property
    def step(self) -> int:
        return self.payload["step"]


def state_folder(state_dir: str | Path, step: int) -> Path:
    """The folder of the state saved at `step`: names sort by step."""
    return Path(state_dir) / f"step-{step:09d}"


def saved_states(state_dir: str | Path) -> list[Path]:
    """The state folders under `state_dir`, newest first (none: an empty list)."""
    folder = Path(state_dir)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.glob("step-*") if p.is_dir()), key=lambda p: p.name,
                  reverse=True)


def latest_state(candidates: Iterable[str | Path]) -> SavedState | None:
    """The first of `candidates` (state folders or files, newest first) whose checksum and
    contents check out; each damaged one is skipped with a warning naming it. None: start
    from scratch."""
    skipped = []
    for candidate in candidates:
        path = Path(candidate)
        path = path / STATE_FILE if path.is_dir() else path
        try:
            payload = checkpoint.load(path, require_checksum=True)
            if not isinstance(payload.get("resume"), dict):
                raise ValueError(f"checkpoint {path} holds no training progress (not a "
                                 "trial state)")
        except (ValueError, FileNotFoundError) as error:
            warnings.warn(f"not resuming from {path}: {error}", stacklevel=2)
            skipped.append(str(path))
            continue
        return SavedState(path, payload)
    if skipped:
        warnings.warn(f"no usable trial state among {skipped}: starting from step 0",
                      stacklevel=2)
    return None


def _save_state(state_dir: Path, plan: TrialPlan, method, batches: RandomBatches,
                progress: Progress) -> None:
    """Everything the trial needs to continue after `progress.step`; then only the newest
    KEEP_STATES folders stay."""
    info = DataInfo(**plan.data)
    checkpoint.save(state_folder(state_dir, progress.step) / STATE_FILE, method=plan.method,
                    config=plan.method_config, settings=plan.settings,
                    dataset=f"{info.name}@{info.version}", state=method.state_dict(),
                    step=progress.step,
                    resume={"best": progress.best, "last": progress.last,
                            "rng": rng_state(batches.generator)})
    for old in saved_states(state_dir)[KEEP_STATES:]:
        shutil.rmtree(old, ignore_errors=True)


def _restore(saved: SavedState, plan: TrialPlan, method, batches: RandomBatches,
             settings: TrainSettings, rank: int) -> Progress:
    """Put a saved state back into the method and the RNGs; the progress to continue from."""
    payload = saved.payload
    if payload["method"] != plan.method:
        raise ValueError(f"checkpoint {saved.path} is a {payload['method']!r} state; this "
                         f"trial trains {plan.method!r}")
    method.load_state_dict(payload["state"])
    resume = payload["resume"]
    if rank == 0:  # the state holds rank 0's streams
        restore_rng(resume["rng"], batches.generator)
    else:  # other ranks draw fresh streams, not a replay of their first steps
        seed = settings.seed + rank + 1_000_003 * saved.step
        seed_everything(seed)
        batches.generator.manual_seed(seed)
    return Progress(saved.step, dict(resume["best"]), dict(resume["last"]))


def train_trial(plan: TrialPlan, report: Callable[..., None], rank: int = 0, *,
                state_dir: str | Path | None = None, resume: SavedState | None = None) -> Any:
    """Load data, build the method, give it the training split if it wants it whole
    (`FitsData`), run the loop.

    `report(method, step, metrics, evaluation, improved)` is the loop's reporter
    with the method in front, so a reporter can save its weights. With `state_dir`, every
    evaluation first saves the whole trial state to `state_folder(state_dir, step)` (so the
    reporter can hand that folder on); `resume` (see `latest_state`) continues after its
    step with its weights, optimizer states, best-so-far and RNG streams.
    """
    settings = from_dict(TrainSettings, plan.settings)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    plan = local_data(plan)
    seed_everything(settings.seed + rank)
    device = resolve_device(settings.device)
    config = from_dict(METHODS.get_or_raise(plan.method).Config, plan.method_config)
    rgb, depth = training_splits(plan)
    batches = training_batches(rgb, depth, config, settings.seed + rank)
    method, _, _ = build_method(plan, device, Stepper(settings.grad_clip), batches.samples)
    if isinstance(method, FitsData):  # e.g. paper 003's retrieval index, built (or read) once
        method.fit_data(rgb, Path(plan.data_path) / "cache")  # inside the build: dies with it
    start = _restore(resume, plan, method, batches, settings, rank) if resume else None
    save = partial(_save_state, Path(state_dir), plan, method, batches) if state_dir else None
    run_eval = evaluator(plan, method, settings.eval_samples)
    return fit(method, batches, run_eval, settings, partial(report, method), plan.primary,
               start, save)


def constant_baseline(plan: TrialPlan) -> dict[str, float]:
    """Scores of the trivial predictor (the training depth mean everywhere) on every
    evaluation set, under the same protocol as the trials."""
    plan = local_data(plan)
    mean = float(np.nanmean(load_splits(plan.data_path, plan.train_splits[1:]).depth))
    out = {}
    for prefix, truth, info in evaluation_sets(plan, plan.settings["eval_samples"]):
        depth = torch.from_numpy(truth.depth)
        scores = score(torch.full_like(depth, mean), depth, info)
        out.update({f"baseline/{prefix}constant_{k}": v for k, v in scores.items()})
    return out
