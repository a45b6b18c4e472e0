"""How fast is paper 003's depth transfer? Per-query latency and throughput, measured side by
side on one index of synthetic rooms (795 at 160x120 by default, NYU v2's training size):

1. vectorised: `KnnTransfer.transfer` — retrieval as one matmul of centred-unit
   descriptors, top-k and threshold, fusion ignoring holes, the joint bilateral filter
   as one batched pass per window offset (torch, no per-pixel Python).
2. per-pair loop: the straightforward implementation — `np.corrcoef` for every (query,
   training image) pair, a Python sort, fusion and the bilateral filter pixel by pixel
   (each window as a NumPy array), on `--slow-queries` queries; its outputs are checked
   against the vectorised ones.

Both exclude the query's feature extraction (descriptors are computed once, before
timing; the ResNet pass is timed on its own). One torch thread, so figures are per core.
Goals (CPU, 795 index, 160x120): vectorised >= 50x the loop and < 50 ms per query.

`--quality` adds how good the random-init features are: test-room RMSE of depth transfer
with them, against the constant predictor, random neighbours, tiny-image pixels as the
descriptor, and an oracle that retrieves by the ground-truth depth maps.

    python benchmarks/knn_transfer.py                  # 795 rooms at 160x120 (~2 min)
    python benchmarks/knn_transfer.py --quality        # and the feature-quality table
    python benchmarks/knn_transfer.py --tiny           # CI: 64 rooms at 32x32, seconds

Measured on the shared 2-core development VM (AMD EPYC, 1 thread, 795 x 160x120, 32768-d),
three runs: loop 322-330 ms vs vectorised 6.2-6.5 ms per query, 50-52x (retrieval 21-22x,
fusion 85-87x, filter 90-95x); 280-380 queries/s in batches of 32.
"""

import argparse
import math
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from depthlab.config import TrainSettings
from depthlab.data import rooms
from depthlab.data.datasets import SplitArrays
from depthlab.loop import score
from depthlab.methods.knn_transfer import Config, KnnTransfer
from depthlab.methods.protocol import DataInfo
from depthlab.nn.knn import (
    LUMA,
    centred_unit,
    fuse,
    fusion_weights,
    joint_bilateral,
    resize_depth,
    retrieve,
)
from depthlab.nn.optim import Stepper

TEST_SEED = 100_000  # synthetic-rooms' test seed offset: queries never in the index


def rooms_split(count: int, size: tuple[int, int], seed_offset: int) -> SplitArrays:
    """`count` rooms rendered at `size` (H, W), as a prepared split holds them."""
    images, depth = zip(*(rooms.generate(seed_offset + i, size) for i in range(count)),
                        strict=True)
    return SplitArrays(np.stack(images), np.stack(depth).astype(np.float32),
                       [str(seed_offset + i) for i in range(count)])


def as_images(split: SplitArrays) -> torch.Tensor:
    return torch.from_numpy(split.images).permute(0, 3, 1, 2).float() / 255  # (N, 3, H, W)


# ---------------------------------------------------------------- the per-pair reference

def loop_retrieve(query: np.ndarray, index: np.ndarray, c: Config) -> dict[int, float]:
    """{neighbour: weight} from `np.corrcoef` per (query, training image) pair."""
    r = [np.corrcoef(query, row)[0, 1] for row in index]
    order = sorted(range(len(r)), key=lambda i: -r[i])[: c.k]
    kept = [i for i in order if r[i] > c.threshold] or order[:1]
    return {i: max(r[i], 1e-6) for i in kept}  # eq. 2 ("correlation" weighting)


def loop_fuse(weights: dict[int, float], depth: np.ndarray, size: tuple[int, int]
              ) -> np.ndarray:
    """The weighted mean pixel by pixel over the valid maps, resized (nearest) to `size`."""
    h, w = depth.shape[1:]
    fused = np.full((h, w), np.nan)
    for y in range(h):
        for x in range(w):
            num = den = 0.0
            for i, weight in weights.items():
                if math.isfinite(depth[i, y, x]):
                    num, den = num + weight * depth[i, y, x], den + weight
            if den > 0:
                fused[y, x] = num / den
    rows = np.floor(np.arange(size[0]) * h / size[0]).astype(int)  # as F.interpolate nearest
    cols = np.floor(np.arange(size[1]) * w / size[1]).astype(int)
    return fused[rows][:, cols]


