"""Ray, and only here: a trial's training under Ray Train, the study under Ray Tune with
Optuna (TPE) and ASHA, MLflow runs closed from the driver, and the leaderboard.

Shape (see RAY_NOTES): each Tune trial is a small function (the trial driver, in
trial_driver.py so that its Tune actor imports no training code, holding a custom
`trial_driver` resource instead of a CPU) that builds a `TorchTrainer`; its workers run
`_train_worker` here, which runs `train_trial` and reports through `TuneReportCallback`.
"""

import argparse
import dataclasses
import fcntl
import itertools
import json
import math
import os
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from depthlab import checkpoint, tracking
from depthlab.catalog import CatalogEntry, load_entry
from depthlab.config import Budget, TrainSettings, from_dict, to_dict
from depthlab.data.datasets import read_rows
from depthlab.data.shards import prepare
from depthlab.loop import Evaluation, mode_for
from depthlab.methods import METHODS, DataInfo
from depthlab.trial import (
    EvalSet,
    SavedState,
    TrialPlan,
    constant_baseline,
    data_info,
    latest_state,
    saved_states,
    state_folder,
    train_trial,
)
from depthlab.trial_driver import _freeze_imported, _note_pid, _trial_driver
from depthlab.viz import depth_panel

DRIVER_RESOURCE = "trial_driver"
DRIVER_RETRIES = 1  # trial-driver restarts per trial (Ray Tune FailureConfig)
RAY_ENV = {
    # A Train report otherwise blocks ~1.9 s on the controller's poll (RAY_NOTES).
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    # Tune's new console output prints a config box and a TensorBoard hint even at
    # verbose=0; the study prints its own progress lines and leaderboard.
    "RAY_AIR_NEW_OUTPUT": "0",
}


@dataclass(frozen=True)
class StudySpec:
    """What a study script declares: method + dataset + search space + metric + budgets."""

    name: str
    method: str
    dataset: str
    search_space: Callable[[Any], dict | None]  # module-level, define-by-run (Optuna)
    budgets: dict[str, Budget]
    metric: str
    mode: str = "min"
    points_to_evaluate: list[dict[str, Any]] = field(default_factory=list)
    train_splits: tuple[str, str] = ("train_rgb", "train_depth")  # one name twice: paired
    eval_split: str = "eval"
    description: str = ""
    # Used when `dataset`'s files are not given (no --source, no environment variable).
    fallback_dataset: str | None = None
    extra_evals: tuple["ExtraEval", ...] = ()
    shown_metrics: tuple[str, ...] = ()  # leaderboard columns (default: every best/ metric)


@dataclass(frozen=True)
class ExtraEval:
    """A further evaluation set scored at every evaluation as `label/<metric>`.

    Another protocol on the study's own data (paper 003's Make3D: DepthTransfer's 460×345,
    no cap, beside the catalog's C1): `dataset` None = the study's dataset as the study
    chose it (its fallback, --source and the budget's counts); `size` = (H, W) to prepare
    it at instead of the budget's image size, or "native" = the dataset's own size (its
    catalog default, or its reader's: Make3D's gives 460×345); `max_depth_m` = math.inf
    = no cap.
    """

    label: str
    dataset: str | None
    splits: tuple[str, ...]
    max_depth_m: float | None = None  # cap, when it should differ from the dataset's protocol
    size: tuple[int, int] | str | None = None


# The indoor frames of the developers' real bundle (7-Scenes, NYU v2 demo, Middlebury),
# scored with NYU's 10 m cap: how a model trained on rooms or NYU does on real cameras.
REAL_INDOOR = ExtraEval("real", "real-samples",
                        ("sevenscenes_redkitchen", "nyu_demo", "middlebury2014_q"),
                        max_depth_m=10.0)

# What the supervised NYU studies share: paired train/test splits of NYU v2, or the
# embedded rooms without its files, and a score on the real indoor frames.
NYU_PAIRED = dict(dataset="nyu-v2-labeled", fallback_dataset="synthetic-rooms",
                  extra_evals=(REAL_INDOOR,), train_splits=("train", "train"),
                  eval_split="test")
# Their leaderboard columns: the study's own test metrics and the last real-frame scores.
SUPERVISED_SHOWN = ("best/rmse_m", "best/abs_rel", "best/delta1", "eval/real/rmse_m",
                    "eval/real/abs_rel", "eval/real/delta1")


# ---------------------------------------------------------------- inside Ray workers

