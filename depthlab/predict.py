"""Depth from a trained model: `depthlab predict` (image files → 16-bit millimetre PNGs,
colour maps, point clouds) and `depthlab evaluate` (a catalog split → its metrics, logged
to MLflow as an evaluation run).

A model is named by `models:/<name>/<version>` (or `@alias`), `runs:/<run_id>/…` or a
local checkpoint file; every one is loaded from its depthlab checkpoint, never by
unpickling (see depthlab.models).
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from depthlab import models, tracking
from depthlab.catalog import CatalogEntry, load_entry
from depthlab.data.datasets import eval_batches, load_splits
from depthlab.data.readers import Sample, read_rgb
from depthlab.data.shards import prepare, resize_sample, scale_intrinsics
from depthlab.loop import evaluate, resolve_device
from depthlab.trial import EVAL_BATCH, data_info

MM_PER_M = 1000.0
MM_MAX = 65535  # what a uint16 PNG holds: depth beyond 65.535 m is written as this
PLY_FORMATS = ("binary", "ascii")


@dataclass(frozen=True)
class Source:
    """Where a model came from: the URI it was named by and its MLflow run (if known)."""

    model_uri: str
    run_id: str | None = None


def open_model(model_uri: str, tracking_uri: str | None = None,
               device: str | torch.device = "cpu") -> tuple[models.DepthModel, Source]:
    """Load a model by URI or checkpoint path (a downloaded MLflow model folder works too)."""
    if model_uri.startswith(("models:/", "runs:/")):
        uri = tracking.resolve_uri(tracking_uri)
        with tempfile.TemporaryDirectory(prefix="depthlab-model-") as folder:
            path, run_id = tracking.fetch_checkpoint(uri, model_uri, Path(folder),
                                                     models.CHECKPOINT_NAME)
            return models.load(path, device), Source(model_uri, run_id)
    if "://" in model_uri or model_uri.startswith(("s3:", "gs:")):
        raise ValueError(f"model {model_uri!r}: expected models:/<name>/<version>, "
                         "runs:/<run_id>/<path> or a checkpoint file")
    path = Path(model_uri).expanduser()
    if path.is_dir():  # an MLflow model folder, e.g. from `mlflow artifacts download`
        path = path / "extra_files" / models.CHECKPOINT_NAME
    return models.load(path, device), Source(model_uri)


# ---------------------------------------------------------------- depth of images

def model_input(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(H, W, 3) uint8 → (3, h, w) float in [0, 1] at the model's size, resampled as the
    training data was (shards.resize_sample)."""
    if image.shape[:2] != tuple(size):
        image = resize_sample(Sample("input", image, None, "input"), size).rgb
    if not image.flags.writeable:  # PIL's arrays are read-only; torch wants to own one
        image = image.copy()
    return torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)


def predict_batch(model: models.DepthModel, images: list[np.ndarray]) -> list[np.ndarray]:
    """Depth (H, W) float32 metres of each (H, W, 3) uint8 image at its own size: one
    forward pass at the model's input size, then bilinear back (as evaluation upsamples)."""
    batch = torch.stack([model_input(image, model.input_size) for image in images])
    depth = model(batch).float()  # (B, 1, h, w) on the model's device
    out = []
    for one, image in zip(depth, images, strict=True):
        if one.shape[-2:] != image.shape[:2]:
            one = F.interpolate(one[None], size=image.shape[:2], mode="bilinear",
                                align_corners=False)[0]
        out.append(one[0].cpu().numpy())
    return out


def to_millimetres(depth: np.ndarray) -> tuple[np.ndarray, int]:
    """Metres → uint16 millimetres, 0 = invalid (not finite or ≤ 0; positive depth under
    0.5 mm becomes 1); and how many pixels were clipped at 65 535 mm."""
    valid = np.isfinite(depth) & (depth > 0)
    mm = np.rint(np.where(valid, depth, 0.0) * MM_PER_M)
    clipped = int((mm > MM_MAX).sum())
    mm = np.where(valid, np.clip(mm, 1, MM_MAX), 0)
    return mm.astype(np.uint16), clipped


