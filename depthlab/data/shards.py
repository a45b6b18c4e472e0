"""Materialise a catalog dataset once as Parquet shards, then reuse it.

Layout: `<data>/<name>/v<version>/<H>x<W>/<split>-<k:05d>.parquet` plus
`manifest.json` (written last). One row per sample: id, split, rgb (PNG
bytes), depth (float32 little-endian metres, NaN = invalid), height, width,
intrinsics, source, checksum (sha256 of rgb + depth bytes).

Shard k of a split holds the split's samples (seeds or file keys)
[k·SHARD_ROWS, (k+1)·SHARD_ROWS), less any all-invalid depth maps skipped (a
shard left with none writes no file and is not listed). A shard is thus a
pure function of (descriptor, size, split, k, source folder): shards are
built in any order, by any process (`parallel.py`: local processes or Ray
tasks), and a finished one can be reused.

A build happens under an exclusive `flock` (concurrent callers such as two
Ray trials build once) in a hidden work folder next to the target,
`.<target>.partial-<identity>`, named by a hash of everything the shards
depend on. Each shard is written under a temporary name, renamed, and then
gets a sidecar `<split>-<k:05d>.json` (rows, sha256, skipped samples): a shard
without its sidecar is unfinished. When all are there, the manifest is
written and the folder renamed into place. An interrupted build therefore
leaves nothing at the target and no half-written file under a shard's final
name; its finished shards are kept in the hidden partial folder, and a rerun
with the same identity keeps them (after checking their sha256) and builds
only the rest. Partial folders of other identities for the same target are
removed. On a cluster the data directory must be storage every node shares, or
an object-storage URI: the build is then published there and each node reads a
local copy (`remote.py`).
"""

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from depthlab.catalog import CatalogEntry, SplitSpec, load_entry
from depthlab.data import rooms, surface
from depthlab.data.parallel import run_tasks
from depthlab.data.readers import READERS, Reader, Sample
from depthlab.registry import Registry

SCHEMA_VERSION = 1
SHARD_ROWS = 256  # samples per shard, the unit of parallel work and of resuming
ROW_GROUP_ROWS = 64  # samples a worker holds decoded at once
SIZE_MULTIPLE = 32  # generator networks downsample 5 times
MANIFEST = "manifest.json"
_META_KEY = b"depthlab.schema_version"

SCHEMA = pa.schema([
    ("id", pa.string()),
    ("split", pa.string()),
    ("rgb", pa.binary()),  # PNG, null for depth-only splits
    ("depth", pa.binary()),  # float32 little-endian metres (H*W), null for rgb-only splits
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("intrinsics", pa.list_(pa.float32())),  # 3×3 row-major, or null
    ("source", pa.string()),
    ("checksum", pa.string()),  # sha256 hex of rgb + depth bytes
], metadata={_META_KEY: str(SCHEMA_VERSION).encode()})

# name → fn(seed, (H, W)) -> (rgb (H, W, 3) uint8, depth (H, W) in the descriptor's unit)
GENERATORS = Registry("generator")
GENERATORS.register("synthetic-surface")(surface.generate)
GENERATORS.register("synthetic-rooms")(rooms.generate)


def data_root() -> Path:
    """The local data folder: `$DEPTHLAB_DATA` unless it is an object-storage URI, else
    `$XDG_CACHE_HOME/depthlab`, else `~/.cache/depthlab`."""
    from depthlab.data.remote import is_remote  # on use: remote builds on this module

    if (env := os.environ.get("DEPTHLAB_DATA")) and not is_remote(env):
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache) if cache else Path.home() / ".cache") / "depthlab"


def check_size(size: tuple[int, int] | list[int]) -> tuple[int, int]:
    """(H, W) with positive multiples of 32, or a ValueError naming the value."""
    ok = (isinstance(size, tuple | list) and len(size) == 2
          and all(isinstance(s, int | np.integer) and not isinstance(s, bool) for s in size)
          and all(s > 0 and s % SIZE_MULTIPLE == 0 for s in size))
    if not ok:
        raise ValueError(f"size must be (H, W) with positive multiples of {SIZE_MULTIPLE}, "
                         f"got {size!r}")
    return int(size[0]), int(size[1])


