"""Every registered method: one finite train step that changes the model, predictions of
the right shape and unit, a save → load → predict round trip, strict configs."""

import pytest
import torch

from depthlab.config import TrainSettings, from_dict
from depthlab.data.batch import DepthBatch
from depthlab.methods import METHODS, DataInfo
from depthlab.nn.optim import Stepper

SIZE = (64, 64)
ROOMS = DataInfo("synthetic-rooms", "1", (0.0, 10.0), "m", 1.0, SIZE, train_samples=8)
SURFACE = DataInfo("synthetic-surface", "1", (-7.4e-6, 1.8e-6), "um", 1e6, SIZE, pooled=True)

# A tiny configuration per method (a new method must add one here to be tested).
TINY = {
    "wgan_perceptual": (dict(critic_width=4, generator_width=4, critic_iters=1,
                             critic_iters_after=1, batch_size=2), SURFACE),
    "fcn_vgg": (dict(width=0.125, batch_size=2, decoder_init="kaiming"), ROOMS),
    "multiscale": (dict(width=0.125, batch_size=2, stages=2, stage1_fraction=0.5), ROOMS),
    "pix2pixhd": (dict(ngf=4, ndf=4, n_downsample=2, n_blocks=1, batch_size=2), ROOMS),
    "knn_transfer": (dict(width=0.125, tile_size=16, grid=2, window=3, batch_size=2), ROOMS),
}


def _batches(data: DataInfo, paired: bool, seed: int = 0):
    """An endless stream of random batches in the dataset's depth range, some pixels NaN."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = data.depth_range_m
    while True:
        depth = lo + (hi - lo) * torch.rand(2, 1, *SIZE, generator=g)
        if lo >= 0:
            depth[:, :, :3, :3] = float("nan")  # holes, as in real depth maps
        yield DepthBatch(torch.rand(2, 3, *SIZE, generator=g), depth, paired=paired)


def _build(name: str, steps: int = 2):
    overrides, data = TINY[name]
    cls = METHODS[name]
    settings = TrainSettings(steps=steps, eval_every=1, eval_samples=2, seed=0)
    torch.manual_seed(0)
    return cls(from_dict(cls.Config, overrides), settings, data, torch.device("cpu"),
               Stepper()), data


def test_every_registered_method_has_a_tiny_configuration():
    assert set(METHODS) == set(TINY)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_train_step_is_finite_and_changes_predictions(name):
    method, data = _build(name)
    image = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(9))
    before = method.predict(image).clone()
    stream = _batches(data, paired=data.depth_range_m[0] >= 0)
    for step in range(2):
        losses = method.train_step(stream, step)
        assert losses and all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
    after = method.predict(image)
    assert after.shape == (2, 1, *SIZE)
    assert torch.isfinite(after).all()
    assert not torch.equal(before, after)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_state_dict_round_trip_gives_identical_predictions(name):
    method, data = _build(name)
    stream = _batches(data, paired=data.depth_range_m[0] >= 0)
    for step in range(2):  # past multiscale's stage switch: the state carries the stage
        method.train_step(stream, step)
    fresh, _ = _build(name)
    fresh.load_state_dict(method.state_dict())
    image = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(fresh.predict(image), method.predict(image))
    assert set(method.networks()) and all(isinstance(m, torch.nn.Module)
                                          for m in method.networks().values())


@pytest.mark.parametrize("name", sorted(METHODS))
def test_configs_refuse_unknown_fields_and_name_them(name):
    with pytest.raises(ValueError, match="unknown field.*'no_such_knob'"):
        from_dict(METHODS[name].Config, {"no_such_knob": 1})


@pytest.mark.parametrize("name", sorted(METHODS))
def test_search_space_suggests_only_config_fields(name):
    """Every method/… value a search space can suggest is a field of the method's Config."""
    import optuna

    module = __import__(METHODS[name].__module__, fromlist=["search_space"])
    fields = set(METHODS[name].Config.__dataclass_fields__)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(3):
        trial = study.ask()
        module.search_space(trial)
        method_keys = {k.split("/", 1)[1] for k in trial.params if k.startswith("method/")}
        assert method_keys <= fields, method_keys - fields
        train_keys = {k.split("/", 1)[1] for k in trial.params if k.startswith("train/")}
        assert train_keys <= set(TrainSettings.__dataclass_fields__)
        study.tell(trial, 0.0)


def test_multiscale_switches_to_stage_two_and_freezes_scales_one_and_two():
    method, data = _build("multiscale", steps=4)  # stage1_fraction 0.5: switch at step 2
    stream = _batches(data, paired=True)
    frozen = [p.detach().clone() for p in method.net.stage_parameters(1)]
    stages = [method.train_step(stream, step)["stage"] for step in range(4)]
    assert stages == [1.0, 1.0, 2.0, 2.0]
    moved = [not torch.equal(a, p) for a, p in zip(frozen, method.net.stage_parameters(1),
                                                   strict=True)]
    assert any(moved)  # stage 1 trained them …
    snapshot = [p.detach().clone() for p in method.net.stage_parameters(1)]
    method.train_step(stream, 4)
    assert all(torch.equal(a, p) for a, p in zip(snapshot, method.net.stage_parameters(1),
                                                 strict=True))  # … stage 2 leaves them
