"""More dataset readers: Make3D, 7-Scenes, Texas-3DFRD, SURREAL; folder readers per depth unit.

Same contract and conventions as `depthlab.data.readers` (whose helpers they use):
sorted keys, float32 depth with NaN = invalid, errors that name the file, readers
built from `functools.partial` so they pickle. Imported at the end of readers.py,
so `READERS` holds these names whenever it holds the others.

File layout ↔ key ↔ what comes out:
- make3d: `Train400Img/img-<stem>.jpg` + `Train400Depth/depth_sph_corr-<stem>.mat` (train,
  400), `Test134/img-<stem>.jpg` + `Gridlaserdata/depth_sph_corr-<stem>.mat` (test, 134);
  key "<split>/<stem>". Depth = `Position3DGrid(:,:,4)`, metres, 55x305 laser samples.
  The only reader that resizes, because image (2272x1704 px, portrait) and grid
  differ in size and a `Sample` pairs equal sizes: `make3d_reader("depthtransfer")`
  (default) resizes both to 460x345 (HxW; Karsch et al.'s DepthTransfer protocol, RGB
  bicubic, depth nearest neighbour); `make3d_reader("grid")` keeps the 55x305 grid and
  resizes the RGB down to it. Grid orientation (METHODS §6 says to check it):
  scipy's `loadmat` gives the (55, 305) array in MATLAB's row/column order, taken as
  is — axis 0 runs down the image, axis 1 left to right, no transpose or flip. This
  is what DepthTransfer's `imresize(grid, [460 345])` and Monodepth's 2:1 crop (21
  of the 55 rows ↔ 852 of the 2272 image rows) assume; tests can only check that
  the reader keeps this convention, not the laser's geometry.
- sevenscenes: `<scene>/seq-XX/frame-NNNNNN.color.png` + `.depth.png` (uint16 mm; 0 and
  65535 = invalid); `<scene>/TrainSplit.txt` / `TestSplit.txt` list `sequenceN` lines;
  key "<scene>/seq-XX/frame-NNNNNN". Poses are not read (a `Sample` has no pose).
  Intrinsics fx = fy = 585, cx = 320, cy = 240 (Kinect defaults, at 640x480); the
  dataset does not register RGB to depth, so pairs are aligned only approximately.
- texas-3dfrd: `[PreprocessedImages/]<stem>_Portrait.png` + `<stem>_Range.png` with
  `<stem>` = `<prefix>_<image>_<subject>_<rest>` (assumed layout, see the descriptor);
  range = 8-bit grey / 255 (16-bit: / 65535), unitless in [0, 1], 1 = near, 0 =
  background. Individuals sorted; held out `[::7]` (eval, paired), the rest split
  `[::2]` → train_rgb, `[1::2]` → train_depth (paper 004's code). Keys "<stem>",
  "rgb/<stem>", "depth/<stem>".
- surreal: `<train|test>/run*/<seq>/<clip>.mp4` + `<clip>_depth.mat` (`depth_1 …
  depth_T`, metres, background 1e10). RGB decoded with PyAV (the `video` extra).
  Keys "[rgb/|depth/]<folder>/<run>/<seq>/<clip>/<frame>", frame 0-based
  (= `depth_<frame+1>`). Paper 004's depth: minus the median of the body pixels,
  clipped to ±0.4725 m, background (and anything ≤ −0.4725) = −0.4725.
- folder-m, folder-um, folder-relative: the `folder` reader with depth PNGs in that unit
  (`depthlab data prepare folder --unit m` picks one through `with_folder_unit`).
"""

import functools
import re
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from depthlab.catalog import UNITS, CatalogEntry
from depthlab.data.readers import (
    READERS,
    RGB_SUFFIXES,
    FolderOptions,
    Reader,
    Sample,
    _check_split,
    _find,
    _image,
    _matrix,
    _same_size,
    _source,
    folder_reader,
    read_depth_png,
    read_rgb,
    to_metres,
)

