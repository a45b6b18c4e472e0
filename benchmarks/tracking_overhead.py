"""What does MLflow tracking cost a trial? Time spent in depthlab.tracking as a share of a
trial's wall time, with the embedded sqlite store and with a real `mlflow server`.

One trial of studies/wgan_surface.py (its first fixed point, the paper's best row, at the
chosen budget) runs in this process through `trial.train_trial`, with the tracking a study
worker does (`study._train_worker`): the child run opened with its params and tags
(`tracking.open_trial_run`, the study's tags as the driver looked them up), the trial
config as an artifact, `study.log_evaluation` and a `flush` per evaluation (on a new best the
checkpoint and depth panel, then one batched write of the metrics and the best's tags), and
the run ended as the driver ends it. Every one of these calls is timed; the checkpoint file
and panel written for a new best count as tracking too (they exist only to be logged; the
panel's drawing is timed apart). Importing mlflow, which each trial's fresh worker process
pays once, is measured at the start (after `depthlab.study`, which every worker imports
anyway, and the worker's `study._freeze_imported`, as `tracking.import_mlflow` does it)
and added to each trial.
Once per study, not counted: creating the database, the experiment and the parent run;
starting the server. These run in a separate driver process, as in a study, so this
process's MLflow client starts cold, as each worker's does. That process also logs one
earlier trial's writes: the store has served a trial before the measured one, as it has
for every trial of a study but its first.

The same trial runs twice, against:
1. sqlite: `sqlite:///OUT/mlflow.db`, artifacts in a local folder (the default).
2. server: `mlflow server` started here on 127.0.0.1 and a free port (sqlite behind it,
   artifacts served by it), stopped by its process id at the end.

Goal: tracking <= 2 % of trial time for both.

    python benchmarks/tracking_overhead.py                  # default budget (100 steps)
    python benchmarks/tracking_overhead.py --steps 40       # shorter trials
    python benchmarks/tracking_overhead.py --tiny           # CI: smoke budget, 2 steps
"""

import argparse
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest.mock import patch

import torch

STUDY_SCRIPT = Path(__file__).resolve().parents[1] / "studies" / "wgan_surface.py"
SERVER_START_TIMEOUT = 240  # seconds; ~17 s on a quiet machine (RAY_NOTES), more under load
MLFLOW_IMPORT = "import mlflow (each trial's fresh worker process)"
BEST_FILES = "log_evaluation rest (best checkpoint + digest files)"
PANEL = "depth panel (PNG)"  # drawn once per new best


