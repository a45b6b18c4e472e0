"""Picking the best and using it: `depthlab best` (leaderboard, --register, --all),
`depthlab predict` and `depthlab evaluate`, on real MLflow runs and real checkpoints.

The runs are written as a study writes them (its parent run, `log_evaluation`'s checkpoint
artifacts), by trials trained in this process with `train_trial`: Ray is what the other
end-to-end tests check, and would cost a minute here.
"""

import contextlib
import io
import json
import math
import struct
from dataclasses import replace
from pathlib import Path

import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from depthlab import checkpoint, models, study, tracking
from depthlab.best import resolve_metric
from depthlab.catalog import load_entry
from depthlab.cli import main
from depthlab.config import Budget, to_dict
from depthlab.data.datasets import load_splits
from depthlab.data.readers import read_depth_png
from depthlab.data.shards import prepare
from depthlab.loop import score
from depthlab.methods.fcn_vgg import search_space
from depthlab.predict import Intrinsics, point_cloud, to_millimetres, training_camera
from depthlab.trial import data_info, train_trial
from tests.test_methods import _batches, _build

SIZE = (64, 64)
COUNTS = dict(train=16, test=8)
BUDGET = Budget("tiny", SIZE, steps=4, eval_every=2, eval_samples=8, num_trials=2,
                method_overrides=dict(width=0.125, batch_size=4, decoder_init="kaiming"),
                data_counts=COUNTS)


def _spec(name: str) -> study.StudySpec:
    return study.StudySpec(name=name, method="fcn_vgg", dataset="synthetic-rooms",
                           search_space=search_space, budgets={"tiny": BUDGET},
                           metric="best/rmse_m", mode="min", train_splits=("train", "train"),
                           eval_split="test")


def _write_study(folder: Path, name: str, lrs: list[float]) -> tracking.StudyRun:
    """A study's parent run and one trained, FINISHED child run per learning rate."""
    uri = tracking.resolve_uri(None)
    spec, entry = _spec(name), load_entry("synthetic-rooms")
    path = prepare(entry, size=SIZE, counts=COUNTS, progress=False)
    plan = replace(study.plan_for(spec, BUDGET, path, entry, seed=0), data_path=str(path))
    parent = study._open_parent(spec, BUDGET, uri, folder / "runs", folder / "runs" / name,
                                False, {}, plan)
    for i, lr in enumerate(lrs):
        trial = replace(plan, method_config={**plan.method_config, "lr": lr})
        run = tracking.TrialRun(parent, f"fcn_vgg lr={lr} #{i}",
                                {"method": trial.method_config, "train": trial.settings},
                                {"depthlab.trial_id": f"t{i}"})
        workdir = folder / f"work-{name}-{i}"
        workdir.mkdir()

        def report(method, step, metrics, evaluation, improved, run=run, trial=trial,
                   workdir=workdir):
            study.log_evaluation(run, trial, method, step, metrics, evaluation, improved,
                                 workdir)

        train_trial(trial, report)
        tracking.end_run(uri, run.run_id, "FINISHED")
    return parent