# ---------------------------------------------------------------- shared helpers

def _loadmat(path: Path, what: str, variables: list[str] | None = None) -> dict:
    """A MATLAB v5 file's variables (all, or only `variables`); errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    from scipy.io import loadmat  # scipy is slow to import; only file readers need it

    try:
        return loadmat(path, variable_names=variables)
    except Exception as e:  # scipy raises ValueError, TypeError, OSError, … for bad files
        raise ValueError(f"{path}: unreadable {what} ({e}); expected a MATLAB v5 .mat file") from e


def _prefixed(folder: Path, prefix: str, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
    """stem-after-prefix → file for `<prefix><stem><suffix>` files in `folder`."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: {what} folder not found")
    files = {p.name[len(prefix):-len(p.suffix)]: p for p in sorted(folder.iterdir())
             if p.name.startswith(prefix) and p.suffix.lower() in suffixes and p.is_file()}
    if not files:
        raise ValueError(f"{folder}: no {what} files; expected {prefix}<name>"
                         f"{'|'.join(suffixes)}")
    return files


def _modality(key: str, reader: str) -> tuple[str, str]:
    """("paired" | "rgb" | "depth", rest) of a key "<rest>", "rgb/<rest>" or "depth/<rest>"."""
    head, _, rest = key.partition("/")
    modality, rest = (head, rest) if head in ("rgb", "depth") else ("paired", key)
    if not rest:
        raise ValueError(f"{reader} key {key!r}; expected '<id>', 'rgb/<id>' or 'depth/<id>'")
    return modality, rest


def _spread(n_items: int, n: int) -> list[int]:
    """`n` indices spread evenly over range(n_items) (all of them when n >= n_items)."""
    if n >= n_items:
        return list(range(n_items))
    return [int((k + 0.5) * n_items / n) for k in range(n)]


def _unpaired_mismatch(folder: Path, a: dict, b: dict, names: tuple[str, str]) -> None:
    if a.keys() != b.keys():
        only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
        raise ValueError(f"{folder}: every sample needs both files; only {names[0]}: "
                         f"{only_a[:5]}, only {names[1]}: {only_b[:5]}")


# ---------------------------------------------------------------- Make3D

MAKE3D_FOLDERS = {"train": ("Train400Img", "Train400Depth"), "test": ("Test134", "Gridlaserdata")}
MAKE3D_IMAGE, MAKE3D_DEPTH = "img-", "depth_sph_corr-"
MAKE3D_GRID = (55, 305)  # laser samples (rows, columns) of Position3DGrid
DEPTHTRANSFER_SIZE = (460, 345)  # (H, W): Karsch et al.'s evaluation size
MAKE3D_RESOLUTIONS = ("depthtransfer", "grid")


def _make3d_pairs(root: Path, split: str) -> dict[str, tuple[Path, Path]]:
    images_dir, depth_dir = (root / name for name in MAKE3D_FOLDERS[split])
    images = _prefixed(images_dir, MAKE3D_IMAGE, (".jpg", ".jpeg"), "Make3D image")
    depths = _prefixed(depth_dir, MAKE3D_DEPTH, (".mat",), "Make3D depth .mat")
    _unpaired_mismatch(root, images, depths, (f"{images_dir.name}/", f"{depth_dir.name}/"))
    return {stem: (images[stem], depths[stem]) for stem in images}


def _make3d_index(root: Path, split: str) -> list[str]:
    _check_split("make3d", split, tuple(MAKE3D_FOLDERS))
    return sorted(f"{split}/{stem}" for stem in _make3d_pairs(Path(root), split))


