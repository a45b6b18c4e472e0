"""File-format readers: files on disk → checked `Sample`s (float32 metres, NaN = invalid).

A `Reader` is two functions and the split names it knows: `index(root, split)`
lists the sample keys of a split, sorted; `read(root, key)` decodes and checks
one sample. `READERS` maps names to readers: real-samples, nyu-v2-labeled,
middlebury2014, kitti-depth, folder. Readers with parameters come from a
factory (`folder_reader(FolderOptions(...))`, `kitti_reader(depth_dir)`,
`nyu_reader(depth_field)`); the registered entries use the defaults.
Readers are built from `functools.partial` of module functions, so they pickle
(Ray workers can receive them).

Conventions shared by every reader:
- RGB is (H, W, 3) uint8; 8-bit grey/palette/RGBA files are converted to RGB.
- Depth is (H, W) float32 metres; the format's "no measurement" value → NaN.
  A depth value the format cannot legitimately hold (NaN or inf in a float
  file where they are not the invalid marker) is an error.
- RGB and depth of different sizes are an error: nothing is ever resized.
- An all-invalid depth map is returned, not skipped: `Sample.valid_fraction`
  is 0.0 and the caller (Parquet preparation) skips and counts such samples.
- Missing files → FileNotFoundError, bad content → ValueError; both name the file.
"""

import contextlib
import csv
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from depthlab.catalog import UNITS
from depthlab.registry import Registry

READERS = Registry("reader")

