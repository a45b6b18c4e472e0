"""The training loop's cadence, best-so-far, divergence handling; checkpoints round trip."""

import math

import numpy as np
import pytest
import torch

from depthlab import checkpoint
from depthlab.config import TrainSettings
from depthlab.loop import Evaluation, fit


class CountingMethod:
    """A method whose loss turns NaN at a chosen step (our own protocol, not a library)."""

    name = "counting"

    def __init__(self, nan_at: int | None = None):
        self.nan_at, self.steps = nan_at, 0

    def train_step(self, batches, step):
        self.steps += 1
        loss = float("nan") if step == self.nan_at else 1.0 / (step + 1)
        return {"loss": loss}


def evaluation(rmse: float) -> Evaluation:
    empty = np.zeros((1, 2, 2))
    return Evaluation({"rmse_um": rmse, "corr": -rmse}, np.zeros((1, 2, 2, 3)), empty, empty)


def run(method, steps=6, every=2):
    reports, scores = [], iter([3.0, 2.0, 2.5, 1.0, 4.0])
    fit(method, iter(()), lambda: evaluation(next(scores)), TrainSettings(steps=steps,
        eval_every=every), lambda *a: reports.append(a), primary="best/rmse_um")
    return reports


def test_eval_cadence_best_so_far_and_improvement_flags():
    reports = run(CountingMethod())
    assert [r[0] for r in reports] == [0, 2, 4, 6]
    assert [r[3] for r in reports] == [True, True, False, True]  # 3, 2, 2.5, 1
    last = reports[-1][1]
    assert last["best/rmse_um"] == 1.0 and last["eval/rmse_um"] == 1.0
    assert last["best/corr"] == -1.0  # higher is better for corr: best of −3, −2, −2.5, −1
    assert last["train/loss"] == pytest.approx((1 / 5 + 1 / 6) / 2)  # mean since last report


def test_nan_loss_stops_and_reports_divergence():
    method = CountingMethod(nan_at=3)
    reports = run(method)
    assert method.steps == 4  # stopped at the NaN step
    step, metrics, evaluation_, improved = reports[-1]
    assert step == 4 and metrics["diverged"] == 1.0 and math.isnan(metrics["train/loss"])
    assert evaluation_ is None and improved is False


def test_checkpoint_round_trip_and_corrupt_file(tmp_path):
    state = {"net": {"w": torch.arange(4.0)}}
    path = checkpoint.save(tmp_path / "c.pt", method="m", config={"a": (1, 2)}, settings={},
                           dataset="d@1", state=state, step=7)
    loaded = checkpoint.load(path)
    assert loaded["step"] == 7 and loaded["method"] == "m" and loaded["dataset"] == "d@1"
    assert torch.equal(loaded["state"]["net"]["w"], state["net"]["w"])
    path.write_bytes(path.read_bytes()[:40])  # truncated
    with pytest.raises(ValueError, match="c.pt is corrupt"):
        checkpoint.load(path)
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        checkpoint.load(tmp_path / "missing.pt")
    assert not list(tmp_path.glob("*.tmp"))  # no temporary file left behind