def read_make3d_grid(path: Path) -> np.ndarray:
    """`Position3DGrid(:,:,4)` of a Make3D .mat → (55, 305) float32 metres; 0 (no return) → NaN."""
    grid = _loadmat(path, "Make3D depth .mat", ["Position3DGrid"]).get("Position3DGrid")
    want = (*MAKE3D_GRID, 4)
    if grid is None:
        raise ValueError(f"{path}: no variable 'Position3DGrid'; expected the Make3D laser grid "
                         f"{want[0]}x{want[1]}x{want[2]}")
    grid = np.asarray(grid)
    if grid.shape != want or not np.issubdtype(grid.dtype, np.number):
        hint = " (transposed?)" if grid.shape == (want[1], want[0], 4) else ""
        raise ValueError(f"{path}: Position3DGrid is {grid.dtype} {grid.shape}{hint}; expected "
                         f"numbers of shape {want} (rows, columns, [Y X Z depth])")
    depth = grid[:, :, 3].astype(np.float64)
    if not np.isfinite(depth).all() or (depth < 0).any():
        raise ValueError(f"{path}: Position3DGrid(:,:,4) holds NaN, inf or negative values; "
                         f"expected metres >= 0 (0 = no laser return)")
    return to_metres(depth, 1.0, 0)


def nearest_resize(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Depth resampled to (H, W) by nearest neighbour about pixel centres (NaN stays NaN)."""
    h, w = depth.shape
    rows = ((np.arange(size[0]) + 0.5) * h / size[0]).astype(int)
    cols = ((np.arange(size[1]) + 0.5) * w / size[1]).astype(int)
    return depth[rows[:, None], cols[None, :]]


def _resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    # bicubic with Pillow's antialiasing, like MATLAB imresize in DepthTransfer
    image = Image.fromarray(rgb).resize((size[1], size[0]), Image.Resampling.BICUBIC,
                                        reducing_gap=3.0)
    return np.asarray(image)


def _make3d_read(root: Path, key: str, resolution: str) -> Sample:
    root = Path(root)
    split, _, stem = key.partition("/")
    if split not in MAKE3D_FOLDERS or not stem:
        raise ValueError(f"make3d key {key!r}; expected 'train/<name>' or 'test/<name>'")
    images_dir, depth_dir = (root / name for name in MAKE3D_FOLDERS[split])
    image = _find(images_dir, MAKE3D_IMAGE + stem, (".jpg", ".jpeg"), "Make3D image")
    mat = depth_dir / f"{MAKE3D_DEPTH}{stem}.mat"
    rgb, depth = read_rgb(image), read_make3d_grid(mat)
    if rgb.shape[0] < rgb.shape[1]:  # the grid convention holds for portrait pixels only
        raise ValueError(f"{image} is {rgb.shape[0]}x{rgb.shape[1]} (HxW), landscape; expected "
                         f"a portrait Make3D image (2272x1704), whose rows the grid's rows follow")
    size = DEPTHTRANSFER_SIZE if resolution == "depthtransfer" else MAKE3D_GRID
    return Sample(key, _resize_rgb(rgb, size), nearest_resize(depth, size),
                  _source(root, image, mat))


def make3d_reader(resolution: str = "depthtransfer") -> Reader:
    """Make3D (splits train, test); `resolution` "depthtransfer" (460x345) or "grid" (55x305)."""
    if resolution not in MAKE3D_RESOLUTIONS:
        raise ValueError(f"make3d_reader resolution = {resolution!r}; expected one of "
                         f"{', '.join(MAKE3D_RESOLUTIONS)}")
    return Reader(_make3d_index, partial(_make3d_read, resolution=resolution),
                  tuple(MAKE3D_FOLDERS))


READERS.register("make3d")(make3d_reader())


# ---------------------------------------------------------------- Microsoft 7-Scenes

SEVENSCENES_SPLIT_FILES = {"train": "TrainSplit.txt", "test": "TestSplit.txt"}
# Kinect defaults the dataset states for its 640x480 frames (depth camera; RGB unregistered)
SEVENSCENES_INTRINSICS = _matrix(585.0, 585.0, 320.0, 240.0)
SEVENSCENES_SIZE = (480, 640)
_SEQUENCE_LINE = re.compile(r"sequence(\d+)", re.IGNORECASE)
_COLOUR_FRAME = re.compile(r"(frame-\d+)\.color\.(?:png|jpg|jpeg)", re.IGNORECASE)


def _is_scene(folder: Path) -> bool:
    return any(p.is_dir() and p.name.startswith("seq-") for p in folder.iterdir())


def _scenes(root: Path) -> dict[str, Path]:
    """scene name → folder: `root` itself when it holds seq-XX/ folders, else its sub-folders."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: 7-Scenes root folder not found")
    if _is_scene(root):
        return {root.name: root}
    found = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and _is_scene(p)}
    if not found:
        raise ValueError(f"{root}: no 7-Scenes scene folders; expected sub-folders (chess, "
                         f"fire, …) holding seq-XX/ folders and TrainSplit.txt/TestSplit.txt")
    return found