def _train_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: runs a trial; rank 0 writes the MLflow child run."""
    import ray.train

    _freeze_imported()

    rank = ray.train.get_context().get_world_rank()
    plan = TrialPlan(**config["plan"])
    study = tracking.StudyRun(**config["study"])
    params = {"method": plan.method_config, "train": plan.settings,
              "dataset": f"{plan.data['name']}@{plan.data['version']}"}
    _note_pid("worker", config["trial_id"], rank)
    resume, warned = _resume_point(ray.train.get_checkpoint())  # every rank: the same state
    # A finished trial that Tune runs again (its driver was killed before Tune saved the end).
    finished = resume is not None and resume.step >= plan.settings["steps"]
    run, run_id, attempt, logged = None, "", 1, -1
    workdir = Path(tempfile.mkdtemp(prefix="depthlab-trial-"))
    state_dir = None
    if rank == 0:  # tags to filter and compare by in the UI, and where the trial ran
        # The driver looked the study's tags up once; a study state saved by an older
        # version carries none: ask the parent run.
        shared = config.get("study_tags")
        tags = {"depthlab.trial_id": config["trial_id"], "depthlab.method": plan.method,
                **(tracking.study_tags(study) if shared is None else shared), **_node_tags()}
        run, run_id, attempt, logged = _trial_run(study, config, plan, params, tags, resume,
                                                  finished, warned)
        state_dir = None if finished else workdir / "states"

    def report(method, step: int, metrics: dict[str, float], evaluation: Evaluation | None,
               improved: bool) -> None:
        if run is not None and step > logged:  # a retry redoes steps MLflow may have
            log_evaluation(run, plan, method, step, metrics, evaluation, improved, workdir)
        out = dict(metrics, step=step, mlflow_run_id=run_id)
        if run is not None and (unsent := run.flush()):  # this report may be the last
            out["mlflow_unsent"] = str(unsent)
        if metrics.get("diverged"):
            out[plan.primary] = worst_value(plan.primary)  # never NaN: ASHA, Optuna stall
        ray.train.report(out, **_state_checkpoint(state_dir, step, attempt))

    try:
        if run is not None:  # every attempt: an unwritable artifact store fails it here,
            run.log_dict(config, "config.json")  # not only the first (a retry logs no best)
        train_trial(plan, report, rank, state_dir=state_dir, resume=resume)
    except BaseException as error:
        if run is not None:
            try:
                tracking.end_run(study.tracking_uri, run.run_id, "FAILED",
                                 {"depthlab.failure": f"{type(error).__name__}: {error}"[:5000]})
            except Exception as unreachable:  # the driver closes it; keep the first error
                print(f"could not mark run {run.run_id} FAILED: {unreachable}", file=sys.stderr)
        raise


def worst_value(metric: str) -> float:
    """What a diverged trial reports for `metric`: the worst value in the loop's sense of
    better (+inf for errors, -inf for best/corr, δ1 …), so ASHA and Optuna rank it last."""
    return -math.inf if mode_for(metric) == "max" else math.inf


def _resume_point(latest) -> tuple[SavedState | None, list[str]]:
    """The newest trial state that verifies among those Train kept for this trial (`latest`,
    Train's last checkpoint, and the ones beside it); warnings name each damaged one."""
    if latest is None:
        return None, []
    folder = Path(latest.path)
    # Local or shared storage: every kept checkpoint is a sibling; else only the latest.
    candidates = saved_states(folder.parent) if folder.is_dir() else [latest.to_directory()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        saved = latest_state(candidates)
    for warning in caught:  # to the worker's log as well as to the run's tags
        warnings.showwarning(warning.message, warning.category, warning.filename,
                             warning.lineno)
    return saved, [str(w.message) for w in caught]


def _trial_run(study: tracking.StudyRun, config: dict[str, Any], plan: TrialPlan,
               params: dict[str, Any], tags: dict[str, str], resume: SavedState | None,
               finished: bool, warned: list[str]) -> tuple[tracking.TrialRun | None, str, int,
                                                           float]:
    """Rank 0's MLflow run, its id, the attempt and the last step it logged: a retried trial
    reopens its run and logs `retry` (= attempts so far) at the step it resumes from; a
    finished trial run again only re-reports (no run to write)."""
    if finished:
        found = tracking.find_trial_run(study, config["trial_id"])
        return None, found.info.run_id if found else "", 0, math.inf
    run, attempt = tracking.open_trial_run(study, config["trial_id"], config["run_name"],
                                           params, tags)
    if config.get("unsent"):  # where writes MLflow missed are kept; an earlier attempt's
        run.keep_unsent_in(config["unsent"])  # are sent now, before we ask what it logged
    logged = -1
    if attempt > 1:
        run.log_metrics(resume.step if resume else 0, {"retry": attempt - 1})
        logged = tracking.last_step(study.tracking_uri, run.run_id, plan.primary)
        logged = -1 if logged is None else logged
    if warned:
        run.set_tags({"depthlab.resume_warning": " | ".join(warned)[:5000]})
    return run, run.run_id, attempt, logged


def _state_checkpoint(state_dir: Path | None, step: int, attempt: int) -> dict[str, Any]:
    """`ray.train.report`'s checkpoint arguments for the trial state saved at `step` (none
    when no state was saved there); Train copies it to its storage, then deletes ours."""
    import ray.train

    folder = state_folder(state_dir, step) if state_dir is not None else None
    if folder is None or not folder.is_dir():
        return {}
    # The attempt in the name: a retry that redoes a step never reuses a kept folder's name.
    return {"checkpoint": ray.train.Checkpoint.from_directory(str(folder)),
            "checkpoint_dir_name": f"{folder.name}-attempt{attempt:03d}",
            "delete_local_checkpoint_after_upload": True}


def log_evaluation(run: tracking.TrialRun, plan: TrialPlan, method, step: int,
                   metrics: dict[str, float], evaluation: Evaluation | None, improved: bool,
                   workdir: Path) -> None:
    """A report's MLflow writes, before it goes to Tune (ASHA may then stop the trial): on a
    new best its checkpoint and depth panel, then the metrics and the best's tags in one
    request."""
    tags = {}
    if improved and evaluation is not None:
        tags = _log_best(run, plan, method, evaluation, step, workdir)
    run.log_metrics(step, metrics, tags)


def _log_best(run: tracking.TrialRun, plan: TrialPlan, method, evaluation: Evaluation,
              step: int, workdir: Path) -> dict[str, str]:
    """The best checkpoint so far and its depth panel, as artifacts of the child run; the
    tags that say which step and value they are."""
    info = DataInfo(**plan.data)
    weights = {name: net.state_dict() for name, net in method.networks().items()}
    # The state's plain values (multiscale's training stage) decide how the model predicts.
    weights.update({k: v for k, v in method.state_dict().items() if not isinstance(v, dict)})
    path = checkpoint.save(workdir / "best.pt", method=plan.method, config=plan.method_config,
                           settings=plan.settings, dataset=f"{info.name}@{info.version}",
                           state=weights, step=step, data=plan.data)
    run.log_artifact(path, "checkpoint")
    run.log_artifact(checkpoint.digest_path(path), "checkpoint")  # `checkpoint.load` checks it
    primary = plan.primary.split("/", 1)[-1]
    title = f"step {step}: " + ", ".join(f"{k} {v:.3g}" for k, v in evaluation.metrics.items())
    panel = depth_panel(evaluation.images, evaluation.predictions, evaluation.truths,
                        info.display_unit, workdir / "depth_panel.png", title)
    run.log_artifact(panel)
    return {"depthlab.best_step": str(step),
            f"depthlab.best_{primary}": f"{evaluation.metrics.get(primary, float('nan')):.6g}"}


def _node_tags() -> dict[str, str]:
    """Where this process runs: its Ray node's id and IP, and the host name."""
    import ray

    return {"depthlab.node_id": ray.get_runtime_context().get_node_id(),
            "depthlab.node_ip": ray.util.get_node_ip_address(),
            "depthlab.hostname": socket.gethostname()}


# ---------------------------------------------------------------- the driver

def _close_runs_callback(uri: str, total_steps: int, study: tracking.StudyRun,
                         shown: tuple[str, ...] = ()):
    """A Tune callback ending each trial's child run in its final state (driver side);
    it prints each evaluation's `shown` metrics (default: every eval/ metric)."""
    names = {m.split("/", 1)[1] for m in shown}
    from ray import tune

    class CloseRuns(tune.Callback):
        def __init__(self):
            super().__init__()
            self.unsent: dict[str, str] = {}  # trial id → its file of records MLflow missed

        def on_trial_start(self, iteration, trials, trial, **info):
            chosen = {**trial.config.get("method", {}), **trial.config.get("train", {})}
            shown = [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in chosen.items()]
            print(f"  {trial.trial_id} start: {', '.join(shown)}", flush=True)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get("mlflow_unsent") and trial.trial_id not in self.unsent:
                self.unsent[trial.trial_id] = result["mlflow_unsent"]
                print(f"  warning: {trial.trial_id} cannot reach MLflow; it keeps its records "
                      f"in {result['mlflow_unsent']} and sends them when MLflow answers",
                      flush=True)
            metric = [f"{k.split('/', 1)[1]} {v:.3g}" for k, v in result.items()
                      if k.startswith("eval/") and isinstance(v, float)
                      and (not names or k.split("/", 1)[1] in names)]
            print(f"  {trial.trial_id} step {result.get('step', 0):>5}/{total_steps}  "
                  + "  ".join(metric), flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.send_unsent(trial)
            result = trial.last_result or {}
            run_id = result.get("mlflow_run_id")
            if not run_id:
                return
            if result.get("diverged"):
                tracking.end_run(uri, run_id, "FAILED", {"depthlab.failure": "diverged"})
                print(f"  {trial.trial_id} diverged (loss not finite): run marked FAILED")
            else:
                early = result.get("step", 0) < total_steps
                tags = {STOPPED_EARLY_TAG: str(early).lower()}
                tracking.end_run(uri, run_id, "FINISHED", tags)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.send_unsent(trial)
            # A worker that failed tagged its run with the cause (an OSError names the path
            # and errno) and ended it; one that died could not: end it here.
            found = tracking.find_trial_run(study, trial.trial_id)
            reason = found.data.tags.get("depthlab.failure") if found else None
            if found is not None and (found.info.status == "RUNNING" or not reason):
                tracking.end_run(uri, found.info.run_id, "FAILED",
                                 {"depthlab.failure": reason or "trial error"})
            print(f"  {trial.trial_id} failed: {reason or 'trial error'} (Tune's log: "
                  f"{trial.local_path})", flush=True)

        def send_unsent(self, trial):
            """What a trial could not send to MLflow, sent now that it has ended."""
            path = self.unsent.pop(trial.trial_id, None)
            try:
                sent = not path or tracking.send_unsent(uri, path)
            except Exception as error:  # e.g. an artifact on the worker's disk: keep the file
                print(f"  warning: {trial.trial_id}: {tracking.redact(str(error))}")
                sent = False
            if not sent:
                print(f"  warning: MLflow did not take all of {trial.trial_id}'s records: "
                      f"they stay in {path}", flush=True)

    return CloseRuns()


def _resources(workers: int, use_gpu: bool | None, limit: int | None = None,
               autoscale: bool = False) -> dict[str, Any]:
    """Per-worker CPUs/GPUs and how many trials run at once on the running Ray cluster (at
    most `limit` when given). With `autoscale` (a cluster we connected to), what does not
    fit yet (`limit` trials, or `--gpu` before any GPU node is up) is asked of the
    autoscaler: its trials wait for the nodes instead of being refused or cut."""
    import ray

    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 1), total.get("GPU", 0)
    gpu = (gpus > 0) if use_gpu is None else use_gpu
    per_worker_cpu = 1
    fits = int(cpus // (workers * per_worker_cpu))
    if gpu:
        fits = min(fits, int(gpus // workers))
    drivers = total.get(DRIVER_RESOURCE, 0)
    if drivers < 1:
        raise ValueError(f"the Ray cluster has no '{DRIVER_RESOURCE}' resource; start its head "
                         f"with --resources='{{\"{DRIVER_RESOURCE}\": 16}}'")
    wanted = min(limit or max(fits, 1), int(drivers))
    if wanted > fits and autoscale:
        request_nodes(wanted * workers, per_worker_cpu, 1 if gpu else 0)
        print(f"asked the autoscaler for {wanted} trials x {workers} workers "
              f"({per_worker_cpu} CPU{', 1 GPU' if gpu else ''} each); the cluster has "
              f"{cpus:g} CPUs, {gpus:g} GPUs now: trials wait for the nodes", flush=True)
    elif wanted > fits:
        if gpu and gpus == 0:
            raise ValueError("--gpu was requested but the Ray cluster has no GPU")
        if fits < 1:
            raise ValueError(f"{workers} workers need {workers * per_worker_cpu} CPUs"
                             f"{' and GPUs' if gpu else ''}; the cluster has {cpus:g} CPUs, "
                             f"{gpus:g} GPUs")
        wanted = fits
    return {"workers": workers, "cpus_per_worker": per_worker_cpu,
            "gpus_per_worker": 1 if gpu else 0, "concurrent": wanted}


def request_nodes(workers: int, cpus: int, gpus: int) -> None:
    """Ask the cluster's autoscaler for room for `workers` Train workers at once (none: 0);
    the request stands until the next call, so a study withdraws it when it ends."""
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[{"CPU": cpus, **({"GPU": gpus} if gpus else {})}] * workers)


def _cluster_address(address: str | None) -> str | None:
    """The cluster to join: `address`, else $RAY_ADDRESS (`ray submit` on a cluster's head);
    none given: a local Ray."""
    return address or os.environ.get("RAY_ADDRESS")


def _start_ray(address: str | None) -> bool:
    """Connect to a cluster, or start a local Ray sized to this machine; True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    env = {**RAY_ENV, "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    os.environ.update(RAY_ENV)  # the local raylet inherits the driver's environment
    address = _cluster_address(address)
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
        return True
    # Train V2's placement-group cleaner asks the state API for "the" local Ray; with a
    # second local Ray on the machine (another study) that lookup fails, the cleaner dies,
    # stopped trials keep their CPUs and the study stalls. Naming our dashboard fixes it.
    port = _free_port()
    env["RAY_API_SERVER_ADDRESS"] = os.environ["RAY_API_SERVER_ADDRESS"] = \
        f"http://127.0.0.1:{port}"
    cpus = os.cpu_count() or 1
    ray.init(num_cpus=cpus, resources={DRIVER_RESOURCE: cpus}, include_dashboard=True,
             dashboard_host="127.0.0.1", dashboard_port=port, runtime_env={"env_vars": env},
             log_to_driver=False, logging_level="WARNING")
    return True


# Ray's fixed default ports (GCS, dashboard, client server, dashboard agent HTTP): Ray
# refuses a dashboard port that another of its components is set to use.
RAY_DEFAULT_PORTS = {6379, 8265, 10001, 52365}


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now and Ray does not reserve."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port not in RAY_DEFAULT_PORTS:
            return port


def _storage_dir(root: Path, name: str, resume: bool) -> Path:
    """The Tune experiment folder: the latest one of this name (`name` or `name-N`) to
    resume, else the next free name, created here: mkdir is atomic, so two drivers
    starting together get two folders."""
    if resume:
        candidates = sorted((p for p in root.glob(f"{name}*") if p.is_dir() and (
            p.name == name or p.name.removeprefix(f"{name}-").isdigit())),
            key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise ValueError(f"--resume: no earlier study named {name!r} under {root}")
        return candidates[-1]
    root.mkdir(parents=True, exist_ok=True)
    for index in itertools.count(1):
        path = root / (name if index == 1 else f"{name}-{index}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


LOCK_FILE = "depthlab_driver.lock"


def _hold_study_lock(folder: Path) -> IO[str]:
    """An exclusive lock on the study folder while this driver runs (the OS drops it when
    the process ends, even on SIGKILL): a second driver of the same folder, e.g. a second
    --resume, is refused with the holder's pid instead of interleaving trials."""
    handle = open(folder / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise ValueError(f"study folder {folder} is in use by another study driver (pid "
                         f"{holder}); wait for it to end, or start a new study with another "
                         "--name") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _check_runs_folder(root: Path) -> None:
    """Raise a ValueError naming the folder and the OS error when Tune's state, trial
    checkpoints and (local) artifacts could not be written under `root`."""
    try:
        (root / "ray").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root / "ray"):
            pass
    except OSError as error:
        raise ValueError(f"runs folder {root} is not writable ([Errno {error.errno}] "
                         f"{error.strerror}: {error.filename or root}); run the study from a "
                         "writable working directory") from error


@dataclass
class StudyOutcome:
    """What a finished (or interrupted) study leaves behind."""

    study: tracking.StudyRun
    status: str
    best_run_id: str | None
    leaderboard: list[dict[str, Any]]
    wall_seconds: float
    baseline: dict[str, float]


def plan_for(spec: StudySpec, budget: Budget, data_path: Path, entry: CatalogEntry,
             seed: int, overrides: dict[str, Any] | None = None) -> TrialPlan:
    """The fixed part of every trial; sampled values are merged in per trial."""
    method_cls = METHODS.get_or_raise(spec.method)
    method_config = to_dict(from_dict(method_cls.Config,
                                      {**budget.method_overrides, **(overrides or {})}))
    settings = to_dict(budget.train_settings(seed=seed))
    return TrialPlan(spec.method, method_config, settings, str(data_path),
                     data_info(entry, budget.image_size).__dict__, spec.train_splits,
                     spec.eval_split, spec.metric)


def choose_dataset(spec: StudySpec, source: str | None) -> CatalogEntry:
    """The study's dataset, or its embedded fallback when the user gave no files (said
    aloud); a source that was given but does not exist stays an error."""
    entry = load_entry(spec.dataset)
    if entry.generator is not None or spec.fallback_dataset is None:
        return entry
    try:
        entry.source_root(source)
        return entry
    except ValueError:  # no --source and no environment variable: nothing was given
        fallback = load_entry(spec.fallback_dataset)
        how = " or $" + entry.source_env if entry.source_env else ""
        print(f"no {entry.name} files given (--source PATH{how}): using the embedded "
              f"{fallback.name} instead", flush=True)
        return fallback


def pretrained_overrides(spec: StudySpec, pretrained: str | None) -> dict[str, Any]:
    """`--pretrained PATH` as a method-config value; an error for methods without one."""
    if pretrained is None:
        return {}
    fields = {f.name for f in dataclasses.fields(METHODS.get_or_raise(spec.method).Config)}
    if "pretrained" not in fields:
        raise ValueError(f"--pretrained: method {spec.method!r} loads no pretrained backbone")
    path = Path(pretrained).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"--pretrained {pretrained}: no such file")
    return {"pretrained": str(path)}


def prepare_extra_evals(spec: StudySpec, budget: Budget, data_dir: str | None,
                        own: CatalogEntry | None = None, source: str | None = None
                        ) -> tuple[dict[str, Any], ...]:
    """Prepare every extra evaluation set at its size (default the budget's); their plans
    as dicts. `own` and `source` are the study's chosen dataset and its files."""
    sets = []
    for extra in spec.extra_evals:
        native = extra.size == "native"
        size = None if native else tuple(extra.size or budget.image_size)
        if extra.dataset is None:
            if own is None:
                raise ValueError(f"extra evaluation {extra.label!r} is on the study's own "
                                 "dataset: pass it as `own`")
            entry = own
            path = prepare(entry, size=size, data_dir=data_dir, source=source,
                           counts=budget.data_counts or None)
        else:
            entry = load_entry(extra.dataset)
            path = prepare(entry, size=size, data_dir=data_dir)
        if native:  # the size the build has (one size, or the trial's loading refuses)
            _, _, depth = next(read_rows(path, extra.splits[0], limit=1))
            size = depth.shape
        info = data_info(entry, size, max_depth_m=extra.max_depth_m)
        sets.append(EvalSet(extra.label, str(path), tuple(extra.splits), info.__dict__).__dict__)
    return tuple(sets)


def validate_points(spec: StudySpec, plan: TrialPlan) -> None:
    """Every starting point must build a valid config before Ray starts."""
    method_cls = METHODS.get_or_raise(spec.method)
    for point in spec.points_to_evaluate:
        method = {k.split("/", 1)[1]: v for k, v in point.items() if k.startswith("method/")}
        train = {k.split("/", 1)[1]: v for k, v in point.items() if k.startswith("train/")}
        from_dict(method_cls.Config, {**plan.method_config, **method})
        from_dict(TrainSettings, {**plan.settings, **train})


def run_study(spec: StudySpec, budget: str = "smoke", *, address: str | None = None,
              tracking_uri: str | None = None, resume: bool = False, name: str | None = None,
              data_dir: str | None = None, workers: int = 1, gpu: bool | None = None,
              num_trials: int | None = None, seed: int = 0,
              runs_dir: str | Path = "depthlab_runs",
              max_concurrent_trials: int | None = None, source: str | None = None,
              pretrained: str | None = None) -> StudyOutcome:
    """Run a whole study; every MLflow run ends FINISHED, FAILED or KILLED.

    Trials run as many at a time as the cluster's CPUs/GPUs allow, at most
    `max_concurrent_trials` when given. `source` is the dataset's folder (file
    datasets), `pretrained` a local backbone state dict.
    """
    started = time.time()
    if budget not in spec.budgets:
        raise ValueError(f"unknown budget {budget!r}; known: {sorted(spec.budgets)}")
    chosen = spec.budgets[budget]
    if num_trials is not None:
        chosen = replace(chosen, num_trials=num_trials)
    if chosen.metric:
        spec = replace(spec, metric=chosen.metric, mode=chosen.mode)
    if chosen.search_space:
        spec = replace(spec, search_space=chosen.search_space,
                       points_to_evaluate=list(chosen.points_to_evaluate))
    if workers < 1:
        raise ValueError(f"--workers = {workers}: expected >= 1")
    if max_concurrent_trials is not None and max_concurrent_trials < 1:
        raise ValueError(f"--concurrent = {max_concurrent_trials}: expected >= 1")
    uri = tracking.resolve_uri(tracking_uri)
    tracking.check_writable(uri)
    entry = choose_dataset(spec, source)
    overrides = pretrained_overrides(spec, pretrained)
    plan = plan_for(spec, chosen, Path("."), entry, seed, overrides)  # validates: before Ray
    validate_points(spec, plan)
    _check_runs_folder(Path(runs_dir).resolve())  # after the checks: bad input writes nothing

    data_path = prepare(entry, size=chosen.image_size, data_dir=data_dir,
                        counts=chosen.data_counts or None,
                        source=source if entry.name == spec.dataset else None)
    plan = replace(plan, data_path=str(data_path),
                   extra_evals=prepare_extra_evals(
                       spec, chosen, data_dir, entry,
                       source if entry.name == spec.dataset else None))
    runs_root = Path(runs_dir).resolve()
    baseline = constant_baseline(plan)
    storage = _storage_dir(runs_root / "ray", name or f"{spec.name}-{budget}", resume)
    lock = _hold_study_lock(storage)
    try:
        study = _open_parent(spec, chosen, uri, runs_root, storage, resume, baseline, plan)
    except BaseException:
        lock.close()
        raise
    print(f"study {storage.name}: {chosen.num_trials} trials of {spec.method} on "
          f"{entry.name} ({budget} budget: {chosen.steps} steps at "
          f"{chosen.image_size[0]}x{chosen.image_size[1]}); MLflow parent run "
          f"{study.parent_run_id}", flush=True)
    if chosen.note:
        print(f"note: {chosen.note}", flush=True)

    status = "FAILED"
    started_ray = on_cluster = False
    try:
        started_ray = _start_ray(address)
        on_cluster = bool(_cluster_address(address))
        scaling = _resources(workers, gpu, max_concurrent_trials, autoscale=on_cluster)
        results = _tune(spec, chosen, plan, study, storage, scaling, resume, seed)
        # Ctrl-C: Tune returns the partial results, and the trials it interrupted still have
        # RUNNING runs (every trial that ended had its run closed by the callback). Tune's
        # own statuses can't tell: it marks interrupted trials TERMINATED as it cleans up.
        interrupted = any(r.info.status == "RUNNING" for r in tracking.child_runs(uri, study))
        if len(results) < chosen.num_trials or interrupted:
            status = "KILLED"
        else:
            status = "FAILED" if results.num_errors == len(results) else "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        print("interrupted: closing runs", flush=True)
    finally:
        closed = tracking.close_unfinished(uri, study, "KILLED")
        if closed:
            print(f"{closed} unfinished trial run(s) marked KILLED", flush=True)
        tracking.end_run(uri, study.parent_run_id, status)
        if started_ray:
            import ray

            if on_cluster and ray.is_initialized():
                request_nodes(0, 1, 0)  # the autoscaler may let idle nodes go
            ray.shutdown()
        lock.close()  # another driver may take the folder now (e.g. --resume)
    board = leaderboard(uri, study, spec.metric, spec.mode)
    scored = [r for r in board if eligible(r)]
    outcome = StudyOutcome(study, status, scored[0]["run_id"] if scored else None, board,
                           time.time() - started, baseline)
    print_summary(outcome, spec, chosen)
    return outcome


def _open_parent(spec, budget, uri, runs_root, storage, resume, baseline, plan):
    state_file = storage / "depthlab_study.json"
    if resume and state_file.exists():
        study = tracking.resume_study(uri, json.loads(state_file.read_text())["parent_run_id"])
        # Runs a killed driver left RUNNING end now; a trial that resumes reopens its own.
        closed = tracking.close_unfinished(uri, study, "KILLED")
        if closed:
            print(f"{closed} trial run(s) left running by the interrupted study marked KILLED",
                  flush=True)
        return study
    study = tracking.start_study(
        uri, spec.name, runs_root / "mlartifacts", storage.name,
        {"budget": budget.name, "method": spec.method, "dataset": plan.data["name"],
         "metric": spec.metric, "mode": spec.mode, "num_trials": budget.num_trials,
         "image_size": "x".join(map(str, budget.image_size)), "fixed": plan.method_config,
         "train": plan.settings},
        {"depthlab.study": spec.name, "depthlab.budget": budget.name})
    tracking.log_run_metrics(study, baseline)
    storage.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps({"parent_run_id": study.parent_run_id}))
    return study


def _tune(spec, budget, plan, study, storage, scaling, resume, seed):
    from optuna.samplers import TPESampler
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from depthlab.search import StudySearch

    trainable = tune.with_resources(_trial_driver, {"cpu": 0, DRIVER_RESOURCE: 1})
    if resume and tune.Tuner.can_restore(str(storage)):
        tuner = tune.Tuner.restore(str(storage), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
        return tuner.fit()
    search = StudySearch(spec.search_space, metric=spec.metric, mode=spec.mode,
                         points_to_evaluate=spec.points_to_evaluate or None,
                         sampler=TPESampler(seed=seed), max_steps=budget.steps)
    grace = max(budget.eval_every, int(budget.grace_fraction * budget.steps))
    scheduler = ASHAScheduler(time_attr="step", max_t=budget.steps, grace_period=grace,
                              reduction_factor=2)
    fixed = {"plan": plan.__dict__, "study": study.__dict__, "scaling": scaling,
             "study_tags": tracking.study_tags(study), "storage": str(storage.parent)}
    tuner = tune.Tuner(
        trainable,
        param_space={"fixed": fixed},
        tune_config=tune.TuneConfig(search_alg=search, scheduler=scheduler, metric=spec.metric,
                                    mode=spec.mode, num_samples=budget.num_trials,
                                    max_concurrent_trials=scaling["concurrent"]),
        run_config=tune.RunConfig(
            name=storage.name, storage_path=str(storage.parent), verbose=0,
            # A dead trial driver: Tune starts it again; its Train run resumes (same name).
            failure_config=tune.FailureConfig(max_failures=DRIVER_RETRIES),
            callbacks=[_close_runs_callback(study.tracking_uri, budget.steps, study,
                                            spec.shown_metrics)]),
    )
    return tuner.fit()


# ---------------------------------------------------------------- reporting

MAX_SHOWN_PARAMS = 8
STOPPED_EARLY_TAG = "depthlab.stopped_early"  # a trial ASHA stopped before its last step


def leaderboard(uri: str, study: tracking.StudyRun, metric: str, mode: str,
                top: int | None = None) -> list[dict[str, Any]]:
    """Child runs sorted by the study metric (runs without it last)."""
    rows = []
    for run in tracking.child_runs(uri, study):
        value = run.data.metrics.get(metric)
        rows.append({"run_id": run.info.run_id, "name": run.info.run_name,
                     "status": run.info.status, "value": value,
                     "params": {k: v for k, v in run.data.params.items()
                                if k.startswith(("method.", "train."))},
                     "metrics": {k: v for k, v in run.data.metrics.items()
                                 if k.startswith(("best/", "eval/"))},
                     "tags": {k: v for k, v in run.data.tags.items()
                              if k.startswith("depthlab.")}})
    sign = 1 if mode == "min" else -1
    rows.sort(key=lambda r: (not eligible(r), sign * (r["value"] or 0)))
    return rows[:top] if top else rows


def eligible(row: dict[str, Any]) -> bool:
    """Whether a leaderboard row may be the study's best: it has a finite metric and did not
    fail (a diverged trial keeps the finite best/ value of its last good evaluation)."""
    return (row["value"] is not None and math.isfinite(row["value"])
            and row["status"] != "FAILED" and "depthlab.failure" not in row["tags"])


def baseline_key(metric: str) -> str:
    """The constant predictor's entry: best/real/rmse_m → baseline/real/constant_rmse_m."""
    *label, name = metric.split("/", 1)[1].split("/")
    return "/".join(["baseline", *label, f"constant_{name}"])


def varied_params(rows: list[dict[str, Any]]) -> list[str]:
    """The parameters whose values differ between trials (what the search chose), in name
    order, at most MAX_SHOWN_PARAMS."""
    keys = sorted({k for r in rows for k in r["params"]})
    varied = [k for k in keys if len({r["params"].get(k) for r in rows}) > 1]
    return varied[:MAX_SHOWN_PARAMS]


def _short(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def print_leaderboard(board: list[dict[str, Any]], metric_keys: list[str],
                      param_keys: list[str], show_run: bool = False) -> None:
    """Leaderboard rows as a table: rank, status, (run id), the parameters, the metrics."""
    header = (["#", "status"] + (["run"] if show_run else [])
              + [k.split(".", 1)[1] for k in param_keys] + metric_keys)
    lines = [header]
    for i, row in enumerate(board, 1):
        state = row["status"] + ("*" if row["tags"].get(STOPPED_EARLY_TAG) == "true"
                                 else "")
        if row["tags"].get("depthlab.failure") == "diverged":
            state = "DIVERGED"
        lines.append([str(i), state] + ([row["run_id"][:8]] if show_run else [])
                     + [_short(row["params"].get(k)) for k in param_keys]
                     + [_short(row["metrics"].get(k, "-")) for k in metric_keys])
    widths = [max(len(line[c]) for line in lines) for c in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    print("(* = stopped early by ASHA)")


def print_summary(outcome: StudyOutcome, spec: StudySpec, budget: Budget, top: int = 10) -> None:
    """The leaderboard, the best run, and how to open the MLflow UI."""
    board = outcome.leaderboard[:top]
    print(f"\n{spec.name} ({budget.name}): {outcome.status} in {outcome.wall_seconds:.0f} s, "
          f"{len(outcome.leaderboard)} trial runs")
    if board:
        metric_keys = list(spec.shown_metrics) or sorted(
            {k for r in board for k in r["metrics"] if k.startswith("best/")})
        print_leaderboard(board, metric_keys, varied_params(outcome.leaderboard))
    shown = {baseline_key(m) for m in spec.shown_metrics}
    for key, value in outcome.baseline.items():
        if not shown or key in shown:
            print(f"{key}: {value:.3f}  (a constant prediction of the training mean)")
    if outcome.best_run_id:
        print(f"best run: {outcome.best_run_id}")
    command, link = tracking.ui_hint(outcome.study.tracking_uri, outcome.study.experiment_id)
    print(f"open the runs: {command}\n  then {link}")
    if outcome.leaderboard:  # this study's trials alone, best first, with its columns
        columns = [spec.metric, *(m for m in spec.shown_metrics if m != spec.metric)]
        view = tracking.share_runs_view(outcome.study.tracking_uri, outcome.study, columns,
                                        varied_params(outcome.leaderboard), spec.mode,
                                        (STOPPED_EARLY_TAG,))
        print(f"  or this study's trials, best first: {view}")


def study_arguments(spec: StudySpec, argv: list[str] | None = None) -> argparse.Namespace:
    """The flags every study script takes."""
    parser = argparse.ArgumentParser(
        description=spec.description or f"{spec.method} on {spec.dataset}",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    budgets = "; ".join(f"{k}: {b.num_trials} trials x {b.steps} steps at "
                        f"{b.image_size[0]}x{b.image_size[1]}" for k, b in spec.budgets.items())
    parser.add_argument("--budget", choices=sorted(spec.budgets), default="default",
                        help=f"study size ({budgets})")
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, "
                        "else start a local Ray)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: "
                        "$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working "
                        "directory)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the latest interrupted study of this name")
    parser.add_argument("--name", help="study folder name (default: <study>-<budget>)")
    parser.add_argument("--data", help="data directory or object-storage URI such as "
                        "s3://bucket/prefix (default: $DEPTHLAB_DATA or ~/.cache/depthlab)")
    if spec.fallback_dataset:
        parser.add_argument("--source", help=f"folder of the {spec.dataset} files (default: "
                            f"its environment variable; without either the study uses the "
                            f"embedded {spec.fallback_dataset})")
    fields = {f.name for f in dataclasses.fields(METHODS.get_or_raise(spec.method).Config)}
    if "pretrained" in fields:
        parser.add_argument("--pretrained", help="local torchvision state dict of the backbone "
                            "(default: random initialisation; nothing is downloaded)")
    parser.add_argument("--trials", type=int, help="number of trials (default: the budget's)")
    parser.add_argument("--workers", type=int, default=1,
                        help="data-parallel Ray Train workers per trial")
    parser.add_argument("--concurrent", type=int,
                        help="most trials at once (default: as many as the CPUs/GPUs up now "
                        "allow; on a cluster, more are asked of its autoscaler)")
    parser.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=None,
                        help="use GPUs (default: when the cluster has them)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the search and training")
    return parser.parse_args(argv)


def study_main(spec: StudySpec, argv: list[str] | None = None) -> int:
    """Entry point of a study script; returns the process exit code."""
    args = study_arguments(spec, argv)
    try:
        outcome = run_study(spec, args.budget, address=args.address,
                            tracking_uri=args.tracking_uri, resume=args.resume, name=args.name,
                            data_dir=args.data, workers=args.workers, gpu=args.gpu,
                            num_trials=args.trials, seed=args.seed,
                            max_concurrent_trials=args.concurrent,
                            source=getattr(args, "source", None),
                            pretrained=getattr(args, "pretrained", None))
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return {"FINISHED": 0, "KILLED": 130}.get(outcome.status, 1)
