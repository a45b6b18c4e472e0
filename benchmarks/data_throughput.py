"""Does the data path keep up? Pairs per second on one core, measured side by side:

1. raw: decode the same samples from plain files (RGB PNG + uint16 depth PNG in mm),
   as a per-step file loader would (PIL decode + conversion to float metres).
2. depthlab load: read the Parquet shards and decode them (`load_split`), once per
   training process.
3. depthlab batches: draw augmented minibatches from the decoded split
   (`RandomBatches`), what every training step does: with random flips (papers 000,
   001), and with the heaviest presets, Eigen's rotation + flip + colour (002) and the
   surface zoom crop + flips + gamma (004).
4. consumption: what a training step of the default surface study uses (batches of
   the unpaired WGAN per second: n_f critic batches + 1 generator batch per step).

It prints ratios: batches vs raw decoding (goal >= 3x) and batches vs consumption
(goal >= 5x). One torch thread throughout, so the figures are per core.

    python benchmarks/data_throughput.py                    # synthetic-rooms 96x128, 256 pairs
    python benchmarks/data_throughput.py --size 192x256 --pairs 128
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from depthlab.catalog import load_entry
from depthlab.config import TrainSettings
from depthlab.data.datasets import RandomBatches, load_split
from depthlab.data.shards import prepare
from depthlab.data.transforms import AUGMENTATIONS
from depthlab.methods.protocol import DataInfo
from depthlab.methods.wgan_perceptual import Config, WganPerceptual
from depthlab.nn.optim import Stepper

PRESETS = ("flips", "eigen", "surface")


def write_raw_files(path: Path, split, folder: Path) -> list[tuple[Path, Path]]:
    """The split's samples as the files a user would bring: RGB PNG + uint16 mm PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for sample_id, rgb, depth in zip(split.ids, split.images, split.depth, strict=True):
        rgb_file, depth_file = folder / f"{sample_id}.png", folder / f"{sample_id}-depth.png"
        Image.fromarray(rgb).save(rgb_file)
        Image.fromarray(np.nan_to_num(depth * 1000).astype(np.uint16)).save(depth_file)
        pairs.append((rgb_file, depth_file))
    return pairs


def raw_decode(pairs: list[tuple[Path, Path]]) -> float:
    """Seconds to decode every pair from its files into float arrays."""
    started = time.perf_counter()
    for rgb_file, depth_file in pairs:
        rgb = np.asarray(Image.open(rgb_file).convert("RGB"), dtype=np.float32) / 255
        depth = np.asarray(Image.open(depth_file), dtype=np.float32) / 1000
        depth[depth == 0] = np.nan
        torch.from_numpy(rgb), torch.from_numpy(depth)
    return time.perf_counter() - started


def batches_per_second(split, batch_size: int, preset: str = "flips",
                       seconds: float = 3.0) -> float:
    """Pairs per second drawn as minibatches augmented by one of the papers' presets."""
    batches = RandomBatches(split, split, batch_size, seed=0,
                            augmentation=AUGMENTATIONS.get_or_raise(preset))
    drawn, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        next(batches)
        drawn += batch_size
    return drawn / (time.perf_counter() - started)


def consumption(steps: int = 4) -> tuple[float, int]:
    """Pairs per second a default-budget surface WGAN step consumes, and its batch size."""
    entry = load_entry("synthetic-surface")
    path = prepare(entry, (64, 64), data_dir=tempfile.mkdtemp(), progress=False,
                   counts={"train_rgb": 64, "train_depth": 64, "eval": 8})
    rgb, depth = load_split(path, "train_rgb"), load_split(path, "train_depth")
    config = Config(critic="patchgan", generator="resnet18", critic_width=16, generator_width=8,
                    critic_iters=5, critic_iters_after=5)
    info = DataInfo(entry.name, entry.version, entry.depth_range_m, entry.display_unit,
                    entry.display_scale, (64, 64))
    method = WganPerceptual(config, TrainSettings(steps=100), info, torch.device("cpu"),
                            Stepper())
    batches = RandomBatches(rgb, depth, config.batch_size, seed=0)
    method.train_step(batches, 50)  # warm-up
    started = time.perf_counter()
    for k in range(steps):
        method.train_step(batches, 50 + k)
    per_step = (time.perf_counter() - started) / steps
    return (config.critic_iters + 1) * config.batch_size / per_step, config.batch_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="96x128", help="HxW of the samples (default 96x128)")
    parser.add_argument("--pairs", type=int, default=256, help="samples (default 256)")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="data_throughput-"))
    entry = load_entry("synthetic-rooms")
    path = prepare(entry, size, data_dir=work / "data", progress=False,
                   counts={"train": args.pairs, "test": 1})

    started = time.perf_counter()
    split = load_split(path, "train")
    load_s = time.perf_counter() - started
    raw_s = raw_decode(write_raw_files(path, split, work / "raw"))
    n = len(split.ids)
    raw, loaded = n / raw_s, n / load_s
    batched = {preset: batches_per_second(split, 8, preset) for preset in PRESETS}
    consumed, batch = consumption()

    print(f"synthetic-rooms {size[0]}x{size[1]}, {n} pairs, 1 torch thread")
    print(f"raw PNG decode (rgb + uint16 depth)      {raw:10.0f} pairs/s")
    print(f"depthlab load (Parquet read + decode)    {loaded:10.0f} pairs/s  "
          f"({loaded / raw:.2f}x raw; once per training process)")
    for preset, rate in batched.items():
        print(f"depthlab batches ({preset:>7}, b={batch})     {rate:10.0f} pairs/s  "
              f"({rate / raw:.1f}x raw; goal >= 3x)")
    slowest = min(batched.values())
    print(f"default surface WGAN step consumes       {consumed:10.0f} pairs/s  "
          f"(the slowest batches supply {slowest / consumed:.0f}x that; goal >= 5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