RGB_SUFFIXES = (".png", ".jpg", ".jpeg")
# 8-bit modes PIL can convert to RGB without losing meaning; 16-bit/float images are refused
_COLOUR_MODES = {"RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "CMYK", "YCbCr", "1"}


@dataclass(frozen=True, eq=False)  # eq=False: arrays make == ambiguous and unhashable
class Sample:
    """One decoded sample; `rgb` or `depth` is None for single-modality samples."""

    id: str
    rgb: np.ndarray | None  # (H, W, 3) uint8
    depth: np.ndarray | None  # (H, W) float32 metres, NaN = invalid
    source: str  # the file(s) it came from, relative to the reader's root, joined by " + "
    intrinsics: tuple[float, ...] | None = None  # 3×3 row-major, pixels of this rgb

    def __post_init__(self) -> None:
        where = f"sample {self.id!r} ({self.source})"
        if self.rgb is None and self.depth is None:
            raise ValueError(f"{where}: has neither rgb nor depth")
        if self.rgb is not None and (self.rgb.dtype != np.uint8 or self.rgb.ndim != 3
                                     or self.rgb.shape[2] != 3):
            raise ValueError(f"{where}: rgb is {self.rgb.dtype} {self.rgb.shape}; "
                             f"expected uint8 (H, W, 3)")
        if self.depth is not None:
            if self.depth.dtype != np.float32 or self.depth.ndim != 2:
                raise ValueError(f"{where}: depth is {self.depth.dtype} {self.depth.shape}; "
                                 f"expected float32 (H, W)")
            if np.isinf(self.depth).any():
                raise ValueError(f"{where}: depth holds inf; expected metres or NaN")
        if self.rgb is not None and self.depth is not None \
                and self.rgb.shape[:2] != self.depth.shape:
            raise ValueError(f"{where}: rgb {self.rgb.shape[:2]} and depth {self.depth.shape} "
                             f"differ in size")
        if self.intrinsics is not None and (len(self.intrinsics) != 9 or not all(
                math.isfinite(v) for v in self.intrinsics)):
            raise ValueError(f"{where}: intrinsics {self.intrinsics!r}; expected 9 finite numbers")

    @property
    def valid_fraction(self) -> float | None:
        """Fraction of depth pixels that hold a measurement (None without depth)."""
        return None if self.depth is None else float(np.isfinite(self.depth).mean())


@dataclass(frozen=True)
class Reader:
    """How to list and decode one file format."""

    index: Callable[[Path, str], list[str]]  # (root, split) -> sample keys, sorted
    read: Callable[[Path, str], Sample]  # (root, key) -> one decoded, checked sample
    splits: tuple[str, ...]  # the split names it knows


# ---------------------------------------------------------------- shared helpers

def _check_split(reader: str, split: str, known: tuple[str, ...] | list[str]) -> None:
    if split not in known:
        raise ValueError(f"{reader} reader has no split {split!r}; known: {', '.join(known)}")


@contextlib.contextmanager
def _image(path: Path, what: str) -> Iterator[Image.Image]:
    """An opened, fully decoded image; missing or broken files raise errors naming them."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        image = Image.open(path)
        image.load()  # decode now, so a truncated file fails here with its name
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, … for bad files
        raise ValueError(f"{path}: unreadable {what} ({e}); expected a complete PNG or JPEG "
                         f"file") from e
    with image:
        yield image


def read_rgb(path: Path) -> np.ndarray:
    """An 8-bit image file → (H, W, 3) uint8."""
    with _image(path, "RGB image") as image:
        if image.mode not in _COLOUR_MODES:
            raise ValueError(f"{path}: RGB image has mode {image.mode}; "
                             f"expected an 8-bit colour or grey image")
        return np.asarray(image.convert("RGB"))


def read_depth_png(path: Path) -> np.ndarray:
    """A 16-bit greyscale PNG → (H, W) uint16 raw values."""
    with _image(path, "depth PNG") as image:
        mode, raw = image.mode, np.asarray(image)
    if mode.startswith("I;16"):
        return raw.astype(np.uint16)
    # older Pillow opens 16-bit grey PNGs as 32-bit "I"; accept them when in range
    if mode == "I" and raw.size and raw.min() >= 0 and raw.max() <= 65535:
        return raw.astype(np.uint16)
    raise ValueError(f"{path}: depth PNG is mode {mode} ({raw.dtype}); "
                     f"expected 16-bit greyscale (uint16)")


def to_metres(raw: np.ndarray, factor: float, invalid: float | None) -> np.ndarray:
    """Raw values × factor → float32 metres, with `raw == invalid` → NaN."""
    metres = raw.astype(np.float64) * factor
    if invalid is not None:
        metres[raw == invalid] = np.nan
    return metres.astype(np.float32)


def _same_size(rgb: np.ndarray, depth: np.ndarray, rgb_path: Path, depth_path: Path) -> None:
    if rgb.shape[:2] != depth.shape:
        (h, w), (dh, dw) = rgb.shape[:2], depth.shape
        raise ValueError(f"{rgb_path} is {h}x{w} but {depth_path} is {dh}x{dw} (HxW); "
                         f"expected the same size (readers never resize)")


def _matrix(fx: float, fy: float, cx: float, cy: float) -> tuple[float, ...]:
    return (fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0)


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _camera(path: Path, key: str, size: tuple[int, int]) -> tuple[float, ...] | None:
    """Intrinsics from an intrinsics.json (top-level, or `per_image[key]`); None if absent."""
    if not path.is_file():
        return None
    data = _json(path)
    cam = data.get("per_image", data)
    if "per_image" in data:
        if key not in cam:
            raise ValueError(f"{path}: per_image has no entry {key!r}")
        cam = cam[key]
    values = []
    for field in ("fx", "fy", "cx", "cy"):
        v = cam.get(field)
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
            raise ValueError(f"{path}: field {field!r} for {key!r} must be a finite number, "
                             f"got {v!r}")
        values.append(float(v))
    if "width" in cam and "height" in cam and (cam["height"], cam["width"]) != size:
        raise ValueError(f"{path}: intrinsics for {key!r} are for {cam['height']}x"
                         f"{cam['width']} (HxW) but the image is {size[0]}x{size[1]}")
    return _matrix(*values)


def _subfolders(root: Path, marker: str, what: str) -> dict[str, Path]:
    """name → folder for `root` itself when it holds `marker`, else its sub-folders that do."""
    if (root / marker).is_file():
        return {root.name: root}
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: {what} root folder not found")
    found = {p.name: p for p in sorted(root.iterdir()) if (p / marker).is_file()}
    if not found:
        raise ValueError(f"{root}: no {what} folders; expected sub-folders holding {marker}")
    return found


def _folder_of(root: Path, name: str, marker: str, what: str) -> Path:
    folders = _subfolders(root, marker, what)
    if name not in folders:
        raise ValueError(f"{root}: no {what} folder {name!r}; known: {', '.join(folders)}")
    return folders[name]


def _source(root: Path, *paths: Path) -> str:
    return " + ".join(str(p.relative_to(root)) for p in paths)


# ---------------------------------------------------------------- real-samples

MANIFEST = "manifest.csv"
REAL_SPLITS = ("all", "kitti_demo", "middlebury2014_q", "nyu_demo", "sevenscenes_redkitchen")


@dataclass(frozen=True)
class _Row:
    rgb: Path
    depth: Path
    size: tuple[int, int] | None  # (H, W) stated by the manifest


def _inside(manifest: Path, folder: Path, value: str, what: str) -> Path:
    """A manifest path that must stay inside the bundle folder (no .., no absolute, no link out)."""
    rel = PurePosixPath(value)
    escape = (not value or rel.is_absolute() or ".." in rel.parts
              or not (folder / rel).resolve().is_relative_to(folder.resolve()))
    if escape:
        raise ValueError(f"{manifest}: {what} path {value!r} escapes {folder}; "
                         f"expected a relative path inside it")
    return folder / rel


def _size(manifest: Path, row: dict) -> tuple[int, int] | None:
    if not row.get("width") or not row.get("height"):
        return None
    try:
        return int(row["height"]), int(row["width"])
    except ValueError as e:
        raise ValueError(f"{manifest}: row {row['id']!r} has width/height "
                         f"{row['width']!r}/{row['height']!r}; expected integers") from e


def _manifest(folder: Path) -> dict[str, _Row]:
    """id → row of `<folder>/manifest.csv`, with paths checked to stay inside the folder."""
    path = folder / MANIFEST
    with open(path, newline="") as fh:
        table = csv.DictReader(fh)
        missing = {"id", "rgb", "depth"} - set(table.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; "
                             f"expected at least id, rgb, depth")
        rows: dict[str, _Row] = {}
        for row in table:
            sid = row["id"] or ""
            if not sid or "/" in sid or sid in rows:
                raise ValueError(f"{path}: id {sid!r} is empty, holds '/' or repeats; "
                                 f"expected unique ids")
            rows[sid] = _Row(_inside(path, folder, row["rgb"] or "", f"rgb of {sid!r}"),
                             _inside(path, folder, row["depth"] or "", f"depth of {sid!r}"),
                             _size(path, row))
    if not rows:
        raise ValueError(f"{path}: no rows; expected one row per sample")
    return rows


def _real_index(root: Path, split: str) -> list[str]:
    bundles = _subfolders(Path(root), MANIFEST, "real-samples")
    _check_split("real-samples", split, ("all", *bundles))
    names = bundles if split == "all" else [split]
    return sorted(f"{name}/{sid}" for name in names for sid in _manifest(bundles[name]))


def _real_read(root: Path, key: str) -> Sample:
    root = Path(root)
    name, _, sid = key.partition("/")
    folder = _folder_of(root, name, MANIFEST, "real-samples")
    row = _manifest(folder).get(sid)
    if row is None:
        raise ValueError(f"{folder / MANIFEST}: no sample id {sid!r} (key {key!r})")
    rgb, raw = read_rgb(row.rgb), read_depth_png(row.depth)
    _same_size(rgb, raw, row.rgb, row.depth)
    if row.size is not None and row.size != raw.shape:
        raise ValueError(f"{folder / MANIFEST}: row {sid!r} says {row.size[0]}x{row.size[1]} "
                         f"(HxW) but {row.depth} is {raw.shape[0]}x{raw.shape[1]}")
    camera = folder / "intrinsics.json"
    unit = _json(camera).get("depth_unit", "mm") if camera.is_file() else "mm"
    if unit not in UNITS:
        raise ValueError(f"{camera}: depth_unit {unit!r}; expected one of {', '.join(UNITS)}")
    return Sample(key, rgb, to_metres(raw, UNITS[unit], 0), _source(root, row.rgb, row.depth),
                  _camera(camera, sid, raw.shape))


READERS.register("real-samples")(Reader(_real_index, _real_read, REAL_SPLITS))


# ---------------------------------------------------------------- plain folders and KITTI

@dataclass(frozen=True)
class FolderOptions:
    """How a plain folder stores samples; metres = raw × scale × UNITS[unit], raw == invalid → NaN.

    Depth files are uint16 PNGs. `rgb_dir`/`depth_dir` are relative to the root; "."
    means the root itself holds the files (an rgb-only or depth-only folder).
    """

    unit: str = "mm"
    scale: float = 1.0  # KITTI: unit "m", scale 1/256
    invalid: int | None = 0  # raw value meaning "no measurement"; None: every value is valid
    rgb_dir: str = "rgb"
    depth_dir: str = "depth"

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"FolderOptions.unit = {self.unit!r}; "
                             f"expected one of {', '.join(UNITS)}")
        if not (isinstance(self.scale, int | float) and math.isfinite(self.scale)
                and self.scale > 0):
            raise ValueError(f"FolderOptions.scale = {self.scale!r}; expected a finite number > 0")
        if self.invalid is not None and not (isinstance(self.invalid, int)
                                             and 0 <= self.invalid <= 65535):
            raise ValueError(f"FolderOptions.invalid = {self.invalid!r}; "
                             f"expected None or an integer in 0..65535")
        for field in ("rgb_dir", "depth_dir"):
            value = getattr(self, field)
            if PurePosixPath(value).is_absolute() or ".." in PurePosixPath(value).parts:
                raise ValueError(f"FolderOptions.{field} = {value!r}; "
                                 f"expected a relative folder inside the root")

    @property
    def factor(self) -> float:
        """Raw value → metres."""
        return self.scale * UNITS[self.unit]


# Keys: "<stem>" in the paired split, "rgb/<stem>" and "depth/<stem>" in the single-modality
# splits (the prefix names the modality, whatever the folder is called).
FOLDER_SPLITS = ("paired", "rgb", "depth")


def _listing(folder: Path, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
    """stem → file for the files of `folder` with one of `suffixes` (any case)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: {what} folder not found")
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.suffix.lower() not in suffixes or not p.is_file():
            continue
        if p.stem in files:
            raise ValueError(f"{folder}: {files[p.stem].name} and {p.name} share the stem "
                             f"{p.stem!r}; expected one {what} file per sample")
        files[p.stem] = p
    if not files:
        raise ValueError(f"{folder}: no {what} files ({', '.join(suffixes)}); "
                         f"expected at least one")
    return files


def _paired_stems(root: Path, options: FolderOptions) -> list[str]:
    rgb = _listing(root / options.rgb_dir, RGB_SUFFIXES, "RGB image")
    depth = _listing(root / options.depth_dir, (".png",), "depth PNG")
    if rgb.keys() != depth.keys():
        only_rgb, only_depth = sorted(rgb.keys() - depth.keys()), sorted(depth.keys() - rgb.keys())
        raise ValueError(f"{root}: paired samples need the same stems in {options.rgb_dir}/ and "
                         f"{options.depth_dir}/; only RGB: {only_rgb[:5]}, "
                         f"only depth: {only_depth[:5]}")
    return sorted(rgb)


def _folder_index(root: Path, split: str, options: FolderOptions) -> list[str]:
    root = Path(root)
    _check_split("folder", split, FOLDER_SPLITS)
    if split == "paired":
        return _paired_stems(root, options)
    if split == "rgb":
        return [f"rgb/{s}" for s in _listing(root / options.rgb_dir, RGB_SUFFIXES, "RGB image")]
    return [f"depth/{s}" for s in _listing(root / options.depth_dir, (".png",), "depth PNG")]


def _find(folder: Path, stem: str, suffixes: tuple[str, ...], what: str) -> Path:
    """The one file `<stem><suffix>` in `folder`, without listing the folder (it may be large)."""
    hits: dict[tuple[int, int], Path] = {}
    for suffix in (s for suf in suffixes for s in (suf, suf.upper())):
        if (path := folder / (stem + suffix)).is_file():
            info = path.stat()  # a case-insensitive file system finds one file twice
            hits.setdefault((info.st_dev, info.st_ino), path)
    if len(hits) != 1:
        if not hits:
            raise FileNotFoundError(f"{folder}: no {what} {stem}{'|'.join(suffixes)}")
        raise ValueError(f"{folder}: several {what} files for {stem!r}: "
                         f"{sorted(p.name for p in hits.values())}")
    return next(iter(hits.values()))


def _folder_read(root: Path, key: str, options: FolderOptions) -> Sample:
    root = Path(root)
    prefix, _, stem = key.rpartition("/")
    modality = {"": "paired", "rgb": "rgb", "depth": "depth"}.get(prefix)
    if modality is None or not stem:
        raise ValueError(f"folder key {key!r}; expected '<stem>', 'rgb/<stem>' or 'depth/<stem>'")
    rgb = depth = rgb_path = depth_path = None
    if modality in ("paired", "rgb"):
        rgb_path = _find(root / options.rgb_dir, stem, RGB_SUFFIXES, "RGB image")
        rgb = read_rgb(rgb_path)
    if modality in ("paired", "depth"):
        depth_path = _find(root / options.depth_dir, stem, (".png",), "depth PNG")
        raw = read_depth_png(depth_path)
        if rgb is not None:
            _same_size(rgb, raw, rgb_path, depth_path)
        depth = to_metres(raw, options.factor, options.invalid)
    size = rgb.shape[:2] if rgb is not None else depth.shape
    intrinsics = _camera(root / "intrinsics.json", stem, size) if rgb is not None else None
    paths = [p for p in (rgb_path, depth_path) if p is not None]
    return Sample(key, rgb, depth, _source(root, *paths), intrinsics)


def folder_reader(options: FolderOptions = FolderOptions()) -> Reader:
    """A reader of plain folders stored as `options` says (splits: paired, rgb, depth).

    Paired: `<root>/rgb/<stem>.{png,jpg}` + `<root>/depth/<stem>.png`, every stem in both.
    Unpaired: the "rgb" or "depth" split alone (no partner needed). An optional
    `<root>/intrinsics.json` (fx, fy, cx, cy, or `per_image` keyed by stem) gives intrinsics.
    """
    return Reader(partial(_folder_index, options=options), partial(_folder_read, options=options),
                  FOLDER_SPLITS)


def _kitti_index(root: Path, split: str, options: FolderOptions) -> list[str]:
    _check_split("kitti-depth", split, ("all",))
    return _paired_stems(Path(root), options)


def kitti_reader(depth_dir: str = "depth") -> Reader:
    """KITTI depth pairs: `rgb/<id>.png` + `<depth_dir>/<id>.png` uint16, metres = value / 256."""
    options = FolderOptions(unit="m", scale=1 / 256, invalid=0, depth_dir=depth_dir)
    return Reader(partial(_kitti_index, options=options), partial(_folder_read, options=options),
                  ("all",))


READERS.register("folder")(folder_reader())
READERS.register("kitti-depth")(kitti_reader())


# ---------------------------------------------------------------- Middlebury 2014

_PFM_HEADER = re.compile(rb"\A(P[fF])\s+(\d+)\s+(\d+)\s+(\S+)\s")


def read_pfm(path: Path) -> np.ndarray:
    """A greyscale PFM → (H, W) float32, top row first (PFM stores rows bottom-to-top)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: PFM file not found")
    data = path.read_bytes()
    m = _PFM_HEADER.match(data)
    if m is None:
        raise ValueError(f"{path}: not a PFM file; expected the header 'Pf', width height, scale")
    if m[1] == b"PF":
        raise ValueError(f"{path}: colour PFM ('PF'); expected greyscale 'Pf'")
    width, height = int(m[2]), int(m[3])
    try:
        scale = float(m[4])
    except ValueError:
        scale = math.nan
    if not math.isfinite(scale) or scale == 0:
        raise ValueError(f"{path}: PFM scale {m[4].decode(errors='replace')!r}; expected a "
                         f"non-zero number (< 0: little endian)")
    need, have = width * height * 4, len(data) - m.end()
    if have != need:
        raise ValueError(f"{path}: {have} bytes of data after the header; expected {width}x"
                         f"{height}x4 = {need} (truncated or wrong size)")
    dtype = "<f4" if scale < 0 else ">f4"
    rows = np.frombuffer(data, dtype=dtype, count=width * height, offset=m.end())
    return rows.reshape(height, width)[::-1].astype(np.float32)


def _calib(path: Path) -> dict[str, float | tuple[float, ...]]:
    """MiddEval3 calib.txt → cam0 (9 numbers), doffs, baseline (mm) and optional width/height."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: calib.txt not found")
    fields = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    out: dict[str, float | tuple[float, ...]] = {}
    try:
        out["cam0"] = tuple(float(v) for v in fields["cam0"].strip(" []").replace(";", " ").split())
        out["doffs"], out["baseline"] = float(fields["doffs"]), float(fields["baseline"])
        out.update({k: float(fields[k]) for k in ("width", "height") if k in fields})
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path}: missing or bad field ({e}); expected cam0=[fx 0 cx; 0 fy cy; "
                         f"0 0 1], doffs=<px>, baseline=<mm>") from e
    if len(out["cam0"]) != 9 or out["cam0"][0] <= 0 or out["baseline"] <= 0:
        raise ValueError(f"{path}: cam0 {out['cam0']} / baseline {out['baseline']}; expected 9 "
                         f"numbers with fx > 0 and baseline > 0")
    return out


