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
(goal >= 5x). One torch thread throughout, and time is this process's CPU time
(`time.process_time`), so the figures are per core and other processes' load does not
count as ours. Raw decoding and the batch streams are measured in interleaved rounds and
each keeps its best round, so what load still does (caches, memory bandwidth) spoils one
round rather than one side of a ratio.

With --prepare it also times `depthlab data prepare` (synthetic-rooms, fresh data dirs,
each in a fresh interpreter) with 1 and 2 worker processes and prints the wall-time
speedup, which needs idle cores, and the CPU seconds of all processes, which show what
the second worker costs (start-up: it imports depthlab, numpy and pyarrow).

    python benchmarks/data_throughput.py                    # synthetic-rooms 96x128, 256 pairs
    python benchmarks/data_throughput.py --size 192x256 --pairs 128
    python benchmarks/data_throughput.py --prepare          # + prepare of 500 samples, 1 vs 2
"""

import argparse
import os
import shutil
import subprocess
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
    started = time.process_time()
    for rgb_file, depth_file in pairs:
        rgb = np.asarray(Image.open(rgb_file).convert("RGB"), dtype=np.float32) / 255
        depth = np.asarray(Image.open(depth_file), dtype=np.float32) / 1000
        depth[depth == 0] = np.nan
        torch.from_numpy(rgb), torch.from_numpy(depth)
    return time.process_time() - started


def batches_per_second(batches: RandomBatches, pairs: int) -> float:
    """Pairs per second drawn from a stream of augmented minibatches, over about `pairs`."""
    count = max(1, pairs // batches.batch_size)
    started = time.process_time()
    for _ in range(count):
        next(batches)
    return count * batches.batch_size / (time.process_time() - started)


def interleaved_rates(pairs: list[tuple[Path, Path]], split, batch_size: int,
                      rounds: int) -> tuple[float, dict[str, float]]:
    """Best-of-rounds pairs/s of raw decoding and of each preset's batches, measured in turn,
    each over as many pairs as the raw files hold (so a burst of load is as likely to
    land on either side of a ratio)."""
    streams = {preset: RandomBatches(split, split, batch_size, seed=0,
                                     augmentation=AUGMENTATIONS.get_or_raise(preset))
               for preset in PRESETS}
    raw, batched = 0.0, dict.fromkeys(PRESETS, 0.0)
    for _ in range(rounds):
        raw = max(raw, len(pairs) / raw_decode(pairs))
        for preset, stream in streams.items():
            batched[preset] = max(batched[preset], batches_per_second(stream, len(pairs)))
    return raw, batched


# Run in a fresh interpreter with a lean __main__: spawned workers re-import the main
# module, and this one imports torch and a method (seconds per worker, not prepare's cost).
PREPARE = """
import resource, sys, time
from depthlab.data.shards import prepare
h, w, samples, workers, folder = sys.argv[1:]
started, cpu = time.perf_counter(), time.process_time()
prepare("synthetic-rooms", (int(h), int(w)), data_dir=folder, progress=False,
        counts={"train": int(samples), "test": 1}, workers=int(workers))
children = resource.getrusage(resource.RUSAGE_CHILDREN)
print(time.perf_counter() - started,
      time.process_time() - cpu + children.ru_utime + children.ru_stime)
"""


def prepare_seconds(size: tuple[int, int], samples: int, workers: int,
                    folder: Path) -> tuple[float, float]:
    """Wall and CPU seconds (all processes) to prepare synthetic-rooms from nothing into
    `folder` with `workers` processes, worker start-up included."""
    done = subprocess.run([sys.executable, "-c", PREPARE, *map(str, size), str(samples),
                           str(workers), str(folder)], capture_output=True, text=True,
                          check=True)
    wall, cpu = done.stdout.split()[-2:]
    return float(wall), float(cpu)


def consumption(folder: Path, steps: int = 4) -> tuple[float, int]:
    """Pairs per second a default-budget surface WGAN step consumes, and its batch size."""
    entry = load_entry("synthetic-surface")
    path = prepare(entry, (64, 64), data_dir=folder, progress=False,
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
    started = time.process_time()
    for k in range(steps):
        method.train_step(batches, 50 + k)
    per_step = (time.process_time() - started) / steps
    return (config.critic_iters + 1) * config.batch_size / per_step, config.batch_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="96x128", help="HxW of the samples (default 96x128)")
    parser.add_argument("--pairs", type=int, default=256, help="samples (default 256)")
    parser.add_argument("--rounds", type=int, default=10,
                        help="interleaved measuring rounds, best kept (default 10)")
    parser.add_argument("--prepare", action="store_true",
                        help="also time data prepare with 1 and 2 workers")
    parser.add_argument("--prepare-pairs", type=int, default=500,
                        help="samples for --prepare (default 500)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="data_throughput-"))
    try:
        report(args, tuple(int(v) for v in args.size.lower().split("x")), work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the prepared sets and raw files
    return 0


def report(args: argparse.Namespace, size: tuple[int, int], work: Path) -> None:
    """Measure and print every figure of the module docstring."""
    entry = load_entry("synthetic-rooms")
    path = prepare(entry, size, data_dir=work / "data", progress=False,
                   counts={"train": args.pairs, "test": 1})

    started = time.process_time()
    split = load_split(path, "train")
    load_s = time.process_time() - started
    n = len(split.ids)
    loaded = n / load_s
    consumed, batch = consumption(work / "surface")
    raw, batched = interleaved_rates(write_raw_files(path, split, work / "raw"), split, batch,
                                     args.rounds)

    print(f"synthetic-rooms {size[0]}x{size[1]}, {n} pairs, 1 torch thread, "
          f"CPU time, best of {args.rounds} interleaved rounds")
    print(f"raw PNG decode (rgb + uint16 depth)      {raw:10.0f} pairs/s")
    print(f"depthlab load (Parquet read + decode)    {loaded:10.0f} pairs/s  "
          f"({loaded / raw:.2f}x raw; once per training process)")
    for preset, rate in batched.items():
        print(f"depthlab batches ({preset:>7}, b={batch})     {rate:10.0f} pairs/s  "
              f"({rate / raw:.1f}x raw; goal >= 3x)")
    slowest = min(batched.values())
    print(f"default surface WGAN step consumes       {consumed:10.0f} pairs/s  "
          f"(the slowest batches supply {slowest / consumed:.0f}x that; goal >= 5x)")
    if args.prepare:
        # wall time: the speedup needs idle cores; CPU time shows what the workers add
        (one, one_cpu), (two, two_cpu) = (
            prepare_seconds(size, args.prepare_pairs, workers, work / f"prep{workers}")
            for workers in (1, 2))
        print(f"data prepare, {args.prepare_pairs} samples: 1 worker {one:.1f} s "
              f"({one_cpu:.1f} CPU-s), 2 workers {two:.1f} s ({two_cpu:.1f} CPU-s)  "
              f"{one / two:.2f}x; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.exit(main())