def _fake_trial(parent: tracking.StudyRun, status: str, value: float, tags: dict) -> str:
    """A trial run with a better metric than any real one, ended in `status`."""
    run = tracking.TrialRun(parent, f"fake {status}", {"method": {"lr": 0.5}}, {})
    run.log_metrics(4, {"best/rmse_m": value})
    tracking.end_run(parent.tracking_uri, run.run_id, status, tags)
    return run.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two studies on synthetic-rooms: A with two real trials, a diverged and a killed
    run (both 'better' than the real ones), B with one real trial."""
    folder = tmp_path_factory.mktemp("best")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("DEPTHLAB_DATA", str(folder / "data"))
        a = _write_study(folder, "study-a", [0.05, 0.001])
        diverged = _fake_trial(a, "FAILED", 1e-4, {"depthlab.failure": "diverged"})
        killed = _fake_trial(a, "KILLED", 2e-4, {})
        b = _write_study(folder, "study-b", [0.02])
        yield {"folder": folder, "uri": tracking.resolve_uri(None), "a": a, "b": b,
               "diverged": diverged, "killed": killed}


def _finished_best(uri: str, parent: tracking.StudyRun) -> tuple[str, float]:
    runs = [r for r in tracking.child_runs(uri, parent) if r.info.status == "FINISHED"]
    best = min(runs, key=lambda r: r.data.metrics["best/rmse_m"])
    return best.info.run_id, best.data.metrics["best/rmse_m"]


@pytest.fixture(scope="module")
def registered(store):
    """`depthlab best study-a --register`, once for the tests below."""
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.chdir(store["folder"])
        code = main(["best", "study-a", "--register"])
    return {**store, "code": code, "out": out.getvalue()}


def test_best_ranks_finished_runs_and_skips_diverged_and_killed(store, capsys, monkeypatch):
    monkeypatch.chdir(store["folder"])
    assert main(["best", "study-a"]) == 0
    out = capsys.readouterr().out
    expected, value = _finished_best(store["uri"], store["a"])
    assert f"best run: {expected}" in out, out
    assert f"= {value:.6g}" in out
    assert "2 of 4 trial runs ranked by best/rmse_m (min)" in out
    assert "skipped: 1 diverged, 1 killed" in out
    for fake in (store["diverged"], store["killed"]):
        assert fake[:8] not in out  # never on the board
    # the parent run records the study's mode, which best used
    parent = MlflowClient(store["uri"]).get_run(store["a"].parent_run_id)
    assert parent.data.params["mode"] == "min" and parent.data.params["metric"] == "best/rmse_m"


def test_best_short_metric_name_and_other_direction(store, capsys, monkeypatch):
    monkeypatch.chdir(store["folder"])
    assert main(["best", "study-a", "--metric", "delta1"]) == 0
    out = capsys.readouterr().out
    assert "ranked by best/delta1 (max)" in out
    runs = [r for r in tracking.child_runs(store["uri"], store["a"])
            if r.info.status == "FINISHED"]
    best = max(runs, key=lambda r: r.data.metrics["best/delta1"])
    assert f"best run: {best.info.run_id}" in out
    assert resolve_metric("rmse", {"best/rmse_m", "best/real/rmse_m", "eval/rmse_m"}) == \
        "best/rmse_m"
    with pytest.raises(ValueError, match="no trial run has it"):
        resolve_metric("nope", {"best/rmse_m"})


def test_best_of_an_unknown_study_names_the_known_ones(store, capsys, monkeypatch):
    monkeypatch.chdir(store["folder"])
    assert main(["best", "study-x"]) == 2
    err = capsys.readouterr().err
    assert "no study named 'study-x'" in err and "study-a" in err and "study-b" in err


def test_register_creates_version_1_of_the_best_run_and_it_loads(registered):
    assert registered["code"] == 0, registered["out"]
    assert "registered models:/study-a/1" in registered["out"]
    client = MlflowClient(registered["uri"])
    version = client.get_model_version("study-a", "1")
    expected, _ = _finished_best(registered["uri"], registered["a"])
    assert version.run_id == expected
    assert client.get_run(expected).data.tags["depthlab.registered_model"] == "models:/study-a/1"
    # depthlab's loader (weights_only checkpoint) and MLflow's own (pickle) agree
    from depthlab.predict import open_model

    ours, source = open_model("models:/study-a/1", registered["uri"])
    assert source.run_id == expected and ours.input_size == SIZE
    image = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(registered["uri"])
    try:  # unpickling is fine here: this test wrote the file
        theirs = mlflow.pytorch.load_model("models:/study-a/1")
        info = mlflow.models.get_model_info("models:/study-a/1")
    finally:
        mlflow.set_tracking_uri(previous)
    torch.testing.assert_close(theirs(image), ours(image))
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 3, *SIZE)


def _png(path: Path, size: tuple[int, int], seed: int) -> Path:
    rgb = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def _read_ply(path: Path) -> tuple[dict[str, str], np.ndarray]:
    data = path.read_bytes()
    header, body = data.split(b"end_header\n", 1)
    lines = header.decode().splitlines()
    count = int(next(line.split()[2] for line in lines if line.startswith("element vertex")))
    kind = dict(format=lines[1].split()[1], count=str(count))
    dtype = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
             ("blue", "u1")]
    return kind, np.frombuffer(body, dtype=dtype, count=count)


def test_predict_writes_millimetre_pngs_colour_and_ply_and_names_a_bad_image(
        registered, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(registered["folder"])
    same = _png(tmp_path / "same.png", SIZE, 1)  # at the model's input size
    other = _png(tmp_path / "other.png", (48, 80), 2)  # resized in and back out
    bad = tmp_path / "broken.png"
    bad.write_bytes(same.read_bytes()[:200])  # truncated
    out = tmp_path / "depth"
    code = main(["predict", "models:/study-a/1", str(same), str(bad), str(other), "--out",
                 str(out), "--batch-size", "2", "--ply", "--fx", "50"])
    captured = capsys.readouterr()
    assert code == 2
    assert str(bad) in captured.err and "1 of 3 images could not be read" in captured.err
    assert not list(out.glob("broken*"))
    assert sorted(p.name for p in out.iterdir()) == [
        "other.ply", "other_depth.png", "other_depth_color.png",
        "same.ply", "same_depth.png", "same_depth_color.png"]

    from depthlab.predict import open_model, predict_batch

    model, _ = open_model("models:/study-a/1", registered["uri"])
    rgb = np.array(Image.open(same).convert("RGB"))
    expected = model(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)[0, 0].numpy()
    written = read_depth_png(out / "same_depth.png")
    assert written.dtype == np.uint16 and written.shape == SIZE
    valid = expected > 0  # a barely trained net predicts some negative depth: invalid, 0
    assert ((written == 0) == ~valid).all()
    # positive depth under 0.5 mm is written as 1 (0 means invalid)
    assert np.abs(written[valid] - np.maximum(expected[valid] * 1000, 1)).max() <= 0.5 + 1e-3
    other_rgb = np.asarray(Image.open(other).convert("RGB"))
    (other_depth,) = predict_batch(model, [other_rgb])
    assert other_depth.shape == (48, 80)
    other_valid = other_depth > 0
    assert np.abs(read_depth_png(out / "other_depth.png")[other_valid]
                  - np.maximum(other_depth[other_valid] * 1000, 1)).max() <= 0.501
    colour = np.asarray(Image.open(out / "same_depth_color.png"))
    assert colour.shape == (*SIZE, 3) and colour.std() > 0

    kind, points = _read_ply(out / "same.ply")
    assert kind == {"format": "binary_little_endian", "count": str(int(valid.sum()))}
    v, u = np.nonzero(valid)  # row-major pixels
    z = expected[v, u]
    np.testing.assert_allclose(points["z"], z, rtol=1e-6)
    cx = training_camera(model, SIZE)[2]  # --fx given, no --cx: the training camera's
    assert 30 < cx < 34  # NYU's Kinect, scaled to 64 px
    np.testing.assert_allclose(points["x"], (u - cx) * z / 50, rtol=1e-5, atol=1e-6)
    assert (points["red"] == rgb[v, u, 0]).all()


def test_a_positive_model_gives_a_point_for_every_pixel(tmp_path, capsys):
    """pix2pixHD's tanh output is depth in (0, 10 m): every pixel is valid."""
    method, data = _build("pix2pixhd")
    weights = {n: net.state_dict() for n, net in method.networks().items()}
    path = checkpoint.save(tmp_path / "p.pt", method="pix2pixhd", config=to_dict(method.config),
                           settings=to_dict(method.settings), dataset="synthetic-rooms@1",
                           state=weights, step=0, data=data.__dict__)
    image = _png(tmp_path / "a.png", (32, 96), 4)
    assert main(["predict", str(path), str(image), "--out", str(tmp_path / "o"), "--ply",
                 "--ply-format", "ascii", "--device", "cpu"]) == 0
    assert "wrote 1 depth map(s)" in capsys.readouterr().out
    header, body = (tmp_path / "o" / "a.ply").read_text().split("end_header\n")
    assert "format ascii 1.0" in header and "element vertex 3072" in header  # 32 × 96
    rows = np.loadtxt(body.splitlines())
    depth = read_depth_png(tmp_path / "o" / "a_depth.png")
    assert rows.shape == (3072, 6) and (depth > 0).all()
    np.testing.assert_allclose(rows[:, 2], depth.ravel() / 1000, atol=6e-4)  # z = depth