def disparity_to_metres(disparity: np.ndarray, calib: dict, path: Path) -> np.ndarray:
    """Metres = baseline_mm × fx / (disparity + doffs) / 1000; +inf (invalid) → NaN."""
    bad = np.isnan(disparity) | (disparity == -np.inf)
    if bad.any():
        raise ValueError(f"{path}: {int(bad.sum())} NaN or -inf disparities; "
                         f"expected finite values, or +inf for invalid pixels")
    valid = np.isfinite(disparity)
    denominator = np.where(valid, disparity.astype(np.float64) + calib["doffs"], 1.0)
    if (denominator <= 0).any():
        raise ValueError(f"{path}: disparity + doffs <= 0 at {int((denominator <= 0).sum())} "
                         f"pixels; expected positive values (depth in front of the camera)")
    depth_mm = calib["baseline"] * calib["cam0"][0] / denominator
    return np.where(valid, depth_mm / 1000.0, np.nan).astype(np.float32)


def _middlebury_index(root: Path, split: str) -> list[str]:
    _check_split("middlebury2014", split, ("all",))
    return sorted(_subfolders(Path(root), "calib.txt", "Middlebury scene"))


def _middlebury_read(root: Path, key: str) -> Sample:
    root = Path(root)
    scene = _folder_of(root, key, "calib.txt", "Middlebury scene")
    image, pfm, calib_path = scene / "im0.png", scene / "disp0GT.pfm", scene / "calib.txt"
    calib = _calib(calib_path)
    rgb, disparity = read_rgb(image), read_pfm(pfm)
    _same_size(rgb, disparity, image, pfm)
    stated = (calib.get("height"), calib.get("width"))
    if None not in stated and stated != rgb.shape[:2]:
        raise ValueError(f"{calib_path}: width/height {stated[1]:g}x{stated[0]:g} but {image} "
                         f"is {rgb.shape[1]}x{rgb.shape[0]} (WxH)")
    return Sample(key, rgb, disparity_to_metres(disparity, calib, pfm),
                  _source(root, image, pfm, calib_path), calib["cam0"])


