"""`data prepare` across processes: parallel = serial byte for byte, resume after a failure,
errors naming the file, Ray tasks, the progress bar.

Real processes and Parquet; synthetic-rooms at 32×32 with SHARD_ROWS = 16, so a build of
200 + 100 samples has 13 + 7 = 20 shards.
"""

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from depthlab import cli
from depthlab.catalog import load_entry
from depthlab.data import rooms, shards
from depthlab.data.datasets import load_split

SIZE = (32, 32)
ROWS = 16
COUNTS = {"train": 200, "test": 100}
SHARDS = {"train": 13, "test": 7}  # ceil(200 / 16), ceil(100 / 16)
TEST_SEED = 100000  # synthetic-rooms: test seeds start there
FLAKY = "DEPTHLAB_TEST_FLAKY"  # folder of the flaky generator's call log and "fixed" flag


def flaky_rooms(seed: int, size: tuple[int, int]):
    """synthetic-rooms that logs each seed and fails on seed 40 until `fixed` exists.

    Module-level and driven by the environment, so spawned pool workers run it too.
    """
    folder = Path(os.environ[FLAKY])
    with open(folder / "calls.txt", "a") as fh:
        fh.write(f"{seed}\n")
    if seed == 40 and not (folder / "fixed").exists():
        raise RuntimeError(f"seed {seed} failed")
    return rooms.generate(seed, size)


@pytest.fixture(autouse=True)
def small_shards(monkeypatch):
    monkeypatch.setattr(shards, "SHARD_ROWS", ROWS)


@pytest.fixture(scope="module")
def entry():
    return load_entry("synthetic-rooms")


