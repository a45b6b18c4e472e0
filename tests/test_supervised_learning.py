"""Papers 002 and 001 learn room depth: after a CPU minute the RMSE on held-out rooms
beats the constant (training mean) predictor's. Paper 000's test is in
test_pix2pixhd_method.py."""

import pytest

from depthlab.methods.fcn_vgg import Config as FcnConfig
from depthlab.methods.multiscale import Config as MultiScaleConfig
from tests.rooms_training import train_on_rooms


@pytest.mark.learning
def test_fcn_vgg_beats_the_constant_predictor(tmp_path):
    """600 SGD steps (~25 s). CPU-size choices: VGG width 1/4, He-initialised decoder (the
    paper's N(0, 1) learns too slowly for a minute), lr 2e-3 (paper 1e-3), batch 8."""
    config = FcnConfig(width=0.25, batch_size=8, lr=2e-3, decoder_init="kaiming")
    baseline, reports = train_on_rooms(tmp_path, "fcn_vgg", config, 600, 150)
    rmse = {step: m["eval/rmse_m"] for step, m in reports.items()}
    print("constant RMSE", baseline, "eval/rmse_m by step:", rmse)
    # Measured: constant 1.28 m; 6.6 m untrained → 0.95 (300) → 0.84 (450) → 1.03 (600):
    # batch-norm statistics of batch 8 make the last evaluations jump by ~0.2 m.
    assert reports[600]["best/rmse_m"] <= 0.85 * baseline, (baseline, rmse)
    assert rmse[600] < baseline, (baseline, rmse)


@pytest.mark.learning
def test_multiscale_beats_the_constant_predictor(tmp_path):
    """600 Adam steps of scales 1+2 (~60 s). CPU-size choices: VGG width 1/4, batch 8,
    the reference per-layer rates × 0.01 (scale 1) and × 0.1 (scale 2: at the reference
    rates the ReLU output collapses to zero, as the poster reports for large rates), set
    loss weight 0.5, no decay in so short a run."""
    config = MultiScaleConfig(width=0.25, batch_size=8, lr_scale1=0.01, lr_scale2=0.1,
                              lr_decay=1.0, set_weight=0.5, stages=1)
    baseline, reports = train_on_rooms(tmp_path, "multiscale", config, 600, 150)
    rmse = {step: m["eval/rmse_m"] for step, m in reports.items()}
    print("constant RMSE", baseline, "eval/rmse_m by step:", rmse)
    # Measured: constant 1.28 m; 3.57 m untrained → 1.21 (300) → 1.04 (450) → 0.98 (600).
    assert rmse[600] <= 0.9 * baseline, (baseline, rmse)
