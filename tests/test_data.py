"""Embedded dataset: generator, catalog, Parquet shards, in-memory batches.

Real Parquet files in tmp_path, tiny sizes (32×32) and counts.
"""

import re
import shutil
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from depthlab.catalog import load_entry
from depthlab.data import shards, surface
from depthlab.data.datasets import RandomBatches, eval_batches, load_split

SIZE = (32, 32)
COUNTS = {"train_rgb": 12, "train_depth": 12, "eval": 6}


@pytest.fixture
def entry():
    return load_entry("synthetic-surface")


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTHLAB_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture
def prepared(entry, data_dir):
    return shards.prepare(entry, size=SIZE, counts=COUNTS, progress=False)


# --- generator ---------------------------------------------------------------------------

def test_surface_is_deterministic_by_seed_and_differs_across_seeds():
    a, b, c = (surface.surface_depth(s, (64, 64)) for s in (7, 7, 8))
    assert a.dtype == np.float32 and a.shape == (64, 64)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.5  # µm
    np.testing.assert_array_equal(surface.render_microscope(a, 7), surface.render_microscope(b, 7))
    assert not np.array_equal(surface.render_microscope(a, 7), surface.render_microscope(a, 8))


def test_surface_is_the_same_at_two_resolutions():
    low, high = surface.surface_depth(3, (64, 64)), surface.surface_depth(3, (256, 256))
    pooled = high.reshape(64, 4, 64, 4).mean(axis=(1, 3))
    other = surface.surface_depth(4, (64, 64))
    # Measured: 0.07 µm between resolutions, 1.9 µm between seeds.
    assert np.abs(pooled - low).mean() < 0.2
    assert np.abs(other - low).mean() > 1.0


def test_depth_range_and_spread():
    d = np.stack([surface.surface_depth(s, (64, 64)) for s in range(32)])
    # Measured on these 32 seeds: mean -1.62, std 1.71, min -7.40, max 0.84 µm
    # (512 seeds: mean -1.53, std 1.66; CALIBRATION's prototype: -1.55, 1.57).
    assert d.min() >= -7.4 and d.max() <= 1.8
    assert -2.2 < d.mean() < -1.0
    assert 1.2 < d.std() < 2.2
    assert (np.abs(d) < 0.5).mean() > 0.25  # a plateau near 0 exists
    assert d.min() < -6.0  # deep grooves/pits exist


def test_rendering_is_uint8_with_variation():
    rgb = surface.render_microscope(surface.surface_depth(5, (64, 64)), 5)
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 64, 3)
    assert rgb.std() > 15  # shading of grooves, not a flat image
    assert rgb[..., 0].mean() > rgb[..., 2].mean()  # brownish cast
    assert (rgb == 255).mean() < 0.05 and (rgb == 0).mean() < 0.05


def test_bad_seed_is_rejected():
    with pytest.raises(ValueError, match="-1"):
        surface.surface_depth(-1, (32, 32))


# --- catalog -----------------------------------------------------------------------------

def test_catalog_entry_units(entry):
    assert entry.depth_unit == "um" and entry.unit_to_metres == 1e-6
    assert entry.depth_range_m == pytest.approx((-7.4e-6, 1.8e-6))
    assert entry.display_scale == pytest.approx(1e6)
    assert entry.split_names == ("train_rgb", "train_depth", "eval")
    assert [entry.split(s).modality for s in entry.split_names] == ["rgb", "depth", "paired"]


def test_unknown_catalog_name_lists_known_names():
    with pytest.raises(ValueError, match="no-such-set.*synthetic-surface"):
        load_entry("no-such-set")


def test_malformed_descriptor_names_file_and_field(tmp_path, entry):
    text = entry.path.read_text().replace('unit = "um"', 'unit = "furlong"')
    (tmp_path / "synthetic-surface.toml").write_text(text)
    with pytest.raises(ValueError, match=r"synthetic-surface\.toml.*depth\.unit"):
        load_entry("synthetic-surface", catalog_dir=tmp_path)
    text = entry.path.read_text().replace("count = 64", "")
    (tmp_path / "synthetic-surface.toml").write_text(text)
    with pytest.raises(ValueError, match=r"splits\.eval\.count"):
        load_entry("synthetic-surface", catalog_dir=tmp_path)


