"""Metrics against values computed by hand."""

import math

import numpy as np
import pytest
import torch

from depthlab.metrics import KEYS, compute, compute_signed


def test_signed_metrics_by_hand():
    gt = np.array([[-1.0, 0.0], [1.0, 2.0]])
    pred = np.array([[-1.0, 1.0], [1.0, 1.0]])  # errors 0, 1, 0, −1
    out = compute_signed(pred, gt)
    assert out["rmse"] == pytest.approx(math.sqrt(0.5))
    assert out["mae"] == pytest.approx(0.5)
    assert compute_signed(gt * 2 + 1, gt)["corr"] == pytest.approx(1.0)
    assert compute_signed(-gt, gt)["corr"] == pytest.approx(-1.0)


def test_signed_metrics_scale_to_display_units():
    gt = torch.tensor([[1e-6, 2e-6]])
    assert compute_signed(gt + 1e-6, gt, scale=1e6)["rmse"] == pytest.approx(1.0)


def test_absolute_metrics_by_hand():
    gt = np.array([[1.0, 2.0], [4.0, 8.0]])
    pred = gt * 1.5
    out = compute(pred, gt)
    assert set(out) == set(KEYS)
    assert out["abs_rel"] == pytest.approx(0.5)
    assert out["delta1"] == 0.0 and out["delta2"] == 1.0
    assert out["log10"] == pytest.approx(math.log10(1.5))
    assert out["silog"] == pytest.approx(0.0, abs=1e-9)  # a pure scale error
    assert compute(pred, gt, median_scale=True)["abs_rel"] == pytest.approx(0.0, abs=1e-12)


def test_invalid_pixels_are_masked_and_all_invalid_is_an_error():
    gt = np.array([[1.0, np.nan], [0.0, 2.0]])  # NaN and 0 are invalid
    pred = np.array([[1.0, 50.0], [50.0, 2.0]])
    assert compute(pred, gt)["rmse"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="no image has a valid"):
        compute(pred, np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="differ in shape"):
        compute_signed(np.zeros((2, 2)), np.zeros((3, 2)))


def test_every_key_by_hand_on_one_image():
    gt = np.array([[1.0, 2.0], [4.0, 5.0]])
    pred = np.array([[2.0, 2.0], [2.0, 5.0]])  # ratios 2, 1, 2, 1; errors 1, 0, −2, 0
    out = compute(pred, gt)
    ln, lg = np.log(pred) - np.log(gt), np.log10(pred) - np.log10(gt)
    expected = {
        "delta1": 0.5, "delta2": 0.5, "delta3": 0.5,  # ratio 2 fails even 1.25³ ≈ 1.953
        "abs_rel": (1 / 1 + 0 + 2 / 4 + 0) / 4,
        "sq_rel": (1 / 1 + 0 + 4 / 4 + 0) / 4,
        "rmse": math.sqrt((1 + 0 + 4 + 0) / 4),
        "rmse_log": math.sqrt(np.mean(ln**2)),
        "log10": np.mean(np.abs(lg)),
        "silog": math.sqrt(np.mean(ln**2) - np.mean(ln) ** 2),
        "mae": (1 + 0 + 2 + 0) / 4,
        "psnr": 20 * math.log10(5.0 / math.sqrt(5 / 4)),
        "corr": float(np.corrcoef(pred.ravel(), gt.ravel())[0, 1]),
        "rmse_log10": math.sqrt(np.mean(lg**2)),
    }
    assert set(out) == set(KEYS)
    for key, value in expected.items():
        assert out[key] == pytest.approx(value), key


def test_metrics_are_per_image_then_averaged():
    gt = np.stack([np.full((2, 2), 1.0), np.full((2, 2), 4.0)])
    pred = np.stack([np.full((2, 2), 2.0), np.full((2, 2), 4.0)])  # rmse 1 and 0
    assert compute(pred, gt)["rmse"] == pytest.approx(0.5)  # not sqrt(mean) = 0.707
    assert compute(pred, gt)["abs_rel"] == pytest.approx(0.5)


def test_crop_cap_and_prediction_clipping():
    gt = np.array([[1.0, 1.0, 20.0], [1.0, 1.0, 1.0]])
    pred = np.array([[0.0, np.inf, 1.0], [1.0, 3.0, 9.0]])
    # cap 10: gt 20 is dropped; pred 0 → 1e-3, inf → 10
    capped = compute(pred, gt, max_depth=10.0)
    errors = np.array([1e-3 - 1, 10 - 1, 0, 2, 8])
    assert capped["rmse"] == pytest.approx(math.sqrt(np.mean(errors**2)))
    # crop rows 0:2, cols 0:2 keeps the four left pixels
    cropped = compute(pred, gt, crop=(0, 2, 0, 2), max_depth=10.0)
    assert cropped["rmse"] == pytest.approx(math.sqrt(np.mean(np.array([1e-3 - 1, 9, 0, 2]) ** 2)))
    valid = np.array([[False, False, False], [True, True, False]])
    assert compute(pred, gt, valid=valid)["mae"] == pytest.approx(1.0)  # errors 0 and 2
    with pytest.raises(ValueError, match="NaN at 1 pixels"):
        compute(np.array([[np.nan, 1.0]]), np.array([[1.0, 1.0]]))


def test_an_all_invalid_image_is_skipped_and_counted():
    gt = np.stack([np.full((2, 2), 2.0), np.zeros((2, 2)), np.full((2, 2), np.nan)])
    pred = np.full((3, 2, 2), 3.0)
    with pytest.warns(UserWarning, match="2 of 3 images have no valid"):
        out = compute(pred, gt)
    assert all(math.isfinite(v) for v in out.values())
    assert out["rmse"] == pytest.approx(1.0)


def test_lower_resolution_predictions_are_upsampled_first():
    gt = np.full((1, 4, 6), 2.0)
    out = compute(torch.full((1, 1, 2, 3), 2.0), gt, crop=(1, 3, 1, 5))
    assert out["rmse"] == pytest.approx(0.0, abs=1e-12)
    ramp = np.tile(np.linspace(1, 2, 3), (2, 1))[None]  # (1, 2, 3)
    up = compute(ramp, np.full((1, 4, 6), 1.5))
    assert 0 < up["mae"] < 0.5  # bilinear: values between the samples, not a failure
    with pytest.raises(ValueError, match="same or a lower resolution"):
        compute(np.ones((1, 8, 8)), np.ones((1, 4, 4)))