class Clock:
    """Seconds per label, exclusive: a timed call inside another is not counted twice."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._nested: list[float] = []

    @contextmanager
    def __call__(self, label: str) -> Iterator[None]:
        self._nested.append(0.0)
        began = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - began
            inner = self._nested.pop()
            self.seconds[label] += spent - inner
            self.calls[label] += 1
            if self._nested:
                self._nested[-1] += spent

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


class TimedRun:
    """A tracking.TrialRun whose writes are timed (what the report and _log_best call)."""

    def __init__(self, run, clock: Clock):
        self.run, self.clock, self.run_id = run, clock, run.run_id

    def log_metrics(self, step: int, metrics: dict[str, float],
                    tags: dict[str, str] | None = None) -> None:
        with self.clock("log_metrics (per evaluation; a new best's tags with them)"):
            self.run.log_metrics(step, metrics, tags)

    def log_artifact(self, path, folder: str | None = None) -> None:
        with self.clock("log_artifact (checkpoint, digest, panel)"):
            self.run.log_artifact(path, folder)

    def log_dict(self, values: dict[str, Any], name: str) -> None:
        with self.clock("log_dict (config.json)"):
            self.run.log_dict(values, name)

    def flush(self):
        with self.clock("flush (per evaluation)"):
            return self.run.flush()


# ---------------------------------------------------------------- setup

def load_spec():
    """The study spec of studies/wgan_surface.py (a script, not an installed module)."""
    module_spec = importlib.util.spec_from_file_location("wgan_surface", STUDY_SCRIPT)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.SPEC


def trial_plan(budget_name: str, steps: int | None, data_dir: Path | None):
    """The plan of the study's first fixed point at the budget, as its trial gets it."""
    from depthlab.catalog import load_entry
    from depthlab.data.shards import prepare
    from depthlab.study import plan_for

    spec = load_spec()
    budget = spec.budgets[budget_name]
    if steps:
        budget = replace(budget, steps=steps, eval_every=min(budget.eval_every, steps))
    entry = load_entry(spec.dataset)
    path = prepare(entry, size=budget.image_size, data_dir=data_dir,
                   counts=budget.data_counts or None, progress=False)
    plan = replace(plan_for(spec, budget, path, entry, seed=0), data_path=str(path))
    point = spec.points_to_evaluate[0]
    part = lambda prefix: {k.split("/", 1)[1]: v for k, v in point.items()  # noqa: E731
                           if k.startswith(prefix)}
    plan = replace(plan, method_config={**plan.method_config, **part("method/")},
                   settings={**plan.settings, **part("train/")})
    return spec, budget, plan


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(out: Path) -> tuple[subprocess.Popen, str, float]:
    """`mlflow server` on 127.0.0.1 (sqlite behind it, served artifacts); its URL once
    /health answers, and how long that took."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{out / 'server.db'}",
               "--artifacts-destination", str(out / "server-artifacts")]
    began = time.perf_counter()
    # Its own session: the server's workers are stopped with it, by its process id.
    with open(out / "server.log", "w") as log:  # the server keeps its own descriptor
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    while time.perf_counter() - began < SERVER_START_TIMEOUT:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited ({server.returncode}): see "
                               f"{out / 'server.log'}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return server, url, time.perf_counter() - began
        except OSError:
            time.sleep(0.5)
    stop_server(server)
    raise RuntimeError(f"mlflow server gave no /health within {SERVER_START_TIMEOUT} s")


def stop_server(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (ours: started with its own session)."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


# ---------------------------------------------------------------- one tracked trial

# The study driver's part, in its own process as in a study (this process's MLflow client
# then starts cold, as a fresh worker's does): the experiment and parent run, then one
# earlier trial's writes, so the store has served a trial before, as it has for every
# trial but a study's first.
DRIVER_SCRIPT = """
import json, sys
from pathlib import Path
from depthlab import tracking
a = json.load(sys.stdin)
study = tracking.start_study(a["uri"], a["experiment"], Path(a["artifact_root"]), "bench",
                             {"method": "bench"}, {"depthlab.study": "bench"})
tags = tracking.study_tags(study)  # looked up once, by the driver
run, _ = tracking.open_trial_run(study, "warm-up", "warm-up", {"method": {"lr": 1}}, tags)
Path(a["file"]).write_bytes(bytes(100_000))
run.log_artifact(a["file"], "best")
run.log_metrics(0, {"warm_up": 1.0}, {"depthlab.best_step": "0"})
run.flush()
tracking.end_run(a["uri"], run.run_id, "FINISHED")
print(json.dumps({"study": study.__dict__, "tags": tags}))
"""


def study_in_driver(uri: str, experiment: str, artifact_root: Path, workdir: Path):
    """The study's StudyRun and its tags for trials, from a driver process that also logged
    one trial."""
    from depthlab.tracking import StudyRun

    workdir.mkdir(parents=True, exist_ok=True)
    args = {"uri": uri, "experiment": experiment, "artifact_root": str(artifact_root),
            "file": str(workdir / "warm-up.bin")}
    done = subprocess.run([sys.executable, "-c", DRIVER_SCRIPT], input=json.dumps(args),
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the study driver's process failed:\n{done.stderr[-3000:]}")
    made = json.loads(done.stdout.strip().splitlines()[-1])
    return StudyRun(**made["study"]), made["tags"]


def tracked_trial(plan, uri: str, artifact_root: Path, label: str, workdir: Path,
                  import_seconds: float) -> dict[str, Any]:
    """One trial with a study worker's tracking, every tracking call timed."""
    from depthlab import study as study_module
    from depthlab import tracking
    from depthlab.trial import train_trial

    study, study_tags = study_in_driver(uri, f"tracking-overhead-{label}", artifact_root,
                                        workdir)
    clock = Clock()
    clock.seconds[MLFLOW_IMPORT] = import_seconds
    clock.calls[MLFLOW_IMPORT] = 1
    params = {"method": plan.method_config, "train": plan.settings,
              "dataset": f"{plan.data['name']}@{plan.data['version']}"}
    config = {"plan": plan.__dict__, "study": study.__dict__, "trial_id": "bench_00000",
              "run_name": f"{plan.method} #0"}
    evaluations = 0
    began = time.perf_counter()
    with clock("open_trial_run (create run, params, tags)"):
        run, _ = tracking.open_trial_run(study, config["trial_id"], config["run_name"],
                                         params, study_tags)
    timed = TimedRun(run, clock)
    timed.log_dict(config, "config.json")

    def report(method, step, metrics, evaluation, improved) -> None:
        nonlocal evaluations
        evaluations += 1
        with clock(BEST_FILES):
            study_module.log_evaluation(timed, plan, method, step, metrics, evaluation,
                                        improved, workdir)
        timed.flush()

    draw = study_module.depth_panel

    def timed_panel(*args, **kwargs):  # the panel's share of _log_best, timed apart
        with clock(PANEL):
            return draw(*args, **kwargs)

    with patch.object(study_module, "depth_panel", timed_panel):
        train_trial(plan, report, state_dir=workdir / "states")
    with clock("end_run (driver)"):
        tracking.end_run(uri, run.run_id, "FINISHED")
    wall = time.perf_counter() - began + import_seconds
    return {"label": label, "wall": wall, "clock": clock, "evaluations": evaluations,
            "bests": clock.calls.get(PANEL, 0), "uri": uri}


