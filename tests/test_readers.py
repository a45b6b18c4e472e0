"""File-format readers: the real bundle in ../shared/data/real, tiny synthetic files, bad input."""

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from depthlab.data.readers import (
    READERS,
    FolderOptions,
    Reader,
    Sample,
    folder_reader,
    kitti_reader,
    nyu_reader,
)

# The developers' real RGB-D bundle (never copied into the repo); DEPTHLAB_REAL_DATA moves it.
REAL = Path(os.environ.get("DEPTHLAB_REAL_DATA",
                           Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real bundle not at {REAL}")


def write_rgb(path: Path, h: int, w: int, seed: int = 0) -> np.ndarray:
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=100, subsampling=0)  # JPEG options: near-lossless
    return rgb


def write_depth(path: Path, raw: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(raw.astype(np.uint16)).save(path)  # uint16 → 16-bit greyscale PNG


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def manifest_rows(bundle: str) -> dict[str, dict]:
    with open(REAL / bundle / "manifest.csv", newline="") as fh:
        return {row["id"]: row for row in csv.DictReader(fh)}


# ---------------------------------------------------------------- registry and Sample

def test_every_reader_is_registered_and_unknown_names_fail():
    assert {"real-samples", "nyu-v2-labeled", "middlebury2014", "kitti-depth",
            "folder"} <= set(READERS)
    assert all(isinstance(r, Reader) and r.splits for r in READERS.values())
    with pytest.raises(ValueError, match="unknown reader 'make4d'; known: .*folder"):
        READERS.get_or_raise("make4d")


def test_sample_rejects_broken_arrays():
    rgb = np.zeros((4, 5, 3), np.uint8)
    with pytest.raises(ValueError, match="differ in size"):
        Sample("x", rgb, np.zeros((4, 6), np.float32), "a + b")
    with pytest.raises(ValueError, match="inf"):
        Sample("x", None, np.full((4, 5), np.inf, np.float32), "b")
    with pytest.raises(ValueError, match="float32"):
        Sample("x", None, np.zeros((4, 5)), "b")  # float64
    assert Sample("x", rgb, None, "a").valid_fraction is None


# ---------------------------------------------------------------- real-samples (real files)

@needs_real
@pytest.mark.parametrize("bundle, ids", [
    ("kitti_demo", None), ("middlebury2014_q", None), ("nyu_demo", None),
    ("sevenscenes_redkitchen", ["0000", "0350", "0690"]),  # 3 of 70 keep the test fast
])
def test_real_samples_match_manifest_and_intrinsics(bundle, ids):
    reader, rows = READERS["real-samples"], manifest_rows(bundle)
    keys = reader.index(REAL, bundle)
    assert keys == sorted(f"{bundle}/{i}" for i in rows)
    camera = json.loads((REAL / bundle / "intrinsics.json").read_text())
    for sid in ids or rows:
        row, sample = rows[sid], reader.read(REAL, f"{bundle}/{sid}")
        h, w = int(row["height"]), int(row["width"])
        assert sample.id == f"{bundle}/{sid}"
        assert sample.rgb.shape == (h, w, 3) and sample.rgb.dtype == np.uint8
        assert sample.depth.shape == (h, w) and sample.depth.dtype == np.float32
        assert sample.valid_fraction == pytest.approx(float(row["valid_fraction"]), abs=1e-4)
        assert np.nanmin(sample.depth) == pytest.approx(float(row["min_m"]), abs=6e-4)
        assert np.nanmax(sample.depth) == pytest.approx(float(row["max_m"]), abs=6e-4)
        cam = camera["per_image"][sid] if "per_image" in camera else camera
        assert sample.intrinsics == pytest.approx(
            (cam["fx"], 0, cam["cx"], 0, cam["fy"], cam["cy"], 0, 0, 1))
        assert sample.source == f"{bundle}/{row['rgb']} + {bundle}/{row['depth']}"


@needs_real
def test_real_samples_all_split_and_single_bundle_root():
    reader = READERS["real-samples"]
    everything = reader.index(REAL, "all")
    total = sum(len(manifest_rows(b)) for b in reader.splits if b != "all")
    assert len(everything) == len(set(everything)) == total == 84
    assert everything == sorted(everything)
    # root may be one bundle folder; keys stay "<bundle>/<id>"
    one = reader.index(REAL / "nyu_demo", "nyu_demo")
    assert one == ["nyu_demo/0000", "nyu_demo/0050"]
    assert reader.read(REAL / "nyu_demo", one[1]).source == "rgb/0050.jpg + depth/0050.png"
    with pytest.raises(ValueError, match="no split 'train'; known: all, kitti_demo"):
        reader.index(REAL, "train")
    with pytest.raises(ValueError, match="manifest.csv: no sample id '9999'"):
        reader.read(REAL, "nyu_demo/9999")


def write_bundle(root: Path, rgb_path: str = "rgb/0000.png", depth_path: str = "depth/0000.png",
                 raw: np.ndarray | None = None) -> Path:
    folder = root / "mine"
    write_rgb(folder / "rgb" / "0000.png", 4, 6)
    write_depth(folder / "depth" / "0000.png", np.full((4, 6), 1500) if raw is None else raw)
    (folder / "manifest.csv").write_text(f"id,rgb,depth\n0000,{rgb_path},{depth_path}\n")
    return folder


@pytest.mark.parametrize("bad", ["../secret.png", "/etc/passwd", "rgb/../../secret.png",
                                 "rgb/../rgb/0000.png",  # '..' is refused even when it stays in
                                 "link.png"])  # a symbolic link out of the folder
def test_real_samples_manifest_paths_cannot_escape(tmp_path, bad):
    write_rgb(tmp_path / "secret.png", 4, 6)
    folder = write_bundle(tmp_path, rgb_path=bad)
    (folder / "link.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(ValueError) as error:
        READERS["real-samples"].index(tmp_path, "all")
    assert str(folder / "manifest.csv") in str(error.value)
    assert repr(bad) in str(error.value) and "escapes" in str(error.value)


def test_real_samples_bundle_without_intrinsics_and_all_invalid_depth(tmp_path):
    write_bundle(tmp_path, raw=np.zeros((4, 6)))
    sample = READERS["real-samples"].read(tmp_path, "mine/0000")
    assert sample.valid_fraction == 0.0 and np.isnan(sample.depth).all()  # returned, not skipped
    assert sample.intrinsics is None


def test_real_samples_empty_root_fails(tmp_path):
    with pytest.raises(ValueError, match="no real-samples folders; expected sub-folders "
                                         "holding manifest.csv"):
        READERS["real-samples"].index(tmp_path, "all")


# ---------------------------------------------------------------- kitti-depth

@needs_real
def test_kitti_original_m256_agrees_with_the_mm_copy():
    """depth_orig_m256 holds value/256 m up to ~85 m; the mm copy dropped pixels >= 65.535 m."""
    sample = kitti_reader("depth_orig_m256").read(REAL / "kitti_demo", "0005")
    mm = READERS["real-samples"].read(REAL, "kitti_demo/0005").depth
    assert sample.depth.shape == (375, 1242)
    assert np.nanmax(sample.depth) == pytest.approx(84.9, abs=0.05)
    both = np.isfinite(sample.depth) & np.isfinite(mm)
    assert np.abs(sample.depth[both] - mm[both]).max() <= 5.1e-4  # mm rounding only
    beyond = np.isfinite(sample.depth) & np.isnan(mm)
    assert (sample.depth[beyond] >= 65.5).all()
    assert 0.0053 < beyond.sum() / np.isfinite(sample.depth).sum() < 0.0055  # README: 0.54 %
    assert sample.intrinsics[0] == pytest.approx(707.0493)


def test_kitti_reader_divides_by_256(tmp_path):
    write_rgb(tmp_path / "rgb" / "a.png", 3, 4)
    write_depth(tmp_path / "depth" / "a.png", np.array([[0, 256, 2560, 65535]] * 3))
    reader = READERS["kitti-depth"]
    assert reader.index(tmp_path, "all") == ["a"]
    depth = reader.read(tmp_path, "a").depth
    assert np.isnan(depth[0, 0])
    np.testing.assert_allclose(depth[0, 1:], [1.0, 10.0, 65535 / 256])


# ---------------------------------------------------------------- folder

def test_folder_paired_unit_scale_and_unpaired_splits(tmp_path):
    rgb = write_rgb(tmp_path / "img" / "b.jpg", 4, 5)
    write_rgb(tmp_path / "img" / "a.png", 4, 5)
    write_depth(tmp_path / "dep" / "a.png", np.full((4, 5), 40))
    write_depth(tmp_path / "dep" / "b.png", np.full((4, 5), 7))
    options = FolderOptions(unit="um", scale=0.5, invalid=7, rgb_dir="img", depth_dir="dep")
    reader = folder_reader(options)
    assert reader.index(tmp_path, "paired") == ["a", "b"]
    assert reader.index(tmp_path, "rgb") == ["rgb/a", "rgb/b"]
    a, b = reader.read(tmp_path, "a"), reader.read(tmp_path, "b")
    np.testing.assert_allclose(a.depth, 20e-6)  # 40 × 0.5 µm
    assert b.valid_fraction == 0.0  # all raw == invalid: returned for the caller to skip
    assert np.abs(b.rgb.astype(int) - rgb).mean() < 10  # JPEG, lossy but the same picture
    assert b.source == "img/b.jpg + dep/b.png"
    only_depth = reader.read(tmp_path, "depth/a")
    assert only_depth.rgb is None and only_depth.depth.shape == (4, 5)
    with pytest.raises(ValueError, match="folder key 'paired/a'; expected '<stem>', 'rgb/<stem>'"):
        reader.read(tmp_path, "paired/a")


def test_folder_rgb_only_flat_folder(tmp_path):
    write_rgb(tmp_path / "x.png", 3, 3)
    reader = folder_reader(FolderOptions(rgb_dir="."))
    assert reader.index(tmp_path, "rgb") == ["rgb/x"]
    sample = reader.read(tmp_path, "rgb/x")
    assert sample.depth is None and sample.rgb.shape == (3, 3, 3)
    with pytest.raises(FileNotFoundError, match="depth PNG folder not found"):
        reader.index(tmp_path, "paired")


def test_folder_unmatched_stems_and_empty_folder_fail(tmp_path):
    write_rgb(tmp_path / "rgb" / "a.png", 2, 2)
    write_depth(tmp_path / "depth" / "z.png", np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"only RGB: \['a'\], only depth: \['z'\]"):
        READERS["folder"].index(tmp_path, "paired")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: no RGB image files \(\.png, \.jpg, \.jpeg\)"):
        folder_reader(FolderOptions(rgb_dir="empty")).index(tmp_path, "rgb")


def test_folder_options_are_checked():
    with pytest.raises(ValueError, match="unit = 'inch'; expected one of m, mm, um"):
        FolderOptions(unit="inch")
    with pytest.raises(ValueError, match="scale = 0"):
        FolderOptions(scale=0)
    with pytest.raises(ValueError, match="rgb_dir = '../x'"):
        FolderOptions(rgb_dir="../x")


@pytest.mark.parametrize("name", ["a.png", "a.jpg"])
def test_truncated_rgb_fails_naming_the_file(tmp_path, name):
    write_rgb(tmp_path / "rgb" / name, 64, 64)
    write_depth(tmp_path / "depth" / "a.png", np.ones((64, 64)))
    truncate(tmp_path / "rgb" / name)
    with pytest.raises(ValueError) as error:
        READERS["folder"].read(tmp_path, "a")
    assert f"{tmp_path / 'rgb' / name}: unreadable RGB image" in str(error.value)


def test_truncated_depth_png_fails_naming_the_file(tmp_path):
    write_depth(tmp_path / "depth" / "a.png", np.arange(64 * 64).reshape(64, 64))
    truncate(tmp_path / "depth" / "a.png")
    with pytest.raises(ValueError, match=r"depth/a\.png: unreadable depth PNG"):
        READERS["folder"].read(tmp_path, "depth/a")


def test_eight_bit_depth_png_fails(tmp_path):
    (tmp_path / "depth").mkdir()
    Image.fromarray(np.full((3, 3), 9, np.uint8)).save(tmp_path / "depth" / "a.png")
    with pytest.raises(ValueError, match=r"a\.png: depth PNG is mode L \(uint8\); "
                                         r"expected 16-bit greyscale \(uint16\)"):
        READERS["folder"].read(tmp_path, "depth/a")


def test_rgb_and_depth_of_different_sizes_fail(tmp_path):
    write_rgb(tmp_path / "rgb" / "a.png", 4, 6)
    write_depth(tmp_path / "depth" / "a.png", np.ones((2, 3)))
    with pytest.raises(ValueError) as error:
        READERS["folder"].read(tmp_path, "a")
    message = str(error.value)
    assert f"{tmp_path / 'rgb' / 'a.png'} is 4x6 but {tmp_path / 'depth' / 'a.png'} is 2x3" \
        in message and "never resize" in message


def test_missing_file_fails_with_file_not_found(tmp_path):
    write_rgb(tmp_path / "rgb" / "a.png", 2, 2)
    (tmp_path / "depth").mkdir()
    with pytest.raises(FileNotFoundError, match="depth: no depth PNG a.png"):
        READERS["folder"].read(tmp_path, "a")


# ---------------------------------------------------------------- middlebury2014

def write_pfm(path: Path, top_first: np.ndarray, little: bool = True) -> None:
    h, w = top_first.shape
    data = top_first[::-1].astype("<f4" if little else ">f4").tobytes()  # rows bottom-to-top
    path.write_bytes(f"Pf\n{w} {h}\n{-1.0 if little else 1.0}\n".encode() + data)


def write_scene(root: Path, disparity: np.ndarray, little: bool = True) -> Path:
    scene = root / "Toy"
    h, w = disparity.shape
    write_rgb(scene / "im0.png", h, w)
    write_pfm(scene / "disp0GT.pfm", disparity, little)
    (scene / "calib.txt").write_text(
        f"cam0=[100 0 3.5; 0 100 2.5; 0 0 1]\ncam1=[100 0 4.5; 0 100 2.5; 0 0 1]\n"
        f"doffs=10\nbaseline=200\nwidth={w}\nheight={h}\nndisp=64\n")
    return scene


@pytest.mark.parametrize("little", [True, False])
def test_middlebury_disparity_to_metres_flipped_with_inf_invalid(tmp_path, little):
    disparity = np.arange(24, dtype=np.float32).reshape(4, 6) + 10  # row 0 = top
    disparity[0, 0] = np.inf
    write_scene(tmp_path, disparity, little)
    reader = READERS["middlebury2014"]
    assert reader.index(tmp_path, "all") == ["Toy"]
    sample = reader.read(tmp_path, "Toy")
    expected = 200 * 100 / (disparity + 10) / 1000  # baseline mm × fx / (d + doffs) → m
    assert np.isnan(sample.depth[0, 0]) and sample.valid_fraction == pytest.approx(23 / 24)
    np.testing.assert_allclose(sample.depth.ravel()[1:], expected.ravel()[1:], rtol=1e-6)
    assert sample.intrinsics == (100, 0, 3.5, 0, 100, 2.5, 0, 0, 1)
    assert sample.source == "Toy/im0.png + Toy/disp0GT.pfm + Toy/calib.txt"


def test_middlebury_bad_pfm_fails_naming_the_file(tmp_path):
    disparity = np.full((4, 6), 20, np.float32)
    disparity[1, 1] = np.nan  # NaN is no Middlebury convention (inf is)
    scene = write_scene(tmp_path, disparity)
    reader = READERS["middlebury2014"]
    with pytest.raises(ValueError, match=r"disp0GT\.pfm: 1 NaN or -inf disparities"):
        reader.read(tmp_path, "Toy")
    truncate(scene / "disp0GT.pfm")
    with pytest.raises(ValueError, match=r"disp0GT\.pfm: \d+ bytes of data .* expected 6x4x4 = 96"):
        reader.read(tmp_path, "Toy")
    (scene / "disp0GT.pfm").write_bytes(b"PF\n6 4\n-1\n" + bytes(288))
    with pytest.raises(ValueError, match="colour PFM"):
        reader.read(tmp_path, "Toy")
    (scene / "disp0GT.pfm").unlink()
    with pytest.raises(FileNotFoundError, match=r"disp0GT\.pfm: PFM file not found"):
        reader.read(tmp_path, "Toy")


def test_middlebury_calib_and_empty_root(tmp_path):
    scene = write_scene(tmp_path, np.full((4, 6), 20, np.float32))
    (scene / "calib.txt").write_text("cam0=[100 0 3.5; 0 100 2.5; 0 0 1]\ndoffs=10\n")
    with pytest.raises(ValueError, match=r"calib\.txt: missing or bad field \('baseline'\)"):
        READERS["middlebury2014"].read(tmp_path, "Toy")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no Middlebury scene folders"):
        READERS["middlebury2014"].index(tmp_path / "empty", "all")


# ---------------------------------------------------------------- nyu-v2-labeled

def write_nyu(folder: Path, images: np.ndarray, depths: np.ndarray) -> Path:
    """A .mat in the v7.3 layout: images (N, 3, W, H) uint8, depths (N, W, H)."""
    import h5py as h5
    folder.mkdir(parents=True, exist_ok=True)
    with h5.File(folder / "nyu_depth_v2_labeled.mat", "w") as fh:
        fh["images"] = images.transpose(0, 3, 2, 1)  # (N, H, W, 3) → MATLAB's transposed view
        fh["depths"] = depths.transpose(0, 2, 1)
    return folder / "nyu_depth_v2_labeled.mat"


def tiny_nyu(folder: Path, n: int = 5, h: int = 48, w: int = 64):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    depths = rng.uniform(0.5, 10, (n, h, w)).astype(np.float32)
    depths[:, 0, :3] = 0  # missing values
    return write_nyu(folder, images, depths), images, depths


def test_nyu_splits_mat_and_orientation(tmp_path):
    import scipy.io as scipy_io
    mat, images, depths = tiny_nyu(tmp_path)
    scipy_io.savemat(tmp_path / "splits.mat", {"trainNdxs": np.array([[1], [2], [4]]),
                                               "testNdxs": np.array([[3], [5]])})
    reader = READERS["nyu-v2-labeled"]
    assert reader.index(tmp_path, "train") == ["0001", "0002", "0004"]
    assert reader.index(mat, "test") == ["0003", "0005"]  # root may be the .mat itself
    sample = reader.read(tmp_path, "0003")
    assert sample.rgb.shape == (48, 64, 3)
    np.testing.assert_array_equal(sample.rgb, images[2])
    np.testing.assert_array_equal(np.isnan(sample.depth), depths[2] == 0)
    np.testing.assert_allclose(sample.depth[1:], depths[2, 1:])
    assert sample.intrinsics is None  # NYU intrinsics are known only at 640×480
    assert sample.source == "nyu_depth_v2_labeled.mat:depths[0003]"
    with pytest.raises(ValueError, match="key '0006'; expected a 1-based index 0001..0005"):
        reader.read(tmp_path, "0006")


def test_nyu_splits_json_and_full_size_intrinsics(tmp_path):
    tiny_nyu(tmp_path, n=2, h=480, w=640)
    (tmp_path / "splits.json").write_text(json.dumps({"train": [2], "test": [1]}))
    reader = nyu_reader("depths")
    assert reader.index(tmp_path, "test") == ["0001"]
    assert reader.read(tmp_path, "0002").intrinsics[0] == pytest.approx(518.8579)
    (tmp_path / "splits.json").write_text(json.dumps({"train": [1, 2], "test": [2]}))
    with pytest.raises(ValueError, match=r"splits\.json: train and test share indices"):
        reader.index(tmp_path, "train")


def test_nyu_bad_input(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    depths = rng.uniform(1, 2, (2, 8, 8)).astype(np.float32)
    depths[1, 3, 3] = np.nan
    mat = write_nyu(tmp_path, rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8), depths)
    reader = READERS["nyu-v2-labeled"]
    with pytest.raises(FileNotFoundError, match="no split file; expected splits.mat"):
        reader.index(tmp_path, "train")
    assert reader.read(tmp_path, "0001").valid_fraction == 1.0
    with pytest.raises(ValueError, match=f"{mat}: depths of sample 0002 holds NaN"):
        reader.read(tmp_path, "0002")
    with pytest.raises(FileNotFoundError, match="NYU v2 labeled file not found"):
        reader.read(tmp_path / "nowhere", "0001")
    (tmp_path / "v5.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    with pytest.raises(ValueError, match=r"v5\.mat: not an HDF5 \(MATLAB v7\.3\) file"):
        reader.read(tmp_path / "v5.mat", "0001")
    monkeypatch.setitem(sys.modules, "h5py", None)  # as if h5py were not installed
    with pytest.raises(ImportError, match="needs h5py: pip install h5py"):
        reader.read(tmp_path, "0001")
