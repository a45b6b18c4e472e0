"""Picking the best: a study's trial runs ranked from MLflow, the best one's model logged
and registered, and the best run of every study on the same data and metric side by side.

Only finished trials count: FAILED (diverged ones included), KILLED and still RUNNING
runs, and runs without a finite value of the metric, are skipped and counted.
"""

import argparse
import math
import shutil
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from depthlab import checkpoint, models, tracking
from depthlab.loop import mode_for
from depthlab.study import leaderboard, print_leaderboard, varied_params

SHOWN_METRICS = 6  # leaderboard columns: the ranking metric and the first other best/ ones


@dataclass(frozen=True)
class Ranking:
    """A study's finished trial runs, best first, by `metric` in `mode`."""

    metric: str
    mode: str
    rows: list[dict[str, Any]]  # study.leaderboard rows, plus "parent" (the parent run's id)
    skipped: Counter = field(default_factory=Counter)  # reason → runs


def resolve_metric(name: str, available: set[str]) -> str:
    """A metric the runs hold: `name` itself, `best/<name>`, or the one `best/<name>_<unit>`
    (`rmse` → `best/rmse_m`); else a ValueError listing the best/ metrics."""
    if name in available or not available:
        return name
    if f"best/{name}" in available:
        return f"best/{name}"
    unit = [k for k in available if k.startswith(f"best/{name}_")
            and "_" not in k[len(f"best/{name}_"):]]
    if len(unit) == 1:
        return unit[0]
    known = ", ".join(sorted(k for k in available if k.startswith("best/")))
    raise ValueError(f"--metric {name!r}: no trial run has it; their metrics: {known}")


def _skip_reason(row: dict[str, Any], metric: str) -> str | None:
    if row["tags"].get("depthlab.failure") == "diverged":
        return "diverged"
    if row["status"] != "FINISHED":
        return row["status"].lower()
    if row["value"] is None or not math.isfinite(row["value"]):
        return f"without {metric}"
    return None


def rank(uri: str, parents: list[dict[str, Any]], metric: str | None = None,
         mode: str | None = None) -> Ranking:
    """The trial runs of these parent runs (one study), best first. The metric defaults to
    the latest parent's `metric` param, the mode to its `mode` param (else by the name)."""
    latest = parents[0]["params"]
    recorded = latest.get("metric")
    if metric is None and recorded is None:
        raise ValueError(f"study run {parents[0]['run_id']} records no metric param; "
                         "pass --metric")
    wanted = metric or recorded
    rows = []
    for parent in parents:
        study = tracking.StudyRun(uri, parent["experiment_id"], parent["run_id"])
        rows += [dict(r, parent=parent["run_id"])
                 for r in leaderboard(uri, study, wanted, mode or "min")]
    key = wanted
    if not any(r["value"] is not None for r in rows):  # a short name: `rmse` → best/rmse_m
        key = resolve_metric(wanted, {k for r in rows for k in r["metrics"]})
        for row in rows:
            row["value"] = row["metrics"].get(key)
    if mode is None:
        mode = latest.get("mode") if key == recorded and latest.get("mode") else mode_for(key)
    if mode not in ("min", "max"):
        raise ValueError(f"mode {mode!r}: expected 'min' or 'max'")
    skipped: Counter = Counter()
    ranked = []
    for row in rows:
        reason = _skip_reason(row, key)
        if reason:
            skipped[reason] += 1
        else:
            ranked.append(row)
    ranked.sort(key=lambda r: r["value"] if mode == "min" else -r["value"])
    return Ranking(key, mode, ranked, skipped)


def shown_metrics(ranking: Ranking) -> list[str]:
    """The ranking metric first, then the other best/ metrics, at most SHOWN_METRICS."""
    others = sorted({k for r in ranking.rows for k in r["metrics"] if k.startswith("best/")}
                    - {ranking.metric})
    return [ranking.metric, *others][:SHOWN_METRICS]


def example_input(model: models.DepthModel) -> np.ndarray:
    """One (1, 3, H, W) float32 image in [0, 1] at the model's input size (fixed seed)."""
    h, w = model.input_size
    return np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)


def register(uri: str, name: str, run_id: str) -> str:
    """Log the run's best checkpoint as an MLflow PyTorch model in that run, with the
    checkpoint beside it, and register it as `name`; the new version's URI."""
    with tempfile.TemporaryDirectory(prefix="depthlab-register-") as tmp:
        path, _ = tracking.fetch_checkpoint(uri, f"runs:/{run_id}/checkpoint/best.pt",
                                            Path(tmp), models.CHECKPOINT_NAME)
        model = models.load(path)  # proves the checkpoint rebuilds before anything is logged
        named = Path(tmp) / "extra" / models.CHECKPOINT_NAME
        named.parent.mkdir()
        shutil.copyfile(path, named)
        sidecar = checkpoint.digest_path(named)  # loading checks the copy against it
        sidecar.write_text(f"{checkpoint.file_digest(named)}  {named.name}\n")
        return tracking.log_model(uri, run_id, model, [named, sidecar], example_input(model),
                                  name)


