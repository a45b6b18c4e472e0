"""Does depthlab's training loop cost anything beyond the step itself? Images per second of
each method's training step, measured side by side on the same network:

1. depthlab: `depthlab.loop.fit` running `method.train_step` as a trial runs it (the
   method built by `trial.build_method` from a `study.plan_for` plan, the `Stepper`, NaN
   checks, running means); evaluation is a stub, so only the training steps are timed.
2. bare: a plain PyTorch loop doing the same forward, loss, backward and optimizer
   step(s) on the same network objects and optimizers (`batch = next(loader);
   opt.zero_grad(); loss.backward(); opt.step()`, no loop machinery).

Both loops take their minibatches from the same pool, drawn and augmented beforehand by
`trial.training_batches` as a trial draws them, so both do the same work and the ratio
is the loop's cost. Drawing is data work, not loop work: it is timed on its own (the
"drawing batches" column, as a share of depthlab's step) and `data_throughput.py`
holds its goals.

Rounds of both alternate (so the load of a shared machine falls on both alike); one torch
thread (a Ray Train worker with one CPU). Rates are images per CPU second of this process
and the ratio is the median round's: on a shared machine wall time mostly measures the
other processes (the wall-time ratio is printed beside it). Goal: depthlab >= 0.95x bare
for every method.
Images per step count every batch a step consumes (n_f critic batches + 1 for the WGAN).

    python benchmarks/train_throughput.py                 # 64x64, batch 4, tiny widths
    python benchmarks/train_throughput.py --rounds 10     # steadier figures
    python benchmarks/train_throughput.py --tiny          # CI: 32x32, batch 2, seconds
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from itertools import cycle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from depthlab.catalog import load_entry
from depthlab.config import Budget, TrainSettings, from_dict
from depthlab.data.batch import DepthBatch
from depthlab.data.shards import prepare
from depthlab.loop import Evaluation, Progress, fit
from depthlab.methods import METHODS
from depthlab.methods.pix2pixhd import fill_invalid
from depthlab.methods.supervised import depth_at, imagenet_normalise, to_tanh
from depthlab.nn.losses import (
    adversarial_risk,
    critic_risk,
    feature_matching_loss,
    flip_set,
    lsgan_loss,
    masked_mse,
    set_loss,
    unflip,
)
from depthlab.nn.optim import Stepper
from depthlab.study import StudySpec, plan_for
from depthlab.trial import build_method, training_batches, training_splits

# Steps of the plan: long enough that no schedule switches inside the timed steps
# (multiscale's stage 2, the WGAN's n_f halving), so both loops run the same step.
PLAN_STEPS = 100_000


@dataclass(frozen=True)
class Case:
    """A method at CPU size (its smoke budget's widths) on its study's embedded dataset."""

    dataset: str
    train_splits: tuple[str, str]
    overrides: dict[str, Any]


CASES = {
    "fcn_vgg": Case("synthetic-rooms", ("train", "train"),
                    dict(width=0.125, decoder_init="kaiming")),
    "multiscale": Case("synthetic-rooms", ("train", "train"),
                       dict(width=0.125, lr_scale1=0.01, lr_scale2=0.1, lr_scale3=0.1,
                            lr_decay=1.0, set_weight=0.5)),
    "pix2pixhd": Case("synthetic-rooms", ("train", "train"),
                      dict(ngf=4, ndf=4, n_downsample=3, n_blocks=1)),
    "wgan_perceptual": Case("synthetic-surface", ("train_rgb", "train_depth"),
                            dict(critic_width=4, generator_width=4, critic_iters=2,
                                 critic_iters_after=2, lr_scale=10.0)),
}
COUNTS = {"synthetic-rooms": {"train": 32, "test": 4},
          "synthetic-surface": {"train_rgb": 32, "train_depth": 32, "eval": 4}}


BareStep = Callable[[Iterator[DepthBatch]], None]

# ---------------------------------------------------------------- the bare steps
# Each returns a function doing one training step with the method's own networks and
# optimizers, written the way a plain PyTorch script would: it takes its minibatch(es)
# from `loader` as the method's train_step does.

def _sgd(loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def bare_fcn_vgg(m) -> BareStep:
    def step(loader: Iterator[DepthBatch]) -> None:
        batch = next(loader)
        m.net.train()
        pred = m.net(imagenet_normalise(batch.image))
        _sgd(masked_mse(pred, depth_at(batch.depth, pred.shape[-2:])), m.opt)
    return step


def bare_multiscale(m) -> BareStep:
    cfg = m.config

    def step(loader: Iterator[DepthBatch]) -> None:
        batch = next(loader)
        m.net.train()
        copies = flip_set(imagenet_normalise(batch.image))
        back = unflip(list(m.net.predict(torch.cat(copies), m.scales).chunk(len(copies))))
        data = sum(masked_mse(p, batch.depth) for p in back) / len(back)
        _sgd(data + cfg.set_weight * set_loss(back, pairs=cfg.set_pairs), m.opt)
        m.schedule.step()
    return step


def bare_pix2pixhd(m) -> BareStep:
    cfg = m.config

    def step(loader: Iterator[DepthBatch]) -> None:
        batch = next(loader)
        x = batch.image * 2 - 1
        y = to_tanh(batch.depth.clamp(0, m.max_depth), m.max_depth)
        m.generator.train()
        fake = m.generator(x)
        pred_real = m.discriminator(torch.cat([x, fill_invalid(y, fake)], dim=1))
        m.discriminator.requires_grad_(False)
        pred_fake = m.discriminator(torch.cat([x, fake], dim=1))
        loss_g = lsgan_loss(pred_fake, True) + cfg.lambda_feat * feature_matching_loss(
            pred_fake, pred_real, cfg.n_layers_d)
        _sgd(loss_g, m.generator_opt)
        m.discriminator.requires_grad_(True)
        pred_fake_d = m.discriminator(torch.cat([x, fake.detach()], dim=1))
        _sgd(0.5 * (lsgan_loss(pred_fake_d, False) + lsgan_loss(pred_real, True)),
             m.discriminator_opt)
        for scheduler in m.schedulers:
            scheduler.step()
    return step


def bare_wgan_perceptual(m) -> BareStep:
    cfg = m.config
    lo, hi = m.data.depth_range_m
    mid, half = (hi + lo) / 2, (hi - lo) / 2
    counter = iter(range(10**9))

    def step(loader: Iterator[DepthBatch]) -> None:
        k = next(counter)
        for _ in range(m.critic_iterations(k)):
            batch = next(loader)
            x, y = batch.image * 2 - 1, ((batch.depth - mid) / half).clamp(-1, 1)
            with torch.no_grad():
                fake_y, fake_x = m.depth_generator(x), m.rgb_generator(y)
            risk = (critic_risk(m.depth_critic, y, fake_y, cfg.gradient_penalty)[0]
                    + critic_risk(m.rgb_critic, x, fake_x, cfg.gradient_penalty)[0])
            _sgd(risk, m.critic_opt)
        batch = next(loader)
        x, y = batch.image * 2 - 1, ((batch.depth - mid) / half).clamp(-1, 1)
        for critic in m.critics:
            critic.requires_grad_(False)
        fake_y, fake_x = m.depth_generator(x), m.rgb_generator(y)
        adversarial = adversarial_risk(m.depth_critic, fake_y) + adversarial_risk(
            m.rgb_critic, fake_x)
        reconstruction = m.reconstruction_risk(x, y, fake_y, fake_x, k / m.settings.steps)
        _sgd(adversarial + cfg.rec_weight * reconstruction, m.generator_opt)
        for critic in m.critics:
            critic.requires_grad_(True)
    return step


BARE = {"fcn_vgg": bare_fcn_vgg, "multiscale": bare_multiscale,
        "pix2pixhd": bare_pix2pixhd, "wgan_perceptual": bare_wgan_perceptual}


# ---------------------------------------------------------------- measuring

def setup(name: str, case: Case, size: tuple[int, int], batch_size: int, data_dir: Path):
    """The method as a trial builds it, and its minibatch stream."""
    entry = load_entry(case.dataset)
    counts = COUNTS[case.dataset]
    budget = Budget("bench", size, steps=PLAN_STEPS, eval_every=PLAN_STEPS, eval_samples=1,
                    num_trials=1, method_overrides={**case.overrides, "batch_size": batch_size},
                    data_counts=counts)
    eval_split = next(s for s in counts if s not in case.train_splits)
    spec = StudySpec("throughput", name, entry.name, search_space=lambda t: None,
                     budgets={"bench": budget}, metric="best/rmse_m",
                     train_splits=case.train_splits, eval_split=eval_split)
    path = prepare(entry, size=size, data_dir=data_dir, counts=counts, progress=False)
    plan = replace(plan_for(spec, budget, path, entry, seed=0), data_path=str(path))
    config = from_dict(METHODS[name].Config, plan.method_config)
    rgb, depth = training_splits(plan)
    batches = training_batches(rgb, depth, config, seed=0)
    settings = from_dict(TrainSettings, plan.settings)
    method, _, _ = build_method(plan, torch.device("cpu"), Stepper(settings.grad_clip),
                                batches.samples)
    return method, batches, settings


def stub_evaluation() -> Evaluation:
    """What the loop needs from an evaluation, at no cost (only training steps are timed)."""
    empty = np.zeros((0, 1, 1), dtype=np.float32)
    return Evaluation({"rmse_m": 0.0}, np.zeros((0, 1, 1, 3), dtype=np.float32), empty, empty)


@dataclass
class Times:
    """Wall and CPU (process) seconds of one timed run."""

    wall: float
    cpu: float


@contextmanager
def timing(into: list[Times]):
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    into.append(Times(time.perf_counter() - wall, time.process_time() - cpu))


def run_depthlab(method, batches, settings: TrainSettings, start: int, steps: int) -> None:
    """`steps` training steps through depthlab.loop.fit, from step `start`."""
    run = replace(settings, steps=start + steps, eval_every=PLAN_STEPS)
    fit(method, batches, stub_evaluation, run, lambda *a: None, "best/rmse_m",
        Progress(start, {}, {}))


def run_bare(step: BareStep, loader: Iterator[DepthBatch], steps: int) -> None:
    for _ in range(steps):
        step(loader)


def draw(batches, draws: int) -> None:
    for _ in range(draws):
        next(batches)


def measure(name: str, case: Case, size, batch_size: int, steps: int, rounds: int,
            data_dir: Path) -> dict[str, float]:
    """Images/s of both loops over alternating rounds (the median round's ratio, by CPU
    and by wall time), and the share of depthlab's CPU time spent drawing batches."""
    method, batches, settings = setup(name, case, size, batch_size, data_dir)
    bare = BARE[name](method)
    per_step = (method.critic_iterations(0) + 1 if name == "wgan_perceptual" else 1)
    # One round's batches, drawn once and cycled by both loops (the same tensors each).
    pool = [next(batches) for _ in range(steps * per_step)]
    run_depthlab(method, cycle(pool), settings, 1, 2)  # warm-up: first calls allocate
    run_bare(bare, cycle(pool), 2)
    lab: list[Times] = []
    plain: list[Times] = []
    drawing: list[Times] = []
    start = 3
    for _ in range(rounds):
        with timing(lab):
            run_depthlab(method, cycle(pool), settings, start, steps)
        with timing(plain):
            run_bare(bare, cycle(pool), steps)
        with timing(drawing):
            draw(batches, steps * per_step)
        start += steps
    images = steps * per_step * batch_size  # per round

    def median_ratio(kind: str) -> float:
        return statistics.median(getattr(b, kind) / getattr(d, kind)
                                 for b, d in zip(plain, lab, strict=True))

    return {"depthlab": images / statistics.median(t.cpu for t in lab),
            "bare": images / statistics.median(t.cpu for t in plain),
            "ratio": median_ratio("cpu"), "wall_ratio": median_ratio("wall"),
            "drawing": sum(t.cpu for t in drawing) / sum(t.cpu for t in lab)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="64x64", help="HxW (default 64x64)")
    parser.add_argument("--batch", type=int, default=4, help="batch size (default 4)")
    parser.add_argument("--steps", type=int, default=5, help="steps per round (default 5)")
    parser.add_argument("--rounds", type=int, default=15,
                        help="alternating rounds (default 15)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--data", type=Path, help="data directory (default: a temporary one)")
    parser.add_argument("--tiny", action="store_true", help="CI: 32x32, batch 2, 3 x 2 steps")
    args = parser.parse_args(argv)
    if args.tiny:
        args.size, args.batch, args.steps, args.rounds = "32x32", 2, 2, 3
    size = tuple(int(v) for v in args.size.lower().split("x"))
    if min(args.batch, args.steps, args.rounds, args.threads) < 1:
        parser.error("--batch, --steps, --rounds and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory(prefix="train_throughput-") as work:
        data_dir = args.data or Path(work)
        print(f"{size[0]}x{size[1]}, batch {args.batch}, {args.rounds} rounds x {args.steps} "
              f"steps each way, {args.threads} torch thread(s)")
        print(f"{'method':16s} {'depthlab img/s':>14s} {'bare img/s':>11s} {'ratio':>6s} "
              f"{'wall ratio':>10s} {'drawing batches':>16s}")
        ratios = {}
        for name in sorted(METHODS):
            if name not in CASES:
                print(f"{name:16s} (no gradient step to time: its train_step does no work)")
                continue
            r = measure(name, CASES[name], size, args.batch, args.steps, args.rounds,
                        data_dir)
            ratios[name] = r["ratio"]
            print(f"{name:16s} {r['depthlab']:14.1f} {r['bare']:11.1f} {r['ratio']:6.3f} "
                  f"{r['wall_ratio']:10.3f} {r['drawing']:15.1%}", flush=True)
    worst = min(ratios, key=ratios.get)
    print(f"(load average {' '.join(f'{x:.1f}' for x in os.getloadavg())})")
    print(f"\ntrain_throughput: min depthlab/bare {ratios[worst]:.2f}x ({worst}) over "
          f"{len(ratios)} methods (goal >= 0.95x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
