"""Depth panels for people: input | prediction | ground truth | error, with scale bars."""

import math
import os
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from depthlab.colormaps import MAGMA, VIRIDIS, colorize

# Small maps (32-64 px) are upscaled by a whole factor, nearest neighbour, so every depth
# pixel stays a visible square; large ones shrink to fit MAX_CELL.
MIN_CELL, MAX_CELL = 160, 480
PAD, GAP, BAR_GAP, BAR_W = 8, 14, 4, 12
TEXT, BACKGROUND = (0, 0, 0), (255, 255, 255)
FONT_SIZE = 12


@dataclass(frozen=True)
class _Layout:
    """Pixel geometry of a panel: where each row's cells, bars and labels go."""

    cell: tuple[int, int]  # (width, height) of one drawn map
    label_w: int  # widest colour-bar value label
    line_h: int
    title_lines: tuple[str, ...]
    rows: int

    @property
    def column_w(self) -> int:  # a map, its bar and the bar's labels
        return self.cell[0] + BAR_GAP + BAR_W + 3 + self.label_w

    @property
    def top(self) -> int:  # title lines, then one line of column titles
        return PAD + (len(self.title_lines) + 1) * self.line_h + 4

    @property
    def size(self) -> tuple[int, int]:
        width = PAD + self.cell[0] + 3 * (GAP + self.column_w) + PAD
        return width, self.top + self.rows * (self.cell[1] + PAD) + PAD

    def origin(self, row: int, column: int) -> tuple[int, int]:
        """Top-left pixel of a map; columns: 0 input, 1 prediction, 2 truth, 3 error."""
        x = PAD + (column > 0) * (self.cell[0] + GAP) + max(column - 1, 0) * (GAP + self.column_w)
        return x, self.top + row * (self.cell[1] + PAD)


def depth_panel(images: np.ndarray, predictions: np.ndarray, truths: np.ndarray, unit: str,
                path: str | Path, title: str = "") -> Path:
    """Save a PNG with one row per sample; depth maps share one colour scale per row."""
    # numpy + PIL only: matplotlib cost ~1.7 s per new best (benchmarks/tracking_overhead.py).
    _check(images, predictions, truths)
    rows = [_row(pred, truth) for pred, truth in zip(predictions, truths, strict=True)]
    font, layout = _font(), _layout(rows, np.shape(truths[0]), title)
    cell = layout.cell
    headers = ["input", f"prediction ({unit})", f"ground truth ({unit})", f"|error| ({unit})"]
    canvas = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(layout.title_lines):
        x = (layout.size[0] - font.getlength(line)) / 2
        draw.text((x, PAD + k * layout.line_h), line, fill=TEXT, font=font)
    for column, header in enumerate(headers):
        x, y = layout.origin(0, column)
        draw.text((x + (cell[0] - font.getlength(header)) / 2, y - layout.line_h - 2), header,
                  fill=TEXT, font=font)
    for r, (image, maps) in enumerate(zip(images, rows, strict=True)):
        canvas.paste(_cell(_rgb(image), cell), layout.origin(r, 0))
        for column, (values, lo, hi) in enumerate(maps, start=1):
            table = MAGMA if column == 3 else VIRIDIS
            x, y = layout.origin(r, column)
            canvas.paste(_cell(colorize(values, table, lo, hi), cell), (x, y))
            _colour_bar(canvas, draw, font, table, (x + cell[0] + BAR_GAP, y), cell[1], lo, hi)
    return _write_png(canvas, Path(path))


def _layout(rows: list[list[tuple[np.ndarray, float, float]]], shape: tuple[int, int],
            title: str) -> _Layout:
    """The geometry for these rows (from `_row`) of (H, W) maps and this title."""
    font = _font()
    labels = [_fmt(v) for row in rows for _, lo, hi in row for v in (lo, hi)]
    layout = _Layout(_cell_size(*shape), math.ceil(max(font.getlength(s) for s in labels)),
                     _line_height(font), (), len(rows))
    return replace(layout, title_lines=tuple(_wrap(title, font, layout.size[0] - 2 * PAD)))