# --- shards ------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(30, 32), (0, 64), (-32, 32), (32,), (32.0, 32.0)])
def test_bad_size_names_the_value(entry, data_dir, size):
    with pytest.raises(ValueError, match=re.escape(repr(size))):
        shards.prepare(entry, size=size, progress=False)


def test_prepare_layout_rows_and_units(prepared, data_dir, entry):
    # test counts differ from the catalog's: the folder says so
    expected = "32x32-eval6-train_depth12-train_rgb12"
    assert prepared == data_dir / "synthetic-surface" / "v1" / expected
    assert shards.verify(prepared) == []
    manifest = shards.read_manifest(prepared)
    assert {k: v["count"] for k, v in manifest["splits"].items()} == COUNTS
    table = pq.read_table(prepared / "eval-00000.parquet")
    assert table.schema.metadata[b"depthlab.schema_version"] == b"1"
    row = table.to_pylist()[0]
    assert row["rgb"][:8] == b"\x89PNG\r\n\x1a\n"
    depth = np.frombuffer(row["depth"], dtype="<f4")
    assert depth.size == 32 * 32
    assert -7.4e-6 - 1e-12 <= depth.min() and depth.max() <= 1.8e-6 + 1e-12  # metres
    assert row["source"] == "synthetic-surface seed=200000"
    rgb_only = pq.read_table(prepared / "train_rgb-00000.parquet").to_pylist()[0]
    assert rgb_only["depth"] is None and rgb_only["rgb"] is not None


def test_prepare_reuses_an_existing_build(prepared, entry):
    files = sorted(prepared.iterdir())
    mtimes = [f.stat().st_mtime_ns for f in files]
    again = shards.prepare(entry, size=SIZE, counts=COUNTS, progress=False)
    assert again == prepared
    assert sorted(prepared.iterdir()) == files
    assert [f.stat().st_mtime_ns for f in files] == mtimes


def test_other_counts_get_their_own_build(prepared, entry):
    smaller = dict(COUNTS, eval=4)
    path = shards.prepare(entry, size=SIZE, counts=smaller, progress=False)
    assert path != prepared and shards.verify(path) == []
    assert len(load_split(path, "eval")) == 4
    assert len(load_split(prepared, "eval")) == 6  # the other budget's data is untouched


def test_unpaired_train_splits_are_other_surfaces_than_eval(prepared):
    rgb, depth, ev = (load_split(prepared, s) for s in ("train_rgb", "train_depth", "eval"))
    assert rgb.depth is None and depth.images is None
    assert ev.images is not None and ev.depth is not None
    seeds = {}
    for split in ("train_rgb", "train_depth", "eval"):
        table = pq.read_table(shards.shard_files(prepared, split)[0], columns=["source"])
        seeds[split] = {s.split("=")[1] for s in table.column("source").to_pylist()}
    assert not seeds["train_rgb"] & seeds["train_depth"]
    assert not (seeds["train_rgb"] | seeds["train_depth"]) & seeds["eval"]
    for d in depth.depth:
        assert min(np.abs(d - e).mean() for e in ev.depth) > 1e-7  # metres: 0.1 µm
    for im in rgb.images:
        assert not any(np.array_equal(im, e) for e in ev.images)