def _sequences(scene: Path, split: str) -> list[str]:
    """The seq-XX folder names a scene's TrainSplit.txt / TestSplit.txt lists."""
    path = scene / SEVENSCENES_SPLIT_FILES[split]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: 7-Scenes split file not found; expected one "
                                f"'sequenceN' line per sequence of the {split} split")
    sequences = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        match = _SEQUENCE_LINE.fullmatch(line.strip())
        if match is None:
            raise ValueError(f"{path}: line {number} is {line!r}; expected 'sequenceN'")
        sequences.append(f"seq-{int(match[1]):02d}")
    if not sequences:
        raise ValueError(f"{path}: lists no sequence; expected 'sequenceN' lines")
    return sequences


def _frames(sequence: Path) -> list[str]:
    """frame-NNNNNN names of a sequence folder, each with its colour and depth file."""
    if not sequence.is_dir():
        raise FileNotFoundError(f"{sequence}: 7-Scenes sequence folder not found (listed by "
                                f"the split file)")
    names = {p.name for p in sequence.iterdir()}
    colour = {m[1] for n in names if (m := _COLOUR_FRAME.fullmatch(n))}
    depth = {n[: -len(".depth.png")] for n in names if n.endswith(".depth.png")}
    _unpaired_mismatch(sequence, dict.fromkeys(colour), dict.fromkeys(depth),
                       (".color.png", ".depth.png"))
    if not colour:
        raise ValueError(f"{sequence}: no frames; expected frame-NNNNNN.color.png and "
                         f"frame-NNNNNN.depth.png files")
    return sorted(colour)


def _sevenscenes_index(root: Path, split: str) -> list[str]:
    _check_split("sevenscenes", split, tuple(SEVENSCENES_SPLIT_FILES))
    return sorted(f"{name}/{seq}/{frame}" for name, scene in _scenes(Path(root)).items()
                  for seq in _sequences(scene, split) for frame in _frames(scene / seq))


def _sevenscenes_read(root: Path, key: str) -> Sample:
    root = Path(root)
    parts = key.split("/")
    if len(parts) != 3 or not parts[1].startswith("seq-") or not parts[2].startswith("frame-"):
        raise ValueError(f"sevenscenes key {key!r}; expected '<scene>/seq-XX/frame-NNNNNN'")
    scene, seq, frame = parts
    folder = (root if root.name == scene and (root / seq).is_dir() else root / scene) / seq
    image = _find(folder, f"{frame}.color", RGB_SUFFIXES, "7-Scenes colour image")
    depth_path = folder / f"{frame}.depth.png"
    rgb, raw = read_rgb(image), read_depth_png(depth_path)
    _same_size(rgb, raw, image, depth_path)
    depth = to_metres(raw, UNITS["mm"], 65535)  # 65535: no Kinect reading
    depth[raw == 0] = np.nan  # 0: no reading either
    intrinsics = SEVENSCENES_INTRINSICS if raw.shape == SEVENSCENES_SIZE else None
    return Sample(key, rgb, depth, _source(root, image, depth_path), intrinsics)


