"""Materialise a catalog dataset once as Parquet shards, then reuse it.

Layout: `<data>/<name>/v<version>/<H>x<W>/<split>-<k:05d>.parquet` plus
`manifest.json` (written last). One row per sample: id, split, rgb (PNG
bytes), depth (float32 little-endian metres, NaN = invalid), height, width,
intrinsics, source, checksum (sha256 of rgb + depth bytes).

A build happens in a temporary sibling directory that is renamed into place
at the end, under an exclusive `flock`, so concurrent callers (two Ray trials)
build once and an interrupted build leaves nothing behind: the next call
removes any stale temporary directory and starts clean.
"""

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from depthlab.catalog import CatalogEntry, SplitSpec, load_entry
from depthlab.data import surface
from depthlab.registry import Registry

SCHEMA_VERSION = 1
SHARD_ROWS = 256
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


def data_root() -> Path:
    """`$DEPTHLAB_DATA`, else `$XDG_CACHE_HOME/depthlab`, else `~/.cache/depthlab`."""
    if env := os.environ.get("DEPTHLAB_DATA"):
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


def dataset_dir(entry: CatalogEntry, size: tuple[int, int] | None = None,
                data_dir: Path | str | None = None,
                counts: Mapping[str, int] | None = None) -> Path:
    """Where a build lives; builds with other sample counts get their own folder, so
    studies of different budgets never replace each other's data."""
    h, w = check_size(size or entry.default_size)
    root = Path(data_dir) if data_dir is not None else data_root()
    folder = f"{h}x{w}"
    changed = {k: v for k, v in sorted((counts or {}).items()) if v != entry.split(k).count}
    if changed:
        folder += "-" + "-".join(f"{k}{v}" for k, v in changed.items())
    return root / entry.name / f"v{entry.version}" / folder


def read_manifest(path: Path | str) -> dict:
    with open(Path(path) / MANIFEST) as fh:
        return json.load(fh)


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


def _matches(path: Path, entry: CatalogEntry, size: tuple[int, int],
             splits: tuple[SplitSpec, ...]) -> bool:
    """True when a finished dataset with this content is at `path` (no checksumming)."""
    try:
        m = read_manifest(path)
    except (OSError, ValueError):
        return False
    want = {s.name: {"modality": s.modality, "count": s.count, "seed_offset": s.seed_offset}
            for s in splits}
    have = {k: {f: v.get(f) for f in ("modality", "count", "seed_offset")}
            for k, v in m.get("splits", {}).items()}
    return (m.get("schema_version") == SCHEMA_VERSION and m.get("dataset") == entry.name
            and m.get("version") == entry.version and [m.get("height"), m.get("width")]
            == list(size) and have == want
            and all((path / s["file"]).is_file()
                    for v in m["splits"].values() for s in v["shards"]))


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


def _row(entry: CatalogEntry, spec: SplitSpec, index: int, size: tuple[int, int]) -> dict:
    seed = spec.seed_offset + index
    rgb, depth = GENERATORS.get_or_raise(entry.generator)(seed, size)
    if rgb.shape != (*size, 3) or rgb.dtype != np.uint8 or depth.shape != size:
        raise ValueError(f"generator {entry.generator!r} returned rgb {rgb.shape} {rgb.dtype}, "
                         f"depth {depth.shape}; expected {(*size, 3)} uint8 and {size}")
    rgb_bytes = _png(rgb) if spec.modality in ("rgb", "paired") else None
    depth_bytes = None
    if spec.modality in ("depth", "paired"):
        metres = depth.astype(np.float64) * entry.unit_to_metres
        if entry.invalid is not None and not np.isnan(entry.invalid):
            metres[depth == entry.invalid] = np.nan
        depth_bytes = metres.astype("<f4").tobytes()
    return {
        "id": f"{spec.name}-{index:05d}", "split": spec.name,
        "rgb": rgb_bytes, "depth": depth_bytes, "height": size[0], "width": size[1],
        "intrinsics": None if entry.intrinsics is None else list(entry.intrinsics),
        "source": f"{entry.generator} seed={seed}",
        "checksum": row_checksum(rgb_bytes, depth_bytes),
    }


def _build(entry: CatalogEntry, size: tuple[int, int], splits: tuple[SplitSpec, ...],
           out: Path, progress: bool) -> None:
    manifest_splits = {}
    for spec in splits:
        start_time, shards = time.perf_counter(), []
        for k, start in enumerate(range(0, spec.count, SHARD_ROWS)):
            rows = [_row(entry, spec, i, size)
                    for i in range(start, min(start + SHARD_ROWS, spec.count))]
            name = f"{spec.name}-{k:05d}.parquet"
            pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), out / name,
                           compression="zstd")
            shards.append({"file": name, "rows": len(rows), "sha256": _sha256_file(out / name)})
        manifest_splits[spec.name] = {"modality": spec.modality, "count": spec.count,
                                      "seed_offset": spec.seed_offset, "shards": shards}
        if progress:
            print(f"depthlab: {entry.name} v{entry.version} {size[0]}x{size[1]} {spec.name}: "
                  f"{spec.count} {spec.modality} samples in "
                  f"{time.perf_counter() - start_time:.1f} s", file=sys.stderr, flush=True)
    manifest = {
        "schema_version": SCHEMA_VERSION, "dataset": entry.name, "version": entry.version,
        "generator": entry.generator, "height": size[0], "width": size[1],
        "depth_unit": "m", "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "splits": manifest_splits,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))  # last: marks it complete


def prepare(entry: CatalogEntry | str, size: tuple[int, int] | None = None,
            data_dir: Path | str | None = None, progress: bool = True,
            counts: Mapping[str, int] | None = None) -> Path:
    """Build the dataset's shards unless an identical build exists; return its directory.

    `size` is (H, W), default the entry's `default_size`; `counts` overrides
    some splits' sample counts (small test sets). A dataset built with other
    counts at the same path is replaced.
    """
    if isinstance(entry, str):
        entry = load_entry(entry)
    if entry.generator is None:
        raise ValueError(f"dataset {entry.name!r} reads files ({entry.source_path}); "
                         f"prepare supports generator sources only so far")
    GENERATORS.get_or_raise(entry.generator)
    size = check_size(size or entry.default_size)
    splits = _planned_splits(entry, counts)
    target = dataset_dir(entry, size, data_dir, counts)
    if _matches(target, entry, size, splits):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{target.name}.lock"):
        if _matches(target, entry, size, splits):  # built while we waited for the lock
            return target
        # Holding the lock, leftovers of killed builds are nobody's: remove them.
        for stale in target.parent.glob(f".{target.name}.*-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            tmp.chmod(0o755)  # mkdtemp's 0700 would hide the data from other users/nodes
            _build(entry, size, splits, tmp, progress)
            if target.exists():  # an older or different build: swap it out
                old = target.parent / f".{target.name}.old-{os.getpid()}"
                os.rename(target, old)
                os.rename(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
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