READERS.register("middlebury2014")(Reader(_middlebury_index, _middlebury_read, ("all",)))


# ---------------------------------------------------------------- NYU Depth v2 labeled

NYU_MAT = "nyu_depth_v2_labeled.mat"
# NYU toolbox camera_params.m, RGB camera, for the 640×480 frames of the labeled set
NYU_INTRINSICS = _matrix(518.8579, 519.46961, 325.58245, 253.73617)


def _nyu_paths(root: Path) -> tuple[Path, Path]:
    """(the .mat, the folder holding the split file); root is the folder or the .mat itself."""
    root = Path(root)
    mat = root if root.suffix == ".mat" else root / NYU_MAT
    if not mat.is_file():
        raise FileNotFoundError(f"{mat}: NYU v2 labeled file not found; expected {NYU_MAT} "
                                f"(MATLAB v7.3) in {mat.parent}")
    return mat, mat.parent


@contextlib.contextmanager
def _nyu_open(mat: Path, depth_field: str) -> Iterator[tuple]:
    """(images, depths) HDF5 datasets of the .mat, shapes checked; h5py imported only here."""
    try:
        import h5py
    except ImportError as e:
        raise ImportError(f"reading {mat} needs h5py: pip install h5py") from e
    try:
        fh = h5py.File(mat, "r")
    except OSError as e:
        raise ValueError(f"{mat}: not an HDF5 (MATLAB v7.3) file ({e})") from e
    with fh:
        for name in ("images", depth_field):
            if name not in fh:
                raise ValueError(f"{mat}: no dataset {name!r}; expected images and {depth_field}")
        images, depths = fh["images"], fh[depth_field]
        # MATLAB arrays appear transposed in HDF5: images (N, 3, W, H), depths (N, W, H)
        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8 \
                or depths.shape != (images.shape[0], *images.shape[2:]):
            raise ValueError(f"{mat}: images {images.shape} {images.dtype}, {depth_field} "
                             f"{depths.shape}; expected uint8 (N, 3, W, H) and (N, W, H)")
        yield images, depths