def loop_filter(fused: np.ndarray, image: np.ndarray, c: Config) -> np.ndarray:
    """The cross bilateral filter pixel by pixel, each window as a NumPy array; holes
    filled with the mean."""
    big_h, big_w = fused.shape
    grey = image @ np.array(LUMA)
    radius = c.window // 2
    out = np.full((big_h, big_w), np.nan)
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    space = (yy**2 + xx**2) / (2 * c.sigma_space**2)
    for y in range(big_h):
        for x in range(big_w):
            y0, y1 = max(0, y - radius), min(big_h, y + radius + 1)
            x0, x1 = max(0, x - radius), min(big_w, x + radius + 1)
            patch, guide = fused[y0:y1, x0:x1], grey[y0:y1, x0:x1]
            s = space[y0 - y + radius:y1 - y + radius, x0 - x + radius:x1 - x + radius]
            weight = np.exp(-(s + (guide - grey[y, x]) ** 2 / (2 * c.sigma_color**2)))
            weight = np.where(np.isfinite(patch), weight, 0.0)
            if weight.sum() > 0:
                out[y, x] = (weight * np.nan_to_num(patch)).sum() / weight.sum()
    return np.where(np.isfinite(out), out, np.nanmean(out))


# ---------------------------------------------------------------- timing