def test_verify_detects_a_corrupted_and_a_missing_shard(prepared, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    shard = copy / "train_depth-00000.parquet"
    data = bytearray(shard.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 16] = bytes(b ^ 0xFF for b in data[mid:mid + 16])
    shard.write_bytes(bytes(data))
    problems = shards.verify(copy)
    assert any("train_depth-00000.parquet" in p and "checksum" in p for p in problems)
    (copy / "eval-00000.parquet").unlink()
    assert any("eval-00000.parquet: missing shard" in p for p in shards.verify(copy))
    assert shards.verify(prepared) == []


def test_interrupted_prepare_leaves_no_dataset_and_a_rerun_succeeds(entry, data_dir,
                                                                    monkeypatch):
    calls = []

    def failing(seed, size):
        calls.append(seed)
        if len(calls) == 15:  # inside the second split
            raise RuntimeError("interrupted")
        return surface.generate(seed, size)

    monkeypatch.setitem(shards.GENERATORS, "synthetic-surface", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        shards.prepare(entry, size=SIZE, counts=COUNTS, progress=False)
    target = shards.dataset_dir(entry, SIZE, counts=COUNTS)
    assert not target.exists()
    # Only the lock and the hidden partial build (finished shards, kept for the rerun).
    names = sorted(p.name for p in target.parent.iterdir())
    assert len(names) == 2, names
    assert names[0] == f".{target.name}.lock" and names[1].startswith(f".{target.name}.partial-")

    monkeypatch.setitem(shards.GENERATORS, "synthetic-surface", surface.generate)
    assert shards.prepare(entry, size=SIZE, counts=COUNTS, progress=False) == target
    assert shards.verify(target) == []


def test_concurrent_prepare_builds_once(entry, data_dir, monkeypatch):
    calls = []

    def counting(seed, size):
        calls.append(seed)
        return surface.generate(seed, size)

    monkeypatch.setitem(shards.GENERATORS, "synthetic-surface", counting)
    results = []

    def run():
        results.append(shards.prepare(entry, size=SIZE, counts=COUNTS, progress=False))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(set(results)) == 1
    assert len(calls) == sum(COUNTS.values())  # flock: one build, the others reused it
    assert shards.verify(results[0]) == []


# --- in-memory batches -------------------------------------------------------------------

def test_random_batches_unpaired(prepared):
    rgb, depth = load_split(prepared, "train_rgb"), load_split(prepared, "train_depth")
    batch = next(RandomBatches(rgb, depth, batch_size=4, seed=0))
    assert batch.paired is False
    assert batch.image.shape == (4, 3, 32, 32) and batch.image.dtype == torch.float32
    assert batch.depth.shape == (4, 1, 32, 32) and batch.depth.dtype == torch.float32
    assert 0.0 <= batch.image.min() and batch.image.max() <= 1.0
    assert batch.valid.all()
    assert batch.depth.abs().max() < 1e-5  # metres, not µm
    assert len(batch.ids) == 4 and all("|" in i for i in batch.ids)


def test_random_batches_are_deterministic_by_seed(prepared):
    rgb, depth = load_split(prepared, "train_rgb"), load_split(prepared, "train_depth")
    a, b, c = (RandomBatches(rgb, depth, 4, seed=s) for s in (1, 1, 2))
    for _ in range(3):
        x, y, z = next(a), next(b), next(c)
        assert x.ids == y.ids
        assert torch.equal(x.image, y.image) and torch.equal(x.depth, y.depth)
    assert x.ids != z.ids or not torch.equal(x.image, z.image)


def test_random_batches_paired_flip_image_and_depth_together(prepared):
    ev = load_split(prepared, "eval")
    stream = RandomBatches(ev, ev, batch_size=6, seed=3)
    index = {i: k for k, i in enumerate(ev.ids)}
    flips = set()
    for _ in range(4):
        batch = next(stream)
        assert batch.paired is True
        for b, sample in enumerate(batch.ids):
            image = torch.from_numpy(ev.images[index[sample]]).permute(2, 0, 1).float() / 255
            depth = torch.from_numpy(ev.depth[index[sample]])[None]
            matches = [dims for dims in ((), (-1,), (-2,), (-2, -1))
                       if torch.equal(image.flip(dims) if dims else image, batch.image[b])]
            assert len(matches) >= 1
            dims = matches[0]
            assert torch.equal(depth.flip(dims) if dims else depth, batch.depth[b])
            flips.add(dims)
    assert len(flips) > 1  # augmentation happened


def test_random_batches_need_the_right_modalities(prepared):
    rgb, depth = load_split(prepared, "train_rgb"), load_split(prepared, "train_depth")
    with pytest.raises(ValueError, match="no images"):
        RandomBatches(depth, depth, 4, seed=0)
    with pytest.raises(ValueError, match="no depth"):
        RandomBatches(rgb, rgb, 4, seed=0)


def test_eval_batches_are_sequential_and_paired(prepared):
    ev = load_split(prepared, "eval")
    batches = list(eval_batches(ev, batch_size=4))
    assert [len(b.ids) for b in batches] == [4, 2]
    assert [i for b in batches for i in b.ids] == ev.ids
    assert all(b.paired for b in batches)
    first = batches[0]
    assert torch.equal(first.depth[:, 0], torch.from_numpy(ev.depth[:4]))
    assert torch.equal(first.image, torch.from_numpy(ev.images[:4]).permute(0, 3, 1, 2) / 255)

