"""Paper 001 (Das et al., after Li, Klein & Yao): a three-scale network (VGG-16 global
scale with fully connected layers, scales 2 and 3 with skips 1.1 / 1.2), pixelwise MSE
plus the set loss over flipped copies, trained in two stages.

Code ↔ poster:
  stage 1 / stage 2           ↔ "trained scale 1 & 2" (100 epochs), then "trained scale 3
                                 while keeping scale 1 & 2 fixed" (50 epochs)
  set_weight                  ↔ "set loss regularization" (reg of the code, 1.5)
  lr_scale1/2/3 × REFERENCE_LR ↔ "learning rate for each layer" (the code's per-layer rates)
  weight_decay                ↔ "L2 weight decay"
  lr_decay, lr_decay_epochs   ↔ "learning rate decay" (the code: × 0.1 every epoch)
  TrainSettings.grad_clip     ↔ "gradient clipping range"
  batch_size                  ↔ "batch size" (1; 4 diverged)
  skips False                 ↔ experiment 5, "without skip layers"
  loss "rmse"                 ↔ experiment 3, RMSE loss (diverged)
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from depthlab.config import TrainSettings, require, require_positive
from depthlab.data.batch import DepthBatch
from depthlab.data.transforms import AUGMENTATIONS
from depthlab.methods.protocol import DataInfo
from depthlab.methods.registry import register
from depthlab.methods.supervised import (
    imagenet_normalise,
    load_modules_state,
    modules_state,
    step_decay,
)
from depthlab.nn.losses import SET_PAIR_CONVENTIONS, flip_set, masked_mse, set_loss, unflip
from depthlab.nn.multiscale import INITS, REFERENCE_LR, MultiScaleNet
from depthlab.nn.optim import Stepper

LOSSES = ("mse", "rmse")
# Which learning-rate multiplier each per-layer group of the network follows.
GROUP_SCALE = {"vgg": 1, "fc": 1, "skip": 1, "conv2_1": 2, "conv2_2_to_2_8": 2, "conv2_9": 2,
               "conv3_1": 3, "conv3_2_to_3_5": 3, "conv3_6": 3}


@dataclass(frozen=True)
class Config:
    """Paper 001's setting as its code runs it (the poster gives no numbers).

    Choices: the per-layer Adam rates of the reference trainer (REFERENCE_LR), scaled
    per scale by lr_scale1/2/3; weight decay 0, which is what the trainer applies
    (its param groups override the launcher's weight_decay=10); set loss weight 1.5
    over {identity, fliplr, flipud} with the code's unordered pairs ("ordered" is the
    poster's formula, twice as large); × 0.1 learning-rate decay every epoch as the
    code does, restarted in stage 2; stage 1 takes 100 / 150 of the steps; inputs
    ImageNet-normalised for the VGG-16; the loss is on the finest trained scale
    (scale 2 in stage 1, scale 3 in stage 2) upsampled to the input size; augmentation
    by horizontal and vertical flips (the poster's), p = 0.5 each (not given); He
    initialisation after the VGG (the code's PyTorch default starts at an all-zero
    output, see depthlab.nn.multiscale).
    """

    width: float = 1.0
    skips: bool = True
    stages: int = 2
    stage1_fraction: float = 100 / 150
    lr_scale1: float = 1.0
    lr_scale2: float = 1.0
    lr_scale3: float = 1.0
    weight_decay: float = 0.0
    batch_size: int = 1
    set_weight: float = 1.5
    set_pairs: str = "unordered"
    loss: str = "mse"
    lr_decay: float = 0.1
    lr_decay_epochs: float = 1.0
    augmentation: str = "flips"
    init: str = "he"  # of the layers after VGG; "torch" = the code's PyTorch default
    pretrained: str | None = None  # local torchvision VGG-16 state dict

    def __post_init__(self) -> None:
        owner = "multiscale.Config"
        require_positive(owner, width=self.width, lr_scale1=self.lr_scale1,
                         lr_scale2=self.lr_scale2, lr_scale3=self.lr_scale3,
                         batch_size=self.batch_size, lr_decay=self.lr_decay,
                         lr_decay_epochs=self.lr_decay_epochs)
        require(isinstance(self.batch_size, int), owner, "batch_size", self.batch_size,
                "an integer")
        require(self.stages in (1, 2), owner, "stages", self.stages,
                "1 (scales 1+2) or 2 (then scale 3)")
        require(0 < self.stage1_fraction < 1 or self.stages == 1, owner, "stage1_fraction",
                self.stage1_fraction, "in (0, 1)")
        require(self.weight_decay >= 0, owner, "weight_decay", self.weight_decay, ">= 0")
        require(self.set_weight >= 0, owner, "set_weight", self.set_weight, ">= 0")
        require(self.set_pairs in SET_PAIR_CONVENTIONS, owner, "set_pairs", self.set_pairs,
                f"one of {SET_PAIR_CONVENTIONS}")
        require(self.loss in LOSSES, owner, "loss", self.loss, f"one of {LOSSES}")
        require(self.lr_decay <= 1, owner, "lr_decay", self.lr_decay, "<= 1 (a decay)")
        AUGMENTATIONS.get_or_raise(self.augmentation)
        require(self.init in INITS, owner, "init", self.init, f"one of {INITS}")


def _space(trial, lr_scales: dict[int, tuple[float, float]], batches: list[int]) -> None:
    trial.suggest_categorical("train/grad_clip", [0.0, 1.0, 10.0, 100.0])
    trial.suggest_categorical("method/weight_decay", [0.0, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0])
    for scale, (low, high) in lr_scales.items():
        trial.suggest_float(f"method/lr_scale{scale}", low, high, log=True)
    trial.suggest_categorical("method/batch_size", batches)
    trial.suggest_categorical("method/set_weight", [0.0, 0.5, 1.0, 1.5])
    trial.suggest_categorical("method/lr_decay", [0.1, 0.5, 1.0])
    trial.suggest_categorical("method/skips", [True, False])


def search_space(trial) -> dict[str, Any] | None:
    """The poster's "hyperparameters tuned" list: gradient clipping, L2 weight decay,
    per-layer (here per-scale) learning rate, batch size, set loss weight, learning-rate
    decay; skip layers on/off as its experiment 5. Values from the code's sweep."""
    _space(trial, {1: (0.1, 10.0), 2: (0.1, 10.0), 3: (0.1, 10.0)}, batches=[1, 2, 4])
    return None


def search_space_cpu(trial) -> dict[str, Any] | None:
    """`search_space` around the CPU budgets' rates: per-scale multipliers 10× either side
    of 0.01 (scale 1) and 0.1 (scales 2, 3), batch 4–16."""
    _space(trial, {1: (1e-3, 0.1), 2: (0.01, 1.0), 3: (0.01, 1.0)}, batches=[4, 8, 16])
    return None


def _row(**values) -> dict[str, Any]:
    base = {"train/grad_clip": 0.0, "method/weight_decay": 0.0, "method/lr_scale1": 1.0,
            "method/lr_scale2": 1.0, "method/lr_scale3": 1.0, "method/batch_size": 1,
            "method/set_weight": 1.5, "method/lr_decay": 0.1, "method/skips": True}
    return {**base, **{f"method/{k}": v for k, v in values.items()}}


# The CPU budgets' starting points: the learning test's setting, with and without skips.
CPU_ROWS = tuple(_row(lr_scale1=0.01, lr_scale2=0.1, lr_scale3=0.1, batch_size=8,
                      set_weight=0.5, lr_decay=1.0, skips=skips) for skips in (True, False))


# The poster's experiments 1 (the final setting), 4 (batch 4) and 5 (no skips).
PAPER_ROWS = [_row(), _row(batch_size=4), _row(skips=False)]


@register("multiscale")
class MultiScale:
    """Scales 1+2 trained first, then scale 3 with them frozen; MSE + set loss."""

    name: ClassVar[str] = "multiscale"
    Config: ClassVar[type] = Config

    def __init__(self, config: Config, settings: TrainSettings, data: DataInfo,
                 device: torch.device, stepper: Stepper):
        self.config, self.settings, self.data, self.device = config, settings, data, device
        self.stepper = stepper
        self.net = MultiScaleNet(tuple(data.image_size), config.width, config.skips,
                                 config.pretrained, config.init).to(device)
        stepper.sync_parameters(self.net)
        per_epoch = math.ceil(max(data.train_samples, 1) / config.batch_size)
        self.decay_every = max(1, round(per_epoch * config.lr_decay_epochs))
        self.switch = (round(config.stage1_fraction * settings.steps) if config.stages == 2
                       else settings.steps)
        self.stage = 1
        self.opt, self.schedule = self._optimizer(1)

    def _optimizer(self, stage: int):
        """Adam over one stage's groups at the reference per-layer rates × lr_scale<k>."""
        cfg = self.config
        scales = {1: cfg.lr_scale1, 2: cfg.lr_scale2, 3: cfg.lr_scale3}
        groups = [{"params": params, "lr": REFERENCE_LR[name] * scales[GROUP_SCALE[name]],
                   "weight_decay": cfg.weight_decay}
                  for name, params in self.net.layer_groups(stage).items()]
        opt = torch.optim.Adam(groups, betas=(0.9, 0.999))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            opt, step_decay(self.decay_every, cfg.lr_decay))
        return opt, schedule

    def _enter_stage_2(self) -> None:
        """Freeze scales 1+2 and train scale 3 from here on."""
        for p in self.net.stage_parameters(1):
            p.requires_grad_(False)
        self.stage = 2
        self.opt, self.schedule = self._optimizer(2)

    @property
    def scales(self) -> int:
        """The finest trained scale: 2 in stage 1, 3 in stage 2."""
        return 2 if self.stage == 1 else 3

    def networks(self) -> dict[str, torch.nn.Module]:
        return {"net": self.net}

    def train_step(self, batches: Iterator[DepthBatch], step: int) -> dict[str, float]:
        if self.stage == 1 and step >= self.switch:
            self._enter_stage_2()
        batch = next(batches).to(self.device)
        self.net.train()
        copies = flip_set(imagenet_normalise(batch.image))  # identity, fliplr, flipud
        preds = self.net.predict(torch.cat(copies), self.scales).chunk(len(copies))
        back = unflip(list(preds))  # each in the identity frame, (B, 1, H, W)
        data = sum(masked_mse(p, batch.depth) for p in back) / len(back)
        if self.config.loss == "rmse":
            data = data.sqrt()
        regulariser = set_loss(back, pairs=self.config.set_pairs)
        loss = data + self.config.set_weight * regulariser
        self.stepper.step(loss, self.opt)
        self.schedule.step()
        return {"loss": loss.item(), "data": data.item(), "set": regulariser.item(),
                "stage": float(self.stage)}

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B, 1, H, W) metres from the finest trained scale."""
        self.net.eval()
        return self.net.predict(imagenet_normalise(image.to(self.device)), self.scales)

    def state_dict(self) -> dict[str, Any]:
        state = modules_state(self.networks(), {"opt": self.opt, "schedule": self.schedule})
        state["stage"] = self.stage
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["stage"] == 2 and self.stage == 1:
            self._enter_stage_2()
        load_modules_state(state, self.networks(), {"opt": self.opt, "schedule": self.schedule})
