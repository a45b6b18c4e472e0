"""Impossible configs and unusable tracking locations fail clearly, before Ray starts."""

import dataclasses

import pytest
import ray

from depthlab.config import Budget, TrainSettings, from_dict
from depthlab.methods.wgan_perceptual import Config, search_space
from depthlab.study import StudySpec, run_study


def spec_with(**overrides) -> StudySpec:
    budget = Budget("tiny", (64, 64), steps=2, eval_every=1, eval_samples=4, num_trials=1,
                    method_overrides=dict(critic_width=4, generator_width=4, **overrides),
                    data_counts=dict(train_rgb=8, train_depth=8, eval=4))
    return StudySpec("bad-input", "wgan_perceptual", "synthetic-surface", search_space,
                     {"tiny": budget}, metric="best/rmse_um")


@pytest.mark.parametrize("overrides, message", [
    (dict(generator="vgg99"), "unknown generator 'vgg99'; known: resnet18, style, unet"),
    (dict(critic="wasserstein"), "unknown critic 'wasserstein'; known: dcgan, patchgan"),
    (dict(critic_lr=-1e-4), "critic_lr = -0.0001: expected a finite number > 0"),
    (dict(generator_lr=float("nan")), "generator_lr = nan"),
    (dict(batch_size=0), "batch_size = 0: expected a finite number > 0"),
    (dict(reconstruction="ssim"), "reconstruction = 'ssim'"),
    (dict(lr=1e-4), "unknown field(s) ['lr']"),
])
def test_impossible_method_config_fails_before_ray(isolated, overrides, message):
    with pytest.raises(ValueError) as error:
        run_study(spec_with(**overrides), "tiny")
    assert message in str(error.value)
    assert not ray.is_initialized()
    assert not (isolated / "mlflow.db").exists()


def test_unwritable_tracking_location_fails_before_ray(isolated):
    blocker = isolated / "a_file"
    blocker.write_text("not a folder")
    uri = f"sqlite:///{blocker}/mlflow.db"
    with pytest.raises(ValueError, match="tracking location .* is not writable .*a_file"):
        run_study(spec_with(), "tiny", tracking_uri=uri)
    assert not ray.is_initialized()


def test_unknown_budget_and_bad_points_fail_before_ray(isolated):
    with pytest.raises(ValueError, match="unknown budget 'huge'; known: \\['tiny'\\]"):
        run_study(spec_with(), "huge")
    bad_point = dataclasses.replace(spec_with(), points_to_evaluate=[{"method/batch_size": 0}])
    with pytest.raises(ValueError, match="batch_size = 0"):
        run_study(bad_point, "tiny")
    assert not ray.is_initialized()


def test_train_settings_are_strict():
    with pytest.raises(ValueError, match="grad_clip = -1"):
        TrainSettings(grad_clip=-1)
    with pytest.raises(ValueError, match="unknown field"):
        from_dict(TrainSettings, {"stpes": 3})
    assert from_dict(Config, {"adam_betas": [0.0, 0.9]}).adam_betas == (0.0, 0.9)


def test_study_script_reports_bad_input_with_exit_code_2(isolated):
    from tests.conftest import run_script

    (isolated / "blocker").write_text("x")
    done = run_script("studies/wgan_surface.py", "--budget", "smoke", "--tracking-uri",
                      f"sqlite:///{isolated}/blocker/mlflow.db", cwd=isolated, timeout=120)
    assert done.returncode == 2
    assert "error: tracking location" in done.stderr