@pytest.fixture(scope="module")
def reference(entry, tmp_path_factory):
    """An uninterrupted serial build."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(shards, "SHARD_ROWS", ROWS)
        return shards.prepare(entry, size=SIZE, counts=COUNTS, progress=False,
                              data_dir=tmp_path_factory.mktemp("reference"), workers=1)


@pytest.fixture
def flaky(tmp_path, monkeypatch):
    """Registers `flaky_rooms` as synthetic-rooms; returns its folder."""
    folder = tmp_path / "flaky"
    folder.mkdir()
    monkeypatch.setenv(FLAKY, str(folder))
    monkeypatch.setitem(shards.GENERATORS, "synthetic-rooms", flaky_rooms)
    return folder


def shard_list(path: Path) -> list[tuple[str, int, str]]:
    manifest = shards.read_manifest(path)
    return [(s["file"], s["rows"], s["sha256"])
            for split in manifest["splits"].values() for s in split["shards"]]


def calls(folder: Path) -> list[int]:
    log = folder / "calls.txt"
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def seeds_of(shard: str) -> set[int]:
    split, k = shard.rsplit("-", 1)
    offset, count = (0, COUNTS["train"]) if split == "train" else (TEST_SEED, COUNTS["test"])
    return {offset + i for i in range(int(k) * ROWS, min((int(k) + 1) * ROWS, count))}


def partial_folder(target: Path) -> Path:
    [partial] = target.parent.glob(f".{target.name}.partial-*")
    return partial


def finished_shards(partial: Path) -> set[str]:
    """Shards whose sidecar exists; checks each is a complete Parquet file of its rows."""
    done = set()
    for sidecar in partial.glob("*-[0-9][0-9][0-9][0-9][0-9].json"):
        info = json.loads(sidecar.read_text())
        assert pq.read_table(partial / info["file"]).num_rows == info["rows"]
        done.add(sidecar.stem)
    return done


def assert_only_shards_and_manifest(path: Path) -> None:
    names = {p.name for p in path.iterdir()}
    assert names == {f for f, _, _ in shard_list(path)} | {"manifest.json"}
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == [
        f".{path.name}.lock"]  # no partial or temporary folder left


# --- parallel ------------------------------------------------------------------------------

def test_parallel_build_is_byte_identical_to_the_serial_one(entry, reference, tmp_path):
    path = shards.prepare(entry, size=SIZE, counts=COUNTS, progress=False,
                          data_dir=tmp_path, workers=2)
    listed = shard_list(path)
    assert listed == shard_list(reference)
    assert [rows for _, rows, _ in listed] == [16] * 12 + [8] + [16] * 6 + [4]
    assert [f for f, _, _ in listed][11:14] == ["train-00011.parquet", "train-00012.parquet",
                                                "test-00000.parquet"]
    assert shards.verify(path) == []
    assert_only_shards_and_manifest(path)
    a, b = load_split(path, "test"), load_split(reference, "test")
    assert a.ids == b.ids and len(a.ids) == 100
    np.testing.assert_array_equal(a.depth, b.depth)


def test_bad_worker_count_is_rejected(entry, tmp_path):
    with pytest.raises(ValueError, match="workers = 0"):
        shards.prepare(entry, size=SIZE, counts=COUNTS, data_dir=tmp_path, workers=0)


# --- resume --------------------------------------------------------------------------------

def test_an_interrupted_build_resumes_with_only_the_missing_shards(
        entry, reference, flaky, tmp_path, capsys):
    with pytest.raises(RuntimeError, match="seed 40 failed"):
        shards.prepare(entry, size=SIZE, counts=COUNTS, progress=False, data_dir=tmp_path)
    target = shards.dataset_dir(entry, SIZE, tmp_path, COUNTS)
    assert not target.exists()
    partial = partial_folder(target)
    # serial: seeds 0..31 made train-00000 and -00001; train-00002 (32..47) failed at 40
    assert finished_shards(partial) == {"train-00000", "train-00001"}
    assert sorted(p.name for p in partial.glob("*.parquet")) == [
        "train-00000.parquet", "train-00001.parquet"]
    assert not list(partial.glob(".*"))  # the failed shard's temporary file is gone
    assert calls(flaky) == list(range(41))

    (flaky / "calls.txt").unlink()
    (flaky / "fixed").touch()
    tampered = partial / "train-00001.parquet"  # a finished shard whose bytes changed since
    tampered.write_bytes(tampered.read_bytes()[:-8] + b"00000000")
    path = shards.prepare(entry, size=SIZE, counts=COUNTS, progress=True, data_dir=tmp_path)
    assert path == target
    assert "resuming: 1 of 20 shards already built" in capsys.readouterr().err
    assert sorted(calls(flaky)) == sorted(set(range(16, 200)) | set(range(TEST_SEED,
                                                                          TEST_SEED + 100)))
    assert shard_list(path) == shard_list(reference)
    assert_only_shards_and_manifest(path)


def test_a_parallel_interrupted_build_keeps_finished_shards_for_the_rerun(
        entry, reference, flaky, tmp_path):
    with pytest.raises(RuntimeError, match="seed 40 failed"):  # the task's own error type
        shards.prepare(entry, size=SIZE, counts=COUNTS, progress=False, data_dir=tmp_path,
                       workers=2)
    target = shards.dataset_dir(entry, SIZE, tmp_path, COUNTS)
    assert not target.exists()
    partial = partial_folder(target)
    done = finished_shards(partial)
    # shards started before the failing one finish (the pool waits for them); later ones
    # never start or finish whole: no file under a final name lacks its sidecar
    assert {"train-00000", "train-00001"} <= done and "train-00002" not in done
    assert {p.stem for p in partial.glob("*.parquet")} == done
    assert len(done) < 20

    (flaky / "calls.txt").unlink()
    (flaky / "fixed").touch()
    path = shards.prepare(entry, size=SIZE, counts=COUNTS, progress=False, data_dir=tmp_path,
                          workers=2)
    all_shards = {f"train-{k:05d}" for k in range(13)} | {f"test-{k:05d}" for k in range(7)}
    missing = set().union(*(seeds_of(s) for s in all_shards - done))
    assert sorted(calls(flaky)) == sorted(missing)  # each missing seed once, nothing else
    assert shard_list(path) == shard_list(reference)


def test_other_counts_do_not_reuse_another_builds_partial_shards(entry, flaky, tmp_path):
    with pytest.raises(RuntimeError):
        shards.prepare(entry, size=SIZE, counts=COUNTS, progress=False, data_dir=tmp_path)
    first = partial_folder(shards.dataset_dir(entry, SIZE, tmp_path, COUNTS))
    (flaky / "calls.txt").unlink()
    (flaky / "fixed").touch()
    other = {"train": 48, "test": 16}
    path = shards.prepare(entry, size=SIZE, counts=other, progress=False, data_dir=tmp_path)
    assert sorted(calls(flaky)) == list(range(48)) + list(range(TEST_SEED, TEST_SEED + 16))
    assert [rows for _, rows, _ in shard_list(path)] == [16, 16, 16, 16]
    assert finished_shards(first) == {"train-00000", "train-00001"}  # left for its rerun


def test_a_changed_identity_discards_the_old_partial_folder(entry, flaky, tmp_path,
                                                            monkeypatch):
    with pytest.raises(RuntimeError):
        shards.prepare(entry, size=SIZE, counts=COUNTS, progress=False, data_dir=tmp_path)
    target = shards.dataset_dir(entry, SIZE, tmp_path, COUNTS)
    old = partial_folder(target)
    (flaky / "calls.txt").unlink()
    (flaky / "fixed").touch()
    monkeypatch.setattr(shards, "SHARD_ROWS", 64)  # other shards: same target, new identity
    path = shards.prepare(entry, size=SIZE, counts=COUNTS, progress=False, data_dir=tmp_path)
    assert len(calls(flaky)) == 300  # nothing reused
    assert not old.exists()
    assert [rows for _, rows, _ in shard_list(path)] == [64, 64, 64, 8, 64, 36]


# --- file datasets -------------------------------------------------------------------------

STEMS = ("a", "b", "c", "d", "e", "f")


def write_folder(root: Path, catalog: Path, all_invalid: tuple[str, ...] = ()) -> None:
    """A `folder` dataset of six 32×32 pairs (uint16 mm depth, 0 = invalid) and its
    descriptor; the stems in `all_invalid` get depth maps without a valid pixel."""
    for folder in ("rgb", "depth"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stem in STEMS:
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            root / "rgb" / f"{stem}.png")
        depth_mm = rng.integers(500, 4000, (32, 32)) * (stem not in all_invalid)
        Image.fromarray(depth_mm.astype(np.uint16)).save(root / "depth" / f"{stem}.png")
    catalog.mkdir()
    (catalog / "my-folder.toml").write_text("\n".join([
        'name = "my-folder"', 'version = "1"', 'description = "d"', 'citation = "c"',
        'licence = "l"', "[source]", 'reader = "folder"', f'path = "{root}"', "[depth]",
        'unit = "mm"', "range = [0, 10000]", 'display_unit = "m"', "invalid = 0",
        "[splits.paired]", 'modality = "paired"']) + "\n")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_corrupt_file_fails_naming_it_and_the_fixed_rerun_resumes(tmp_path, monkeypatch,
                                                                     workers):
    monkeypatch.setattr(shards, "SHARD_ROWS", 2)  # shards: (a, b), (c, d), (e, f)
    write_folder(tmp_path / "files", tmp_path / "catalog")
    entry = load_entry("my-folder", tmp_path / "catalog")
    broken = tmp_path / "files" / "rgb" / "c.png"
    good = broken.read_bytes()
    broken.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(ValueError, match=r"rgb/c\.png: unreadable"):
        shards.prepare(entry, data_dir=tmp_path / "data", progress=False, workers=workers)
    target = shards.dataset_dir(entry, None, tmp_path / "data")
    assert not target.exists()
    partial = partial_folder(target)
    assert "paired-00001" not in finished_shards(partial)
    kept = (partial / "paired-00000.parquet").stat().st_ino

    broken.write_bytes(good)
    path = shards.prepare(entry, data_dir=tmp_path / "data", progress=False, workers=workers)
    assert (path / "paired-00000.parquet").stat().st_ino == kept  # reused, not rebuilt
    assert shards.verify(path) == []
    assert load_split(path, "paired").ids == list(STEMS)


def test_a_shard_of_only_all_invalid_samples_is_left_out(tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "SHARD_ROWS", 2)
    write_folder(tmp_path / "files", tmp_path / "catalog", all_invalid=("c", "d"))
    entry = load_entry("my-folder", tmp_path / "catalog")
    path = shards.prepare(entry, data_dir=tmp_path / "data", progress=False, workers=2)
    split = shards.read_manifest(path)["splits"]["paired"]
    assert [s["file"] for s in split["shards"]] == ["paired-00000.parquet",
                                                     "paired-00002.parquet"]
    assert split["count"] == 4
    assert split["skipped_all_invalid"] == ["rgb/c.png + depth/c.png", "rgb/d.png + depth/d.png"]
    assert shards.verify(path) == [] and load_split(path, "paired").ids == ["a", "b", "e", "f"]


# --- Ray -----------------------------------------------------------------------------------

RAY_DRIVER = """
import sys
from depthlab.data import shards
shards.SHARD_ROWS = {rows}
print(shards.prepare("synthetic-rooms", size=(32, 32), counts={counts}, progress=False,
                     data_dir=sys.argv[2], address=sys.argv[1]))