def _note(ranking: Ranking, runs: int) -> str:
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(ranking.skipped.items()))
    return (f"{len(ranking.rows)} of {runs} trial runs ranked by {ranking.metric} "
            f"({ranking.mode})" + (f"; skipped: {skipped}" if skipped else ""))


def best_study(args: argparse.Namespace) -> int:
    """Print a study's leaderboard and best run; with --register, register its model."""
    uri = tracking.resolve_uri(args.tracking_uri)
    latest = args.run_id in (None, "latest")
    found = tracking.find_study(uri, args.study, None if latest else args.run_id)
    parents = [p for p in tracking.parent_runs(uri, args.study)
               if (args.run_id is None or p["run_id"] == found.parent_run_id)]
    ranking = rank(uri, parents, args.metric, args.mode)
    runs = len(ranking.rows) + sum(ranking.skipped.values())
    which = (f"{len(parents)} study runs" if len(parents) > 1
             else f"study run {parents[0]['run_id']}")
    print(f"{args.study} ({which}): {_note(ranking, runs)}")
    if not ranking.rows:
        raise ValueError(f"study {args.study!r} has no finished trial run with a finite "
                         f"{ranking.metric}")
    board = ranking.rows[:args.top]
    print_leaderboard(board, shown_metrics(ranking), varied_params(ranking.rows),
                      show_run=True)
    best = ranking.rows[0]
    print(f"best run: {best['run_id']} ({best['name']}), {ranking.metric} = "
          f"{best['value']:.6g}")
    if args.register:
        version = register(uri, args.study, best["run_id"])
        print(f"registered {version}\n  predict with: depthlab predict {version} IMAGES... "
              "--out DIR")
    return 0


def best_of_all(uri: str, metric: str | None = None) -> dict[tuple[str, str, str], list]:
    """(dataset, metric, mode) → [(study, its best row, its parent's params)], best first:
    every study's best trial run among its parent runs on that dataset with that metric
    (the parents' own, or `metric` for all)."""
    groups: dict[tuple[str, str, str], list] = defaultdict(list)
    for name in tracking.experiment_names(uri):
        parents = tracking.parent_runs(uri, name)
        by_key = defaultdict(list)
        for parent in parents:
            by_key[(parent["params"].get("dataset", "?"),
                    metric or parent["params"].get("metric"))].append(parent)
        for (dataset, wanted), same in by_key.items():
            if wanted is None:
                continue
            try:
                ranking = rank(uri, same, wanted)
            except ValueError:  # this study lacks the metric: it ranks elsewhere or not
                continue
            if ranking.rows:
                params = next(p["params"] for p in same
                              if p["run_id"] == ranking.rows[0]["parent"])
                groups[(dataset, ranking.metric, ranking.mode)].append(
                    (name, ranking.rows[0], params))
    for (_, _, mode), entries in groups.items():
        entries.sort(key=lambda e: e[1]["value"] if mode == "min" else -e[1]["value"])
    return dict(groups)


def best_all(args: argparse.Namespace) -> int:
    """Rank the best run of every study that shares a dataset and metric."""
    uri = tracking.resolve_uri(args.tracking_uri)
    groups = best_of_all(uri, args.metric)
    if not groups:
        raise ValueError(f"no study in {tracking.shown_uri(uri)} has a finished trial run"
                         + (f" with {args.metric}" if args.metric else ""))
    for (dataset, metric, mode), entries in sorted(groups.items()):
        print(f"\n{dataset}, {metric} ({mode}): {len(entries)} "
              f"stud{'ies' if len(entries) > 1 else 'y'}")
        lines = [["#", "study", "run", "method", "budget", metric]]
        for i, (study, row, params) in enumerate(entries, 1):
            lines.append([str(i), study, row["run_id"][:8], params.get("method", "?"),
                          params.get("budget", "?"), f"{row['value']:.4g}"])
        widths = [max(len(line[c]) for line in lines) for c in range(len(lines[0]))]
        for line in lines:
            print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    return 0


def best_command(args: argparse.Namespace) -> int:
    """`depthlab best`: one study, or --all."""
    if args.all:
        if args.study or args.register or args.run_id:
            raise ValueError("--all ranks every study: give no STUDY, --register or --run-id")
        return best_all(args)
    if not args.study:
        raise ValueError("name a STUDY (its MLflow experiment), or pass --all")
    if args.top < 1:
        raise ValueError(f"--top {args.top}: expected >= 1")
    return best_study(args)