def _build_size(entry: CatalogEntry, size: tuple[int, int] | None) -> tuple[int, int] | None:
    """The size samples are stored at: given, else the entry's default; None = native."""
    size = size or entry.default_size
    return None if size is None else check_size(size)


def dataset_dir(entry: CatalogEntry, size: tuple[int, int] | None = None,
                data_dir: Path | str | None = None,
                counts: Mapping[str, int] | None = None) -> Path:
    """Where a build lives; builds with other sample counts get their own folder, so
    studies of different budgets never replace each other's data."""
    size = _build_size(entry, size)
    root = Path(data_dir) if data_dir is not None else data_root()
    folder = "native" if size is None else f"{size[0]}x{size[1]}"
    changed = {k: v for k, v in sorted((counts or {}).items()) if v != entry.split(k).count}
    if changed:
        folder += "-" + "-".join(f"{k}{v}" for k, v in changed.items())
    return root / entry.name / f"v{entry.version}" / folder


def read_manifest(path: Path | str) -> dict:
    """A prepared dataset's manifest; a shard it names outside its folder is a ValueError."""
    with open(Path(path) / MANIFEST) as fh:
        return check_manifest(json.load(fh), str(Path(path) / MANIFEST))


def check_manifest(manifest: dict, where: str) -> dict:
    """`manifest` (read from `where`) unless a shard it names lies outside its folder."""
    for split in manifest.get("splits", {}).values():
        for shard in split.get("shards", ()):
            name = str(shard.get("file", ""))
            if Path(name).name != name or name in ("", ".", ".."):
                raise ValueError(f"{where}: shard {name!r} escapes the dataset folder "
                                 "(expected a file name inside it)")
    return manifest


def shard_files(path: Path | str, split: str) -> list[Path]:
    """The shards of one split, in order, as listed by the manifest."""
    manifest = read_manifest(path)
    if split not in manifest["splits"]:
        raise ValueError(f"{path} has no split {split!r}; "
                         f"known: {', '.join(manifest['splits'])}")
    return [Path(path) / s["file"] for s in manifest["splits"][split]["shards"]]


def _planned_splits(entry: CatalogEntry, counts: Mapping[str, int] | None
                    ) -> tuple[SplitSpec, ...]:
    counts = dict(counts or {})
    for name, n in counts.items():
        entry.split(name)  # unknown split → ValueError listing the known ones
        if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
            raise ValueError(f"counts[{name!r}] must be a positive integer, got {n!r}")
    return tuple(replace(s, count=counts.get(s.name, s.count)) for s in entry.splits)


def _matches(path: Path, entry: CatalogEntry, size: tuple[int, int] | None,
             splits: tuple[SplitSpec, ...], source: str | None) -> bool:
    """True when a finished dataset with this content is at `path` (no checksumming)."""
    try:
        m = read_manifest(path)
    except (OSError, ValueError):
        return False
    return _same_build(m, entry, size, splits, source) and all(
        (path / s["file"]).is_file() for v in m["splits"].values() for s in v["shards"])


