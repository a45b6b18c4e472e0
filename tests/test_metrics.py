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
