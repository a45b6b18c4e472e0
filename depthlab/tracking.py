"""MLflow, and only here: experiments, the parent run of a study, a child run per trial,
batched metrics, artifacts, and closing every run in a final state.

Shape (see RAY_NOTES): the driver creates the database, the experiment and
the parent run before any trial starts; each trial creates its child run with
explicit ids; the driver ends children, because code after a trial's last
report may never run.

mlflow is imported on first use (`import_mlflow`): importing it costs ~0.5–1.2 s, and
the Ray processes that only pass a StudyRun along (the Tune trial driver) never use it.
"""

import contextlib
import fcntl
import gc
import importlib.machinery
import importlib.util
import json
import math
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

PARENT_TAG = "mlflow.parentRunId"
FINAL_STATES = ("FINISHED", "FAILED", "KILLED")


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for a burst of imports, then as it was.

    Importing mlflow, and a store's backend on its first client, allocates enough to set
    off several full collections; in a worker that already holds torch and Ray each walks
    ~340k objects (~0.26 s here).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# mlflow's __init__ imports its AI-gateway package, FastAPI with it: 0.15-0.4 s of the
# import that every trial's fresh worker pays, for code depthlab never runs. (mlflow.genai,
# another 0.2 s, cannot wait: the sqlite store imports its submodules, whose import cycle
# only its __init__'s order resolves.)
UNUSED_MLFLOW_PACKAGES = ("mlflow.gateway",)


def _defer_package(name: str, search_path: list[str]) -> None:
    """Register package `name` with its `__init__` not yet run; it runs on first attribute
    use, so `mlflow.gateway.get_gateway_uri` still works. Its submodules import as usual."""
    spec = importlib.machinery.PathFinder.find_spec(name, search_path)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return  # not a package in this mlflow: left to mlflow's own import
    module = importlib.util.module_from_spec(spec)

    def run_init(attr: str) -> Any:
        del module.__getattr__  # before running __init__, which may define its own
        spec.loader.exec_module(module)
        return getattr(module, attr)

    module.__getattr__ = run_init
    sys.modules[name] = module


def import_mlflow() -> None:
    """Import mlflow (once per process) with the collector paused and its unused packages
    deferred: after `depthlab.study`, 1.17 s with the collector on, 0.65–0.85 s paused."""
    if "mlflow" in sys.modules:
        return
    spec = importlib.util.find_spec("mlflow")  # a top-level spec: imports nothing
    for name in UNUSED_MLFLOW_PACKAGES:
        _defer_package(name, list(spec.submodule_search_locations))
    with _collector_paused():
        import mlflow.tracking  # noqa: F401


def _client(uri: str):
    import_mlflow()
    from mlflow.tracking import MlflowClient

    # Ending a run on a server prints "View run … at <uri>/…": with the URI's password, and
    # once per trial over the study's own progress lines. The study prints its own link.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    with _collector_paused():  # a store's first client imports its backend (sqlalchemy)
        return MlflowClient(uri)


def _metrics(values: dict[str, float], step: int) -> list:
    """MLflow Metric entities stamped now; non-finite values are skipped (tags flag them)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in values.items()
            if isinstance(v, int | float) and math.isfinite(v)]


def default_store() -> str:
    """The embedded tracking store: sqlite:///<cwd>/mlflow.db."""
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def resolve_uri(uri: str | None) -> str:
    """None → $MLFLOW_TRACKING_URI (a cluster's head sets it to its server), else the
    embedded default store."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_store()


def _local_path(uri: str) -> Path | None:
    """The file a sqlite/file URI points at, None for servers."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        return Path(uri[len("sqlite:///"):])
    if parsed.scheme in ("", "file"):
        return Path(parsed.path or uri)
    return None


def check_writable(uri: str) -> None:
    """Raise a ValueError naming the tracking location when runs could not be written there.

    Tries to create a file where the store would go: permission bits alone
    say nothing for root, and a parent that is a file is caught too.
    """
    path = _local_path(uri)
    if path is None:
        return
    folder = path if urlparse(uri).scheme in ("", "file") else path.parent
    existing = folder
    while not existing.exists():
        existing = existing.parent
    problem = None
    if not existing.is_dir():
        problem = f"{existing} is not a folder"
    elif path.exists() and not os.access(path, os.W_OK):
        problem = f"{path} is read-only"
    else:
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as error:
            problem = f"cannot create files in {existing}: {error.strerror}"
    if problem:
        raise ValueError(f"tracking location {uri!r} is not writable ({problem}); pass "
                         "--tracking-uri with a writable sqlite:///path/mlflow.db or a server URL")


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"method": {"lr": 1}} → {"method.lr": 1}."""
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


@dataclass(frozen=True)
class StudyRun:
    """Where a study's runs live: what every trial needs to create its child run."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str


