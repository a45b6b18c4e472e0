"""MLflow, and only here: experiments, the parent run of a study, a child run per trial,
batched metrics, artifacts, and closing every run in a final state.

Shape (see RAY_NOTES): the driver creates the database, the experiment and
the parent run before any trial starts; each trial creates its child run with
explicit ids; the driver ends children, because code after a trial's last
report may never run.

mlflow is imported on first use: importing it costs ~1.7 s, and the Ray
processes that only pass a StudyRun along (the Tune trial driver) never use it.
"""

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

PARENT_TAG = "mlflow.parentRunId"
FINAL_STATES = ("FINISHED", "FAILED", "KILLED")


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _metrics(values: dict[str, float], step: int) -> list:
    """MLflow Metric entities stamped now; non-finite values are skipped (tags flag them)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in values.items()
            if isinstance(v, int | float) and math.isfinite(v)]


def resolve_uri(uri: str | None) -> str:
    """None → the embedded default, sqlite:///<cwd>/mlflow.db."""
    return uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


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


def start_study(uri: str, experiment: str, artifact_root: Path, run_name: str,
                params: dict[str, Any], tags: dict[str, str]) -> StudyRun:
    """Create (or reuse) the experiment and open the parent run, in the driver."""
    check_writable(uri)
    client = _client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        location = None
        if _local_path(uri) is not None:  # Tune moves each trial's cwd: pin artifacts
            location = Path(artifact_root).resolve().as_uri()
        experiment_id = client.create_experiment(experiment, artifact_location=location)
    else:
        experiment_id = found.experiment_id
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
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

    return [Param(k, str(v)[:6000]) for k, v in sorted(flatten(values).items())]


class TrialRun:
    """A trial's child run, written from the training worker."""

    def __init__(self, study: StudyRun, name: str, params: dict[str, Any],
                 tags: dict[str, str] | None = None):
        self.client = _client(study.tracking_uri)
        run = self.client.create_run(
            study.experiment_id, run_name=name,
            tags={PARENT_TAG: study.parent_run_id, **(tags or {})})
        self.run_id = run.info.run_id
        self.client.log_batch(self.run_id, params=_params(params))

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """One batched write; non-finite values are skipped (they are flagged by tags)."""
        batch = _metrics(metrics, step)
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def log_dict(self, values: dict[str, Any], name: str) -> None:
        self.client.log_dict(self.run_id, values, name)

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)


def end_run(uri: str, run_id: str, status: str, tags: dict[str, str] | None = None) -> None:
    """Close a run in a final state (FINISHED, FAILED or KILLED), with optional tags."""
    if status not in FINAL_STATES:
        raise ValueError(f"run status {status!r}: expected one of {FINAL_STATES}")
    client = _client(uri)
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, value)
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


def ui_hint(uri: str, experiment_id: str) -> tuple[str, str]:
    """The command that opens the MLflow UI on this store, and the runs-table link."""
    if _local_path(uri) is not None:
        command = f"mlflow ui --backend-store-uri {uri}"
        base = "http://127.0.0.1:5000"
    else:
        command, base = f"open {uri}", uri.rstrip("/")
    return command, f"{base}/#/experiments/{experiment_id}/runs"
