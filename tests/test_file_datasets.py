"""Datasets read from files: descriptors with a reader, Parquet preparation, resizing, skips."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from depthlab.catalog import load_entry
from depthlab.data import shards
from depthlab.data.datasets import load_split
from depthlab.data.readers import READERS, Sample

REAL = Path(os.environ.get("DEPTHLAB_REAL_DATA",
                           Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real bundle not at {REAL}")
FEW = {"all": 3, "sevenscenes_redkitchen": 2, "middlebury2014_q": 2, "nyu_demo": 1,
       "kitti_demo": 1}


@needs_real
def test_real_samples_resized_build_matches_the_reader(tmp_path):
    entry = load_entry("real-samples")
    path = shards.prepare(entry, size=(96, 128), data_dir=tmp_path, counts=FEW,
                          progress=False, source=REAL)
    assert path.name.startswith("96x128") and shards.verify(path) == []
    manifest = shards.read_manifest(path)
    assert manifest["source"] == str(REAL.resolve())
    assert {k: v["count"] for k, v in manifest["splits"].items()} == FEW

    split = load_split(path, "nyu_demo")
    original = READERS["real-samples"].read(REAL, split.ids[0])  # 480x640
    assert split.images.shape == (1, 96, 128, 3) and split.depth.shape == (1, 96, 128)
    # nearest-neighbour depth: every stored value is one of the file's (or NaN where invalid)
    stored = split.depth[0]
    assert np.isin(stored[np.isfinite(stored)], original.depth).all()
    assert np.isnan(stored).mean() == pytest.approx(1 - original.valid_fraction, abs=0.03)
    assert shards.prepare(entry, size=(96, 128), data_dir=tmp_path, counts=FEW,
                          progress=False, source=REAL) == path  # reused, not rebuilt


@needs_real
def test_native_build_keeps_sizes_and_training_load_asks_for_a_size(tmp_path):
    path = shards.prepare("real-samples", data_dir=tmp_path, counts=FEW, progress=False,
                          source=REAL)
    assert path.name.startswith("native")
    kitti = load_split(path, "kitti_demo")
    assert kitti.images.shape == (1, 375, 1242, 3)  # the file's own size
    with pytest.raises(ValueError, match="several sizes|sizes .*--size HxW"):
        load_split(path, "all")  # 7-Scenes, Middlebury, NYU sizes differ


def test_resize_scales_intrinsics_about_pixel_centres():
    k = (100.0, 0, 63.5, 0, 120.0, 47.5, 0, 0, 1)  # principal point at the image centre
    sample = Sample("x", np.zeros((96, 128, 3), np.uint8), np.ones((96, 128), np.float32),
                    "x.png", k)
    small = shards.resize_sample(sample, (48, 64))
    fx, _, cx, _, fy, cy, *_ = small.intrinsics
    assert (fx, fy) == (50.0, 60.0)
    assert (cx, cy) == (31.5, 23.5)  # still the centre of the 64x48 image


def write_folder_dataset(root: Path) -> None:
    for folder in ("rgb", "depth"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stem, depth_mm in (("a", rng.integers(500, 4000, (32, 32))), ("b", np.zeros((32, 32)))):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            root / "rgb" / f"{stem}.png")
        Image.fromarray(depth_mm.astype(np.uint16)).save(root / "depth" / f"{stem}.png")


def folder_descriptor(catalog: Path, source: str = "", env: str = "") -> None:
    catalog.mkdir(exist_ok=True)
    lines = ['name = "my-folder"', 'version = "1"', 'description = "d"', 'citation = "c"',
             'licence = "l"', "[source]", 'reader = "folder"']
    lines += [f'path = "{source}"'] if source else []
    lines += [f'env = "{env}"'] if env else []
    lines += ["[depth]", 'unit = "mm"', "range = [0, 10000]", 'display_unit = "m"',
              "invalid = 0", "[splits.paired]", 'modality = "paired"']
    (catalog / "my-folder.toml").write_text("\n".join(lines) + "\n")


def test_all_invalid_depth_maps_are_skipped_and_counted(tmp_path, capsys):
    write_folder_dataset(tmp_path / "files")
    folder_descriptor(tmp_path / "catalog", source="../files")  # relative to the descriptor
    entry = load_entry("my-folder", tmp_path / "catalog")
    path = shards.prepare(entry, data_dir=tmp_path / "data")
    split = shards.read_manifest(path)["splits"]["paired"]
    assert split["count"] == 1 and split["skipped_all_invalid"] == ["rgb/b.png + depth/b.png"]
    assert "1 all-invalid depth maps skipped" in capsys.readouterr().err
    arrays = load_split(path, "paired")
    assert arrays.ids == ["a"] and np.isfinite(arrays.depth).all()
    assert 0.5 <= np.nanmin(arrays.depth) and np.nanmax(arrays.depth) < 4.0  # mm → metres


def test_missing_source_names_the_flag_and_the_variable(tmp_path, monkeypatch):
    folder_descriptor(tmp_path / "catalog", env="MY_FOLDER_DATA")
    entry = load_entry("my-folder", tmp_path / "catalog")
    monkeypatch.delenv("MY_FOLDER_DATA", raising=False)
    with pytest.raises(ValueError, match=r"needs its files: pass --source PATH or set "
                                         r"\$MY_FOLDER_DATA"):
        shards.prepare(entry, data_dir=tmp_path / "data")
    monkeypatch.setenv("MY_FOLDER_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"nowhere \(from \$MY_FOLDER_DATA\) does not"):
        shards.prepare(entry, data_dir=tmp_path / "data")
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.parquet"))


def test_a_corrupt_file_fails_the_build_and_leaves_no_shards(tmp_path):
    write_folder_dataset(tmp_path / "files")
    (tmp_path / "files" / "rgb" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    folder_descriptor(tmp_path / "catalog", source=str(tmp_path / "files"))
    entry = load_entry("my-folder", tmp_path / "catalog")
    with pytest.raises(ValueError, match="a.png"):
        shards.prepare(entry, data_dir=tmp_path / "data", progress=False)
    assert not list((tmp_path / "data").rglob("*.parquet"))
    assert not list((tmp_path / "data").rglob("manifest.json"))