@contextlib.contextmanager
def _first_use(uri: str) -> Iterator[None]:
    """For sqlite: one process at a time creates the database's schema and the experiment.
    Drivers opening one fresh database at once race its migration (5 of 6 failed here)."""
    path = _local_path(uri)
    if path is None or urlparse(uri).scheme != "sqlite":
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f"{path.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def start_study(uri: str, experiment: str, artifact_root: Path, run_name: str,
                params: dict[str, Any], tags: dict[str, str]) -> StudyRun:
    """Create (or reuse) the experiment and open the parent run, in the driver."""
    check_writable(uri)
    with _first_use(uri):  # the client's store migrates a new database's schema
        client = _client(uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            location = None
            if _local_path(uri) is not None:  # Tune moves each trial's cwd: pin artifacts
                location = Path(artifact_root).resolve().as_uri()
            experiment_id = client.create_experiment(experiment, artifact_location=location)
        else:
            experiment_id = found.experiment_id
    run = client.create_run(experiment_id, run_name=run_name, tags=_tags(tags))
    client.log_batch(run.info.run_id, params=_params(params))
    return StudyRun(uri, experiment_id, run.info.run_id)


def log_run_metrics(study: StudyRun, metrics: dict[str, float]) -> None:
    """Metrics of the parent run itself (e.g. the trivial predictor's scores)."""
    _client(study.tracking_uri).log_batch(study.parent_run_id, metrics=_metrics(metrics, 0))


def resume_study(uri: str, parent_run_id: str) -> StudyRun:
    """Reopen a parent run (study --resume)."""
    client = _client(uri)
    run = client.get_run(parent_run_id)
    client.update_run(parent_run_id, status="RUNNING")
    return StudyRun(uri, run.info.experiment_id, parent_run_id)


def _params(values: dict[str, Any]):
    from mlflow.entities import Param

    return [Param(k, redact(str(v), k)[:6000]) for k, v in sorted(flatten(values).items())]


# A password in a URL or path (`scheme://user:password@host`, `/mnt/user:password@host`),
# and names of variables or fields that hold secrets.
_USERINFO = re.compile(r"(^|[/\s=])([^/@\s:]+):([^/@\s]+)@")
_SECRET_NAME = re.compile(r"(^|_)(TOKEN|PASSWORD|PASSWD|SECRET|API_?KEY|ACCESS_?KEY|"
                          r"CREDENTIALS?)(_|$)", re.IGNORECASE)
REDACTED = "***"


def redact(text: str, name: str = "") -> str:
    """`text` without credentials: the whole value when `name` is a secret's name; else the
    password of `user:password@`, and the value of any secret environment variable
    (`*_TOKEN`, `*PASSWORD*`, …), replaced by ***."""
    if _SECRET_NAME.search(name.rsplit(".", 1)[-1]):
        return REDACTED
    text = _USERINFO.sub(rf"\1\2:{REDACTED}@", text)
    for key, value in os.environ.items():
        if len(value) >= 6 and _SECRET_NAME.search(key) and value in text:
            text = text.replace(value, REDACTED)
    return text


def _tags(tags: dict[str, Any]) -> dict[str, str]:
    return {k: redact(str(v), k) for k, v in tags.items()}


def redact_values(values: Any, name: str = "") -> Any:
    """`redact` applied to every string of nested dicts and lists (a run's config.json)."""
    if isinstance(values, dict):
        return {k: redact_values(v, str(k)) for k, v in values.items()}
    if isinstance(values, list | tuple):
        return [redact_values(v, name) for v in values]
    return redact(values, name) if isinstance(values, str) else values


# MLflow's HTTP client retries a call 7 times, up to 120 s apart, when the server is down:
# minutes per call. A trial buffers what it could not send instead, so its calls fail fast.
# Settings the user exported win.
TRIAL_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                  "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


class TrialRun:
    """A trial's child run, written from the training worker.

    Creating it needs the tracking store; afterwards a write that fails because the store
    is unreachable (server down, database locked) is kept and sent, in order, with the
    next write. `flush()`, before each report to Tune, puts what is still unsent in the
    file given to `keep_unsent_in` (with a warning naming it), so nothing is lost
    silently. A local OSError (artifact folder unwritable, disk full) is raised: the
    trial fails.
    """

    def __init__(self, study: StudyRun, name: str, params: dict[str, Any],
                 tags: dict[str, str] | None = None, run_id: str | None = None):
        for key, value in TRIAL_HTTP_ENV.items():
            os.environ.setdefault(key, value)
        self.uri = study.tracking_uri
        self.unsent: Path | None = None
        self.pending: list[dict[str, Any]] = []  # records, each with its run id
        self.problem: Exception | None = None  # why the last delivery stopped
        self.client = _client(study.tracking_uri)
        if run_id is None:
            run = self.client.create_run(
                study.experiment_id, run_name=name,
                tags=_tags({PARENT_TAG: study.parent_run_id, **(tags or {})}))
            self.run_id = run.info.run_id
            self.client.log_batch(self.run_id, params=_params(params))
        else:  # a retried trial continues the run of its earlier attempt (see open_trial_run)
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")

    def keep_unsent_in(self, path: str | Path) -> None:
        """Where `flush` keeps unsent records; ones an earlier attempt left there are
        taken over and sent first."""
        self.unsent = Path(path)
        if self.unsent.exists():
            self.pending[:0] = _read_records(self.unsent)
            self.deliver()

    def log_metrics(self, step: int, metrics: dict[str, float],
                    tags: dict[str, str] | None = None) -> None:
        """One batched write, with `tags` in the same request; non-finite values are skipped
        (they are flagged by tags)."""
        values = {k: float(v) for k, v in metrics.items()
                  if isinstance(v, int | float) and math.isfinite(v)}
        if values or tags:  # stamped now: a late delivery keeps when it was measured
            self._send({"op": "metrics", "step": step, "time": int(time.time() * 1000),
                        "values": values, "tags": {k: str(v) for k, v in (tags or {}).items()}})

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self._send({"op": "artifact", "path": str(path), "folder": folder})

    def log_dict(self, values: dict[str, Any], name: str) -> None:
        self._send({"op": "dict", "name": name, "values": redact_values(values)})

    def set_tags(self, tags: dict[str, str]) -> None:
        self._send({"op": "tags", "values": {k: str(v) for k, v in tags.items()}})

    def _send(self, record: dict[str, Any]) -> None:
        self.pending.append({"run_id": self.run_id, **record})
        self.deliver()

    def deliver(self) -> bool:
        """Send what is pending, oldest first; True when nothing is left."""
        sent, self.problem = _deliver(self.client, self.pending)
        del self.pending[:sent]
        return not self.pending

    def flush(self) -> Path | None:
        """Deliver; keep what still cannot be sent in the unsent file (a warning names it)
        and return that file; None when all was sent."""
        if self.deliver():
            if self.unsent is not None:
                self.unsent.unlink(missing_ok=True)  # its records are in MLflow now
            return None
        reason = redact(str(self.problem))
        if self.unsent is None:
            raise RuntimeError(f"MLflow at {shown_uri(self.uri)} is unreachable ({reason}) "
                               f"and run {self.run_id} has no file for its "
                               f"{len(self.pending)} unsent records")
        _write_records(self.unsent, self.pending)
        warnings.warn(f"MLflow at {shown_uri(self.uri)} is unreachable ({reason}); "
                      f"{len(self.pending)} records of run {self.run_id} are kept in "
                      f"{self.unsent} and sent when it answers again", RuntimeWarning,
                      stacklevel=2)
        return self.unsent


def send_unsent(uri: str, path: str | Path) -> bool:
    """Send the records a trial left in its unsent file (the driver, after the trial
    ended); the file goes once all were sent. True when nothing is left unsent."""
    path = Path(path)
    if not path.exists():
        return True
    records = _read_records(path)
    sent, _ = _deliver(_client(uri), records)
    if sent < len(records):
        _write_records(path, records[sent:])
        return False
    path.unlink()
    return True


def _read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_records(path: Path, records: list[dict[str, Any]]) -> None:
    """The unsent file, whole or not at all (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, path)


def _deliver(client, records: list[dict[str, Any]]) -> tuple[int, Exception | None]:
    """Send records in order until MLflow is unreachable: (how many were sent, why it
    stopped); a failure that retrying cannot fix is raised."""
    for sent, record in enumerate(records):
        try:
            _apply(client, record)
        except Exception as error:
            if not _unreachable(error):
                raise
            return sent, error
    return len(records), None


def _apply(client, record: dict[str, Any]) -> None:
    """One buffered write of a TrialRun (a line of its unsent file) to MLflow."""
    from mlflow.entities import Metric

    op, run_id = record["op"], record["run_id"]
    if op == "metrics":  # records of older versions have no tags
        client.log_batch(run_id, metrics=[Metric(k, v, record["time"], record["step"])
                                          for k, v in record["values"].items()],
                         tags=_run_tags(record.get("tags", {})))
    elif op == "tags":
        client.log_batch(run_id, tags=_run_tags(record["values"]))
    elif op == "artifact":
        client.log_artifact(run_id, record["path"], record["folder"])
    elif op == "dict":
        client.log_dict(run_id, record["values"], record["name"])
    else:
        raise ValueError(f"unsent record {record!r}: unknown op {op!r}")


def _run_tags(values: dict[str, str]) -> list:
    from mlflow.entities import RunTag

    return [RunTag(k, redact(v, k)[:5000]) for k, v in values.items()]


def _unreachable(error: Exception) -> bool:
    """Whether a failed MLflow call may succeed later: connection trouble, a 5xx or 429
    answer, a locked database; a refused request or a local OSError is final."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(error, requests.exceptions.RequestException):  # an OSError, but remote
        return True
    if isinstance(error, MlflowException):
        status = error.get_http_status_code()
        return status >= 500 or status == 429
    return False


def end_run(uri: str, run_id: str, status: str, tags: dict[str, str] | None = None) -> None:
    """Close a run in a final state (FINISHED, FAILED or KILLED), with optional tags."""
    if status not in FINAL_STATES:
        raise ValueError(f"run status {status!r}: expected one of {FINAL_STATES}")
    client = _client(uri)
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, redact(str(value), key))  # error texts may hold a URI
    client.set_terminated(run_id, status=status)


