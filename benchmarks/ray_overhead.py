"""Where a depthlab trial's time goes: the same trials run by a plain PyTorch loop and by
depthlab (Ray Train inside Ray Tune, Optuna, MLflow), next to the bare stack's floor.

Measured in one process, on the same prepared data, trial by trial:

1. plain: `depthlab.study.train_trial(plan, no-op report)` in this process with one
   torch thread (a Ray Train worker with 1 CPU gets one thread).
2. depthlab: `run_study` on the same configurations (the first N of the study's
   `points_to_evaluate`), one trial at a time (`max_concurrent_trials=1`; Ray started
   by depthlab's `_start_ray`), with its own MLflow sqlite DB and runs folder.
   ASHA's only rung is moved to the last step, so no trial stops early.
3. floor: a Tune function trainable that fits a `TorchTrainer` whose loop only calls
   `ray.train.report` once, N times one after another, in the same Ray session.

It prints per-trial seconds split by phase (launch, start to first report, between
reports, after the last report), the wall-time ratio depthlab / plain (goal <= 1.10),
the fixed cost per trial, (depthlab - plain) / N, next to the floor, and one-off costs
measured on the side (driver imports, Ray start, data prepare, MLflow setup, a fresh
process's imports and MLflow writes, one best-checkpoint log). The fixed cost is paid
once per trial, so the ratio is about 1 + fixed / trial length: the summary line says
how long trials must be for 1.10.

    python benchmarks/ray_overhead.py                      # default budget, 2 trials
    python benchmarks/ray_overhead.py --budget smoke       # the whole path in ~2 min
    python benchmarks/ray_overhead.py --steps 40           # default budget, shorter trials
    python benchmarks/ray_overhead.py --steps 300          # longer trials (~4 min each)

Ray uses the project's defaults (token auth, `RAY_ENV`); the data is built under --out
unless --data points at an existing cache.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from mlflow.tracking import MlflowClient

from depthlab import tracking
from depthlab.catalog import load_entry
from depthlab.config import Budget
from depthlab.data.shards import prepare
from depthlab.study import (
    DRIVER_RESOURCE,
    StudySpec,
    TrialPlan,
    _start_ray,
    plan_for,
    run_study,
    train_trial,
)

REPO = Path(__file__).resolve().parents[1]
STUDY_SCRIPT = REPO / "studies" / "wgan_surface.py"
SEED = 0
RAY_START = "Ray start (depthlab's _start_ray)"
IMPORT_KEY = "import depthlab.study (after torch)"
RUN_KEY = "MLflow TrialRun (first client, run, params)"
BEST_KEY = "log_evaluation of a new best, second call (3 artifacts, metrics + tags)"

# Run in a fresh interpreter (like a Ray worker): imports, MLflow writes, one best-log.
FRESH_PROCESS_PROBE = """
import json, sys, time
from pathlib import Path
out = {}
t = time.perf_counter(); import torch; out["import torch"] = time.perf_counter() - t
t = time.perf_counter(); import depthlab.study as s
out["import depthlab.study (after torch)"] = time.perf_counter() - t
s._freeze_imported()  # as a worker does first
from depthlab import tracking
args = json.load(sys.stdin)
torch.set_num_threads(1)
plan, study = s.TrialPlan(**args["plan"]), tracking.StudyRun(**args["study"])
t = time.perf_counter(); run = tracking.TrialRun(study, "probe", {"method": plan.method_config})
out["MLflow TrialRun (first client, run, params)"] = time.perf_counter() - t
t = time.perf_counter(); run.log_metrics(0, {"probe/a": 1.0, "probe/b": 2.0})
out["MLflow log_metrics (one report)"] = time.perf_counter() - t
from depthlab import trial
from depthlab.nn.optim import Stepper
method, _, _ = trial.build_method(plan, torch.device("cpu"), Stepper(0.0))
evaluation = trial.evaluator(plan, method, plan.settings["eval_samples"])()
for call in ("first", "second"):
    t = time.perf_counter()
    s.log_evaluation(run, plan, method, 0, evaluation.metrics, evaluation, True,
                     Path(args["workdir"]))
    out[f"log_evaluation of a new best, {call} call (3 artifacts, metrics + tags)"] = (
        time.perf_counter() - t)