def _check(images: np.ndarray, predictions: np.ndarray, truths: np.ndarray) -> None:
    counts = (len(images), len(predictions), len(truths))
    if len(set(counts)) != 1 or counts[0] == 0:
        raise ValueError(f"depth_panel needs as many images, predictions and truths (>= 1), "
                         f"got {counts[0]}, {counts[1]}, {counts[2]}")
    for k, (pred, truth) in enumerate(zip(predictions, truths, strict=True)):
        if np.shape(pred) != np.shape(truth) or np.ndim(truth) != 2:
            raise ValueError(f"depth_panel sample {k}: prediction {np.shape(pred)} and truth "
                             f"{np.shape(truth)} must be the same (H, W)")


def _row(pred: np.ndarray, truth: np.ndarray) -> list[tuple[np.ndarray, float, float]]:
    """(values, lo, hi) of prediction, truth and |error|: the first two on the truth's range."""
    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    error = np.abs(pred - truth)
    lo, hi = _finite_range(truth)
    return [(pred, lo, hi), (truth, lo, hi), (error, 0.0, _finite_range(error)[1])]


def _finite_range(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:  # all invalid: drawn grey, the bar says nan
        return math.nan, math.nan
    return float(finite.min()), float(finite.max())


def _rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) or (H, W) floats in [0, 1] -> (H, W, 3) uint8."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.dtype == np.uint8:
        return image
    return (np.clip(np.nan_to_num(image.astype(np.float64)), 0, 1) * 255 + 0.5).astype(np.uint8)


def _cell_size(height: int, width: int) -> tuple[int, int]:
    """(width, height) of a drawn map: a whole upscale to >= MIN_CELL, within MAX_CELL."""
    if max(height, width) > MAX_CELL:
        shrink = MAX_CELL / max(height, width)
        return max(1, round(width * shrink)), max(1, round(height * shrink))
    factor = max(1, min(math.ceil(MIN_CELL / min(height, width)), MAX_CELL // max(height, width)))
    return width * factor, height * factor


def _cell(rgb: np.ndarray, size: tuple[int, int]) -> Image.Image:
    image = Image.fromarray(np.ascontiguousarray(rgb))
    return image if image.size == size else image.resize(size, Image.Resampling.NEAREST)


def _colour_bar(canvas: Image.Image, draw: ImageDraw.ImageDraw, font, table: np.ndarray,
                at: tuple[int, int], height: int, lo: float, hi: float) -> None:
    """A vertical bar of the table, high values on top, with its max and min as text."""
    rows = np.linspace(255, 0, height).round().astype(np.intp)  # (height,)
    bar = np.repeat(table[rows][:, None, :], BAR_W, axis=1)  # (height, BAR_W, 3)
    canvas.paste(Image.fromarray(np.ascontiguousarray(bar)), at)
    x, y = at
    draw.rectangle((x, y, x + BAR_W - 1, y + height - 1), outline=(80, 80, 80))
    draw.text((x + BAR_W + 3, y), _fmt(hi), fill=TEXT, font=font)
    draw.text((x + BAR_W + 3, y + height - _line_height(font)), _fmt(lo), fill=TEXT, font=font)


def _fmt(value: float) -> str:
    return f"{value:.3g}"


@lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except TypeError:  # Pillow < 10.1: only the fixed-size bitmap font
        return ImageFont.load_default()


def _line_height(font) -> int:
    return font.getbbox("Ag|(")[3] + 3


def _wrap(text: str, font, width: int) -> list[str]:
    """Greedy word wrap to `width` pixels (long metric titles)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _write_png(image: Image.Image, path: Path) -> Path:
    """Temp name then rename: a reader never sees half a PNG."""
    partial = path.with_name(f".{path.name}.partial")
    image.save(partial, format="PNG", compress_level=3)  # 6 (default): ~2x slower, 8 % smaller
    os.replace(partial, path)
    return path


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