READERS.register("sevenscenes")(Reader(_sevenscenes_index, _sevenscenes_read,
                                       tuple(SEVENSCENES_SPLIT_FILES)))


# ---------------------------------------------------------------- Texas 3D Face Recognition DB

TEXAS_FOLDER = "PreprocessedImages"
TEXAS_SPLITS = ("train_rgb", "train_depth", "eval")
TEXAS_HELD_OUT_EVERY = 7  # paper 004's code: objects[::7] are the evaluation individuals
_TEXAS_NAME = re.compile(r"(?P<stem>[^_]+_\d+_(?P<subject>\d+)(?:_.*)?)_"
                         r"(?P<kind>Portrait|Range)\.png", re.IGNORECASE)


@dataclass(frozen=True)
class _Face:
    subject: str
    portrait: Path | None
    range: Path | None


def _texas_folder(root: Path) -> Path:
    folder = root / TEXAS_FOLDER
    return folder if folder.is_dir() else root


def _texas_faces(folder: Path) -> dict[str, _Face]:
    """stem → its individual and files, for every `*_Portrait.png` / `*_Range.png`."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: Texas-3DFRD folder not found")
    found: dict[str, dict] = {}
    for p in sorted(folder.iterdir()):
        if not p.name.lower().endswith(("_portrait.png", "_range.png")):
            continue
        match = _TEXAS_NAME.fullmatch(p.name)
        if match is None:
            raise ValueError(f"{p}: name does not follow <prefix>_<image>_<subject>_…"
                             f"_Portrait.png / _Range.png; cannot tell the individual")
        face = found.setdefault(match["stem"], {"subject": match["subject"]})
        face[match["kind"].lower()] = p
    if not found:
        raise ValueError(f"{folder}: no Texas-3DFRD images; expected <stem>_Portrait.png and "
                         f"<stem>_Range.png files")
    return {stem: _Face(f["subject"], f.get("portrait"), f.get("range"))
            for stem, f in found.items()}


def texas_subject_splits(subjects: list[str]) -> dict[str, list[str]]:
    """Paper 004's individuals per split: every 7th held out, the rest alternated RGB/depth."""
    ordered = sorted(set(subjects))
    held_out = ordered[::TEXAS_HELD_OUT_EVERY]
    train = [s for s in ordered if s not in held_out]
    return {"train_rgb": train[::2], "train_depth": train[1::2], "eval": held_out}


def _texas_index(root: Path, split: str) -> list[str]:
    _check_split("texas-3dfrd", split, TEXAS_SPLITS)
    folder = _texas_folder(Path(root))
    faces = _texas_faces(folder)
    chosen = set(texas_subject_splits([f.subject for f in faces.values()])[split])
    mine = {stem: f for stem, f in faces.items() if f.subject in chosen}
    if split == "eval":
        lacking = sorted(stem for stem, f in mine.items() if f.portrait is None or f.range is None)
        if lacking:
            raise ValueError(f"{folder}: evaluation pairs need both <stem>_Portrait.png and "
                             f"<stem>_Range.png; incomplete: {lacking[:5]}")
        return sorted(mine)
    field, prefix = ("portrait", "rgb") if split == "train_rgb" else ("range", "depth")
    return sorted(f"{prefix}/{stem}" for stem, f in mine.items() if getattr(f, field))


def read_range(path: Path) -> np.ndarray:
    """A Texas-3DFRD range image → (H, W) float32 in [0, 1] (8-bit / 255, 16-bit / 65535)."""
    with _image(path, "range image") as image:
        mode, raw = image.mode, np.asarray(image)
    full = {"L": 255, "I;16": 65535, "I;16B": 65535, "I;16L": 65535}.get(mode)
    if mode == "I" and raw.size and raw.min() >= 0 and raw.max() <= 65535:
        full = 65535  # older Pillow opens 16-bit grey PNGs as 32-bit "I"
    if full is None:
        raise ValueError(f"{path}: range image is mode {mode}; expected 8-bit (or 16-bit) "
                         f"greyscale")
    return (raw.astype(np.float64) / full).astype(np.float32)