tracking.end_run(study.tracking_uri, run.run_id, "FINISHED")
print(json.dumps(out))
"""


# ---------------------------------------------------------------- setup

def load_spec() -> StudySpec:
    """The study spec of studies/wgan_surface.py (not an installed module)."""
    module_spec = importlib.util.spec_from_file_location("wgan_surface", STUDY_SCRIPT)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.SPEC


def bench_spec(spec: StudySpec, budget_name: str, trials: int,
               steps: int | None) -> tuple[StudySpec, Budget]:
    """The spec limited to its first `trials` points, with a budget ASHA cannot cut short."""
    points = spec.points_to_evaluate[:trials]
    if len(points) < trials:
        raise SystemExit(f"--trials {trials}: the study has only {len(points)} fixed points")
    budget = spec.budgets[budget_name]
    if steps:
        budget = replace(budget, steps=steps, eval_every=min(budget.eval_every, steps))
    budget = replace(budget, num_trials=trials, grace_fraction=1.0)  # only rung: the last step
    return replace(spec, budgets={budget_name: budget}, points_to_evaluate=points), budget


def point_plan(plan: TrialPlan, point: dict[str, Any]) -> TrialPlan:
    """A fixed point ("method/x", "train/y" keys) merged into the plan, as a trial sees it."""
    part = lambda prefix: {k.split("/", 1)[1]: v for k, v in point.items()  # noqa: E731
                           if k.startswith(prefix)}
    return replace(plan, method_config={**plan.method_config, **part("method/")},
                   settings={**plan.settings, **part("train/")})


def label(values: dict[str, Any]) -> str:
    return "/".join(str(values.get(k)) for k in ("critic", "generator", "reconstruction"))


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - started


# ---------------------------------------------------------------- (a) plain loop

def plain_trial(plan: TrialPlan) -> dict[str, Any]:
    """One trial in this process; the report only notes when it was called."""
    calls: list[tuple[float, bool]] = []
    started = time.time()
    train_trial(plan, lambda method, step, metrics, evaluation, improved:
                calls.append((time.time(), improved)))
    ended = time.time()
    marks = [t for t, _ in calls]
    return {"label": label(plan.method_config), "total": ended - started,
            "launch": 0.0, "first": marks[0] - started, "loop": marks[-1] - marks[0],
            "tail": ended - marks[-1], "reports": len(calls),
            "improved": sum(improved for _, improved in calls)}


# ---------------------------------------------------------------- (c) the bare stack's floor

def _empty_loop(config: dict[str, Any]) -> None:
    """The floor's Train loop: one report, saying how many threads a 1-CPU worker gets."""
    import ray.train

    ray.train.report({"threads": torch.get_num_threads()})


def _floor_driver(config: dict[str, Any]) -> None:
    """Tune function trainable: an empty TorchTrainer.fit, timed (the shape of depthlab's)."""
    import ray.train
    from ray import tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    started = time.time()
    trainer = TorchTrainer(
        _empty_loop,
        scaling_config=ray.train.ScalingConfig(num_workers=1,
                                               resources_per_worker={"CPU": 1, "GPU": 0}),
        run_config=ray.train.RunConfig(name=f"floor-{tune.get_context().get_trial_id()}",
                                       storage_path=config["storage"],
                                       callbacks=[TuneReportCallback()]))
    trainer.fit()
    tune.report({"fit_s": time.time() - started})


def run_floor(trials: int, storage: Path) -> dict[str, Any]:
    """N empty-fit trials, one at a time, in the running Ray session."""
    from ray import tune

    tuner = tune.Tuner(
        tune.with_resources(_floor_driver, {"cpu": 0, DRIVER_RESOURCE: 1}),
        param_space={"storage": str(storage)},
        tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=1),
        run_config=tune.RunConfig(name="floor", storage_path=str(storage), verbose=0))
    results, wall = timed(tuner.fit)
    threads = {int(t) for r in results if r.metrics_dataframe is not None
               for t in r.metrics_dataframe.get("threads", []) if t == t}  # skip NaN
    return {"wall": wall, "fit_s": [r.metrics.get("fit_s", float("nan")) for r in results],
            "threads": sorted(threads), "errors": results.num_errors}


# ---------------------------------------------------------------- (b) depthlab

def run_depthlab(spec: StudySpec, budget: Budget, out: Path, data_dir: Path) -> dict[str, Any]:
    """run_study on the fixed points; per-trial phases from the MLflow child runs."""
    uri = f"sqlite:///{out / 'mlflow.db'}"
    called = time.time()
    outcome = run_study(spec, budget.name, tracking_uri=uri, data_dir=str(data_dir),
                        num_trials=budget.num_trials, seed=SEED, runs_dir=out / "runs",
                        max_concurrent_trials=1)
    returned = time.time()
    client = MlflowClient(uri)
    parent = client.get_run(outcome.study.parent_run_id).info
    children = sorted(tracking.child_runs(uri, outcome.study), key=lambda r: r.info.start_time)
    slot_start, trials = parent.start_time / 1000, []
    for run in children:
        start, end = run.info.start_time / 1000, (run.info.end_time or 0) / 1000
        marks = [m.timestamp / 1000 for m in sorted(
            client.get_metric_history(run.info.run_id, spec.metric), key=lambda m: m.step)]
        params = {k.split(".", 1)[1]: v for k, v in run.data.params.items()
                  if k.startswith("method.")}
        trials.append({"label": label(params), "params": params, "status": run.info.status,
                       "early": run.data.tags.get("depthlab.stopped_early"),
                       "total": end - slot_start, "launch": start - slot_start,
                       "first": marks[0] - start, "loop": marks[-1] - marks[0],
                       "tail": end - marks[-1], "reports": len(marks)})
        slot_start = end
    return {"status": outcome.status, "wall": returned - called, "trials": trials,
            "setup": parent.start_time / 1000 - called,
            "teardown": returned - slot_start if children else 0.0}