def _split_values(path: Path, train: object, test: object, n: int) -> dict[str, list[int]]:
    """Check 1-based, in-range, unique, disjoint indices."""
    out = {}
    for name, values in (("train", train), ("test", test)):
        try:
            array = np.asarray(values, dtype=np.float64).ravel()
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {name} indices are not numbers ({e})") from e
        if array.size == 0 or (array != np.round(array)).any() or array.min() < 1 \
                or array.max() > n or len(np.unique(array)) != array.size:
            raise ValueError(f"{path}: {name} indices must be unique integers in 1..{n} "
                             f"(1-based), got {array.size} values")
        out[name] = sorted(int(v) for v in array)
    if set(out["train"]) & set(out["test"]):
        raise ValueError(f"{path}: train and test share indices; expected disjoint splits")
    return out


def _nyu_splits(folder: Path, n: int) -> dict[str, list[int]]:
    """The official splits.mat (trainNdxs/testNdxs, via scipy), else splits.json {train, test}."""
    mat, js = folder / "splits.mat", folder / "splits.json"
    if mat.is_file():
        try:
            from scipy.io import loadmat
        except ImportError as e:
            raise ImportError(f"reading {mat} needs scipy: pip install scipy "
                              f"(or write {js} with lists 'train' and 'test')") from e
        try:
            data = loadmat(mat)
        except Exception as e:  # scipy raises several types for non-MATLAB-v5 files
            raise ValueError(f"{mat}: unreadable MATLAB file ({e}); expected the official "
                             f"splits.mat with trainNdxs and testNdxs") from e
        if "trainNdxs" not in data or "testNdxs" not in data:
            raise ValueError(f"{mat}: expected variables trainNdxs and testNdxs")
        return _split_values(mat, data["trainNdxs"], data["testNdxs"], n)
    if js.is_file():
        data = _json(js)
        if not isinstance(data.get("train"), list) or not isinstance(data.get("test"), list):
            raise ValueError(f"{js}: expected lists 'train' and 'test' of 1-based indices")
        return _split_values(js, data["train"], data["test"], n)
    raise FileNotFoundError(f"{folder}: no split file; expected splits.mat (official, "
                            f"trainNdxs/testNdxs) or splits.json {{\"train\": [...], "
                            f"\"test\": [...]}}")