def _same_build(m: dict, entry: CatalogEntry, size: tuple[int, int] | None,
                splits: tuple[SplitSpec, ...], source: str | None) -> bool:
    """True when the manifest `m` describes a build of this content."""
    want = {s.name: {"modality": s.modality, "requested": s.count, "seed_offset": s.seed_offset}
            for s in splits}
    have = {k: {"modality": v.get("modality"), "requested": v.get("requested", v.get("count")),
                "seed_offset": v.get("seed_offset")} for k, v in m.get("splits", {}).items()}
    return (m.get("schema_version") == SCHEMA_VERSION and m.get("dataset") == entry.name
            and m.get("version") == entry.version and m.get("source") == source
            and [m.get("height"), m.get("width")] == list(size or (None, None)) and have == want)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) held for the duration of the block."""
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def row_checksum(rgb: bytes | None, depth: bytes | None) -> str:
    return hashlib.sha256((rgb or b"") + (depth or b"")).hexdigest()


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def _encode(spec: SplitSpec, sample_id: str, rgb: np.ndarray | None,
            metres: np.ndarray | None, intrinsics, source: str) -> dict:
    """One Parquet row; keeps only the modalities the split holds."""
    rgb_bytes = _png(rgb) if spec.modality in ("rgb", "paired") else None
    depth_bytes = (metres.astype("<f4").tobytes() if spec.modality in ("depth", "paired")
                   else None)
    h, w = (rgb if rgb is not None else metres).shape[:2]
    return {"id": sample_id, "split": spec.name, "rgb": rgb_bytes, "depth": depth_bytes,
            "height": h, "width": w,
            "intrinsics": None if intrinsics is None else [float(v) for v in intrinsics],
            "source": source, "checksum": row_checksum(rgb_bytes, depth_bytes)}


def _generated_rows(entry: CatalogEntry, spec: SplitSpec, size: tuple[int, int],
                    generate: Callable, positions: range) -> Iterator[dict]:
    """Rows of the samples at `positions` of a generated split (seed = offset + position)."""
    intrinsics = (None if entry.intrinsics is None  # the descriptor's are for default_size
                  else scale_intrinsics(entry.intrinsics, entry.default_size, size))
    for index in positions:
        seed = spec.seed_offset + index
        rgb, depth = generate(seed, size)
        if rgb.shape != (*size, 3) or rgb.dtype != np.uint8 or depth.shape != size:
            raise ValueError(f"generator {entry.generator!r} returned rgb {rgb.shape} "
                             f"{rgb.dtype}, depth {depth.shape}; expected {(*size, 3)} uint8 "
                             f"and {size}")
        metres = depth.astype(np.float64) * entry.unit_to_metres
        if entry.invalid is not None and not np.isnan(entry.invalid):
            metres[depth == entry.invalid] = np.nan
        yield _encode(spec, f"{spec.name}-{index:05d}", rgb, metres, intrinsics,
                      f"{entry.generator} seed={seed}")


def resize_sample(sample: Sample, size: tuple[int, int]) -> Sample:
    """RGB resampled (bilinear, antialiased), depth by nearest neighbour so that invalid
    pixels stay invalid and no depth is invented at edges; intrinsics scaled to match."""
    h, w = (sample.rgb if sample.rgb is not None else sample.depth).shape[:2]
    if (h, w) == tuple(size):
        return sample
    rgb = depth = intrinsics = None
    if sample.rgb is not None:
        rgb = np.asarray(Image.fromarray(sample.rgb).resize(
            (size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=2.0))
    if sample.depth is not None:
        rows = ((np.arange(size[0]) + 0.5) * h / size[0]).astype(int)
        cols = ((np.arange(size[1]) + 0.5) * w / size[1]).astype(int)
        depth = sample.depth[rows[:, None], cols[None, :]]
    if sample.intrinsics is not None:
        intrinsics = scale_intrinsics(sample.intrinsics, (h, w), size)
    return replace(sample, rgb=rgb, depth=depth, intrinsics=intrinsics)


def scale_intrinsics(k: tuple[float, ...], from_size: tuple[int, int],
                     to_size: tuple[int, int]) -> tuple[float, ...]:
    """A 3×3 row-major camera matrix for the same view resampled from (H, W) to (H', W')."""
    m = np.array(k, dtype=np.float64).reshape(3, 3)
    sx, sy = to_size[1] / from_size[1], to_size[0] / from_size[0]
    m[0, 0], m[0, 2] = m[0, 0] * sx, (m[0, 2] + 0.5) * sx - 0.5  # about pixel centres
    m[1, 1], m[1, 2] = m[1, 1] * sy, (m[1, 2] + 0.5) * sy - 0.5
    return tuple(float(v) for v in m.ravel())


def _file_rows(spec: SplitSpec, size: tuple[int, int] | None, root: Path, reader: Reader,
               keys: tuple[str, ...], skipped: list[str]) -> Iterator[dict]:
    """Rows of some keys of a file split; all-invalid depth maps are skipped and noted in
    `skipped`."""
    for key in keys:
        sample = reader.read(root, key)
        if spec.modality in ("rgb", "paired") and sample.rgb is None or (
                spec.modality in ("depth", "paired") and sample.depth is None):
            raise ValueError(f"{root}: sample {key!r} ({sample.source}) lacks what split "
                             f"{spec.name!r} holds ({spec.modality})")
        if sample.depth is not None and sample.valid_fraction == 0.0:
            skipped.append(sample.source)
            continue
        if size is not None:
            sample = resize_sample(sample, size)
        yield _encode(spec, key, sample.rgb, sample.depth, sample.intrinsics, sample.source)


def _split_keys(entry: CatalogEntry, spec: SplitSpec, reader: Reader,
                root: Path) -> tuple[str, ...]:
    """The keys a file split is built from: the reader's, the first `count` when given."""
    keys = reader.index(root, spec.name)
    if not keys:
        raise ValueError(f"dataset {entry.name!r}: split {spec.name!r} is empty in {root}")
    return tuple(keys[: spec.count or None])