# ---------------------------------------------------------------- one-off costs on the side

def start_ray() -> float:
    """depthlab's own `_start_ray` (run_study reuses a Ray that is already running)."""
    started, seconds = timed(_start_ray, None)
    if not started:
        raise SystemExit("Ray was already initialised in this process")
    return seconds


def probe_mlflow_setup(out: Path) -> tuple[tracking.StudyRun, float]:
    """A new sqlite DB, experiment and parent run: what every study pays once."""
    uri = f"sqlite:///{out / 'probe' / 'mlflow.db'}"
    (out / "probe").mkdir(parents=True, exist_ok=True)
    return timed(tracking.start_study, uri, "probe", out / "probe" / "mlartifacts", "probe",
                 {}, {})


def probe_fresh_process(plan: TrialPlan, study: tracking.StudyRun, out: Path) -> dict:
    """Costs a new Ray worker process pays in depthlab code (FRESH_PROCESS_PROBE)."""
    workdir = out / "probe" / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({"plan": plan.__dict__, "study": study.__dict__,
                          "workdir": str(workdir)})
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS_PROBE], input=payload,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        return {"probe failed": done.stderr[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def driver_imports() -> float:
    """What the study driver imports beyond this script (Tune, Train, Optuna)."""
    def load():
        import optuna  # noqa: F401
        import ray.train.torch  # noqa: F401
        import ray.tune  # noqa: F401
        from ray.tune.search.optuna import OptunaSearch  # noqa: F401
    return timed(load)[1]


# ---------------------------------------------------------------- printing

PHASES = [("launch", "launch (Tune actor, Train controller + worker group, imports, run)"),
          ("first", "start -> first report (data, model, step-0 eval)"),
          ("loop", "first -> last report (training, evals, logging, reports)"),
          ("tail", "after the last report (Train/Tune stop, run closed)"),
          ("total", "total")]


def print_trials(plain: list[dict], lab: list[dict]) -> None:
    print("\nper trial, seconds                                          plain  depthlab   extra")
    for i, (p, d) in enumerate(zip(plain, lab, strict=False), 1):
        same = "" if p["label"] == d["label"] else f"  (MISMATCH: depthlab ran {d['label']})"
        early = "  ASHA STOPPED IT EARLY" if d["early"] == "true" else ""
        print(f"trial {i}: {p['label']}, {p['reports']} reports, {p['improved']} new bests, "
              f"run {d['status']}{early}{same}")
        for key, text in PHASES:
            print(f"  {text:<56} {p[key]:6.1f}  {d[key]:8.1f}  {d[key] - p[key]:+6.1f}")
    print("(launch: from the previous run's end; trial 1 from the parent run's start, so it "
          "includes the Tuner's setup)")


def print_estimate(plain: list[dict], side: dict[str, Any]) -> None:
    """depthlab's own work per trial, from the side measurements (an estimate)."""
    imports = side.get(IMPORT_KEY, float("nan"))
    run = side.get(RUN_KEY, float("nan"))
    best = side.get(BEST_KEY, float("nan"))
    bests = sum(t["improved"] for t in plain) / len(plain)
    print(f"estimate of depthlab's own work per trial: depthlab.study imported in the Train "
          f"worker's fresh process {imports:.1f} + MLflow run {run:.1f} + {bests:.1f} new bests"
          f" x {best:.1f} = {imports + run + bests * best:.1f} s (plus one ray.train.report "
          f"per evaluation; the Tune actor imports only depthlab.trial_driver)")


def print_summary(args, plain, lab, floor, side) -> None:
    n = len(plain)
    plain_total = sum(t["total"] for t in plain)
    lab_total = side[RAY_START] + lab["wall"]
    tune_phase = sum(t["total"] for t in lab["trials"])
    fixed = (lab_total - plain_total) / n
    per_trial = (tune_phase - plain_total) / n
    floor_trial = floor["wall"] / n
    print(f"\n== {args.budget} budget, {n} trials x {lab['steps']} steps, one at a time ==")
    print(f"plain total      {plain_total:7.1f} s  (train_trial, 1 thread, no Ray)")
    print(f"depthlab total   {lab_total:7.1f} s  = Ray start {side[RAY_START]:.1f} + run_study "
          f"{lab['wall']:.1f} (setup {lab['setup']:.1f}, trials {tune_phase:.1f}, "
          f"teardown {lab['teardown']:.1f}); study {lab['status']}")
    print(f"wall-time ratio depthlab / plain: {lab_total / plain_total:.2f}  (goal <= 1.10)")
    print(f"fixed cost per trial, (depthlab - plain) / N: {fixed:6.1f} s")
    print(f"  of it per trial (trial slot - plain trial):  {per_trial:6.1f} s")
    print(f"  of it per study / N (Ray start, setup, teardown): {fixed - per_trial:6.1f} s")
    fits = ", ".join(f"{s:.1f}" for s in floor["fit_s"])
    print(f"bare stack floor per trial: {floor_trial:6.1f} s  (Tune trial + empty "
          f"TorchTrainer.fit; fit alone: {fits} s; worker torch threads {floor['threads']}"
          f"{'; ERRORS ' + str(floor['errors']) if floor['errors'] else ''})")
    print(f"depthlab beyond the floor: {fixed - floor_trial:6.1f} s per trial "
          f"({per_trial - floor_trial:.1f} s without the per-study share)")
    print_estimate(plain, side)
    print("\nmeasured on the side, seconds:")
    for key, value in side.items():
        print(f"  {key:<66} {value:6.2f}" if isinstance(value, float) else f"  {key}: {value}")
    print(f"\nload average before / after: {args.load_before} / "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}   (2 cores: other work skews this)")
    print(f"runs, MLflow DB and data: {args.out}")
    # The fixed cost is paid once per trial, so the ratio is about 1 + fixed / trial length.
    print(f"\nray_overhead: wall ratio {lab_total / plain_total:.2f} on {lab['steps']}-step "
          f"trials of {plain_total / n:.1f} s (goal <= 1.10); fixed cost {fixed:.1f} s per "
          f"trial, Ray's floor {floor_trial:.1f} s: 1.10 needs trials of {10 * fixed:.0f} s "
          f"or more")


# ---------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="default",
                        help="budget of studies/wgan_surface.py: smoke, default, paper "
                             "(default: default)")
    parser.add_argument("--trials", type=int, default=2,
                        help="trials N, the first N fixed points of the study (default: 2)")
    parser.add_argument("--steps", type=int, help="override the budget's steps (quick runs)")
    parser.add_argument("--out", type=Path, help="runs, MLflow DB and data (default: temp dir)")
    parser.add_argument("--data", type=Path,
                        help="data directory (default: OUT/data, leaving the user's cache)")
    args = parser.parse_args(argv)
    if args.trials < 1 or (args.steps is not None and args.steps < 1):
        parser.error("--trials and --steps must be >= 1")
    args.out = (args.out or Path(tempfile.mkdtemp(prefix="ray_overhead-"))).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    args.data = (args.data or args.out / "data").resolve()
    args.load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = load_spec()
    if args.budget not in spec.budgets:
        raise SystemExit(f"--budget {args.budget}: known {sorted(spec.budgets)}")
    spec, budget = bench_spec(spec, args.budget, args.trials, args.steps)
    side: dict[str, Any] = {}
    entry = load_entry(spec.dataset)
    data_path, side["data prepare (build into --data, or cache check)"] = timed(
        prepare, entry, size=budget.image_size, data_dir=args.data,
        counts=budget.data_counts or None, progress=False)
    plan = replace(plan_for(spec, budget, data_path, entry, SEED), data_path=str(data_path))
    plans = [point_plan(plan, point) for point in spec.points_to_evaluate]

    torch.set_num_threads(1)
    print(f"(a) plain: {len(plans)} trials of {budget.steps} steps", flush=True)
    plain = [plain_trial(p) for p in plans]
    study, side["MLflow setup (new sqlite DB, experiment, parent run)"] = probe_mlflow_setup(
        args.out)
    side.update(probe_fresh_process(plans[0], study, args.out))
    side["driver imports (Ray Tune, Train, Optuna)"] = driver_imports()

    import ray

    side[RAY_START] = start_ray()
    try:
        print("(c) floor: empty TorchTrainer.fit inside Tune", flush=True)
        floor = run_floor(len(plans), args.out / "floor")
        print("(b) depthlab: run_study", flush=True)
        lab = run_depthlab(spec, budget, args.out, args.data)
    finally:
        ray.shutdown()
    lab["steps"] = budget.steps
    print_trials(plain, lab["trials"])
    print_summary(args, plain, lab, floor, side)
    return 0 if lab["status"] == "FINISHED" else 1


if __name__ == "__main__":
    sys.exit(main())
