"""Depth panels for people: input | prediction | ground truth | error, with scale bars."""

from pathlib import Path

import numpy as np


def depth_panel(images: np.ndarray, predictions: np.ndarray, truths: np.ndarray, unit: str,
                path: str | Path, title: str = "") -> Path:
    """Save a PNG with one row per sample; depth maps share one colour scale per row."""
    # A bare Figure (no pyplot): no GUI backend, nothing global, imported only when drawing.
    from matplotlib.figure import Figure

    rows = len(images)
    fig = Figure(figsize=(12, 2.8 * rows + 0.4))
    axes = fig.subplots(rows, 4, squeeze=False)
    for row, (image, pred, truth) in enumerate(zip(images, predictions, truths, strict=True)):
        lo, hi = float(np.nanmin(truth)), float(np.nanmax(truth))
        error = np.abs(pred - truth)
        axes[row, 0].imshow(np.clip(image, 0, 1))
        shown = [(axes[row, 1], pred, "viridis", lo, hi, f"prediction ({unit})"),
                 (axes[row, 2], truth, "viridis", lo, hi, f"ground truth ({unit})"),
                 (axes[row, 3], error, "magma", 0, float(np.nanmax(error)), f"|error| ({unit})")]
        for ax, data, cmap, vmin, vmax, label in shown:
            im = ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
            if row == 0:
                ax.set_title(label)
        if row == 0:
            axes[row, 0].set_title("input")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path, title, right=0.95, wspace=0.25, hspace=0.15)


def contact_sheet(samples: list[tuple[str, np.ndarray | None, np.ndarray | None]],
                  unit: str, scale: float, path: str | Path, title: str = "",
                  columns: int = 2) -> Path:
    """Save a PNG of (id, rgb, depth in metres) samples: RGB next to colour-mapped depth in
    `unit` (depth × scale), one colour bar per depth map; invalid depth is grey."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    rows = -(-len(samples) // columns)
    fig = Figure(figsize=(6.4 * columns, 2.6 * rows + 0.5))
    axes = fig.subplots(rows, 2 * columns, squeeze=False)
    cmap = colormaps["turbo"].with_extremes(bad="0.6")
    for ax in axes.flat:
        ax.set_axis_off()
    for k, (sample_id, rgb, depth) in enumerate(samples):
        row, column = divmod(k, columns)
        left, right = axes[row, 2 * column], axes[row, 2 * column + 1]
        if rgb is not None:
            left.imshow(rgb)
        left.set_title(sample_id, fontsize=8)
        if depth is not None:
            shown = np.where(np.isfinite(depth), depth * scale, np.nan)
            im = right.imshow(np.ma.masked_invalid(shown), cmap=cmap)
            fig.colorbar(im, ax=right, fraction=0.046, pad=0.04, label=unit)
            valid = np.isfinite(depth).mean()
            right.set_title(f"depth ({unit}), {valid:.0%} valid", fontsize=8)
    return _save(fig, path, title, right=0.97, wspace=0.15, hspace=0.25)


def _save(fig, path: str | Path, title: str, **spacing: float) -> Path:
    """Title, fixed margins (tight_layout costs ~0.3 s a figure) and an 80 dpi PNG."""
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(left=0.01, bottom=0.02, top=0.91 if title else 0.96, **spacing)
    path = Path(path)
    fig.savefig(path, dpi=80)
    return path