def _chunks(rows: Iterator[dict], n: int) -> Iterator[list[dict]]:
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass(frozen=True)
class ShardTask:
    """Everything one process needs to build shard `index` of a split (picklable)."""

    entry: CatalogEntry
    spec: SplitSpec
    index: int
    size: tuple[int, int] | None
    samples: range | tuple[str, ...]  # positions in a generated split, or file keys
    out: str  # the build's partial folder (shared storage on a cluster)
    generate: Callable | None = None  # resolved here, so workers need no registry lookup
    reader: Reader | None = None
    root: str | None = None

    @property
    def name(self) -> str:
        return f"{self.spec.name}-{self.index:05d}"


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_shard(rows: Iterator[dict], path: Path) -> int:
    """Rows to a zstd Parquet file through a temporary name; the row count (0: no file)."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    writer, count = None, 0
    try:
        # Row groups bound a worker's memory to ROW_GROUP_ROWS decoded samples.
        for group in _chunks(rows, ROW_GROUP_ROWS):
            if writer is None:
                writer = pq.ParquetWriter(tmp, SCHEMA, compression="zstd")
            writer.write_table(pa.Table.from_pylist(group, schema=SCHEMA))
            count += len(group)
        if writer is not None:
            writer.close()
            writer = None
            os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    return count


def build_shard(task: ShardTask) -> dict:
    """Write one shard, then its sidecar (which marks it finished); return the sidecar."""
    out, skipped = Path(task.out), []
    rows = (_generated_rows(task.entry, task.spec, task.size, task.generate, task.samples)
            if task.reader is None
            else _file_rows(task.spec, task.size, Path(task.root), task.reader, task.samples,
                            skipped))
    file = f"{task.name}.parquet"
    count = _write_shard(rows, out / file)
    done = {"shard": task.name, "split": task.spec.name, "file": file if count else None,
            "rows": count, "sha256": _sha256_file(out / file) if count else None,
            "skipped": skipped}
    _write_atomically(out / f"{task.name}.json", json.dumps(done).encode())
    return done


def _finished(task: ShardTask) -> dict | None:
    """The sidecar of a shard an earlier run finished, if the shard is intact."""
    out = Path(task.out)
    try:
        done = json.loads((out / f"{task.name}.json").read_text())
    except (OSError, ValueError):
        return None
    if done.get("rows") and not ((out / done["file"]).is_file()
                                 and _sha256_file(out / done["file"]) == done["sha256"]):
        return None
    return done


def _identity(entry: CatalogEntry, size: tuple[int, int] | None,
              splits: tuple[SplitSpec, ...], root: Path | None,
              keys: Mapping[str, tuple[str, ...]]) -> str:
    """A hash of everything the shards depend on: equal identities may share shards."""
    facts = {"schema": SCHEMA_VERSION, "shard_rows": SHARD_ROWS,
             "entry": repr(entry),  # every descriptor fact: an edited one reuses nothing
             "size": size, "splits": [[s.name, s.modality, s.count, s.seed_offset]
                                      for s in splits],
             "source": None if root is None else str(root),
             "keys": {k: hashlib.sha256("\n".join(v).encode()).hexdigest()
                      for k, v in sorted(keys.items())}}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def _plan(entry: CatalogEntry, size: tuple[int, int] | None, splits: tuple[SplitSpec, ...],
          out: Path, generate: Callable | None, reader: Reader | None, root: Path | None,
          keys: Mapping[str, tuple[str, ...]]) -> list[ShardTask]:
    """The build's shards, in manifest order (split by split, k = 0, 1, …)."""
    tasks = []
    for spec in splits:
        samples = range(spec.count) if reader is None else keys[spec.name]
        for k, start in enumerate(range(0, len(samples), SHARD_ROWS)):
            tasks.append(ShardTask(entry, spec, k, size, samples[start:start + SHARD_ROWS],
                                   str(out), generate, reader,
                                   None if root is None else str(root)))
    return tasks


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class _Progress:
    """Samples done / total, rate, ETA and per-split counts on stderr: one line rewritten in
    place on a terminal, else a new line every ~10 %; silent when not enabled."""

    def __init__(self, label: str, totals: dict[str, int], done: dict[str, int],
                 enabled: bool):
        self.label, self.totals, self.done, self.enabled = label, totals, dict(done), enabled
        self.tty = enabled and sys.stderr.isatty()
        self.resumed, self.started = sum(done.values()), time.perf_counter()
        self.shown_decile, self.width = -1, 0

    def line(self) -> str:
        done, total = sum(self.done.values()), sum(self.totals.values())
        elapsed = time.perf_counter() - self.started
        rate = (done - self.resumed) / elapsed if elapsed > 0 and done > self.resumed else 0.0
        eta = _clock((total - done) / rate) if rate else "?"
        splits = ", ".join(f"{k} {self.done[k]}/{v}" for k, v in self.totals.items())
        return (f"{self.label}: {done}/{total} samples ({100 * done / total:.0f} %), "
                f"{rate:.0f} samples/s, ETA {eta} [{splits}]")

    def show(self) -> None:
        if not self.enabled:
            return
        done, total = sum(self.done.values()), sum(self.totals.values())
        decile = 10 * done // total
        if self.tty:
            text = self.line()
            print("\r" + text.ljust(self.width), end="", file=sys.stderr, flush=True)
            self.width = len(text)
        elif decile > self.shown_decile:
            print(self.line(), file=sys.stderr, flush=True)
        self.shown_decile = max(self.shown_decile, decile)

    def advance(self, split: str, samples: int) -> None:
        self.done[split] += samples
        self.show()

    def close(self) -> None:
        if self.tty and self.width:
            print(file=sys.stderr, flush=True)


