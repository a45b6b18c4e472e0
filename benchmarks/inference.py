"""How much does `depthlab predict` cost beyond the network? Images/s of its prediction path
next to a bare forward pass of the same model on the same decoded images, batch 8.

The model is a depthlab checkpoint (random weights, the CPU budget's fcn_vgg: width 1/4
at 96x128 by default) rebuilt by `depthlab.models.load`, as `predict` loads it. Inputs
are decoded RGB images at a photo size other than the model's (1.25x by default). Timed,
round by round, interleaved so both see the same machine load:

1. bare: `model(x)` on the batch already resized to the model's input and stacked as a
   float tensor (done once, before timing).
2. depthlab: `predict.predict_batch` + `predict.to_millimetres` from the decoded uint8
   images: resize in (as the training data was), forward, bilinear back to each image's
   size, uint16 millimetres. This is the ratio the goal is about (>= 0.9x).
3. files (for reference): `predict.predict_files` on PNG files, i.e. also PNG decode,
   the 16-bit and colour PNG encodes and their writes (no point cloud).

Rates are images per CPU second of this process with one torch thread (the median
round): on a shared machine the wall clock mostly measures the other users, so it is
printed beside them, not used for the ratio.

    python benchmarks/inference.py                 # ~1 min on 2 cores
    python benchmarks/inference.py --tiny          # CI: seconds
    python benchmarks/inference.py --width 1 --size 240x320 --photo 480x640

Measured on the shared 2-core development VM (load average 14-18 from other users),
defaults, three runs: bare 126-131 images/s, depthlab 114-121 (0.88x, 0.93x, 0.95x);
with PNG decode and encode 88-93 (0.69-0.71x). The prediction path adds ~2 ms of CPU per
batch of 8 (resize in 1.1, bilinear back 0.3, millimetres 0.4) to a ~60 ms forward pass;
the fastest rounds of the two paths are equal (51.0 vs 50.4 ms), the spread is the load.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from depthlab import checkpoint, models
from depthlab.config import TrainSettings, from_dict, to_dict
from depthlab.methods import METHODS, DataInfo
from depthlab.nn.optim import Stepper
from depthlab.predict import model_input, predict_batch, predict_files, to_millimetres

BATCH = 8


def _size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def build_model(width: float, size: tuple[int, int], folder: Path) -> models.DepthModel:
    """A random-weight fcn_vgg saved as a depthlab checkpoint and loaded back by depthlab."""
    cls = METHODS["fcn_vgg"]
    config = from_dict(cls.Config, dict(width=width, decoder_init="kaiming"))
    data = DataInfo("synthetic-rooms", "1", (0.0, 10.0), "m", 1.0, size, max_depth_m=10.0)
    torch.manual_seed(0)
    method = cls(config, TrainSettings(), data, torch.device("cpu"), Stepper())
    weights = {n: net.state_dict() for n, net in method.networks().items()}
    path = checkpoint.save(folder / "model.pt", method="fcn_vgg", config=to_dict(config),
                           settings=to_dict(TrainSettings()), dataset="synthetic-rooms@1",
                           state=weights, step=0, data=data.__dict__)
    return models.load(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=0.25, help="VGG width multiplier")
    parser.add_argument("--size", type=_size, default=(96, 128), help="model input HxW")
    parser.add_argument("--photo", type=_size, help="input image HxW (default: 1.25x size)")
    parser.add_argument("--images", type=int, default=32, help="images per round")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds per path")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: figures "
                        "per core, steady on a shared machine)")
    parser.add_argument("--tiny", action="store_true", help="CI: width 1/8, 64x64, 8 images, "
                        "2 rounds")
    args = parser.parse_args(argv)
    if args.tiny:
        args.width, args.size, args.images, args.rounds = 0.125, (64, 64), 8, 2
    photo = args.photo or (round(args.size[0] * 1.25), round(args.size[1] * 1.25))
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*photo, 3), dtype=np.uint8) for _ in range(args.images)]
    chunks = [images[i:i + BATCH] for i in range(0, len(images), BATCH)]

    with tempfile.TemporaryDirectory(prefix="depthlab-inference-") as tmp:
        folder = Path(tmp)
        model = build_model(args.width, args.size, folder)
        inputs = [torch.stack([model_input(im, model.input_size) for im in c]) for c in chunks]
        files = []
        for i, image in enumerate(images):
            files.append(folder / f"in{i:03d}.png")
            Image.fromarray(image).save(files[-1])

        def bare() -> None:
            for x in inputs:
                model(x)

        def depthlab() -> None:
            for chunk in chunks:
                for depth in predict_batch(model, chunk):
                    to_millimetres(depth)

        def from_files() -> None:
            predict_files(model, files, folder / "out", BATCH, progress=False)

        paths = {"bare": bare, "depthlab": depthlab, "files": from_files}
        for run in paths.values():  # warm-up: first-call allocations, colour map import
            run()
        cpu: dict[str, list[float]] = {name: [] for name in paths}
        wall: dict[str, list[float]] = {name: [] for name in paths}
        names = list(paths)
        for k in range(args.rounds):  # interleaved, order rotated: the same load for each
            for name in names[k % 3:] + names[:k % 3]:
                start, start_cpu = time.perf_counter(), time.process_time()
                paths[name]()
                cpu[name].append(time.process_time() - start_cpu)
                wall[name].append(time.perf_counter() - start)
    # CPU seconds, median round: on a shared machine the wall clock mostly measures the
    # other users' load (it is printed too, fastest and median round).
    rate = {name: args.images / statistics.median(t) for name, t in cpu.items()}
    ratio = rate["depthlab"] / rate["bare"]
    print(f"fcn_vgg width {args.width:g} at {args.size[0]}x{args.size[1]}, inputs "
          f"{photo[0]}x{photo[1]}, batch {BATCH}, {args.images} images x {args.rounds} "
          f"rounds, {torch.get_num_threads()} torch thread(s); images/s per CPU second "
          "(median round) | wall clock: fastest, median round")
    for name, value in rate.items():
        fastest, median = (args.images / f(wall[name]) for f in (min, statistics.median))
        print(f"  {name:9} {value:8.1f} | {fastest:8.1f} {median:8.1f}")
    print(f"inference: depthlab predict {rate['depthlab']:.1f} images/s vs bare model(x) "
          f"{rate['bare']:.1f} images/s at batch {BATCH}: {ratio:.2f}x (goal >= 0.9); with "
          f"PNG decode/encode {rate['files']:.1f} images/s ({rate['files'] / rate['bare']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
