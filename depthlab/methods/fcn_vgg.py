"""Paper 002 (Huang & Yu): a trimmed VGG-19 fully convolutional encoder with a
transposed-conv decoder, L2 loss, SGD; ablations A1 / A2 / A3 (Table 1).

Code ↔ paper:
  ablation A1 | A2 | A3     ↔ 3 T-convs + augmentation | T-conv+conv, no augmentation |
                               T-conv+conv + augmentation (the final model)
  augmentation "eigen"      ↔ rotation ±5°, horizontal flip, colour × [0.8, 1.2] (§3.3)
  lr, batch_size            ↔ SGD learning rate 0.001, batch 16 (§4)
  network                   ↔ `depthlab.nn.fcn_vgg.FcnVgg` (160×120 in, 80×60 out)
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from depthlab.config import TrainSettings, require, require_positive
from depthlab.data.batch import DepthBatch
from depthlab.methods.protocol import DataInfo
from depthlab.methods.registry import register
from depthlab.methods.supervised import (
    depth_at,
    imagenet_normalise,
    load_modules_state,
    modules_state,
    upsample,
)
from depthlab.nn.fcn_vgg import ABLATIONS, DECODER_INITS, FcnVgg
from depthlab.nn.losses import masked_mse
from depthlab.nn.optim import Stepper

LOSSES = ("mse", "log_mse")


@dataclass(frozen=True)
class Config:
    """Paper 002's defaults: the final model A3, SGD lr 1e-3, batch 16.

    Where the paper is silent (our choices): momentum 0.9 and weight decay 0 (SGD
    settings not stated); LeakyReLU slope 0.2; the loss is MSE on depth in metres
    ("L2", its square lost in print; depth vs log-depth not stated: `loss` =
    "log_mse" is the other reading); the input is ImageNet-normalised (what
    torchvision's VGG-19 weights expect); the decoder starts from N(0, 1) as
    written ("paper"), "kaiming" is the common alternative; predictions at
    80×60 are upsampled bilinearly to the input size for evaluation.
    """

    ablation: str = "A3"
    width: float = 1.0
    slope: float = 0.2
    decoder_init: str = "paper"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 16
    loss: str = "mse"
    pretrained: str | None = None  # local torchvision VGG-19 state dict

    def __post_init__(self) -> None:
        owner = "fcn_vgg.Config"
        require(self.ablation in ABLATIONS, owner, "ablation", self.ablation,
                f"one of {sorted(ABLATIONS)}")
        require(self.decoder_init in DECODER_INITS, owner, "decoder_init", self.decoder_init,
                f"one of {DECODER_INITS}")
        require(self.loss in LOSSES, owner, "loss", self.loss, f"one of {LOSSES}")
        require_positive(owner, width=self.width, lr=self.lr, batch_size=self.batch_size)
        require(isinstance(self.batch_size, int), owner, "batch_size", self.batch_size,
                "an integer")
        require(0 <= self.slope < 1, owner, "slope", self.slope, "in [0, 1)")
        require(0 <= self.momentum < 1, owner, "momentum", self.momentum, "in [0, 1)")
        require(self.weight_decay >= 0, owner, "weight_decay", self.weight_decay, ">= 0")

    @property
    def decoder(self) -> str:
        return ABLATIONS[self.ablation]["decoder"]

    @property
    def augmentation(self) -> str:
        """A2 trains without augmentation; A1 and A3 with Eigen's."""
        return "eigen" if ABLATIONS[self.ablation]["augment"] else "none"


def search_space(trial) -> dict[str, Any] | None:
    """Paper 002 Table 1's ablations A1/A2/A3, with the SGD settings around §4's
    (lr 1e-3, batch 16) and the LeakyReLU slope the paper does not give."""
    trial.suggest_categorical("method/ablation", sorted(ABLATIONS))
    trial.suggest_float("method/lr", 1e-4, 1e-2, log=True)
    trial.suggest_categorical("method/momentum", [0.0, 0.9, 0.95])
    trial.suggest_categorical("method/weight_decay", [0.0, 1e-5, 1e-4])
    trial.suggest_categorical("method/batch_size", [8, 16, 32])
    trial.suggest_categorical("method/slope", [0.01, 0.1, 0.2])
    return None


# Table 1's rows at the paper's SGD settings: the search starts from them.
PAPER_ROWS = [{"method/ablation": a, "method/lr": 1e-3, "method/momentum": 0.9,
               "method/weight_decay": 0.0, "method/batch_size": 16, "method/slope": 0.2}
              for a in ("A3", "A2", "A1")]


@register("fcn_vgg")
class FcnVggMethod:
    """One network, one SGD optimizer, MSE to the ground truth at the output resolution."""

    name: ClassVar[str] = "fcn_vgg"
    Config: ClassVar[type] = Config

    def __init__(self, config: Config, settings: TrainSettings, data: DataInfo,
                 device: torch.device, stepper: Stepper):
        self.config, self.settings, self.data, self.device = config, settings, data, device
        self.stepper = stepper
        self.net = FcnVgg(config.decoder, config.width, config.slope,
                          pretrained=config.pretrained, decoder_init=config.decoder_init)
        self.net.to(device)
        stepper.sync_parameters(self.net)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=config.lr,
                                   momentum=config.momentum, weight_decay=config.weight_decay)

    def networks(self) -> dict[str, torch.nn.Module]:
        return {"net": self.net}

    def loss(self, pred: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """MSE at the output size, on metres or on log metres."""
        truth = depth_at(depth, pred.shape[-2:])
        if self.config.loss == "log_mse":
            return masked_mse(torch.log(pred.clamp_min(1e-3)), torch.log(truth))
        return masked_mse(pred, truth)

    def train_step(self, batches: Iterator[DepthBatch], step: int) -> dict[str, float]:
        batch = next(batches).to(self.device)
        self.net.train()
        loss = self.loss(self.net(imagenet_normalise(batch.image)), batch.depth)
        self.stepper.step(loss, self.opt)
        return {"loss": loss.item()}

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B, 1, H, W) metres (80×60 upsampled as for evaluation)."""
        self.net.eval()
        image = image.to(self.device)
        return upsample(self.net(imagenet_normalise(image)), image.shape[-2:])

    def state_dict(self) -> dict[str, Any]:
        return modules_state(self.networks(), {"opt": self.opt})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_modules_state(state, self.networks(), {"opt": self.opt})