def _build(tasks: list[ShardTask], entry: CatalogEntry, size: tuple[int, int] | None,
           splits: tuple[SplitSpec, ...], root: Path | None, out: Path, progress: bool,
           workers: int | None, address: str | None) -> None:
    """Build the shards `out` lacks (reusing finished ones), then write the manifest."""
    started = time.perf_counter()
    finished = {t.name: done for t in tasks if (done := _finished(t)) is not None}
    todo = [t for t in tasks if t.name not in finished]
    shown = "native size" if size is None else f"{size[0]}x{size[1]}"
    label = f"depthlab: {entry.name} v{entry.version} {shown}"
    totals = {s.name: 0 for s in splits}
    reused = dict(totals)
    for t in tasks:
        totals[t.spec.name] += len(t.samples)
        reused[t.spec.name] += len(t.samples) if t.name in finished else 0
    bar = _Progress(label, totals, reused, progress)
    if progress and finished:
        print(f"{label}: resuming: {len(finished)} of {len(tasks)} shards already built in "
              f"{out}", file=sys.stderr, flush=True)
    samples = {t.name: len(t.samples) for t in tasks}

    def collect(done: dict) -> None:
        if done["file"] and not (out / done["file"]).is_file():
            raise ValueError(f"shard {done['file']} was built by a worker but is not in {out}: "
                             "on a cluster the data directory must be storage every node "
                             "shares")
        finished[done["shard"]] = done
        bar.advance(done["split"], samples[done["shard"]])

    bar.show()
    try:
        run_tasks(build_shard, todo, workers=workers, address=address, on_done=collect)
    finally:
        bar.close()
    manifest_splits = {}
    for spec in splits:
        mine = [finished[t.name] for t in tasks if t.spec.name == spec.name]
        shards = [{k: d[k] for k in ("file", "rows", "sha256")} for d in mine if d["rows"]]
        skipped = [source for d in mine for source in d["skipped"]]
        count = sum(s["rows"] for s in shards)
        if count == 0:
            raise ValueError(f"dataset {entry.name!r}: split {spec.name!r} has no sample with "
                             f"valid depth ({len(skipped)} all-invalid skipped)")
        manifest_splits[spec.name] = {"modality": spec.modality, "count": count,
                                      "requested": spec.count, "seed_offset": spec.seed_offset,
                                      "skipped_all_invalid": skipped, "shards": shards}
        if progress:
            note = f", {len(skipped)} all-invalid depth maps skipped" if skipped else ""
            print(f"{label} {spec.name}: {count} {spec.modality} samples{note}",
                  file=sys.stderr, flush=True)
    if progress:
        print(f"{label}: {len(todo)} shards built, {len(tasks) - len(todo)} reused, in "
              f"{time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    manifest = {
        "schema_version": SCHEMA_VERSION, "dataset": entry.name, "version": entry.version,
        "generator": entry.generator, "reader": entry.reader,
        "source": None if root is None else str(root),
        "height": None if size is None else size[0], "width": None if size is None else size[1],
        "depth_unit": "m", "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "splits": manifest_splits,
    }
    _write_atomically(out / MANIFEST, json.dumps(manifest, indent=1).encode())  # marks it done