def test_relative_surface_depth_is_also_written_as_float_tiff(tmp_path, capsys):
    """Paper 004's µm surface depth (negative too) does not fit millimetre PNGs."""
    method, data = _build("wgan_perceptual")
    weights = {n: net.state_dict() for n, net in method.networks().items()}
    path = checkpoint.save(tmp_path / "w.pt", method="wgan_perceptual",
                           config=to_dict(method.config), settings=to_dict(method.settings),
                           dataset="synthetic-surface@1", state=weights, step=0,
                           data=data.__dict__)
    image = _png(tmp_path / "s.png", SIZE, 6)
    assert main(["predict", str(path), str(image), "--out", str(tmp_path / "o"),
                 "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "does not fit millimetre PNGs" in captured.err and "_depth.tiff" in captured.out
    written = np.asarray(Image.open(tmp_path / "o" / "s_depth.tiff"))
    rgb = np.array(Image.open(image).convert("RGB"))
    expected = method.predict(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)
    assert written.dtype == np.float32
    np.testing.assert_allclose(written, expected[0, 0].numpy(), rtol=1e-6)
    assert (written < 0).any() and np.abs(written).max() < 1e-4  # µm scale, signed
    colour = np.asarray(Image.open(tmp_path / "o" / "s_depth_color.png"))
    assert (colour.reshape(-1, 3).max(axis=1) > 0).all()  # negative depth is coloured too


def test_predict_from_a_run_uri_and_a_local_checkpoint_agree(registered, tmp_path,
                                                             monkeypatch):
    monkeypatch.chdir(registered["folder"])
    image = _png(tmp_path / "a.png", SIZE, 3)
    best, _ = _finished_best(registered["uri"], registered["a"])
    local = MlflowClient(registered["uri"]).download_artifacts(best, "checkpoint/best.pt",
                                                               str(tmp_path))
    outputs = []
    for i, uri in enumerate([f"runs:/{best}", f"runs:/{best}/model", local]):
        assert main(["predict", uri, str(image), "--out", str(tmp_path / str(i))]) == 0, uri
        outputs.append(read_depth_png(tmp_path / str(i) / "a_depth.png"))
    assert (outputs[0] == outputs[1]).all() and (outputs[0] == outputs[2]).all()


def test_a_downloaded_model_folder_loads_and_a_tampered_one_is_refused(registered, tmp_path,
                                                                       capsys, monkeypatch):
    monkeypatch.chdir(registered["folder"])
    image = _png(tmp_path / "a.png", SIZE, 5)
    folder = Path(mlflow.artifacts.download_artifacts(
        "models:/study-a/1", dst_path=str(tmp_path / "model"), tracking_uri=registered["uri"]))
    extra = folder / "extra_files"
    assert sorted(p.name for p in extra.iterdir()) == [models.CHECKPOINT_NAME,
                                                       models.CHECKPOINT_NAME + ".sha256"]
    assert main(["predict", str(folder), str(image), "--out", str(tmp_path / "ok")]) == 0
    data = bytearray((extra / models.CHECKPOINT_NAME).read_bytes())
    data[-100] ^= 0xFF  # one flipped byte in the weights
    (extra / models.CHECKPOINT_NAME).write_bytes(bytes(data))
    assert main(["predict", str(folder), str(image), "--out", str(tmp_path / "bad")]) == 2
    assert "is corrupt" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_predict_of_an_unknown_model_is_a_clear_error(registered, tmp_path, capsys,
                                                      monkeypatch):
    monkeypatch.chdir(registered["folder"])
    image = _png(tmp_path / "a.png", SIZE, 3)
    assert main(["predict", "models:/study-a/7", str(image), "--out", str(tmp_path)]) == 2
    assert "'models:/study-a/7' is not registered" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "none.pt"), str(image), "--out",
                 str(tmp_path)]) == 2
    assert "none.pt does not exist" in capsys.readouterr().err