"""


def test_ray_tasks_build_what_the_serial_build_does(entry, reference, isolated):
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             logging_level="WARNING")
    try:
        address = ray.get_runtime_context().gcs_address
        path = shards.prepare(entry, size=SIZE, counts=COUNTS, progress=False,
                              data_dir=isolated / "here", address=address, workers=None)
        assert shard_list(path) == shard_list(reference)
        assert_only_shards_and_manifest(path)
        # a second driver connecting by address, as `depthlab data prepare --address` does
        script = RAY_DRIVER.format(rows=ROWS, counts={"train": 40, "test": 8})
        done = subprocess.run([sys.executable, "-c", script, address, str(isolated / "there")],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        there = Path(done.stdout.split()[-1])
        assert [rows for _, rows, _ in shard_list(there)] == [16, 16, 8, 8]
        assert shard_list(there)[:2] == shard_list(reference)[:2]  # seeds 0..31 alike
        assert shards.verify(there) == []
        # a task's error comes back as itself, naming the file, not as Ray's wrapper
        write_folder(isolated / "files", isolated / "catalog")
        (isolated / "files" / "depth" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
        with pytest.raises(ValueError, match=r"depth/b\.png: unreadable") as error:
            shards.prepare(load_entry("my-folder", isolated / "catalog"), progress=False,
                           data_dir=isolated / "here", address=address)
        assert type(error.value) is ValueError
    finally:
        ray.shutdown()


# --- progress ------------------------------------------------------------------------------

def test_progress_on_a_pipe_prints_every_tenth_and_reaches_all(entry, tmp_path, capsys):
    shards.prepare(entry, size=SIZE, counts=COUNTS, progress=True, data_dir=tmp_path)
    lines = [line for line in capsys.readouterr().err.splitlines() if "samples (" in line]
    # a 16-sample shard crosses at most one 30-sample tenth: a start line + ten lines
    assert len(lines) == 11
    assert "0/300 samples (0 %)" in lines[0] and "[train 0/200, test 0/100]" in lines[0]
    assert "300/300 samples (100 %)" in lines[-1] and "[train 200/200, test 100/100]" in \
        lines[-1]
    assert "samples/s, ETA 0:00" in lines[-1]
    done = [int(re.search(r"(\d+)/300 samples", line).group(1)) for line in lines]
    assert done == sorted(done) and done[0] == 0 and done[-1] == 300
    assert all(b - a <= 32 for a, b in zip(done, done[1:], strict=False))  # ≤ 2 shards apart


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_rewrites_one_line_per_shard(entry, tmp_path, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    shards.prepare(entry, size=SIZE, counts={"train": 48, "test": 16}, progress=True,
                   data_dir=tmp_path)
    bar = terminal.getvalue().split("\n")[0]
    assert bar.count("\r") == 1 + 4  # the start, then one per finished shard
    assert bar.rstrip().endswith("[train 48/48, test 16/16]")


def test_silent_without_progress(entry, tmp_path, capsys):
    shards.prepare(entry, size=SIZE, counts={"train": 16, "test": 16}, progress=False,
                   data_dir=tmp_path)
    assert capsys.readouterr().err == ""


# --- command line --------------------------------------------------------------------------

def test_cli_passes_workers_and_address(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_prepare(entry, **kwargs):
        seen.update(kwargs)
        return tmp_path

    monkeypatch.setattr(cli, "prepare", fake_prepare)
    assert cli.main(["data", "prepare", "synthetic-rooms", "--workers", "3",
                     "--address", "auto"]) == 0
    assert seen["workers"] == 3 and seen["address"] == "auto"
    assert cli.main(["data", "prepare", "synthetic-rooms"]) == 0
    assert seen["workers"] is None and seen["address"] is None  # all cores, local
    with pytest.raises(SystemExit):
        cli.main(["data", "prepare", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--workers N processes building shards at once (default: one per core" in help_text
    assert "--data must then be storage every node shares" in help_text
