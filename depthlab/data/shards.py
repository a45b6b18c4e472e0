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
from depthlab.data import rooms, surface
from depthlab.data.readers import READERS, Sample
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
GENERATORS.register("synthetic-rooms")(rooms.generate)


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


def _matches(path: Path, entry: CatalogEntry, size: tuple[int, int] | None,
             splits: tuple[SplitSpec, ...], source: str | None) -> bool:
    """True when a finished dataset with this content is at `path` (no checksumming)."""
    try:
        m = read_manifest(path)
    except (OSError, ValueError):
        return False
    want = {s.name: {"modality": s.modality, "requested": s.count, "seed_offset": s.seed_offset}
            for s in splits}
    have = {k: {"modality": v.get("modality"), "requested": v.get("requested", v.get("count")),
                "seed_offset": v.get("seed_offset")} for k, v in m.get("splits", {}).items()}
    return (m.get("schema_version") == SCHEMA_VERSION and m.get("dataset") == entry.name
            and m.get("version") == entry.version and m.get("source") == source
            and [m.get("height"), m.get("width")] == list(size or (None, None)) and have == want
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


def _generated_rows(entry: CatalogEntry, spec: SplitSpec,
                    size: tuple[int, int]) -> Iterator[dict]:
    intrinsics = (None if entry.intrinsics is None  # the descriptor's are for default_size
                  else scale_intrinsics(entry.intrinsics, entry.default_size, size))
    for index in range(spec.count):
        seed = spec.seed_offset + index
        rgb, depth = GENERATORS.get_or_raise(entry.generator)(seed, size)
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


def _file_rows(entry: CatalogEntry, spec: SplitSpec, size: tuple[int, int] | None,
               root: Path, skipped: list[str]) -> Iterator[dict]:
    """Rows of a file split; all-invalid depth maps are skipped and noted in `skipped`."""
    reader = READERS.get_or_raise(entry.reader)
    keys = reader.index(root, spec.name)
    if not keys:
        raise ValueError(f"dataset {entry.name!r}: split {spec.name!r} is empty in {root}")
    for key in keys[: spec.count or None]:
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


def _chunks(rows: Iterator[dict], n: int) -> Iterator[list[dict]]:
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _build(entry: CatalogEntry, size: tuple[int, int] | None, splits: tuple[SplitSpec, ...],
           out: Path, progress: bool, root: Path | None) -> None:
    manifest_splits = {}
    shown = "native size" if size is None else f"{size[0]}x{size[1]}"
    for spec in splits:
        start_time, shards, skipped = time.perf_counter(), [], []
        rows = (_generated_rows(entry, spec, size) if root is None
                else _file_rows(entry, spec, size, root, skipped))
        for k, chunk in enumerate(_chunks(rows, SHARD_ROWS)):
            name = f"{spec.name}-{k:05d}.parquet"
            pq.write_table(pa.Table.from_pylist(chunk, schema=SCHEMA), out / name,
                           compression="zstd")
            shards.append({"file": name, "rows": len(chunk), "sha256": _sha256_file(out / name)})
        count = sum(s["rows"] for s in shards)
        if count == 0:
            raise ValueError(f"dataset {entry.name!r}: split {spec.name!r} has no sample with "
                             f"valid depth ({len(skipped)} all-invalid skipped)")
        manifest_splits[spec.name] = {"modality": spec.modality, "count": count,
                                      "requested": spec.count, "seed_offset": spec.seed_offset,
                                      "skipped_all_invalid": skipped, "shards": shards}
        if progress:
            note = f", {len(skipped)} all-invalid depth maps skipped" if skipped else ""
            print(f"depthlab: {entry.name} v{entry.version} {shown} {spec.name}: "
                  f"{count} {spec.modality} samples in "
                  f"{time.perf_counter() - start_time:.1f} s{note}", file=sys.stderr, flush=True)
    manifest = {
        "schema_version": SCHEMA_VERSION, "dataset": entry.name, "version": entry.version,
        "generator": entry.generator, "reader": entry.reader,
        "source": None if root is None else str(root),
        "height": None if size is None else size[0], "width": None if size is None else size[1],
        "depth_unit": "m", "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "splits": manifest_splits,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))  # last: marks it complete


def prepare(entry: CatalogEntry | str, size: tuple[int, int] | None = None,
            data_dir: Path | str | None = None, progress: bool = True,
            counts: Mapping[str, int] | None = None, source: str | Path | None = None) -> Path:
    """Build the dataset's shards unless an identical build exists; return its directory.

    `size` is (H, W), default the entry's `default_size` (file datasets without
    one keep each file's size); `counts` overrides some splits' sample counts
    (small test sets; for files: the first N keys); `source` is a file
    dataset's folder (default: its descriptor's env variable or path). A
    dataset built with other counts or another source at the same path is
    replaced.
    """
    if isinstance(entry, str):
        entry = load_entry(entry)
    if entry.generator is not None:
        GENERATORS.get_or_raise(entry.generator)
        root = None
    else:
        READERS.get_or_raise(entry.reader)
        root = entry.source_root(source)
    size = _build_size(entry, size)
    splits = _planned_splits(entry, counts)
    target = dataset_dir(entry, size, data_dir, counts)
    source_id = None if root is None else str(root)
    if _matches(target, entry, size, splits, source_id):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{target.name}.lock"):
        if _matches(target, entry, size, splits, source_id):  # built while we waited
            return target
        # Holding the lock, leftovers of killed builds are nobody's: remove them.
        for stale in target.parent.glob(f".{target.name}.*-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            tmp.chmod(0o755)  # mkdtemp's 0700 would hide the data from other users/nodes
            _build(entry, size, splits, tmp, progress, root)
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
