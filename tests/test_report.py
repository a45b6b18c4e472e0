"""`depthlab report`: plots and leaderboard rebuilt from a real sqlite MLflow store, logged
back to the study's parent run (runs written with tracking.py, as a study writes them)."""

import html
import json
import time

import pytest
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from PIL import Image

from depthlab import tracking
from depthlab.cli import main
from depthlab.report import infer_distribution, study_metric
from depthlab.trial_driver import run_name

STUDY = "wgan-surface"
METRIC = "best/rmse_um"
TRIALS = [  # chosen values and best/rmse_um; the last one diverged
    ({"critic": "dcgan", "generator": "unet", "critic_lr": 1e-4}, {"grad_clip": 0.0}, 4.5),
    ({"critic": "patchgan", "generator": "resnet18", "critic_lr": 5e-5}, {"grad_clip": 1.0}, 3.25),
    ({"critic": "dcgan", "generator": "style", "critic_lr": 2e-4}, {"grad_clip": 10.0}, 6.125),
    ({"critic": "patchgan", "generator": "unet", "critic_lr": 2e-4}, {"grad_clip": 0.0}, None),
]


def write_study(folder, trials, run="wgan-surface-smoke"):
    """A parent run and one child run per trial, through the functions a study uses."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    study = tracking.start_study(uri, STUDY, folder / "mlartifacts", run,
                                 {"budget": "smoke", "method": "wgan_perceptual",
                                  "metric": METRIC, "num_trials": len(trials)},
                                 {"depthlab.study": STUDY, "depthlab.budget": "smoke"})
    tracking.log_run_metrics(study, {"baseline/constant_rmse_um": 5.0})
    names = []
    for index, (method, train, value) in enumerate(trials):
        trial_id = f"a1b2c3{index:02d}"
        name = run_name("wgan_perceptual", {**method, **train}, trial_id)
        child = tracking.TrialRun(study, name, {"method": {"rec_weight": 50.0, **method},
                                                "train": {"steps": 6, **train}},
                                  {"depthlab.trial_id": trial_id})
        if value is None:
            child.log_metrics(3, {"eval/rmse_um": 9.0})
            tracking.end_run(uri, child.run_id, "FAILED", {"depthlab.failure": "diverged"})
        else:
            child.log_metrics(6, {METRIC: value, "best/corr": 0.5 + index / 10})
            tracking.end_run(uri, child.run_id, "FINISHED")
        names.append(name)
    tracking.end_run(uri, study.parent_run_id, "FINISHED")
    return uri, study, names


def assert_png(path):
    assert path.stat().st_size > 5_000, path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) >= 300, image.size


def test_report_draws_plots_and_a_leaderboard_and_logs_them_to_the_parent_run(
        tmp_path, capsys):
    uri, study, names = write_study(tmp_path, TRIALS)
    out = tmp_path / "out"
    assert main(["report", STUDY, "--tracking-uri", uri, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"ranked by {METRIC} (min)" in printed and "not drawn" not in printed
    plots = ["optimization_history.png", "param_importances.png", "parallel_coordinate.png"]
    for name in plots:
        assert_png(out / name)

    page = (out / "leaderboard.html").read_text()
    for name in names:
        assert html.escape(name) in page, name
    for value in ("3.25", "4.5", "6.125", "0.6", "0.5", "0.7"):  # best/rmse_um, best/corr
        assert f"<td>{value}</td>" in page, value
    # best first, the diverged trial last; only the searched params are columns
    order = [page.index(html.escape(names[i])) for i in (1, 0, 2, 3)]
    assert order == sorted(order)
    assert "DIVERGED" in page and "<th>critic_lr</th>" in page and "rec_weight" not in page
    assert "constant prediction of the training mean scores 5" in page

    client = MlflowClient(uri)
    # the UI view the printed link opens: this study run's trials, best first (the
    # browser test renders it)
    key = f"depthlab-{study.parent_run_id}"
    assert (f"compare the trials in the MLflow UI: http://127.0.0.1:5000/#/experiments/"
            f"{study.experiment_id}/runs?viewStateShareKey={key}") in printed
    view = json.loads(client.get_experiment(study.experiment_id).tags[
        f"mlflow.sharedViewState.{key}"])
    assert view["orderByKey"] == f"metrics.`{METRIC}`" and view["orderByAsc"] is True
    assert view["selectedColumns"][:2] == [f"metrics.`{METRIC}`", "metrics.`best/corr`"]
    assert "params.`method.critic_lr`" in view["selectedColumns"]
    assert study.parent_run_id in view["searchFilter"]
    logged = {a.path for a in client.list_artifacts(study.parent_run_id, "report")}
    assert logged == {f"report/{n}" for n in [*plots, "leaderboard.html"]}
    assert client.get_run(study.parent_run_id).info.status == "FINISHED"


def test_two_finished_trials_skip_importances_with_a_message(tmp_path, capsys):
    uri, study, _ = write_study(tmp_path, TRIALS[:2])
    out = tmp_path / "out"
    assert main(["report", STUDY, "--tracking-uri", uri, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "not drawn: param_importances: 2 finished trial(s); importances need at least 3" \
        in printed
    assert not (out / "param_importances.png").exists()
    assert_png(out / "optimization_history.png")
    assert_png(out / "parallel_coordinate.png")
    assert "importances need at least 3" in (out / "leaderboard.html").read_text()


def test_unknown_study_and_the_choice_of_parent_run(tmp_path, capsys):
    uri, first, _ = write_study(tmp_path, TRIALS[:1], run="wgan-surface-smoke")
    time.sleep(0.01)  # start times order the parents
    _, latest, _ = write_study(tmp_path, TRIALS[:2], run="wgan-surface-smoke-2")

    assert main(["report", "nope", "--tracking-uri", uri, "--out", str(tmp_path / "x")]) == 2
    error = capsys.readouterr().err
    assert "error: no study named 'nope'" in error and "known studies: wgan-surface" in error

    assert main(["report", STUDY, "--tracking-uri", uri, "--out", str(tmp_path / "a")]) == 0
    assert f"logged to parent run {latest.parent_run_id}" in capsys.readouterr().out
    assert "wgan-surface-smoke-2" in (tmp_path / "a" / "leaderboard.html").read_text()

    assert main(["report", STUDY, "--tracking-uri", uri, "--out", str(tmp_path / "b"),
                 "--run-id", first.parent_run_id]) == 0
    printed = capsys.readouterr().out
    assert f"logged to parent run {first.parent_run_id}" in printed
    assert "parallel_coordinate: no parameter differs" in printed  # one trial only

    missing = tmp_path / "elsewhere" / "mlflow.db"
    assert main(["report", STUDY, "--tracking-uri", f"sqlite:///{missing}"]) == 2
    assert f"no tracking store at {missing}" in capsys.readouterr().err
    assert not missing.exists()

    child = tracking.child_runs(uri, latest)[0].info.run_id
    assert main(["report", STUDY, "--tracking-uri", uri, "--run-id", child]) == 2
    assert f"--run-id {child}: not a parent run" in capsys.readouterr().err


def test_metric_direction_and_inferred_distributions():
    parent = {"params": {"metric": "best/corr"}}
    assert study_metric(parent, None, None) == ("best/corr", "max")
    assert study_metric(parent, "best/rmse_um", None) == ("best/rmse_um", "min")
    assert study_metric(parent, None, "min") == ("best/corr", "min")
    with pytest.raises(ValueError, match="--metric"):
        study_metric({"params": {}}, None, None)

    assert infer_distribution(["4", "16"]) == (IntDistribution(4, 16), [4, 16])
    assert infer_distribution(["5e-05", "0.0002"])[0] == FloatDistribution(5e-5, 2e-4)
    assert infer_distribution(["2.0", "160.0"])[0] == FloatDistribution(2.0, 160.0, log=True)
    assert infer_distribution(["0.0", "10.0"])[0] == FloatDistribution(0.0, 10.0)
    assert infer_distribution(["unet", "None", "dcgan"]) == (
        CategoricalDistribution(["None", "dcgan", "unet"]), ["unet", "None", "dcgan"])
