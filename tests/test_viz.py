"""The depth panel drawn with numpy + PIL: geometry, colours, invalid depth, no matplotlib."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from depthlab import viz
from depthlab.colormaps import GREY, MAGMA, VIRIDIS, colorize, lut_index


def samples(rows: int, size: int = 32, seed: int = 0):
    """(images, predictions, truths): a ramp of depth in 1..9 m with noisy predictions."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(1, 9, size * size).reshape(size, size)
    truths = np.stack([ramp + k for k in range(rows)])
    predictions = truths + rng.normal(0, 0.8, truths.shape)
    images = rng.random((rows, size, size, 3))
    return images, predictions, truths


def draw(tmp_path, images, predictions, truths, title="", name="panel.png") -> np.ndarray:
    path = viz.depth_panel(images, predictions, truths, "m", tmp_path / name, title)
    assert path == tmp_path / name
    return np.asarray(Image.open(path).convert("RGB"))


def layout(predictions, truths, title=""):
    rows = [viz._row(p, t) for p, t in zip(predictions, truths, strict=True)]
    return viz._layout(rows, truths[0].shape, title)


def test_height_grows_with_rows_and_small_maps_are_upscaled(tmp_path):
    one = draw(tmp_path, *samples(1), name="one.png")
    three = draw(tmp_path, *samples(3), name="three.png")
    assert one.shape[1] == three.shape[1]  # same columns
    cell = layout(*samples(1)[1:]).cell
    assert cell == (160, 160)  # 32 px maps, 5x nearest neighbour
    assert three.shape[0] - one.shape[0] == 2 * (cell[1] + viz.PAD)
    assert one.shape[1] > 4 * cell[0]
    assert not list(tmp_path.glob(".*partial"))  # the temp name was renamed


def test_prediction_cell_is_viridis_on_the_truths_range(tmp_path):
    images, predictions, truths = samples(2, size=64)
    pixels = draw(tmp_path, images, predictions, truths)
    geometry = layout(predictions, truths)
    factor = geometry.cell[0] // 64
    assert factor == 3
    rng = np.random.default_rng(1)
    for row in range(2):
        lo, hi = truths[row].min(), truths[row].max()
        x0, y0 = geometry.origin(row, 1)
        for i, j in rng.integers(0, 64, size=(25, 2)):
            expected = VIRIDIS[lut_index(predictions[row, i, j], lo, hi)]
            # every screen pixel of the source pixel (i, j) has its colour
            block = pixels[y0 + i * factor:y0 + (i + 1) * factor,
                           x0 + j * factor:x0 + (j + 1) * factor]
            assert (block == expected).all(), (row, i, j)
        # the truth's extremes are the two ends of the table
        x0, y0 = geometry.origin(row, 2)
        assert (pixels[y0, x0] == VIRIDIS[0]).all()
        assert (pixels[y0 + geometry.cell[1] - 1, x0 + geometry.cell[0] - 1] == VIRIDIS[255]).all()


def test_error_cell_is_magma_from_zero_to_its_max(tmp_path):
    images, predictions, truths = samples(1)
    pixels = draw(tmp_path, images, predictions, truths)
    geometry = layout(predictions, truths)
    error = np.abs(predictions[0] - truths[0])
    i, j = np.unravel_index(np.argmax(error), error.shape)
    x0, y0 = geometry.origin(0, 3)
    factor = geometry.cell[0] // 32
    assert (pixels[y0 + i * factor, x0 + j * factor] == MAGMA[255]).all()


def test_invalid_depth_is_grey(tmp_path):
    images, predictions, truths = samples(1)
    truths[0, :4, :6] = np.nan
    predictions[0, 10:12, 20:30] = np.nan
    pixels = draw(tmp_path, images, predictions, truths)
    geometry = layout(predictions, truths)
    factor = geometry.cell[0] // 32
    px, py = geometry.origin(0, 1)
    tx, ty = geometry.origin(0, 2)
    ex, ey = geometry.origin(0, 3)
    assert (pixels[ty:ty + 4 * factor, tx:tx + 6 * factor] == GREY).all()
    assert (pixels[ey:ey + 4 * factor, ex:ex + 6 * factor] == GREY).all()  # |error| unknown
    assert (pixels[py + 10 * factor:py + 12 * factor, px + 20 * factor:px + 30 * factor]
            == GREY).all()
    # valid pixels are not grey, and the scale ignores the NaNs
    assert not (pixels[ty + 5 * factor, tx + 5 * factor] == GREY).all()
    assert (pixels[ty + geometry.cell[1] - 1, tx + geometry.cell[0] - 1] == VIRIDIS[255]).all()


def test_all_invalid_truth_still_draws(tmp_path):
    images, predictions, truths = samples(1)
    truths[:] = np.nan
    pixels = draw(tmp_path, images, predictions, truths)
    x0, y0 = layout(predictions, truths).origin(0, 2)
    assert (pixels[y0:y0 + 160, x0:x0 + 160] == GREY).all()


def test_title_adds_a_line_on_top(tmp_path):
    data = samples(1)
    plain = draw(tmp_path, *data, name="plain.png")
    titled = draw(tmp_path, *data, title="step 10: abs_rel 0.123", name="titled.png")
    line = layout(*data[1:], title="x").line_h
    assert titled.shape[0] == plain.shape[0] + line
    assert (titled[viz.PAD + line:] == plain[viz.PAD:]).all()  # the rest moved down a line
    # the title's own band holds dark text pixels; without a title the top is white
    assert (titled[:viz.PAD + line] < 100).any()
    assert (plain[:viz.PAD] == 255).all()
    long_title = "step 10: " + ", ".join(f"metric_{k} {k / 7:.3g}" for k in range(40))
    wrapped = draw(tmp_path, *data, title=long_title, name="wrapped.png")
    assert wrapped.shape[1] == plain.shape[1]  # wrapped, not widened
    assert wrapped.shape[0] >= plain.shape[0] + 2 * line


def test_mismatched_inputs_raise(tmp_path):
    images, predictions, truths = samples(2)
    with pytest.raises(ValueError, match="as many images"):
        viz.depth_panel(images, predictions[:1], truths, "m", tmp_path / "p.png")
    with pytest.raises(ValueError, match="sample 0"):
        viz.depth_panel(images, predictions[:, :16], truths, "m", tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()


def test_tables_are_matplotlibs():
    from matplotlib import colormaps

    for name, table in (("viridis", VIRIDIS), ("magma", MAGMA)):
        assert (table == colormaps[name](np.arange(256), bytes=True)[:, :3]).all(), name
    values = np.array([[0.0, 0.5, 1.0, 2.0, -1.0, np.nan]])
    expected = colormaps["viridis"](np.clip(values[0, :5], 0, 1), bytes=True)[:, :3]
    assert (colorize(values, VIRIDIS, 0.0, 1.0)[0, :5] == expected).all()
    assert tuple(colorize(values, VIRIDIS, 0.0, 1.0)[0, 5]) == GREY


def test_depth_panel_does_not_import_matplotlib(tmp_path):
    code = ("import sys, numpy as np\n"
            "from depthlab.viz import depth_panel\n"
            "t = np.linspace(1, 5, 64 * 64).reshape(1, 64, 64)\n"
            f"depth_panel(np.zeros((1, 64, 64, 3)), t, t, 'm', {str(tmp_path / 'p.png')!r})\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert (tmp_path / "p.png").stat().st_size > 1000