def _move_into_place(partial: Path, target: Path) -> None:
    if target.exists():  # an older or different build: swap it out
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.rename(target, old)
        os.rename(partial, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(partial, target)


def prepare(entry: CatalogEntry | str, size: tuple[int, int] | None = None,
            data_dir: Path | str | None = None, progress: bool = True,
            counts: Mapping[str, int] | None = None, source: str | Path | None = None,
            workers: int | None = 1, address: str | None = None) -> Path | str:
    """Build the dataset's shards unless an identical build exists; return its directory
    (a Path), or its URI (a str) when the data directory is object storage.

    `size` is (H, W), default the entry's `default_size` (file datasets without
    one keep each file's size); `counts` overrides some splits' sample counts
    (small test sets; for files: the first N keys); `source` is a file
    dataset's folder (default: its descriptor's env variable or path). A
    dataset built with other counts or another source at the same path is
    replaced. `workers` processes build shards (1: in this process, the
    default, as studies and trials call it; None: one per core); with
    `address` they run as Ray tasks on that cluster (or on the Ray session this
    process already holds), and `data_dir` must then be storage every node
    shares. An interrupted build resumes from its finished shards.

    `data_dir` (default `$DEPTHLAB_DATA`) may be an object-storage URI (s3://bucket/prefix,
    gs://…, file://…; see `remote.py`): unless `<uri>/<name>/v<version>/<size>` already
    holds an identical build, the build is made in the local `data_root()` as above (with
    `address`, that must be shared storage) and published there; readers fetch a local
    copy with `remote.local_copy`.
    """
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool)
                                or workers < 1):
        raise ValueError(f"workers = {workers!r}: expected a positive number of processes, "
                         "or None for one per core")
    if isinstance(entry, str):
        entry = load_entry(entry)
    generate = reader = root = None
    if entry.generator is not None:
        generate = GENERATORS.get_or_raise(entry.generator)
    else:
        reader = READERS.get_or_raise(entry.reader)
        root = entry.source_root(source)
    size = _build_size(entry, size)
    splits = _planned_splits(entry, counts)
    source_id = None if root is None else str(root)
    from depthlab.data import remote  # on use: remote builds on this module

    if (uri := remote.remote_root(data_dir)) is not None:
        target_uri = remote.dataset_uri(uri, entry, size, counts)
        if (m := remote.published(target_uri)) and _same_build(m, entry, size, splits,
                                                               source_id):
            return target_uri
        local = prepare(entry, size, data_root(), progress, counts, source, workers, address)
        return remote.publish(local, target_uri, progress)
    target = dataset_dir(entry, size, data_dir, counts)
    if _matches(target, entry, size, splits, source_id):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{target.name}.lock"):
        if _matches(target, entry, size, splits, source_id):  # built while we waited
            return target
        keys = {} if reader is None else {s.name: _split_keys(entry, s, reader, root)
                                          for s in splits}
        partial = target.parent / (f".{target.name}.partial-"
                                   f"{_identity(entry, size, splits, root, keys)}")
        # Holding the lock, leftovers of other builds (other identities, killed swaps) are
        # nobody's: remove them; this build's own partial folder is its resume point.
        for stale in target.parent.glob(f".{target.name}.*-*"):
            if stale != partial:
                shutil.rmtree(stale, ignore_errors=True)
        partial.mkdir(exist_ok=True)
        partial.chmod(0o755)  # readable by other users/nodes
        for leftover in partial.glob(".*.tmp-*"):  # files a killed worker was writing
            leftover.unlink(missing_ok=True)
        tasks = _plan(entry, size, splits, partial, generate, reader, root, keys)
        _build(tasks, entry, size, splits, root, partial, progress, workers, address)
        _move_into_place(partial, target)
        for task in tasks:  # the manifest now says what the sidecars said
            (target / f"{task.name}.json").unlink(missing_ok=True)
    return target


