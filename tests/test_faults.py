"""Faults 3, 4, 5, 6 and 8 of RELIABILITY.md with real Ray, Optuna, MLflow (sqlite and a real
`mlflow server`): divergence, an MLflow outage, an unwritable checkpoint/artifact store, two
studies of one name at once, and a brand-new sqlite database shared by concurrent trials."""

import contextlib
import glob
import io
import json
import math
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient
from optuna.samplers import TPESampler
from optuna.trial import TrialState

from depthlab import study as study_module
from depthlab import tracking
from depthlab.config import Budget
from depthlab.methods.wgan_perceptual import PAPER_ROWS_SURFACE, search_space
from depthlab.search import StudySearch
from depthlab.study import LOCK_FILE, StudySpec, run_study, worst_value
from depthlab.trial_driver import TRAIN_RETRIES, UNSENT_FILE
from tests.conftest import isolate, run_script

HEALTH_TIMEOUT_S = 300  # an MLflow server answered after 17-60 s here under shared load

# Two trials of 4 steps at 32x32 with width-4 networks: the spine, not the model.
TINY = Budget("tiny", (32, 32), steps=4, eval_every=2, eval_samples=4, num_trials=2,
              method_overrides=dict(critic_width=4, generator_width=4, critic_iters=1,
                                    critic_iters_after=1),
              data_counts=dict(train_rgb=8, train_depth=8, eval=4))
# An absurd learning rate: the losses are NaN after the first step (checked: step 1 or 2).
DIVERGING = {**PAPER_ROWS_SURFACE[0], "method/critic_lr": 1e6, "method/generator_lr": 1e6}


def tiny_spec(name: str, **changes) -> StudySpec:
    return StudySpec(name, "wgan_perceptual", "synthetic-surface", search_space,
                     {"tiny": TINY}, metric=changes.pop("metric", "best/rmse_um"), **changes)


@contextlib.contextmanager
def isolated_in(folder: Path):
    """The `isolated` fixture for a module-scoped study: own cwd, data dir and Ray token."""
    with pytest.MonkeyPatch.context() as patch:
        isolate(folder, patch)
        try:
            yield folder
        finally:
            if ray.is_initialized():
                ray.shutdown()