def _nyu_index(root: Path, split: str, depth_field: str) -> list[str]:
    _check_split("nyu-v2-labeled", split, ("train", "test"))
    mat, folder = _nyu_paths(root)
    with _nyu_open(mat, depth_field) as (images, _):
        n = images.shape[0]
    return [f"{i:04d}" for i in _nyu_splits(folder, n)[split]]


def _nyu_depth(raw: np.ndarray, mat: Path, field: str, key: str) -> np.ndarray:
    """Float metres; 0 (rawDepths' missing value) → NaN; NaN, inf or negative → error."""
    if not np.isfinite(raw).all() or (raw < 0).any():
        raise ValueError(f"{mat}: {field} of sample {key} holds NaN, inf or negative values; "
                         f"expected metres >= 0 (0 = invalid)")
    return to_metres(raw, 1.0, 0)


def _nyu_read(root: Path, key: str, depth_field: str) -> Sample:
    mat, _ = _nyu_paths(root)
    with _nyu_open(mat, depth_field) as (images, depths):
        n = images.shape[0]
        if not key.isdigit() or not 1 <= int(key) <= n:
            raise ValueError(f"{mat}: key {key!r}; expected a 1-based index 0001..{n:04d}")
        i = int(key) - 1
        rgb = np.ascontiguousarray(images[i].transpose(2, 1, 0))  # (3, W, H) → (H, W, 3)
        raw = np.asarray(depths[i]).T  # (W, H) → (H, W)
    depth = _nyu_depth(raw, mat, depth_field, key)
    intrinsics = NYU_INTRINSICS if rgb.shape[:2] == (480, 640) else None  # only known at 640×480
    return Sample(key, rgb, depth, f"{mat.name}:{depth_field}[{key}]", intrinsics)


def nyu_reader(depth_field: str = "depths") -> Reader:
    """NYU v2 labeled .mat; `depth_field` "depths" (filled, the default) or "rawDepths"."""
    if depth_field not in ("depths", "rawDepths"):
        raise ValueError(f"nyu_reader depth_field = {depth_field!r}; "
                         f"expected 'depths' or 'rawDepths'")
    return Reader(partial(_nyu_index, depth_field=depth_field),
                  partial(_nyu_read, depth_field=depth_field), ("train", "test"))


READERS.register("nyu-v2-labeled")(nyu_reader())

# Make3D, 7-Scenes, Texas-3DFRD, SURREAL and folder-per-unit readers register themselves there.
from depthlab.data import formats  # noqa: E402, F401