def _texas_read(root: Path, key: str) -> Sample:
    root = Path(root)
    modality, stem = _modality(key, "texas-3dfrd")
    folder = _texas_folder(root)
    rgb = depth = portrait = range_path = None
    if modality in ("paired", "rgb"):
        portrait = _find(folder, f"{stem}_Portrait", (".png",), "Texas-3DFRD portrait")
        rgb = read_rgb(portrait)
    if modality in ("paired", "depth"):
        range_path = _find(folder, f"{stem}_Range", (".png",), "Texas-3DFRD range image")
        depth = read_range(range_path)
        if rgb is not None:
            _same_size(rgb, depth, portrait, range_path)
    return Sample(key, rgb, depth, _source(root, *(p for p in (portrait, range_path) if p)))


READERS.register("texas-3dfrd")(Reader(_texas_index, _texas_read, TEXAS_SPLITS))


# ---------------------------------------------------------------- SURREAL

SURREAL_SPLITS = ("train_rgb", "train_depth", "eval")
SURREAL_FOLDERS = {"train_rgb": "train", "train_depth": "train", "eval": "test"}
SURREAL_HALF_RANGE = 0.4725  # m: paper 004 keeps depth − median within ±0.4725
SURREAL_BACKGROUND_MIN = 1e9  # SURREAL writes 1e10 m where no body is; anything this far counts
# Blender camera of the SURREAL renders: f = 60 mm on a 32 mm sensor, 320x240 px
SURREAL_INTRINSICS = _matrix(600.0, 600.0, 160.0, 120.0)
SURREAL_SIZE = (240, 320)
_DEPTH_VARIABLE = re.compile(r"depth_(\d+)")


@dataclass(frozen=True)
class SurrealOptions:
    """Which SURREAL frames make the splits, and how depth is encoded.

    Paper 004: 2500 training clips, 20 RGB and 20 other depth frames of each (chosen
    evenly over the sorted clips and each clip's frames here; the paper draws them at
    random), the middle frame of every test clip for evaluation, depth relative to the
    body's median. `relative=False` gives camera distance in metres, background NaN.
    """

    train_clips: int = 2500
    frames_per_clip: int = 20
    relative: bool = True

    def __post_init__(self) -> None:
        for field in ("train_clips", "frames_per_clip"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"SurrealOptions.{field} = {value!r}; expected an integer > 0")


def _surreal_clips(root: Path, folder: str) -> list[str]:
    """Clip paths relative to root, without suffix: '<folder>/<run>/<seq>/<clip>'."""
    base = root / folder
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: SURREAL {folder} folder not found")
    clips = sorted(p.relative_to(root).with_suffix("").as_posix()
                   for p in base.glob("run*/*/*.mp4"))
    if not clips:
        raise ValueError(f"{base}: no SURREAL clips; expected run*/<sequence>/<clip>.mp4 with "
                         f"<clip>_depth.mat beside each")
    return clips


def surreal_frame_count(mat: Path) -> int:
    """T of a `<clip>_depth.mat` holding depth_1 … depth_T (read from its header only)."""
    if not mat.is_file():
        raise FileNotFoundError(f"{mat}: SURREAL depth .mat not found (the partner of "
                                f"{mat.name.removesuffix('_depth.mat')}.mp4)")
    from scipy.io import whosmat

    try:
        names = [entry[0] for entry in whosmat(mat)]
    except Exception as e:  # scipy raises several types for non-MATLAB files
        raise ValueError(f"{mat}: unreadable SURREAL depth .mat ({e}); expected a MATLAB v5 "
                         f"file with depth_1 … depth_T") from e
    frames = sorted(int(m[1]) for n in names if (m := _DEPTH_VARIABLE.fullmatch(n)))
    if not frames or frames != list(range(1, len(frames) + 1)):
        raise ValueError(f"{mat}: depth variables {frames[:5]}…; expected depth_1 … depth_T")
    return len(frames)