def child_runs(uri: str, study: StudyRun) -> list:
    """Every child run of the study's parent run."""
    return _client(uri).search_runs(
        [study.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{study.parent_run_id}'",
        max_results=10_000)


def close_unfinished(uri: str, study: StudyRun, status: str = "KILLED") -> int:
    """End every child still RUNNING (a trial killed mid-way); returns how many."""
    closed = 0
    for run in child_runs(uri, study):
        if run.info.status == "RUNNING":
            end_run(uri, run.info.run_id, status, {"depthlab.end": "closed by the study driver"})
            closed += 1
    return closed


TRIAL_TAG = "depthlab.trial_id"
ATTEMPTS_TAG = "depthlab.attempts"
# An earlier attempt's ending, kept as history when the trial is retried.
ENDING_TAGS = ("depthlab.end", "depthlab.failure")


def find_trial_run(study: StudyRun, trial_id: str):
    """The child run of a trial (its first, if several), or None."""
    runs = _client(study.tracking_uri).search_runs(
        [study.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{study.parent_run_id}' and "
                      f"tags.`{TRIAL_TAG}` = '{trial_id}'",
        order_by=["attributes.start_time ASC"], max_results=1)
    return runs[0] if runs else None


def open_trial_run(study: StudyRun, trial_id: str, name: str, params: dict[str, Any],
                   tags: dict[str, str]) -> tuple[TrialRun, int]:
    """A trial's child run and which attempt this is: a retried or resumed trial reopens the
    run its first attempt created (one run per trial), counts itself in `depthlab.attempts`
    and moves the earlier attempt's ending tags to `depthlab.attemptN.*`."""
    found = find_trial_run(study, trial_id)
    if found is None:
        return TrialRun(study, name, params, {**tags, TRIAL_TAG: trial_id,
                                              ATTEMPTS_TAG: "1"}), 1
    run = TrialRun(study, name, params, run_id=found.info.run_id)
    old = found.data.tags
    attempt = int(old.get(ATTEMPTS_TAG, "1")) + 1
    for key in ENDING_TAGS:
        if key in old:
            run.set_tags({f"depthlab.attempt{attempt - 1}.{key.split('.', 1)[1]}": old[key]})
            run.client.delete_tag(run.run_id, key)
    run.set_tags({ATTEMPTS_TAG: str(attempt)})
    return run, attempt


def last_step(uri: str, run_id: str, key: str) -> int | None:
    """The highest step at which `key` was logged in a run (None: never)."""
    history = _client(uri).get_metric_history(run_id, key)
    return max((m.step for m in history), default=None)


def ui_hint(uri: str, experiment_id: str) -> tuple[str, str]:
    """The command that opens the MLflow UI on this store, and the runs-table link."""
    if _local_path(uri) is not None:
        command = f"mlflow ui --backend-store-uri {uri}"
        base = "http://127.0.0.1:5000"
    else:  # printed: never with the URI's password
        command, base = f"open {shown_uri(uri)}", shown_uri(uri).rstrip("/")
    return command, f"{base}/#/experiments/{experiment_id}/runs"


# ---------------------------------------------------------------- finding a study again

STUDY_TAG = "depthlab.study"


def study_tags(study: StudyRun) -> dict[str, str]:
    """The parent run's study and budget tags, for its children: one filter finds both."""
    tags = _client(study.tracking_uri).get_run(study.parent_run_id).data.tags
    return {k: tags[k] for k in (STUDY_TAG, "depthlab.budget") if k in tags}


def shown_uri(uri: str) -> str:
    """The URI without a user name or password, for messages and pages."""
    parsed = urlparse(uri)
    if parsed.password is None and parsed.username is None:
        return uri
    return parsed._replace(netloc=parsed.netloc.rsplit("@", 1)[-1]).geturl()


def find_study(uri: str, name: str, run_id: str | None = None) -> StudyRun:
    """A study by name: its latest parent run (a run tagged depthlab.study without a parent),
    or the parent run `run_id`."""
    client = _client(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        known = sorted(e.name for e in client.search_experiments() if e.name != "Default")
        raise ValueError(f"no study named {name!r} in {shown_uri(uri)}; known studies: "
                         f"{', '.join(known) or 'none'}")
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`{STUDY_TAG}` = '{name}'",
                              order_by=["attributes.start_time DESC"], max_results=10_000)
    parents = [r.info.run_id for r in runs if PARENT_TAG not in r.data.tags]
    if not parents:
        raise ValueError(f"study {name!r} has no parent run (a run tagged {STUDY_TAG} without "
                         f"{PARENT_TAG}) in {shown_uri(uri)}")
    if run_id is not None and run_id not in parents:
        raise ValueError(f"--run-id {run_id}: not a parent run of study {name!r}; its parent "
                         f"runs, latest first: {', '.join(parents)}")
    return StudyRun(uri, experiment.experiment_id, run_id or parents[0])


def run_record(uri: str, run_id: str) -> dict[str, Any]:
    """A run's name, status, params, metrics (latest values) and tags, as plain dicts."""
    run = _client(uri).get_run(run_id)
    return {"name": run.info.run_name, "status": run.info.status,
            "params": dict(run.data.params), "metrics": dict(run.data.metrics),
            "tags": dict(run.data.tags)}


def log_files(uri: str, run_id: str, paths: list[Path], artifact_path: str) -> None:
    """Files as artifacts of a run (also of a finished one), under `artifact_path`."""
    client = _client(uri)
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path)


# ---------------------------------------------------------------- model registry

MODEL_NAME = "model"  # the logged MLflow model's name in its run
EVALUATIONS = "depthlab-evaluations"  # experiment of evaluations of local checkpoints
EVALUATION_TAG = "depthlab.evaluation_of"  # the model URI an evaluation run scored


def parent_runs(uri: str, name: str) -> list[dict[str, Any]]:
    """Every parent run of a study, latest first, as `run_record`s with `run_id` and
    `experiment_id`; [] when there is no such study."""
    client = _client(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`{STUDY_TAG}` = '{name}'",
                              order_by=["attributes.start_time DESC"], max_results=10_000)
    return [{"run_id": r.info.run_id, "experiment_id": r.info.experiment_id,
             "name": r.info.run_name, "status": r.info.status, "params": dict(r.data.params),
             "tags": dict(r.data.tags)} for r in runs if PARENT_TAG not in r.data.tags]


def experiment_names(uri: str) -> list[str]:
    """The names of every experiment of the store (studies and others), sorted."""
    return sorted(e.name for e in _client(uri).search_experiments(max_results=10_000))


@contextlib.contextmanager
def _fluent(uri: str):
    """MLflow's module-level API (log_model needs it) pointed at `uri`, then back."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    variable = os.environ.get("MLFLOW_TRACKING_URI")  # set_tracking_uri writes it too
    mlflow.set_tracking_uri(uri)
    try:
        yield mlflow
    finally:
        mlflow.set_tracking_uri(previous)
        if variable is None:  # else resolve_uri would take `previous` as the user's choice
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = variable


@contextlib.contextmanager
def _quiet_downloads():
    """No artifact progress bars (they fill logs); the caller's setting wins."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ.setdefault(key, "false")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)


def log_model(uri: str, run_id: str, model, extra_files: list[Path], example, registered: str
              ) -> str:
    """Log a torch module as an MLflow model (PyTorch flavour, signature and input example
    from `example`, a float32 array) in the run `run_id`, with `extra_files` beside it
    (`extra_files/`: the depthlab checkpoint), and register it as `registered`; the
    version's URI.

    Pickle serialization, said aloud: torch.export's "pt2" would fix the batch size and
    fails on the retrieval method. MLflow's own loader therefore unpickles; depthlab's
    loader reads the checkpoint instead (see depthlab.models).
    """
    import logging

    import torch

    with _fluent(uri) as mlflow:
        from mlflow.models import infer_signature

        output = model(torch.from_numpy(example)).cpu().numpy()
        signature = infer_signature(example, output)
        pickle_warning = logging.getLogger("mlflow.pytorch")
        level = pickle_warning.level
        pickle_warning.setLevel(logging.ERROR)  # the warning above, said once in the docstring
        try:
            with mlflow.start_run(run_id=run_id), _quiet_downloads():
                info = mlflow.pytorch.log_model(
                    model, name=MODEL_NAME, signature=signature, input_example=example,
                    extra_files=[str(f) for f in extra_files], registered_model_name=registered,
                    serialization_format="pickle",
                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                                      f"mlflow=={mlflow.__version__}"])
        finally:
            pickle_warning.setLevel(level)
    version = info.registered_model_version
    _client(uri).set_tag(run_id, "depthlab.registered_model", f"models:/{registered}/{version}")
    return f"models:/{registered}/{version}"


