"""Every depth metric of the five papers, masked to valid pixels; one module for all callers.

`compute` is the absolute-depth protocol (per-image metrics, then the mean over
images), `compute_signed` the protocol of paper 004 for relative depth that can
be negative (pooled over all pixels of the evaluation set, no alignment).
"""

import math
import warnings

import numpy as np
import torch

KEYS = ("delta1", "delta2", "delta3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10",
        "silog", "mae", "psnr", "corr", "rmse_log10")


def _as_batch(array) -> np.ndarray:
    """(H, W) or (B, H, W) or (B, 1, H, W), numpy or torch → float64 (B, H, W)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"depth maps must be (H, W), (B, H, W) or (B, 1, H, W); got {array.shape}")
    return array


def _upsampled(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """A lower-resolution prediction resized bilinearly to the ground truth's (H, W)."""
    if pred.shape == gt.shape:
        return pred
    if pred.shape[0] != gt.shape[0] or pred.shape[1] > gt.shape[1] or pred.shape[2] > gt.shape[2]:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape; "
                         "expected the same number of images at the same or a lower resolution")
    resized = torch.nn.functional.interpolate(torch.from_numpy(pred)[:, None], size=gt.shape[1:],
                                              mode="bilinear", align_corners=False)
    return resized[:, 0].numpy()


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


def _one_image(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    ratio = np.maximum(pred / gt, gt / pred)
    err = pred - gt
    log_err = np.log(pred) - np.log(gt)
    log10_err = np.log10(pred) - np.log10(gt)
    mse = float(np.mean(err**2))
    peak = float(gt.max())
    return {
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
        "abs_rel": float(np.mean(np.abs(err) / gt)),
        "sq_rel": float(np.mean(err**2 / gt)),
        "rmse": math.sqrt(mse),
        "rmse_log": math.sqrt(float(np.mean(log_err**2))),
        "log10": float(np.mean(np.abs(log10_err))),
        # silog as in Eigen et al. (λ = 1, reported ×100 by KITTI; here unscaled)
        "silog": math.sqrt(max(float(np.mean(log_err**2) - np.mean(log_err) ** 2), 0.0)),
        "mae": float(np.mean(np.abs(err))),
        "psnr": 10 * math.log10(peak**2 / mse) if mse > 0 else float("inf"),
        "corr": _pearson(pred, gt),
        "rmse_log10": math.sqrt(float(np.mean(log10_err**2))),
    }


def _mask(gt: np.ndarray, valid, crop, lo: float | None, hi: float | None) -> np.ndarray:
    mask = np.isfinite(gt)
    if valid is not None:
        mask &= _as_batch(valid).astype(bool)
    if crop is not None:
        top, bottom, left, right = crop
        window = np.zeros_like(mask)
        window[:, top:bottom, left:right] = True
        mask &= window
    if lo is not None:
        mask &= gt > lo
    if hi is not None:
        mask &= gt < hi
    return mask


def compute(pred, gt, valid=None, crop=None, min_depth: float = 1e-3,
            max_depth: float | None = None, median_scale: bool = False) -> dict[str, float]:
    """Standard metrics of positive depth: per image over valid pixels, then averaged.

    crop = (top, bottom, left, right), on the ground truth's pixels; a
    lower-resolution prediction is first upsampled (bilinear) to the ground
    truth's size; predictions are clipped to [min_depth, max_depth] (inf →
    max_depth); images with no valid pixel are skipped with a warning that
    counts them (all skipped → ValueError, never NaN metrics).
    """
    pred, gt = _as_batch(pred), _as_batch(gt)
    if max_depth is not None:  # before resizing: a bilinear mix with inf is not a depth
        pred = np.where(np.isposinf(pred), max_depth, pred)
    pred = _upsampled(pred, gt)
    if np.isnan(pred).any():
        raise ValueError(f"prediction holds NaN at {int(np.isnan(pred).sum())} pixels; "
                         "expected depth values (inf is clipped to max_depth)")
    mask = _mask(gt, valid, crop, min_depth, max_depth)
    rows, skipped = [], 0
    for p, g, m in zip(pred, gt, mask, strict=True):
        if not m.any():
            skipped += 1
            continue
        p, g = p[m], g[m]
        if median_scale:
            p = p * np.median(g) / np.median(p)
        p = np.clip(p, min_depth, max_depth if max_depth is not None else np.inf)
        rows.append(_one_image(p, g))
    if not rows:
        raise ValueError("no image has a valid ground-truth pixel after masking")
    if skipped:
        warnings.warn(f"{skipped} of {len(gt)} images have no valid ground-truth pixel after "
                      "masking: skipped", stacklevel=2)
    return {key: float(np.mean([row[key] for row in rows])) for key in KEYS}


def compute_signed(pred, gt, valid=None, scale: float = 1.0) -> dict[str, float]:
    """RMSE, MAE and Pearson r pooled over all valid pixels, no alignment (paper 004).

    `scale` converts metres to the reported unit (1e6 for µm).
    """
    pred, gt = _as_batch(pred) * scale, _as_batch(gt) * scale
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    mask = _mask(gt, valid, None, None, None)
    if not mask.any():
        raise ValueError("no valid ground-truth pixel to evaluate")
    p, g = pred[mask], gt[mask]
    err = p - g
    return {"rmse": math.sqrt(float(np.mean(err**2))), "mae": float(np.mean(np.abs(err))),
            "corr": _pearson(p, g)}
