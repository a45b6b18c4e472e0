"""Dataset descriptors: `data_catalog/<name>.toml` → frozen `CatalogEntry`.

The catalog directory is the repository's `data_catalog/`, or `$DEPTHLAB_CATALOG`.
Depth ranges are written in the file's unit; the entry converts to metres,
the canonical in-memory unit (float32 metres, NaN = invalid).

A source is either a generator (procedural, needs nothing) or files read by a
reader (`depthlab.data.readers`) from a folder: `--source PATH`, else the
environment variable named by `source.env`, else `source.path` (relative to
the descriptor's folder). Readers decode their files' unit to metres; the
descriptor's `depth.unit` then documents the files and the unit of `range`.
"""

import math
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# unit → metres. "relative" is unitless depth (Texas-3DFRD's [0, 1], 1 = near): there is
# nothing to convert, so its values pass unchanged through the metres field.
UNITS = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "relative": 1.0}
MODALITIES = ("rgb", "depth", "paired")
_SAFE = re.compile(r"[A-Za-z0-9._-]+")  # names and versions become directory names


@dataclass(frozen=True)
class SplitSpec:
    """One split: which modality it holds, how many samples, where its seeds start."""

    name: str
    modality: str  # "rgb", "depth" or "paired"
    count: int  # generator: samples to make; files: at most this many, in key order (0 = all)
    seed_offset: int = 0  # generator seeds are seed_offset + index


@dataclass(frozen=True)
class EvalProtocol:
    """How a paper evaluates on this dataset: valid depth range and an optional crop."""

    min_depth: float | None = None  # in depth.unit
    max_depth: float | None = None  # the cap (NYU 10 m, Make3D C1 70 m)
    crop: tuple[int, int, int, int] | None = None  # top, bottom, left, right (half-open)
    crop_frame: tuple[int, int] | None = None  # (H, W) the crop's pixels refer to
    # Paper 004's protocol for relative depth: RMSE/MAE/r pooled over every pixel of the
    # set, no floor, cap or alignment; else the standard per-image metrics.
    pooled: bool = False


@dataclass(frozen=True)
class CatalogEntry:
    """A dataset descriptor, validated."""

    name: str
    version: str
    description: str
    citation: str
    licence: str
    depth_unit: str  # unit of depth in the source files/generator
    depth_range: tuple[float, float]  # in depth_unit
    display_unit: str
    invalid: float | None  # source value marking invalid depth; None: all valid
    splits: tuple[SplitSpec, ...]
    default_size: tuple[int, int] | None  # (H, W); None: files keep their own size
    generator: str | None = None  # procedural source, or
    source_path: str | None = None  # files on disk, read by
    reader: str | None = None
    source_env: str | None = None  # environment variable that overrides source_path
    intrinsics: tuple[float, ...] | None = None  # 3×3 row-major, pixels
    evaluation: EvalProtocol = EvalProtocol()
    path: Path | None = None  # the descriptor file

    @property
    def unit_to_metres(self) -> float:
        """Factor taking depth in `depth_unit` to metres."""
        return UNITS[self.depth_unit]

    @property
    def depth_range_m(self) -> tuple[float, float]:
        lo, hi = self.depth_range
        return lo * self.unit_to_metres, hi * self.unit_to_metres

    @property
    def display_scale(self) -> float:
        """Factor taking metres to the display unit (1e6 for µm)."""
        return 1.0 / UNITS[self.display_unit]

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.splits)

    @property
    def sample_count(self) -> int | None:
        """Distinct samples: an `all` split holds every other split's samples, so it alone
        counts; None when a split takes every file found (count 0)."""
        counted = [s for s in self.splits if s.name == "all"] or list(self.splits)
        if any(s.count == 0 for s in counted):
            return None
        return sum(s.count for s in counted)

    def source_root(self, override: str | Path | None = None) -> Path:
        """The folder a file dataset is read from: override, else $source_env, else path."""
        if self.generator is not None:
            raise ValueError(f"dataset {self.name!r} is generated ({self.generator}); "
                             "it has no source folder")
        env = os.environ.get(self.source_env) if self.source_env else None
        chosen = override or env or self.source_path
        how = ("--source" if override else f"${self.source_env}" if env
               else f"source.path in {self.path}")
        if chosen is None:
            raise ValueError(f"dataset {self.name!r} needs its files: pass --source PATH"
                             + (f" or set ${self.source_env}" if self.source_env else ""))
        root = Path(chosen).expanduser()
        if not root.is_absolute() and not override and not env and self.path is not None:
            root = self.path.parent / root
        if not root.exists():
            hint = f" or set ${self.source_env}" if self.source_env else ""
            raise FileNotFoundError(f"dataset {self.name!r}: source {root} (from {how}) does "
                                    f"not exist; pass --source PATH{hint}")
        return root.resolve()

    def split(self, name: str) -> SplitSpec:
        for s in self.splits:
            if s.name == name:
                return s
        raise ValueError(f"dataset {self.name!r} has no split {name!r}; "
                         f"known: {', '.join(self.split_names)}")


