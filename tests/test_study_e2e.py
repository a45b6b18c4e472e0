"""The spine end to end: the study script with real Ray Train/Tune, Optuna, MLflow and Parquet."""

import json
import signal
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run_script

pytestmark = pytest.mark.e2e

SCRIPT = "studies/wgan_surface.py"


def _runs(folder):
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("wgan-surface")
    if experiment is None:  # the study has created the database but not yet its experiment
        return client, [], []
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def test_smoke_study_logs_a_parent_and_finished_children(isolated):
    done = run_script(SCRIPT, "--budget", "smoke", cwd=isolated)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client, parents, children = _runs(isolated)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert "baseline/constant_rmse_um" in parents[0].data.metrics
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert len(finished) >= 4
    for child in finished:
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        for key in ("eval/rmse_um", "eval/mae_um", "eval/corr", "best/rmse_um",
                    "train/critic_loss", "train/generator_loss", "train/wasserstein"):
            assert key in child.data.metrics, key
        assert child.data.params["method.critic_width"] == "4"
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"depth_panel.png", "checkpoint", "config.json"} <= artifacts
        history = client.get_metric_history(child.info.run_id, "eval/rmse_um")
        assert [m.step for m in history][:2] == [0, 3]  # untrained, then every eval_every
        tags = child.data.tags  # the study's (from the driver) and its best evaluation's
        assert (tags["depthlab.study"], tags["depthlab.budget"]) == ("wgan-surface", "smoke")
        best_eval = min(sorted(history, key=lambda m: m.step), key=lambda m: m.value)
        assert int(tags["depthlab.best_step"]) == best_eval.step
        assert float(tags["depthlab.best_rmse_um"]) == pytest.approx(best_eval.value, rel=1e-5)
    # the leaderboard, the best run and the way to the UI
    best = min(finished, key=lambda r: r.data.metrics["best/rmse_um"])
    assert f"best run: {best.info.run_id}" in done.stdout
    assert "/#/experiments/" in done.stdout and "mlflow ui --backend-store-uri" in done.stdout
    # the saved view of this study's trials: a filter on its parent, best first
    key = done.stdout.split("viewStateShareKey=", 1)[1].split()[0]
    view = json.loads(client.get_experiment(parents[0].info.experiment_id).tags[
        f"mlflow.sharedViewState.{key}"])
    assert parents[0].info.run_id in view["searchFilter"] and view["orderByAsc"] is True


def test_ctrl_c_leaves_no_run_running_and_resume_finishes_the_study(isolated):
    study = run_script(SCRIPT, "--budget", "smoke", "--trials", "6", cwd=isolated, wait=False)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:  # wait until trials are training
            time.sleep(2)
            # written after the study created the DB and its parent run: opening the DB
            # any earlier races the study's schema migration
            if list(isolated.glob("depthlab_runs/ray/*/depthlab_study.json")):
                _, _, children = _runs(isolated)
                if any("eval/rmse_um" in c.data.metrics for c in children):
                    break
        else:
            pytest.fail("no trial reported within 240 s")
        study.send_signal(signal.SIGINT)
        output, _ = study.communicate(timeout=180)
    finally:
        if study.poll() is None:
            study.kill()
    assert study.returncode == 130, output[-3000:]
    _, parents, children = _runs(isolated)
    assert parents[0].info.status == "KILLED"
    assert children and all(c.info.status in ("FINISHED", "FAILED", "KILLED") for c in children)

    # --resume continues the same study: same parent run, every trial finished once
    # (a resume has taken over 600 s on a slow CI machine: room, and its output if it stalls)
    done = run_script(SCRIPT, "--budget", "smoke", "--trials", "6", "--resume", cwd=isolated,
                      timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _, parents_after, children = _runs(isolated)
    assert [p.info.run_id for p in parents_after] == [parents[0].info.run_id]
    assert parents_after[0].info.status == "FINISHED"
    finished = {c.data.tags["depthlab.trial_id"] for c in children
                if c.info.status == "FINISHED"}
    assert len(finished) == 6, sorted(finished)


def test_two_studies_at_once_on_one_machine_both_finish(isolated):
    """Each local study starts its own Ray; neither may break the other's (Train's
    placement-group cleaner once picked the wrong local Ray and stalled both)."""
    folders = [isolated / "a", isolated / "b"]
    studies = []
    for folder in folders:
        folder.mkdir()
        studies.append(run_script(SCRIPT, "--budget", "smoke", cwd=folder, wait=False))
    try:
        outputs = [study.communicate(timeout=480)[0] for study in studies]
    finally:
        for study in studies:
            if study.poll() is None:
                study.kill()
    for study, output, folder in zip(studies, outputs, folders, strict=True):
        assert study.returncode == 0, output[-3000:]
        _, parents, children = _runs(folder)
        assert parents[0].info.status == "FINISHED"
        assert sum(c.info.status == "FINISHED" for c in children) >= 4