def verify(path: Path | str) -> list[str]:
    """Recheck a prepared dataset; return the problems found (empty when fine)."""
    path = Path(path)
    try:
        manifest = read_manifest(path)
        splits = manifest["splits"]
    except (OSError, ValueError, KeyError) as e:
        return [f"{path}: unreadable or missing {MANIFEST}: {e}"]
    problems = []
    listed = set()
    for split, info in splits.items():
        for shard in info["shards"]:
            file = path / shard["file"]
            listed.add(shard["file"])
            if not file.is_file():
                problems.append(f"{file}: missing shard")
                continue
            if _sha256_file(file) != shard["sha256"]:
                problems.append(f"{file}: checksum mismatch (sha256 of the file)")
            try:
                table = pq.read_table(file)
            except Exception as e:  # a corrupted file can fail in many ways
                problems.append(f"{file}: unreadable Parquet: {e}")
                continue
            version = (table.schema.metadata or {}).get(_META_KEY)
            if version != str(SCHEMA_VERSION).encode():
                problems.append(f"{file}: schema version {version!r}, expected {SCHEMA_VERSION}")
            if table.num_rows != shard["rows"]:
                problems.append(f"{file}: {table.num_rows} rows, manifest says {shard['rows']}")
            rows = table.select(["id", "split", "rgb", "depth", "checksum"]).to_pylist()
            for row in rows:
                if row["split"] != split:
                    problems.append(f"{file}: row {row['id']} has split {row['split']!r}")
                if row_checksum(row["rgb"], row["depth"]) != row["checksum"]:
                    problems.append(f"{file}: checksum mismatch in row {row['id']}")
    for file in sorted(path.glob("*.parquet")):
        if file.name not in listed:
            problems.append(f"{file}: shard not listed in {MANIFEST}")
    return problems