def run_quietly(spec: StudySpec, **options):
    """run_study with its printed progress and leaderboard captured: (outcome, output)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        outcome = run_study(spec, "tiny", **options)
    return outcome, printed.getvalue()


def children(uri: str, outcome) -> list:
    return tracking.child_runs(uri, outcome.study)


# ---------------------------------------------------------------- 3 and 8: one study

@pytest.fixture(scope="module")
def diverging_study(tmp_path_factory):
    """Two concurrent trials, one with an absurd learning rate, ranked by best/corr (max: a
    diverged trial must get -inf there, not +inf), on a sqlite path whose folder does not
    exist yet."""
    folder = tmp_path_factory.mktemp("diverging")
    database = folder / "fresh" / "never-created" / "mlflow.db"
    spec = tiny_spec("faults-divergence", metric="best/corr", mode="max",
                     points_to_evaluate=[DIVERGING, PAPER_ROWS_SURFACE[0]])
    with isolated_in(folder):
        outcome, output = run_quietly(spec, tracking_uri=f"sqlite:///{database}",
                                      max_concurrent_trials=2)
    return outcome, output, database, folder


def _by_lr(runs):
    diverged = [r for r in runs if float(r.data.params["method.critic_lr"]) == 1e6]
    healthy = [r for r in runs if float(r.data.params["method.critic_lr"]) != 1e6]
    return diverged, healthy


@pytest.mark.e2e
def test_a_diverged_trial_fails_is_never_best_and_the_study_goes_on(diverging_study):
    outcome, output, database, _ = diverging_study
    runs = children(f"sqlite:///{database}", outcome)
    (diverged,), (healthy,) = _by_lr(runs)
    assert diverged.info.status == "FAILED"
    assert diverged.data.tags["depthlab.failure"] == "diverged"
    assert diverged.data.metrics["diverged"] == 1.0
    # its step-0 evaluation left a finite best/corr, equal to the healthy trial's start
    assert math.isfinite(diverged.data.metrics["best/corr"])
    assert healthy.info.status == "FINISHED" and outcome.status == "FINISHED"
    assert outcome.best_run_id == healthy.info.run_id
    assert outcome.leaderboard[-1]["run_id"] == diverged.info.run_id
    assert "DIVERGED" in output and f"best run: {healthy.info.run_id}" in output


@pytest.mark.e2e
def test_asha_and_optuna_are_told_the_worst_value(diverging_study):
    outcome, _, database, folder = diverging_study
    storage = folder / "depthlab_runs" / "ray" / "faults-divergence-tiny"
    # What Tune (and so ASHA) got as the diverged trial's last result
    last = {}
    for path in storage.glob("_trial_driver_*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        last[rows[-1]["trial_id"]] = rows[-1]
    diverged = [r for r in last.values() if r.get("diverged")]
    assert len(last) == 2 and len(diverged) == 1
    assert diverged[0]["best/corr"] == -math.inf  # max mode: the worst value, not +inf
    # What Optuna was told: the searcher state Tune saved with the experiment
    (state_file,) = storage.glob("searcher-state-*.pkl")
    with open(state_file, "rb") as handle:  # written by this test's own study
        searcher = pickle.load(handle)
    trials = searcher["_ot_study"].get_trials(deepcopy=False)
    told = {t.params["method/critic_lr"]: t for t in trials}
    assert told[1e6].state == TrialState.COMPLETE and told[1e6].value == -math.inf
    healthy = told[PAPER_ROWS_SURFACE[0]["method/critic_lr"]]
    assert healthy.state == TrialState.COMPLETE and math.isfinite(healthy.value)


@pytest.mark.e2e
def test_a_fresh_sqlite_database_serves_concurrent_trials(diverging_study):
    """Fault 8: the driver creates the database and experiment before trials start."""
    from mlflow.store.db.utils import _get_latest_schema_revision  # the schema MLflow expects

    outcome, _, database, _ = diverging_study
    client = MlflowClient(f"sqlite:///{database}")
    runs = children(f"sqlite:///{database}", outcome)
    assert len(runs) == 2
    for run in runs:
        assert client.get_metric_history(run.info.run_id, "eval/corr"), run.info.run_id
        assert run.info.status in tracking.FINAL_STATES
    first, second = sorted(runs, key=lambda r: r.info.start_time)
    assert second.info.start_time < first.info.end_time  # they did run at the same time
    with contextlib.closing(sqlite3.connect(database)) as db:
        (version,), = db.execute("select version_num from alembic_version").fetchall()
    assert version == _get_latest_schema_revision()


FIRST_USE = ("import sys; from pathlib import Path; from depthlab import tracking; "
             "s = tracking.start_study('sqlite:///' + sys.argv[1], 'shared', "
             "Path(sys.argv[1]).parent / 'art', 'parent', {}, {}); print(s.experiment_id)")


def test_drivers_opening_one_fresh_sqlite_database_at_once_all_succeed(tmp_path):
    """Without the driver's first-use lock, 5 of 6 such drivers failed here (alembic:
    'table alembic_version already exists', 'expected to match one row')."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    database = tmp_path / "new" / "mlflow.db"
    drivers = [subprocess.Popen([sys.executable, "-c", FIRST_USE, str(database)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(4)]
    outputs = [d.communicate(timeout=300) for d in drivers]
    assert [d.returncode for d in drivers] == [0] * 4, [err[-1500:] for _, err in outputs]
    assert {out.strip() for out, _ in outputs} == {"1"}  # one experiment, created once
    with contextlib.closing(sqlite3.connect(database)) as db:
        (version,), = db.execute("select version_num from alembic_version").fetchall()
        parents = db.execute("select count(*) from runs").fetchone()[0]
    assert version == _get_latest_schema_revision() and parents == 4


def test_worst_value_follows_the_loops_sense_of_better():
    assert worst_value("best/rmse_um") == math.inf
    assert worst_value("best/corr") == -math.inf
    assert worst_value("best/real/delta1") == -math.inf


def test_optuna_gets_the_worst_value_of_a_diverged_trial_in_max_mode():
    search = StudySearch(search_space, metric="best/corr", mode="max",
                         sampler=TPESampler(seed=0), max_steps=10)
    assert search.suggest("diverged") is not None
    # even a result carrying the old +inf sentinel is told as the worst value
    search.on_trial_complete("diverged", {"best/corr": math.inf, "step": 1, "diverged": 1.0})
    (trial,) = search._ot_study.get_trials(deepcopy=False)
    assert trial.state == TrialState.COMPLETE and trial.value == -math.inf


# ---------------------------------------------------------------- 4: MLflow server outage

def _descendants(pid: int) -> list[int]:
    """Child processes of `pid`, recursively (the server's uvicorn worker)."""
    found = []
    for task in glob.glob(f"/proc/{pid}/task/*/children"):
        with contextlib.suppress(OSError):
            for child in map(int, Path(task).read_text().split()):
                found += [child, *_descendants(child)]
    return found


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1:`port` over a sqlite file and an artifact folder."""

    def __init__(self, folder: Path, port: int):
        self.url, self.log = f"http://127.0.0.1:{port}", folder / f"server-{port}.log"
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
                   "--port", str(port), "--workers", "1",
                   "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
                   "--artifacts-destination", str(folder / "served")]
        with open(self.log, "a") as out:  # a file, not a pipe: a full pipe would stall it
            self.process = subprocess.Popen(command, cwd=folder, stdout=out,
                                            stderr=subprocess.STDOUT)
        deadline = time.time() + HEALTH_TIMEOUT_S
        while time.time() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.url}/health", timeout=10) as answer:
                    if answer.status == 200:
                        return
            time.sleep(1)
        self.stop()
        pytest.fail(f"no /health within {HEALTH_TIMEOUT_S} s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        stop_tree(self.process)


def stop_tree(process: subprocess.Popen) -> None:
    """Terminate a process we started and its children, by pid; kill what is left after
    30 s, and wait until they are gone (a child may hold a port)."""
    pids = [process.pid, *_descendants(process.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=30)
    deadline = time.time() + 30
    while time.time() < deadline and any(map(_alive, pids[1:])):
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    """Running (a zombie holds no port)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def fail_fast(monkeypatch) -> None:
    """TrialRun's MLflow HTTP settings, undone after the test (TrialRun sets them for its
    whole process: a Ray worker's)."""
    for key, value in tracking.TRIAL_HTTP_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.mark.e2e
def test_metrics_logged_while_the_server_is_down_reach_it_when_it_returns(tmp_path,
                                                                          monkeypatch):
    fail_fast(monkeypatch)
    port = study_module._free_port()
    server = MlflowServer(tmp_path, port)
    try:
        study = tracking.start_study(server.url, "outage", tmp_path / "unused", "parent",
                                     {"budget": "tiny"}, {})
        run = tracking.TrialRun(study, "trial", {"method": {"critic_lr": 1e-4}},
                                {"depthlab.trial_id": "t1"})
        unsent = tmp_path / "train-t1" / UNSENT_FILE
        run.keep_unsent_in(unsent)
        run.log_metrics(0, {"eval/rmse_um": 3.0})
        server.stop()

        seconds = []
        for step in (1, 2, 3):  # training goes on: no exception, no minutes of retries
            started = time.monotonic()
            run.log_metrics(step, {"eval/rmse_um": 3.0 - step / 10},
                            {"depthlab.best_step": str(step)})  # a new best's tags
            seconds.append(time.monotonic() - started)
        run.set_tags({"depthlab.resume_warning": "state 2 damaged"})
        with pytest.warns(RuntimeWarning, match=f"unreachable.*kept in {unsent}"):
            assert run.flush() == unsent
        kept = [json.loads(line) for line in unsent.read_text().splitlines()]
        assert [r["op"] for r in kept] == ["metrics"] * 3 + ["tags"]
        assert kept[2]["tags"] == {"depthlab.best_step": "3"}
        assert max(seconds) < 30, seconds  # MLflow's own retries take ~4 min per call
        down_until = int(time.time() * 1000)

        server = MlflowServer(tmp_path, port)  # the same port and backend
        run.log_metrics(4, {"eval/rmse_um": 2.5})
        assert run.flush() is None and not unsent.exists()
        client = MlflowClient(server.url)
        history = sorted(client.get_metric_history(run.run_id, "eval/rmse_um"),
                         key=lambda m: m.step)
        assert [(m.step, round(m.value, 6)) for m in history] == [
            (0, 3.0), (1, 2.9), (2, 2.8), (3, 2.7), (4, 2.5)]
        assert all(m.timestamp <= down_until for m in history[1:4])  # when measured, not sent
        tags = client.get_run(run.run_id).data.tags
        assert tags["depthlab.best_step"] == "3"  # the last of the three, delivered in order
        assert tags["depthlab.resume_warning"] == "state 2 damaged"
    finally:
        server.stop()


def test_a_locked_sqlite_database_buffers_and_the_driver_sends_the_rest(tmp_path,
                                                                      monkeypatch):
    """The same buffering on sqlite: a write lock held elsewhere; the trial's worker ends
    (its records in the unsent file) and the driver sends them when the lock is gone."""
    fail_fast(monkeypatch)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = tracking.start_study(uri, "locked", tmp_path / "art", "parent", {}, {})
    run = tracking.TrialRun(study, "trial", {}, {})
    unsent = tmp_path / "train-t1" / UNSENT_FILE
    run.keep_unsent_in(unsent)
    blocker = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        run.log_metrics(1, {"eval/rmse_um": 1.5})
        seconds = time.monotonic() - started
        with pytest.warns(RuntimeWarning, match="unreachable"):
            assert run.flush() == unsent
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert seconds < 120, seconds
    assert tracking.send_unsent(uri, unsent) and not unsent.exists()
    history = MlflowClient(uri).get_metric_history(run.run_id, "eval/rmse_um")
    assert [(m.step, m.value) for m in history] == [(1, 1.5)]


def test_unsent_records_from_before_tags_joined_the_metric_batch_still_deliver(tmp_path):
    """An unsent file left by an older version: its metrics records have no "tags"."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = tracking.start_study(uri, "old-unsent", tmp_path / "art", "parent", {}, {})
    run = tracking.TrialRun(study, "trial", {}, {})
    unsent = tmp_path / "train-t1" / UNSENT_FILE
    unsent.parent.mkdir()
    unsent.write_text(json.dumps({"run_id": run.run_id, "op": "metrics", "step": 2,
                                  "time": 1000, "values": {"eval/rmse_um": 1.5}}) + "\n")
    assert tracking.send_unsent(uri, unsent) and not unsent.exists()
    history = MlflowClient(uri).get_metric_history(run.run_id, "eval/rmse_um")
    assert [(m.step, m.value, m.timestamp) for m in history] == [(2, 1.5, 1000)]


# ---------------------------------------------------------------- 5: unwritable storage

def test_an_unwritable_runs_folder_fails_before_ray_naming_path_and_errno(tmp_path):
    with isolated_in(tmp_path):
        blocker = tmp_path / "runs"
        blocker.write_text("a file where the runs folder should be")
        with pytest.raises(ValueError, match=r"runs folder .*runs is not writable "
                                             r"\(\[Errno (17|20)\]"):
            run_study(tiny_spec("faults-runs"), "tiny", runs_dir=blocker)
        assert not ray.is_initialized()
        assert not (tmp_path / "mlflow.db").exists()  # no parent run left RUNNING either


@pytest.mark.e2e
def test_a_trial_that_cannot_write_its_checkpoint_fails_clearly(tmp_path, monkeypatch):
    """The experiment's artifact store (where the best checkpoint goes) is a file, as when
    a shared folder is not mounted: each write fails with an OSError. Chosen over a full
    disk (needs a mount) and RLIMIT_FSIZE (needs a hook in the worker): same code path."""
    # Train's own retries (TRAIN_RETRIES) still run; Tune's restart of the trial would
    # only repeat them (~2 min more here).
    monkeypatch.setattr(study_module, "DRIVER_RETRIES", 0)
    with isolated_in(tmp_path):
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        blocker = tmp_path / "artifact-store"
        blocker.write_text("not a folder")
        MlflowClient(uri).create_experiment("faults-disk",
                                            artifact_location=blocker.as_uri())
        outcome, output = run_quietly(tiny_spec("faults-disk"), tracking_uri=uri,
                                      num_trials=1)
    runs = children(uri, outcome)
    assert outcome.status == "FAILED" and len(runs) == 1
    assert MlflowClient(uri).get_run(outcome.study.parent_run_id).info.status == "FAILED"
    (run,) = runs
    failure = run.data.tags["depthlab.failure"]
    assert run.info.status == "FAILED"
    assert "[Errno 20] Not a directory" in failure and str(blocker) in failure, failure
    attempts = int(run.data.tags["depthlab.attempts"])  # each retry failed the same way
    assert attempts == TRAIN_RETRIES + 1
    assert all(run.data.tags[f"depthlab.attempt{i}.failure"] == failure
               for i in range(1, attempts))
    assert f"failed: {failure[:60]}" in output  # the driver says why, not just "see log"
    assert outcome.best_run_id is None


# ---------------------------------------------------------------- 6: one name, two drivers

def test_drivers_starting_together_get_distinct_folders(tmp_path):
    folders = []
    start = threading.Barrier(8)

    def claim():
        start.wait()
        folders.append(study_module._storage_dir(tmp_path, "same", resume=False))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(p.name for p in folders) == sorted(
        ["same"] + [f"same-{i}" for i in range(2, 9)])
    (tmp_path / "same-extra").mkdir()  # another study's name that starts the same way
    assert study_module._storage_dir(tmp_path, "same", resume=True).name != "same-extra"


def test_a_held_study_folder_refuses_a_second_driver_naming_the_pid(tmp_path):
    held = study_module._hold_study_lock(tmp_path)
    try:
        second = subprocess.run(
            [sys.executable, "-c", "import sys; from pathlib import Path; "
             "from depthlab.study import _hold_study_lock; _hold_study_lock(Path(sys.argv[1]))",
             str(tmp_path)], capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        assert f"study folder {tmp_path} is in use by another study driver (pid " \
               f"{os.getpid()})" in second.stderr
    finally:
        held.close()
    again = study_module._hold_study_lock(tmp_path)  # released: the next driver may go
    again.close()


STUDY_SCRIPT = '''import sys
from depthlab.config import Budget
from depthlab.methods.wgan_perceptual import search_space
from depthlab.study import StudySpec, study_main

BUDGET = Budget("tiny", (32, 32), steps=4, eval_every=2, eval_samples=4, num_trials=1,
                method_overrides=dict(critic_width=4, generator_width=4, critic_iters=1,
                                      critic_iters_after=1),
                data_counts=dict(train_rgb=8, train_depth=8, eval=4))
SPEC = StudySpec("faults-same-name", "wgan_perceptual", "synthetic-surface", search_space,
                 {"tiny": BUDGET}, metric="best/rmse_um")
if __name__ == "__main__":
    sys.exit(study_main(SPEC))
'''


def _tune_trial_ids(folder: Path) -> set[str]:
    """The trial ids of a Tune experiment folder's saved state."""
    ids = set()
    for state in folder.glob("experiment_state-*.json"):
        for trial, _ in json.loads(state.read_text())["trial_data"]:
            ids.add(json.loads(trial)["trial_id"])
    return ids


def _lock_holder(folder: Path) -> int | None:
    text = (folder / LOCK_FILE).read_text().strip() if (folder / LOCK_FILE).exists() else ""
    return int(text) if text.isdigit() else None


@pytest.mark.e2e
def test_two_studies_of_one_name_are_kept_apart_and_a_resume_of_a_running_one_is_refused(
        isolated):
    script = isolated / "same_name_study.py"
    script.write_text(STUDY_SCRIPT)
    args = ("--budget", "tiny", "--name", "same")
    first, second = (run_script(str(script), *args, cwd=isolated, wait=False)
                     for _ in range(2))
    ray_dir = isolated / "depthlab_runs" / "ray"
    try:
        deadline = time.time() + 300
        while time.time() < deadline:  # both drivers hold their folder's lock
            holders = {_lock_holder(f) for f in ray_dir.glob("same*")} if ray_dir.exists() \
                else set()
            if holders >= {first.pid, second.pid}:
                break
            assert first.poll() is None and second.poll() is None, "a study ended early"
            time.sleep(0.5)
        else:
            pytest.fail("the two studies did not both start within 300 s")
        resumed = run_script(str(script), *args, "--resume", cwd=isolated, timeout=300)
        running = (first.poll(), second.poll())
        outputs = [p.communicate(timeout=600)[0] for p in (first, second)]
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.kill()
    assert running == (None, None), "the resume came after a study had ended"
    assert resumed.returncode == 2, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "is in use by another study driver (pid" in resumed.stderr
    assert any(f"{ray_dir / name} is in use by another study driver (pid {pid})"
               in resumed.stderr for name in ("same", "same-2")
               for pid in (first.pid, second.pid)), resumed.stderr
    for process, output in zip((first, second), outputs, strict=True):
        assert process.returncode == 0, output[-3000:]

    folders = sorted(p.name for p in ray_dir.glob("same*") if p.is_dir())
    assert folders == ["same", "same-2"]
    uri = f"sqlite:///{isolated / 'mlflow.db'}"
    seen = []
    for name in folders:
        parent = json.loads((ray_dir / name / "depthlab_study.json").read_text())
        experiment = MlflowClient(uri).get_experiment_by_name("faults-same-name")
        study = tracking.StudyRun(uri, experiment.experiment_id, parent["parent_run_id"])
        mine = {r.data.tags["depthlab.trial_id"] for r in tracking.child_runs(uri, study)}
        assert _tune_trial_ids(ray_dir / name) == mine and len(mine) == 1
        seen.append(mine)
    assert not seen[0] & seen[1]  # no trial in both experiment states