# ---------------------------------------------------------------- printing

def print_trial(result: dict[str, Any]) -> None:
    clock, wall = result["clock"], result["wall"]
    print(f"\n{result['label']} ({result['uri']}): trial {wall:.1f} s, "
          f"{result['evaluations']} evaluations, {result['bests']} new bests")
    for label, seconds in sorted(clock.seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {label:<52s} {clock.calls[label]:3d} x  {seconds:7.3f} s  "
              f"{seconds / wall:6.2%}")
    mlflow_only = (clock.total - clock.seconds.get(BEST_FILES, 0.0)
                   - clock.seconds.get(PANEL, 0.0))
    print(f"  {'tracking in all':<52s}        {clock.total:7.3f} s  {clock.total / wall:6.2%}"
          f"   (MLflow import + calls alone {mlflow_only / wall:.2%})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="default",
                        help="budget of studies/wgan_surface.py (default: default)")
    parser.add_argument("--steps", type=int, help="override the budget's steps")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, help="stores, server and trial files "
                        "(default: a temporary folder, removed at the end)")
    parser.add_argument("--data", type=Path, help="data directory (default: $DEPTHLAB_DATA "
                        "or ~/.cache/depthlab)")
    parser.add_argument("--tiny", action="store_true",
                        help="CI: the smoke budget, 2 steps")
    args = parser.parse_args(argv)
    if args.tiny:
        args.budget, args.steps = "smoke", args.steps or 2
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")

    # What each fresh worker process pays once, on top of what it imports anyway (the
    # worker function lives in depthlab.study, which brings torch and Ray), after the
    # worker's first step (study._freeze_imported).
    from depthlab.study import _freeze_imported
    from depthlab.tracking import import_mlflow

    _freeze_imported()
    began = time.perf_counter()
    import_mlflow()
    import_seconds = time.perf_counter() - began

    spec, budget, plan = trial_plan(args.budget, args.steps, args.data)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="tracking_overhead-") as scratch:
        out = (args.out or Path(scratch)).resolve()
        out.mkdir(parents=True, exist_ok=True)
        print(f"{spec.name} {budget.name}: {plan.settings['steps']} steps, eval every "
              f"{plan.settings['eval_every']}, {budget.image_size[0]}x{budget.image_size[1]}, "
              f"{args.threads} torch thread(s); import mlflow {import_seconds:.2f} s")
        results = [tracked_trial(plan, f"sqlite:///{out / 'mlflow.db'}", out / "mlartifacts",
                                 "sqlite", out / "work-sqlite", import_seconds)]
        server, url, started = start_server(out)
        try:
            print(f"mlflow server {url} answered /health after {started:.1f} s", flush=True)
            results.append(tracked_trial(plan, url, out / "unused", "server",
                                         out / "work-server", import_seconds))
        finally:
            stop_server(server)
        for result in results:
            print_trial(result)
    if "IPython" in sys.modules:  # a clean install of depthlab has no IPython
        print("(IPython is installed here: MLflow imports it on a process's first REST request, "
              "to check for a Databricks notebook; it is part of the server's open_trial_run)")
    share = {r["label"]: r["clock"].total / r["wall"] for r in results}
    print(f"(load average {' '.join(f'{x:.1f}' for x in os.getloadavg())})")
    print(f"\ntracking_overhead: sqlite {share['sqlite']:.1%}, server {share['server']:.1%} "
          f"of trial time (goal <= 2 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