def test_evaluate_prints_the_metrics_of_the_protocol_and_logs_a_run(registered, capsys,
                                                                   monkeypatch):
    monkeypatch.chdir(registered["folder"])
    monkeypatch.setenv("DEPTHLAB_DATA", str(registered["folder"] / "data"))
    assert main(["evaluate", "models:/study-a/1", "--data", "synthetic-rooms", "--split",
                 "test", "--limit", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] == 8 and result["split"] == "test"

    from depthlab.predict import open_model

    model, _ = open_model("models:/study-a/1", registered["uri"])
    entry = load_entry("synthetic-rooms")
    path = prepare(entry, size=SIZE, counts={"test": 8, "train": 1}, progress=False)
    split = load_splits(path, ("test",))
    images = torch.from_numpy(split.images).permute(0, 3, 1, 2).float() / 255
    direct = score(model(images), torch.from_numpy(split.depth)[:, None],
                   data_info(entry, SIZE))
    assert set(result["metrics"]) == set(direct)
    for key, value in direct.items():
        assert math.isclose(result["metrics"][key], value, rel_tol=1e-6, abs_tol=1e-9), key

    # the same 8 test rooms the trial scored its best checkpoint on: the same number
    best, best_value = _finished_best(registered["uri"], registered["a"])
    assert math.isclose(result["metrics"]["rmse_m"], best_value, rel_tol=1e-5)

    client = MlflowClient(registered["uri"])
    run = client.get_run(result["run_id"])
    assert run.info.experiment_id == registered["a"].experiment_id
    assert run.data.tags[tracking.EVALUATION_TAG] == "models:/study-a/1"
    assert run.data.tags["depthlab.source_run_id"] == best
    assert math.isclose(run.data.metrics["test/rmse_m"], direct["rmse_m"], rel_tol=1e-6)
    # an evaluation run is neither a study run nor a trial: best still sees 2 parents' worth
    assert [p["run_id"] for p in tracking.parent_runs(registered["uri"], "study-a")] == \
        [registered["a"].parent_run_id]

    assert main(["evaluate", "models:/study-a/1", "--data", "synthetic-rooms", "--split",
                 "train_rgb"]) == 2
    assert "its paired splits: train, test" in capsys.readouterr().err


def test_best_all_ranks_the_best_run_of_each_study(store, capsys, monkeypatch):
    monkeypatch.chdir(store["folder"])
    assert main(["best", "--all"]) == 0
    out = capsys.readouterr().out
    assert "synthetic-rooms, best/rmse_m (min): 2 studies" in out
    (a_id, a_value), (b_id, b_value) = (_finished_best(store["uri"], store[k]) for k in "ab")
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    assert [r[1] for r in rows] == (["study-a", "study-b"] if a_value <= b_value
                                    else ["study-b", "study-a"])
    assert {r[2] for r in rows} == {a_id[:8], b_id[:8]}
    assert main(["best", "--all", "study-a"]) == 2


# ---------------------------------------------------------------- no MLflow needed

@pytest.mark.parametrize("name", ["fcn_vgg", "knn_transfer", "multiscale", "pix2pixhd",
                                  "wgan_perceptual"])
def test_every_method_rebuilds_from_its_checkpoint(name, tmp_path):
    method, data = _build(name)
    with torch.no_grad():  # weights unlike a fresh build's
        for net in method.networks().values():
            for p in net.parameters():
                p.add_(0.01 * torch.randn_like(p))
    if name == "multiscale":  # a step past the switch: stage 2 predicts from scale 3
        method.train_step(_batches(data, paired=True), 1)
        assert method.stage == 2
    if name == "knn_transfer":  # an index to retrieve from (unfitted, a step indexes a batch)
        method.train_step(_batches(data, paired=True), 0)
    weights = {n: net.state_dict() for n, net in method.networks().items()}
    weights.update({k: v for k, v in method.state_dict().items() if not isinstance(v, dict)})
    path = checkpoint.save(tmp_path / "m.pt", method=name, config=to_dict(method.config),
                           settings=to_dict(method.settings), dataset=f"{data.name}@1",
                           state=weights, step=2, data=data.__dict__)
    model = models.load(path)
    image = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(model(image), method.predict(image))
    assert model.input_size == SIZE and model.data == data


def test_millimetres_invalid_and_clipping():
    depth = np.array([[1.2344, np.nan, -1.0], [0.0001, 70.0, np.inf]], np.float32)
    mm, clipped = to_millimetres(depth)
    assert mm.dtype == np.uint16
    assert mm.tolist() == [[1234, 0, 0], [1, 65535, 0]] and clipped == 1


def test_point_cloud_of_a_plane_and_default_intrinsics():
    depth = np.full((4, 6), 2.0, np.float32)
    depth[0, 0] = np.nan
    rgb = np.zeros((4, 6, 3), np.uint8)
    k = Intrinsics().resolve((4, 6), None)
    assert k == (6.0, 6.0, 2.5, 1.5)
    points = point_cloud(depth, rgb, k)
    assert len(points) == 23 and np.allclose(points["z"], 2.0)
    corner = points[-1]  # pixel (row 3, column 5)
    assert math.isclose(corner["x"], (5 - 2.5) * 2 / 6, rel_tol=1e-6)
    assert math.isclose(corner["y"], (3 - 1.5) * 2 / 6, rel_tol=1e-6)
    assert Intrinsics(fx=10).resolve((4, 6), None)[:2] == (10, 10)
    with pytest.raises(ValueError, match="--fx"):
        Intrinsics(fx=-1)


def test_ply_ascii_matches_binary():
    from depthlab.predict import ply_bytes

    points = point_cloud(np.ones((2, 2), np.float32), np.full((2, 2, 3), 7, np.uint8),
                         (1.0, 1.0, 0.5, 0.5))
    text = ply_bytes(points, binary=False).decode()
    assert "format ascii 1.0" in text and text.count("\n") == 10 + 4
    binary = ply_bytes(points)
    body = binary.split(b"end_header\n", 1)[1]
    assert len(body) == 4 * 15 and struct.unpack("<3f3B", body[:15])[2] == 1.0
