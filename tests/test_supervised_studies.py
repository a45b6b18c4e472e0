"""The studies of papers 000, 001 and 002 end to end on their embedded fallback data, with
real Ray, Optuna, MLflow and Parquet; and the dataset/weights flags' errors."""

import re

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run_script

STUDIES = {"pix2pixhd-nyu": "studies/pix2pixhd_nyu.py",
           "multiscale-nyu": "studies/multiscale_nyu.py",
           "fcn-vgg-nyu": "studies/fcn_vgg_nyu.py"}


@pytest.mark.e2e
@pytest.mark.parametrize("name", sorted(STUDIES))
def test_smoke_study_falls_back_to_rooms_and_scores_real_frames(name, isolated, monkeypatch):
    monkeypatch.delenv("DEPTHLAB_NYU", raising=False)
    done = run_script(STUDIES[name], "--budget", "smoke", cwd=isolated)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "no nyu-v2-labeled files given" in done.stdout
    assert "using the embedded synthetic-rooms" in done.stdout

    client = MlflowClient(f"sqlite:///{isolated / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.params["dataset"] == "synthetic-rooms"
    for key in ("baseline/constant_rmse_m", "baseline/real/constant_abs_rel"):
        assert key in parents[0].data.metrics, key
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert len(finished) >= 4, [c.info.status for c in children]
    for child in finished:
        for key in ("eval/rmse_m", "eval/abs_rel", "eval/delta1", "best/rmse_m",
                    "eval/real/rmse_m", "eval/real/delta1"):
            assert key in child.data.metrics, key
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"depth_panel.png", "checkpoint", "config.json"} <= artifacts


@pytest.mark.parametrize("flag, value, message", [
    ("--source", "no/such/folder", "nyu-v2-labeled.*no/such/folder.*does not exist"),
    ("--pretrained", "no/such/vgg19.pth", "--pretrained no/such/vgg19.pth: no such file"),
])
def test_a_given_but_missing_path_is_an_error_not_a_fallback(flag, value, message, isolated):
    done = run_script(STUDIES["fcn-vgg-nyu"], "--budget", "smoke", flag, value, cwd=isolated,
                      timeout=120)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert re.search(message, done.stderr), done.stderr
    assert not (isolated / "depthlab_runs").exists()  # refused before Ray and MLflow runs