def median_seconds(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def build(config: Config, size: tuple[int, int], train: SplitArrays) -> tuple[KnnTransfer, float]:
    """The method with `train` indexed into an empty cache folder (so the build is timed),
    and the build's seconds."""
    info = DataInfo("synthetic-rooms", "1", (0.0, 10.0), "m", 1.0, size)
    method = KnnTransfer(config, TrainSettings(), info, torch.device("cpu"), Stepper())
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        method.fit_data(train, Path(cache))
        return method, time.perf_counter() - started


def raw_descriptors(method: KnnTransfer, images: torch.Tensor) -> torch.Tensor:
    """Concatenated tile features before centring (what the loop's np.corrcoef gets)."""
    from depthlab.methods.supervised import imagenet_normalise

    with torch.no_grad():
        return torch.cat([method.features(imagenet_normalise(images[i:i + 16]))
                          for i in range(0, len(images), 16)])


# ---------------------------------------------------------------- feature quality

def quality(method: KnnTransfer, train: SplitArrays, test: SplitArrays, size) -> None:
    """Test RMSE of transfer with several descriptors (all keep k = 4 neighbours)."""
    info = DataInfo("synthetic-rooms", "1", (0.0, 10.0), "m", 1.0, size)
    images, truth = as_images(test), torch.from_numpy(test.depth)[:, None]
    g = torch.Generator().manual_seed(0)

    def thumbs(split_images: torch.Tensor) -> torch.Tensor:  # 8x8 RGB, as in tiny images
        return F.interpolate(split_images, size=(8, 8), mode="area").flatten(1)

    def depths(d: np.ndarray) -> torch.Tensor:
        return F.interpolate(torch.from_numpy(d)[:, None], size=(15, 20), mode="area").flatten(1)

    index_desc, query_desc = method.index.descriptors, method.describe(images)
    variants = {
        "constant (training mean)": None,
        "random neighbours": (torch.randn(len(train), 64, generator=g),
                              torch.randn(len(test), 64, generator=g)),
        "tiny-image pixels (8x8 RGB)": (thumbs(as_images(train)), thumbs(images)),
        "random-init ResNet-50 tiles": (index_desc, query_desc),
        "oracle: retrieval by true depth": (depths(train.depth), depths(test.depth)),
    }
    rows = {}
    for name, pair in variants.items():
        if pair is None:
            pred = torch.full_like(truth, float(np.nanmean(train.depth)))
        else:
            probe = KnnTransfer(replace(method.config, threshold=-1.0), TrainSettings(), info,
                                torch.device("cpu"), Stepper())
            probe.load_state_dict({"features": method.features.state_dict(), "index": {
                "descriptors": centred_unit(pair[0]), "depth": torch.from_numpy(train.depth)}})
            pred = probe.transfer(centred_unit(pair[1]), images)
        rows[name] = score(pred, truth, info)
    print(f"\nfeature quality on {len(test)} test rooms (k = 4, no threshold, same filter):")
    print(f"  {'descriptor':34s} {'rmse_m':>7s} {'abs_rel':>7s} {'corr':>6s}")
    for name, m in rows.items():
        print(f"  {name:34s} {m['rmse_m']:7.3f} {m['abs_rel']:7.3f} {m['corr']:6.3f}")
    const, ours = rows["constant (training mean)"]["rmse_m"], \
        rows["random-init ResNet-50 tiles"]["rmse_m"]
    oracle = rows["oracle: retrieval by true depth"]["rmse_m"]
    print(f"random ResNet features close {(const - ours) / (const - oracle):.0%} of the RMSE "
          f"gap between the constant predictor and retrieval by true depth")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=int, default=795, help="indexed rooms (default 795)")
    parser.add_argument("--size", default="120x160", help="HxW (default 120x160)")
    parser.add_argument("--queries", type=int, default=32, help="batch for throughput")
    parser.add_argument("--slow-queries", type=int, default=2,
                        help="queries run through the per-pair loop (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--quality", action="store_true", help="also the feature-quality table")
    parser.add_argument("--tiny", action="store_true", help="CI: 64 rooms at 32x32")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    config = Config(tile_size=32)  # the default budget's features: full width, 32 px tiles
    if args.tiny:
        args.index, size, args.queries, args.slow_queries = 64, (32, 32), 4, 1
        config = Config(width=0.125, tile_size=16, window=5)
    torch.set_num_threads(args.threads)

    train = rooms_split(args.index, size, 0)
    test = rooms_split(max(args.queries, args.slow_queries), size, TEST_SEED)
    method, build_s = build(config, size, train)
    images = as_images(test)
    query = method.describe(images)  # (Q, D), outside every timing below

    one = median_seconds(lambda: method.transfer(query[:1], images[:1]), repeats=10)
    batch = median_seconds(lambda: method.transfer(query, images), repeats=3)
    describe = median_seconds(lambda: method.describe(images[:1]), repeats=5)
    c, index = config, method.index
    neighbours = retrieve(query[:1], index.descriptors, c.k, c.threshold, c.fallback)
    weights = fusion_weights(neighbours, c.weighting, c.temperature)
    fused = resize_depth(fuse(index.depth, neighbours, weights), size)
    fast = {"retrieval": median_seconds(lambda: retrieve(
                query[:1], index.descriptors, c.k, c.threshold, c.fallback), repeats=10),
            "fusion": median_seconds(lambda: fuse(index.depth, neighbours, weights), 10),
            "filter": median_seconds(lambda: joint_bilateral(
                fused, images[:1], c.sigma_space, c.sigma_color, c.window), repeats=10)}

    raw_index = raw_descriptors(method, as_images(train)).double().numpy()
    raw_query = raw_descriptors(method, images).double().numpy()
    rgb = images.permute(0, 2, 3, 1).double().numpy()
    depth = train.depth.astype(np.float64)
    slow = {"retrieval": [], "fusion": [], "filter": []}
    worst = 0.0
    for q in range(args.slow_queries):
        started = time.perf_counter()
        loop_weights = loop_retrieve(raw_query[q], raw_index, config)
        fused_at = time.perf_counter()
        loop_fused = loop_fuse(loop_weights, depth, size)
        filter_at = time.perf_counter()
        reference = loop_filter(loop_fused, rgb[q], config)
        done = time.perf_counter()
        for key, seconds in (("retrieval", fused_at - started), ("fusion", filter_at - fused_at),
                             ("filter", done - filter_at)):
            slow[key].append(seconds)
        ours = method.transfer(query[q:q + 1], images[q:q + 1])[0, 0].double().numpy()
        worst = max(worst, float(np.abs(ours - reference).max()))
    slow = {key: statistics.median(v) for key, v in slow.items()}
    loop = sum(slow.values())

    print(f"synthetic rooms {size[0]}x{size[1]}, index of {args.index}, descriptor "
          f"{query.shape[1]}-d (grid {config.grid}, {config.layer}, {config.tile_size} px "
          f"tiles, width {config.width}), k {config.k}, window {config.window}, "
          f"{args.threads} torch thread(s)")
    print(f"index build (ResNet on {args.index * config.grid**2} tiles)  {build_s:8.2f} s")
    print(f"query features (1 image, excluded below)        {describe * 1e3:8.1f} ms")
    title = f"per query, batch 1 (loop: median of {args.slow_queries})"
    print(f"  {title:44s} {'loop ms':>8s} {'vectorised ms':>14s} {'ratio':>6s}")
    for key in ("retrieval", "fusion", "filter"):
        print(f"  {key:44s} {slow[key] * 1e3:8.1f} {fast[key] * 1e3:14.2f} "
              f"{slow[key] / fast[key]:6.0f}x")
    print(f"  {'whole transfer':44s} {loop * 1e3:8.1f} {one * 1e3:14.2f} {loop / one:6.0f}x"
          f"  (max |difference| {worst:.2g} m)")
    print(f"vectorised, batch of {len(images)}                        "
          f"{len(images) / batch:8.1f} queries/s ({batch / len(images) * 1e3:.1f} ms each)")
    if args.quality:
        quality(method, train, rooms_split(128 if not args.tiny else 8, size, TEST_SEED + 1000),
                size)
    print(f"\nknn_transfer: vectorised {loop / one:.0f}x the per-pair loop per query "
          f"(goal >= 50x), {one * 1e3:.1f} ms per query (goal < 50 ms), "
          f"{len(images) / batch:.0f} queries/s batched")
    return 0


if __name__ == "__main__":
    sys.exit(main())