@cache
def _turbo() -> np.ndarray:
    from matplotlib import colormaps  # ~0.3 s: only when colouring

    return (colormaps["turbo"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


def colour_map(depth: np.ndarray) -> np.ndarray:
    """(H, W) depth → (H, W, 3) uint8 turbo colours over the image's own range (low blue,
    high red; relative depth may be negative); pixels that are not finite black."""
    valid = np.isfinite(depth)
    rgb = np.zeros((*depth.shape, 3), np.uint8)
    if valid.any():
        lo, hi = float(depth[valid].min()), float(depth[valid].max())
        index = np.clip((depth[valid] - lo) / (hi - lo or 1.0) * 255, 0, 255).astype(np.int64)
        rgb[valid] = _turbo()[index]
    return rgb


def millimetres_hold(data) -> bool:
    """Whether uint16 millimetres can hold the model's depth: absolute depth of at least
    0.1 m (not the relative µm depth of surfaces, paper 004)."""
    low, high = data.depth_range_m
    return not data.pooled and low >= 0 and high >= 0.1


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole camera of the input images, in their pixels; None = the default (below)."""

    fx: float | None = None
    fy: float | None = None
    cx: float | None = None
    cy: float | None = None

    def __post_init__(self) -> None:
        for name in ("fx", "fy"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"--{name} {value}: expected a focal length > 0 in pixels")

    def resolve(self, size: tuple[int, int], training: tuple[float, ...] | None
                ) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) for an image of `size`; each value given replaces its default,
        and fy defaults to a given fx. Defaults: `training`, the training dataset's camera
        scaled to the image when the catalog gives one (synthetic-rooms: NYU's Kinect),
        else fx = fy = max(H, W) (a ~53° field of view across the longer side) and the
        principal point at the image centre."""
        h, w = size
        if training is not None:
            fx0, fy0, cx0, cy0 = training[0], training[4], training[2], training[5]
        else:
            fx0 = fy0 = float(max(h, w))
            cx0, cy0 = (w - 1) / 2, (h - 1) / 2
        fx = self.fx if self.fx is not None else fx0
        fy = self.fy if self.fy is not None else (self.fx if self.fx is not None else fy0)
        return (fx, fy, self.cx if self.cx is not None else cx0,
                self.cy if self.cy is not None else cy0)


def training_camera(model: models.DepthModel, size: tuple[int, int]
                    ) -> tuple[float, ...] | None:
    """The catalog's camera of the model's training data scaled to `size`; None without one."""
    try:
        entry = load_entry(model.data.name)
    except (ValueError, FileNotFoundError):  # a dataset this catalog does not know
        return None
    if entry.intrinsics is None or entry.default_size is None:
        return None
    return scale_intrinsics(entry.intrinsics, tuple(entry.default_size), size)


def point_cloud(depth: np.ndarray, rgb: np.ndarray, k: tuple[float, float, float, float]
                ) -> np.ndarray:
    """Valid pixels as points: x right, y down, z forward (metres, camera frame) + rgb."""
    fx, fy, cx, cy = k
    v, u = np.nonzero(np.isfinite(depth) & (depth > 0))
    z = depth[v, u].astype(np.float64)
    points = np.empty(len(z), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                     ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    points["x"], points["y"], points["z"] = (u - cx) * z / fx, (v - cy) * z / fy, z
    points["red"], points["green"], points["blue"] = rgb[v, u].T
    return points


def ply_bytes(points: np.ndarray, binary: bool = True) -> bytes:
    """A PLY file (binary little-endian or ASCII) of `point_cloud`'s points."""
    header = ("ply\nformat " + ("binary_little_endian" if binary else "ascii") + " 1.0\n"
              f"element vertex {len(points)}\n"
              + "".join(f"property float {a}\n" for a in "xyz")
              + "".join(f"property uchar {c}\n" for c in ("red", "green", "blue"))
              + "end_header\n").encode()
    if binary:
        return header + points.tobytes()
    rows = (f"{p['x']:.6g} {p['y']:.6g} {p['z']:.6g} {p['red']} {p['green']} {p['blue']}\n"
            for p in points)
    return header + "".join(rows).encode()


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` then rename: a killed run leaves no half-written output."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _save_png(array: np.ndarray, path: Path) -> None:
    _write_atomically(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


class _Progress:
    """`done/total images, rate, ETA` on stderr: rewritten in place on a terminal, else a
    line every ~5 s; silent for a single batch."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.tty = total, enabled, sys.stderr.isatty()
        self.started = self.shown = time.perf_counter()

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if not self.enabled or not (self.tty or now - self.shown > 5 or done == self.total):
            return
        rate = done / (now - self.started)
        eta = (self.total - done) / rate if rate else 0
        text = f"predict: {done}/{self.total} images, {rate:.1f} images/s, ETA {eta:.0f} s"
        print(("\r" if self.tty else "") + text, end="" if self.tty else "\n",
              file=sys.stderr, flush=True)
        if self.tty and done == self.total:
            print(file=sys.stderr)
        self.shown = now


@dataclass
class Written:
    """What `predict_files` did: files written per image, unreadable images, clipped pixels."""

    outputs: dict[str, list[Path]] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)  # one message per unreadable image
    clipped: int = 0


def _chunks(items: list, n: int) -> Iterator[list]:
    for start in range(0, len(items), n):
        yield items[start:start + n]


def _check_stems(paths: list[Path]) -> None:
    """Outputs are named by stem: two inputs with one stem would overwrite each other."""
    seen: dict[str, Path] = {}
    for path in paths:
        if path.stem in seen:
            raise ValueError(f"{seen[path.stem]} and {path} share the name {path.stem!r}: "
                             "their outputs would overwrite each other; predict them into "
                             "separate --out folders")
        seen[path.stem] = path


def predict_files(model: models.DepthModel, paths: list[Path], out: Path, batch_size: int = 8,
                  ply: str | None = None, intrinsics: Intrinsics | None = None,
                  progress: bool = True, tiff: bool = False) -> Written:
    """Write `<stem>_depth.png` (uint16 mm, 0 = invalid), `<stem>_depth_color.png`, with
    `ply` ("binary" or "ascii") `<stem>.ply`, with `tiff` `<stem>_depth.tiff` (float32
    metres, NaN = invalid) for every image, `batch_size` images per forward pass. An
    unreadable image is reported in `failed` and gets no files; the others are written."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: expected a positive integer")
    if ply is not None and ply not in PLY_FORMATS:
        raise ValueError(f"ply format {ply!r}: expected one of {PLY_FORMATS}")
    paths = [Path(p) for p in paths]
    intrinsics = intrinsics or Intrinsics()
    _check_stems(paths)
    out.mkdir(parents=True, exist_ok=True)
    written, meter, done = Written(), _Progress(len(paths), progress and
                                                len(paths) > batch_size), 0
    for chunk in _chunks(paths, batch_size):
        images, readable = [], []
        for path in chunk:
            try:
                images.append(read_rgb(path))
                readable.append(path)
            except (ValueError, FileNotFoundError) as error:
                written.failed.append(str(error))
        depths = predict_batch(model, images) if images else []
        for path, image, depth in zip(readable, images, depths, strict=True):
            written.outputs[str(path)] = _write_outputs(model, path, image, depth, out, ply,
                                                        intrinsics, written, tiff)
        done += len(chunk)
        meter.update(done)
    return written


def _write_outputs(model, path: Path, image: np.ndarray, depth: np.ndarray, out: Path,
                   ply: str | None, intrinsics: Intrinsics, written: Written, tiff: bool
                   ) -> list[Path]:
    mm, clipped = to_millimetres(depth)
    written.clipped += clipped
    files = [out / f"{path.stem}_depth.png", out / f"{path.stem}_depth_color.png"]
    _save_png(mm, files[0])
    _save_png(colour_map(depth), files[1])
    if tiff:
        files.append(out / f"{path.stem}_depth.tiff")
        _write_atomically(files[-1], lambda tmp: Image.fromarray(
            depth.astype(np.float32)).save(tmp, format="TIFF"))
    if ply is not None:
        size = depth.shape
        k = intrinsics.resolve(size, training_camera(model, size))
        data = ply_bytes(point_cloud(depth, image, k), binary=ply == "binary")
        files.append(out / f"{path.stem}.ply")
        _write_atomically(files[-1], lambda tmp: tmp.write_bytes(data))
    return files


def predict_command(args: argparse.Namespace) -> int:
    """`depthlab predict`: depth PNGs (and point clouds) for image files."""
    model, _ = open_model(args.model, args.tracking_uri, resolve_device(args.device))
    print(f"model: {model.describe()}", file=sys.stderr)
    intrinsics = Intrinsics(args.fx, args.fy, args.cx, args.cy)
    ply = args.ply_format if args.ply else None
    tiff = args.tiff or not millimetres_hold(model.data)
    if tiff and not args.tiff:
        low, high = model.data.depth_range_m
        print(f"note: {model.data.name}'s depth ({low:.3g} to {high:.3g} m) does not fit "
              "millimetre PNGs: writing <stem>_depth.tiff (float32 metres) too",
              file=sys.stderr)
    written = predict_files(model, [Path(p) for p in args.images], Path(args.out),
                            args.batch_size, ply, intrinsics, tiff=tiff)
    print(f"wrote {len(written.outputs)} depth map(s) to {args.out} (<stem>_depth.png: uint16 "
          f"mm, 0 = invalid; <stem>_depth_color.png{'; <stem>.ply' if ply else ''}"
          f"{'; <stem>_depth.tiff: float32 m' if tiff else ''})")
    if written.clipped:
        print(f"note: {written.clipped} pixels beyond {MM_MAX / MM_PER_M:.3f} m were written "
              f"as {MM_MAX}", file=sys.stderr)
    if written.failed:
        raise ValueError(f"{len(written.failed)} of {len(args.images)} images could not be "
                         "read, nothing was written for them: " + "; ".join(written.failed))
    return 0


# ---------------------------------------------------------------- metrics on a dataset

def _paired_split(entry: CatalogEntry, split: str) -> None:
    paired = [s.name for s in entry.splits if s.modality == "paired"]
    if split not in paired:
        raise ValueError(f"--split {split!r}: {entry.name} has no paired split of that name "
                         f"(images with depth); its paired splits: {', '.join(paired) or 'none'}")


def evaluate_model(model: models.DepthModel, entry: CatalogEntry, split: str = "test",
                   source: str | None = None, data_dir: str | None = None,
                   limit: int | None = None) -> tuple[dict[str, float], int]:
    """The metrics of `loop.evaluate` (the dataset's protocol, as in a trial) on a split
    prepared at the model's input size, and the number of samples. `limit` = only the
    first N samples (the other splits are then built with one sample each)."""
    _paired_split(entry, split)
    counts = None
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit {limit}: expected >= 1")
        counts = {s.name: limit if s.name == split else 1 for s in entry.splits}
    path = prepare(entry, size=model.input_size, data_dir=data_dir, counts=counts,
                   source=source)
    samples = load_splits(path, (split,))
    info = data_info(entry, model.input_size)
    result = evaluate(model, eval_batches(samples, EVAL_BATCH), info, keep=0)
    return result.metrics, len(samples)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no inf


def evaluate_command(args: argparse.Namespace) -> int:
    """`depthlab evaluate`: a model's metrics on a catalog split, as a table or JSON,
    logged to MLflow as an evaluation run."""
    model, source = open_model(args.model, args.tracking_uri, resolve_device(args.device))
    entry = load_entry(args.data)
    metrics, count = evaluate_model(model, entry, args.split, args.source, args.data_dir,
                                    args.limit)
    h, w = model.input_size
    run_id = None
    if not args.no_log:
        uri = tracking.resolve_uri(args.tracking_uri)
        experiment = tracking.experiment_of(uri, source.run_id) if source.run_id else None
        run_id = tracking.log_evaluation(
            uri, experiment, f"evaluate {entry.name}/{args.split}",
            {"model_uri": args.model, "method": model.method_name,
             "dataset": f"{entry.name}@{entry.version}", "split": args.split,
             "samples": count, "image_size": f"{h}x{w}"},
            {f"{args.split}/{k}": v for k, v in metrics.items()},
            {tracking.EVALUATION_TAG: args.model, "depthlab.kind": "evaluation",
             "depthlab.source_run_id": source.run_id or "",
             "depthlab.method": model.method_name})
    if args.json:
        print(json.dumps({"model": args.model, "method": model.method_name,
                          "dataset": entry.name, "version": str(entry.version),
                          "split": args.split, "samples": count, "image_size": [h, w],
                          "metrics": {k: _finite_or_none(v) for k, v in metrics.items()},
                          "run_id": run_id, "source_run_id": source.run_id}))
        return 0
    print(f"{model.describe()}\n{entry.name}@{entry.version} split {args.split}: {count} "
          f"samples at {h}x{w}")
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        print(f"  {key.ljust(width)}  {value:.4g}")
    if run_id:
        print(f"evaluation run: {run_id}")
    return 0