def disjoint_frames(count: int, per_modality: int) -> tuple[list[int], list[int]]:
    """(RGB frames, depth frames): disjoint, interleaved, spread evenly over `count` frames."""
    n = min(per_modality, count // 2)
    chosen = _spread(count, 2 * n)
    return chosen[0::2], chosen[1::2]


def _surreal_index(root: Path, split: str, options: SurrealOptions) -> list[str]:
    root = Path(root)
    _check_split("surreal", split, SURREAL_SPLITS)
    clips = _surreal_clips(root, SURREAL_FOLDERS[split])
    if split == "eval":
        return sorted(f"{c}/{surreal_frame_count(root / f'{c}_depth.mat') // 2:03d}"
                      for c in clips)
    keys = []
    for i in _spread(len(clips), options.train_clips):
        count = surreal_frame_count(root / f"{clips[i]}_depth.mat")
        rgb, depth = disjoint_frames(count, options.frames_per_clip)
        frames, prefix = (rgb, "rgb") if split == "train_rgb" else (depth, "depth")
        keys += [f"{prefix}/{clips[i]}/{f:03d}" for f in frames]
    return sorted(keys)


def _import_av(path: Path):
    try:
        import av
    except ImportError as e:
        raise ImportError(f"reading {path} needs PyAV: pip install 'depthlab[video]' "
                          f"(or pip install av)") from e
    return av


@functools.lru_cache(maxsize=1)  # keys are sorted by clip: a clip's frames come one after another
def _decoded(path: str, mtime_ns: int, size: int) -> tuple[np.ndarray, ...]:
    av = _import_av(Path(path))
    try:
        with av.open(path) as container:
            frames = tuple(f.to_ndarray(format="rgb24")
                           for f in container.decode(container.streams.video[0]))
    except Exception as e:  # PyAV raises av.error.*; IndexError when there is no video stream
        raise ValueError(f"{path}: unreadable video ({e}); expected an MP4 with a video "
                         f"stream") from e
    for frame in frames:
        frame.setflags(write=False)  # cached: nobody may change it
    return frames


def read_video_frame(path: Path, index: int) -> np.ndarray:
    """Frame `index` (0-based) of a video → (H, W, 3) uint8."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: SURREAL video not found")
    info = path.stat()
    frames = _decoded(str(path), info.st_mtime_ns, info.st_size)
    if not 0 <= index < len(frames):
        raise ValueError(f"{path}: has {len(frames)} frames; frame {index} (0-based) was asked "
                         f"for")
    return frames[index].copy()


def relative_to_body(metres: np.ndarray) -> np.ndarray:
    """Paper 004: depth − median(body), clipped to ±0.4725 m; background → −0.4725.

    NaN marks background in `metres`; a frame without body pixels has nothing to
    centre on and comes back all NaN (Parquet preparation skips and counts it).
    """
    body = np.isfinite(metres)
    if not body.any():
        return np.full(metres.shape, np.nan, np.float32)
    relative = np.clip(metres - np.median(metres[body]), -SURREAL_HALF_RANGE,
                       SURREAL_HALF_RANGE)
    return np.where(body, relative, -SURREAL_HALF_RANGE).astype(np.float32)


def read_surreal_depth(mat: Path, frame: int, relative: bool = True) -> np.ndarray:
    """`depth_<frame+1>` of a SURREAL `_depth.mat` → (H, W) float32, as `relative` says."""
    name = f"depth_{frame + 1}"
    raw = _loadmat(mat, "SURREAL depth .mat", [name]).get(name)
    if raw is None:
        raise ValueError(f"{mat}: no variable {name!r} (frame {frame}, 0-based); expected "
                         f"depth_1 … depth_T")
    raw = np.asarray(raw)
    if raw.ndim != 2 or not np.issubdtype(raw.dtype, np.number):
        raise ValueError(f"{mat}: {name} is {raw.dtype} {raw.shape}; expected (H, W) metres")
    raw = raw.astype(np.float64)
    if not np.isfinite(raw).all() or (raw < 0).any():
        raise ValueError(f"{mat}: {name} holds NaN, inf or negative values; expected metres "
                         f">= 0 with 1e10 for background")
    metres = np.where(raw >= SURREAL_BACKGROUND_MIN, np.nan, raw)
    return relative_to_body(metres) if relative else metres.astype(np.float32)


def _surreal_read(root: Path, key: str, options: SurrealOptions) -> Sample:
    root = Path(root)
    modality, rest = _modality(key, "surreal")
    clip, _, frame_text = rest.rpartition("/")
    if not clip or not frame_text.isdigit():
        raise ValueError(f"surreal key {key!r}; expected '[rgb/|depth/]<folder>/<run>/<seq>/"
                         f"<clip>/<frame>'")
    frame = int(frame_text)
    video, mat = root / f"{clip}.mp4", root / f"{clip}_depth.mat"
    rgb = read_video_frame(video, frame) if modality in ("paired", "rgb") else None
    depth = (read_surreal_depth(mat, frame, options.relative)
             if modality in ("paired", "depth") else None)
    if rgb is not None and depth is not None:
        _same_size(rgb, depth, video, mat)
    size = (rgb if rgb is not None else depth).shape[:2]
    paths = [p for p, used in ((video, rgb is not None), (mat, depth is not None)) if used]
    # the depth is rendered by the same camera, so the intrinsics hold for either modality
    return Sample(key, rgb, depth, _source(root, *paths),
                  SURREAL_INTRINSICS if size == SURREAL_SIZE else None)


def surreal_reader(options: SurrealOptions = SurrealOptions()) -> Reader:
    """SURREAL clips (splits train_rgb, train_depth, eval) chosen and encoded as `options` say."""
    return Reader(partial(_surreal_index, options=options),
                  partial(_surreal_read, options=options), SURREAL_SPLITS)


READERS.register("surreal")(surreal_reader())


# ---------------------------------------------------------------- folder readers per unit

# "relative": a 16-bit PNG's full scale (65535) is 1.0, as matplotlib's imread reads it
_FOLDER_SCALE = {"relative": 1 / 65535}
FOLDER_READERS = {unit: "folder" if unit == "mm" else f"folder-{unit}" for unit in UNITS}
for _unit, _name in FOLDER_READERS.items():
    if _name != "folder":  # readers.py registers the millimetre one
        READERS.register(_name)(folder_reader(FolderOptions(
            unit=_unit, scale=_FOLDER_SCALE.get(_unit, 1.0))))


def with_folder_unit(entry: CatalogEntry, unit: str) -> CatalogEntry:
    """`entry` with its folder depth PNGs read in `unit` (`depthlab data prepare --unit`).

    A changed unit gets its own version ("1-m"), so builds in different units of the
    same folder never share a directory (a cached build is reused by version).
    """
    if unit not in UNITS:
        raise ValueError(f"unit {unit!r}; expected one of {', '.join(UNITS)}")
    if entry.reader not in FOLDER_READERS.values():
        how = f"read by {entry.reader!r}" if entry.reader else f"generated ({entry.generator})"
        raise ValueError(f"--unit applies to datasets read by the folder reader; "
                         f"{entry.name!r} is {how}, whose unit is fixed")
    if entry.reader == FOLDER_READERS[unit] and entry.depth_unit == unit:
        return entry
    full_scale = 65535 * _FOLDER_SCALE.get(unit, 1.0)
    return replace(entry, reader=FOLDER_READERS[unit], depth_unit=unit,
                   depth_range=(0.0, full_scale), version=f"{entry.version}-{unit}")