def default_catalog_dir() -> Path:
    """`$DEPTHLAB_CATALOG`, else the repository's `data_catalog/`."""
    env = os.environ.get("DEPTHLAB_CATALOG")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "data_catalog"


def _names(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.toml"))


def load_entry(name: str, catalog_dir: Path | str | None = None) -> CatalogEntry:
    """Read and validate `<catalog_dir>/<name>.toml`."""
    directory = Path(catalog_dir) if catalog_dir is not None else default_catalog_dir()
    path = directory / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(_names(directory)) or "none"
        raise ValueError(f"unknown dataset {name!r} in {directory}; known: {known}")
    return _parse(path)


def list_entries(catalog_dir: Path | str | None = None) -> list[CatalogEntry]:
    """Every descriptor in the catalog directory, sorted by name."""
    directory = Path(catalog_dir) if catalog_dir is not None else default_catalog_dir()
    return [load_entry(n, directory) for n in _names(directory)]


class _Fields:
    """Reads fields of one TOML table, raising errors that name file and field."""

    def __init__(self, path: Path, table: dict[str, Any], prefix: str = ""):
        self.path, self.table, self.prefix, self.used = path, table, prefix, set()

    def fail(self, key: str, expected: str) -> ValueError:
        got = self.table.get(key, "<missing>")
        return ValueError(f"{self.path}: field '{self.prefix}{key}' must be {expected}, "
                          f"got {got!r}")

    def get(self, key: str, kind: type | tuple[type, ...], expected: str,
            required: bool = True) -> Any:
        self.used.add(key)
        if key not in self.table:
            if required:
                raise self.fail(key, expected)
            return None
        value = self.table[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise self.fail(key, expected)
        return value

    def get_bool(self, key: str, default: bool) -> bool:
        self.used.add(key)
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "true or false")
        return value

    def table_of(self, key: str, required: bool = True) -> "_Fields | None":
        value = self.get(key, dict, "a table", required)
        return None if value is None else _Fields(self.path, value, f"{self.prefix}{key}.")

    def done(self) -> None:
        """Unknown keys are errors: a typo must not silently fall back to a default."""
        extra = sorted(set(self.table) - self.used)
        if extra:
            raise ValueError(f"{self.path}: unknown field '{self.prefix}{extra[0]}'")


def _number_list(f: _Fields, key: str, n: int, kind: type | tuple[type, ...],
                 expected: str, required: bool = True) -> tuple | None:
    value = f.get(key, list, expected, required)
    if value is None:
        return None
    if len(value) != n or not all(isinstance(v, kind) and not isinstance(v, bool)
                                  for v in value):
        raise f.fail(key, expected)
    return tuple(value)


def _evaluation(top: _Fields) -> EvalProtocol:
    """The optional [evaluation] table: min_depth, max_depth, crop + crop_frame, pooled."""
    table = top.table_of("evaluation", required=False)
    if table is None:
        return EvalProtocol()
    lo = table.get("min_depth", (int, float), "a number", required=False)
    hi = table.get("max_depth", (int, float), "a number", required=False)
    if lo is not None and hi is not None and not lo < hi:
        raise table.fail("max_depth", f"greater than min_depth {lo}")
    crop = _number_list(table, "crop", 4, int, "[top, bottom, left, right] pixels",
                        required=False)
    frame = _number_list(table, "crop_frame", 2, int, "[H, W] of the frame the crop is in",
                         required=crop is not None)
    if crop is not None and not (0 <= crop[0] < crop[1] <= frame[0]
                                 and 0 <= crop[2] < crop[3] <= frame[1]):
        raise table.fail("crop", f"inside crop_frame {list(frame)} with top < bottom, "
                         "left < right")
    pooled = table.get_bool("pooled", False)
    if pooled and (lo is not None or hi is not None or crop is not None):
        raise table.fail("pooled", "alone: the pooled protocol has no floor, cap or crop")
    table.done()
    return EvalProtocol(None if lo is None else float(lo), None if hi is None else float(hi),
                        crop, frame, pooled)


def _parse(path: Path) -> CatalogEntry:
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from e
    top = _Fields(path, raw)
    name = top.get("name", str, "a string")
    if not _SAFE.fullmatch(name) or name != path.stem:
        raise top.fail("name", f"the file name {path.stem!r} (letters, digits, . _ -)")
    version = str(top.get("version", (str, int), "a string or integer"))
    if not _SAFE.fullmatch(version):
        raise top.fail("version", "letters, digits, '.', '_' or '-' (it names a directory)")
    source = top.table_of("source")
    generator = source.get("generator", str, "a string", required=False)
    source_path = source.get("path", str, "a string", required=False)
    source_env = source.get("env", str, "an environment variable name", required=False)
    reader = source.get("reader", str, "a string", required=False)
    if (generator is None) == (reader is None):
        raise source.fail("generator", "set, or else 'source.reader' (exactly one of them)")
    if generator is not None and (source_path or source_env):
        raise source.fail("path", "absent for a generated dataset")
    source.done()

    size = _number_list(top, "default_size", 2, int, "[H, W] with positive integers",
                        required=generator is not None)
    if size is not None and min(size) <= 0:
        raise top.fail("default_size", "[H, W] with positive integers")
    intrinsics = _number_list(top, "intrinsics", 9, (int, float),
                              "9 numbers (3×3 row-major)", required=False)

    depth = top.table_of("depth")
    units = "one of " + ", ".join(repr(u) for u in UNITS)
    unit = depth.get("unit", str, units)
    if unit not in UNITS:
        raise depth.fail("unit", units)
    lo, hi = _number_list(depth, "range", 2, (int, float), "[low, high] numbers")
    if not lo < hi:
        raise depth.fail("range", "[low, high] with low < high")
    display_unit = depth.get("display_unit", str, units)
    if display_unit not in UNITS:
        raise depth.fail("display_unit", units)
    invalid_raw = depth.get("invalid", (str, int, float), '"none", "nan" or a number')
    if isinstance(invalid_raw, str):
        if invalid_raw not in ("none", "nan"):
            raise depth.fail("invalid", '"none", "nan" or a number')
        invalid = None if invalid_raw == "none" else math.nan
    else:
        invalid = float(invalid_raw)
    depth.done()

    splits_table = top.table_of("splits")
    splits = []
    for split_name in splits_table.table:
        s = splits_table.table_of(split_name)
        modality = s.get("modality", str, "one of " + ", ".join(MODALITIES))
        if modality not in MODALITIES:
            raise s.fail("modality", "one of " + ", ".join(MODALITIES))
        count = s.get("count", int, "a positive integer", required=generator is not None) or 0
        if count < 0 or (generator is not None and count == 0):
            raise s.fail("count", "a positive integer")
        offset = s.get("seed_offset", int, "a non-negative integer", required=False) or 0
        if offset < 0:
            raise s.fail("seed_offset", "a non-negative integer")
        s.done()
        splits.append(SplitSpec(split_name, modality, count, offset))
    if not splits:
        raise ValueError(f"{path}: table 'splits' must hold at least one split")

    entry = CatalogEntry(
        name=name, version=version,
        description=top.get("description", str, "a string"),
        citation=top.get("citation", str, "a string"),
        licence=top.get("licence", str, "a string"),
        depth_unit=unit, depth_range=(float(lo), float(hi)), display_unit=display_unit,
        invalid=invalid, splits=tuple(splits),
        default_size=None if size is None else (size[0], size[1]),
        generator=generator, source_path=source_path, reader=reader, source_env=source_env,
        evaluation=_evaluation(top),
        intrinsics=None if intrinsics is None else tuple(float(v) for v in intrinsics),
        path=path,
    )
    top.done()
    return entry