def _model_version(client, model_uri: str):
    """The registry entry of `models:/NAME/VERSION` or `models:/NAME@ALIAS`."""
    body = model_uri[len("models:/"):]
    name, at, alias = body.partition("@")
    if at:
        return client.get_model_version_by_alias(name, alias)
    name, _, version = body.rpartition("/")
    if not name or not version.isdigit():
        raise ValueError(f"model URI {model_uri!r}: expected models:/<name>/<version> or "
                         "models:/<name>@<alias>")
    return client.get_model_version(name, version)


def _download(uri: str, artifact_uri: str, folder: Path) -> Path | None:
    """One artifact (file or folder) into `folder`; None when the store has no such thing."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    try:
        with _quiet_downloads():
            return Path(download_artifacts(artifact_uri=artifact_uri, dst_path=str(folder),
                                           tracking_uri=uri))
    except (MlflowException, OSError):
        return None


def fetch_checkpoint(uri: str, model_uri: str, folder: Path, name: str
                     ) -> tuple[Path, str | None]:
    """The depthlab checkpoint of a `models:/…` or `runs:/<run_id>/…` URI, downloaded into
    `folder`, and the run that produced it (None when the registry does not say).

    A registered model holds it as `extra_files/<name>`; a run URI may point at the
    checkpoint itself, at a logged model or at a folder holding `best.pt` (a trial's
    `checkpoint/`); `runs:/<run_id>` alone means its best checkpoint.
    """
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    if model_uri.startswith("models:/"):
        try:
            version = _model_version(client, model_uri)
        except MlflowException as error:
            raise ValueError(f"model {model_uri!r} is not registered in {shown_uri(uri)} "
                             f"({error.message})") from None
        base, run_id = model_uri.rstrip("/"), version.run_id or None
        candidates = [f"{base}/extra_files/{name}"]
    elif model_uri.startswith("runs:/"):
        run_id, _, path = model_uri[len("runs:/"):].partition("/")
        base, path = f"runs:/{run_id}", path.strip("/")
        if path.endswith(".pt"):
            candidates = [f"{base}/{path}"]
        elif path:  # a logged model's folder, or a folder holding best.pt
            candidates = [f"{base}/{path}/extra_files/{name}", f"{base}/{path}/best.pt"]
        else:
            candidates = [f"{base}/checkpoint/best.pt", f"{base}/{MODEL_NAME}/extra_files/{name}"]
    else:
        raise ValueError(f"model URI {model_uri!r}: expected models:/<name>/<version>, "
                         "runs:/<run_id>/<path> or a checkpoint file")
    for candidate in candidates:
        found = _download(uri, candidate, folder)
        if found is not None and found.is_file():
            _download(uri, candidate + ".sha256", folder)  # checked by checkpoint.load
            return found, run_id
    raise ValueError(f"{model_uri}: no depthlab checkpoint in {shown_uri(uri)} (looked for "
                     f"{', '.join(candidates)})")


def experiment_of(uri: str, run_id: str) -> str:
    """The experiment id of a run."""
    return _client(uri).get_run(run_id).info.experiment_id


def log_evaluation(uri: str, experiment_id: str | None, name: str, params: dict[str, Any],
                   metrics: dict[str, float], tags: dict[str, str]) -> str:
    """A finished run holding one evaluation; experiment None = the shared evaluations
    experiment (created when missing). Returns its run id."""
    check_writable(uri)
    client = _client(uri)
    if experiment_id is None:
        found = client.get_experiment_by_name(EVALUATIONS)
        experiment_id = (found.experiment_id if found is not None
                         else client.create_experiment(EVALUATIONS))
    run = client.create_run(experiment_id, run_name=name, tags=_tags(tags))
    try:
        client.log_batch(run.info.run_id, metrics=_metrics(metrics, 0), params=_params(params))
    except BaseException:
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id


# The MLflow UI's "share view" state lives in experiment tags of this prefix; a link with
# ?viewStateShareKey=KEY opens the runs table in that state (MLflow 3.17's UI format).
SHARED_VIEW_TAG = "mlflow.sharedViewState."
RUN_NAME_COLUMN = "attributes.`Run Name`"


def share_runs_view(uri: str, study: StudyRun, metrics: list[str], params: list[str],
                    mode: str, tags: tuple[str, ...] = ()) -> str:
    """Save a runs-table view of one study run in the MLflow UI: its trials as a flat list
    (a filter, so no collapsed parent row), best first by metrics[0], with these metric,
    param and tag columns. Returns the link that opens it."""
    columns = ([f"metrics.`{m}`" for m in metrics] + [f"params.`{p}`" for p in params]
               + [f"tags.`{t}`" for t in tags])
    state = {"searchFilter": f"tags.`{PARENT_TAG}` = '{study.parent_run_id}'",
             "orderByKey": f"metrics.`{metrics[0]}`", "orderByAsc": mode == "min",
             "selectedColumns": columns, "columnOrder": [RUN_NAME_COLUMN, *columns],
             "columnWidths": {RUN_NAME_COLUMN: 360}}  # room for method + chosen values
    key = f"depthlab-{study.parent_run_id}"
    _client(uri).set_experiment_tag(study.experiment_id, SHARED_VIEW_TAG + key,
                                    json.dumps(state))
    _, link = ui_hint(shown_uri(uri), study.experiment_id)
    return f"{link}?viewStateShareKey={key}"


def require_store(uri: str) -> None:
    """Raise FileNotFoundError for a local store that does not exist: reading a study must
    not leave an empty database behind."""
    path = _local_path(uri)
    if path is not None and not path.exists():
        raise FileNotFoundError(f"no tracking store at {path}: run the study here first, or "
                                "pass --tracking-uri (sqlite:///path/mlflow.db or a server URL)")
