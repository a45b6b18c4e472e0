"""Train a supervised method briefly on synthetic rooms and score it on held-out rooms."""

from pathlib import Path

from depthlab.catalog import load_entry
from depthlab.config import TrainSettings, to_dict
from depthlab.data.shards import prepare
from depthlab.trial import TrialPlan, constant_baseline, data_info, train_trial

SIZE = (64, 64)


def train_on_rooms(tmp_path: Path, method: str, config, steps: int, eval_every: int,
                   seed: int = 0) -> tuple[float, dict[int, dict[str, float]]]:
    """(constant predictor's test RMSE, {step: reported metrics}) after `steps` steps on 400
    training rooms, evaluated on 64 test rooms; one thread (two on this shared 2-core
    machine ran up to ten times slower)."""
    entry = load_entry("synthetic-rooms")
    path = prepare(entry, SIZE, data_dir=tmp_path, counts=dict(train=400, test=64),
                   progress=False)
    settings = TrainSettings(steps=steps, eval_every=eval_every, eval_samples=64, seed=seed,
                             threads=1)
    plan = TrialPlan(method, to_dict(config), to_dict(settings), str(path),
                     data_info(entry, SIZE).__dict__, ("train", "train"), "test", "best/rmse_m")
    reports: dict[int, dict[str, float]] = {}
    train_trial(plan, lambda _method, step, metrics, *_: reports.update({step: metrics}))
    return constant_baseline(plan)["baseline/constant_rmse_m"], reports
