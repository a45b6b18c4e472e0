"""Paper 000 (Chu et al.): pix2pixHD's global generator and a two-scale conditional
discriminator trained as pix2pixHD (LSGAN + feature matching + VGG) for RGB → depth.

Code ↔ paper / pix2pixHD symbols:
  generator G: {X, Z} → Y      ↔ `GlobalGenerator` (ngf, n_downsample, n_blocks)
  Z                           ↔ `noise_channels` N(0, 1) maps after the RGB (0 = pix2pixHD)
  discriminator D = {D1, D2}  ↔ `MultiscaleDiscriminator(num_d=2)` on concat(X, Y)
  λ_feat                      ↔ `lambda_feat`; λ_VGG ↔ `vgg_weight` (pix2pixHD: 10 and 10)
  lr, β1 / niter + niter_decay ↔ `generator_lr`, `discriminator_lr`, `beta1` / `decay_fraction`
  batchSize                   ↔ `batch_size`
"""

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
    from_tanh,
    linear_decay,
    load_modules_state,
    modules_state,
    to_tanh,
)
from depthlab.nn.losses import feature_matching_loss, lsgan_loss, vgg_perceptual_loss
from depthlab.nn.optim import Stepper
from depthlab.nn.pix2pixhd import GlobalGenerator, MultiscaleDiscriminator, VGGPerceptual

ADAM_BETA2 = 0.999  # pix2pixHD's Adam betas are (beta1, 0.999)


@dataclass(frozen=True)
class Config:
    """pix2pixHD's option defaults, which Chu et al. (000) adopt without giving their own.

    Where the paper is silent (our choices, pix2pixHD's where it has one):
    - networks: netG=global with ngf 64, n_downsample_global 4, n_blocks_global 9;
      num_D 2 (the paper's D1 full and D2 half resolution), n_layers_D 3, ndf 64;
      instance norm, N(0, 0.02) init (`depthlab.nn.pix2pixhd`).
    - losses: LSGAN, λ_feat 10 GAN feature matching, λ_VGG 10 (all on in pix2pixHD).
      The VGG loss needs a pretrained VGG-19 (`pretrained`, a local torchvision state
      dict): a random VGG-19 is no perceptual measure, so with pretrained=None the VGG
      term is off whatever vgg_weight says and the network is not built.
    - optimiser: Adam lr 2e-4 for G and D, betas (0.5, 0.999), batch 1; the lr stays
      constant for the first (1 − decay_fraction) of the steps, then falls linearly to 0
      (niter 100 + niter_decay 100 epochs → decay_fraction 0.5, counted in steps).
    - Z: the paper's G takes a noise vector Z, but pix2pixHD has no noise input, so
      noise_channels 0 reproduces pix2pixHD; with k > 0, k maps of N(0, 1) noise follow
      the RGB during training and are 0 (the noise's mean) in `predict`.
    - l1_weight: an optional masked L1 to the ground truth on the [−1, 1] depth (0 = off,
      as pix2pixHD).
    - depth encoding: metres in [0, max] of the dataset's range ↔ [−1, 1] (tanh); the
      1-channel depth replaces pix2pixHD's 3-channel target; RGB [0, 1] → [−1, 1].
    - invalid ground truth (NaN): D must see finite real depth, so holes in the real
      depth are filled with G's own (detached) prediction there — D learns nothing from
      them, and feature matching and VGG compare equal values there; the L1 masks them.
    - augmentation: pix2pixHD's random horizontal flip ("hflip"); no resize (the data
      are prepared at the study's size, which must be divisible by 2**n_downsample).
    """

    ngf: int = 64
    n_downsample: int = 4
    n_blocks: int = 9
    ndf: int = 64
    n_layers_d: int = 3
    num_d: int = 2
    lambda_feat: float = 10.0
    vgg_weight: float = 10.0  # applied only with `pretrained`
    l1_weight: float = 0.0
    generator_lr: float = 2e-4
    discriminator_lr: float = 2e-4
    beta1: float = 0.5
    batch_size: int = 1
    decay_fraction: float = 0.5
    noise_channels: int = 0
    pretrained: str | None = None  # local torchvision VGG-19 state dict
    augmentation: str = "hflip"

    def __post_init__(self) -> None:
        owner = "pix2pixhd.Config"
        minimum = dict(ngf=1, ndf=1, n_downsample=0, n_blocks=0, n_layers_d=1, num_d=1,
                       batch_size=1, noise_channels=0)
        for name, low in minimum.items():
            value = getattr(self, name)
            require(isinstance(value, int) and not isinstance(value, bool) and value >= low,
                    owner, name, value, f"an integer >= {low}")
        require_positive(owner, generator_lr=self.generator_lr,
                         discriminator_lr=self.discriminator_lr)
        for name in ("lambda_feat", "vgg_weight", "l1_weight"):
            value = getattr(self, name)
            require(isinstance(value, int | float) and value >= 0, owner, name, value, ">= 0")
        require(0 <= self.beta1 < 1, owner, "beta1", self.beta1, "in [0, 1)")
        require(0 <= self.decay_fraction <= 1, owner, "decay_fraction", self.decay_fraction,
                "in [0, 1]")
        require(self.augmentation in AUGMENTATIONS, owner, "augmentation", self.augmentation,
                f"one of {sorted(AUGMENTATIONS)}")

    @property
    def uses_vgg(self) -> bool:
        """The VGG term is on only with pretrained weights (a random VGG measures nothing)."""
        return self.pretrained is not None and self.vgg_weight > 0


def _space(trial, widths: list[int], blocks: list[int], batches: list[int]) -> None:
    trial.suggest_float("method/generator_lr", 5e-5, 1e-3, log=True)
    trial.suggest_float("method/discriminator_lr", 5e-5, 1e-3, log=True)
    trial.suggest_categorical("method/lambda_feat", [0.0, 5.0, 10.0, 20.0])
    trial.suggest_categorical("method/ngf", widths)
    trial.suggest_categorical("method/ndf", widths)
    trial.suggest_categorical("method/n_blocks", blocks)
    trial.suggest_int("method/num_d", 1, 3)
    trial.suggest_categorical("method/batch_size", batches)


def search_space(trial) -> dict[str, Any] | None:
    """pix2pixHD's knobs around its defaults; reproduces nothing of paper 000, which
    varied nothing (no table): G/D learning rates, λ_feat, ngf/ndf, residual blocks,
    number of discriminator scales (1–3) and batch size."""
    _space(trial, widths=[32, 64], blocks=[6, 9], batches=[1, 2, 4])
    return None


def search_space_cpu(trial) -> dict[str, Any] | None:
    """`search_space` with the network knobs scaled to CPU budgets (ngf/ndf 4–8 instead
    of 32–64, 1–2 residual blocks instead of 6–9) and batch up to 8."""
    _space(trial, widths=[4, 8], blocks=[1, 2], batches=[2, 4, 8])
    return None


# The CPU budgets start from pix2pixHD's settings without its widths (the budget's apply).
CPU_ROWS = ({"method/generator_lr": 2e-4, "method/discriminator_lr": 2e-4,
             "method/lambda_feat": 10.0, "method/num_d": 2, "method/batch_size": 4},)


# pix2pixHD's defaults (the configuration paper 000 reports) are the first point evaluated.
PAPER_ROWS = [{"method/generator_lr": 2e-4, "method/discriminator_lr": 2e-4,
               "method/lambda_feat": 10.0, "method/ngf": 64, "method/ndf": 64,
               "method/n_blocks": 9, "method/num_d": 2, "method/batch_size": 1}]


def masked_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean |pred − target| over the finite target pixels (0 where none is finite)."""
    valid = torch.isfinite(target)
    # Fill before subtracting: a NaN in the graph would make the masked gradient NaN.
    error = (pred - torch.where(valid, target, pred.detach())).abs()
    return torch.where(valid, error, torch.zeros_like(error)).sum() / valid.sum().clamp_min(1)


def fill_invalid(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Real depth with its NaN holes replaced by the (detached) fake: D sees no hole."""
    return torch.where(torch.isfinite(real), real, fake.detach())


@register("pix2pixhd")
class Pix2PixHD:
    """One generator, one multiscale discriminator; each step one G update then one D update."""

    name: ClassVar[str] = "pix2pixhd"
    Config: ClassVar[type] = Config

    def __init__(self, config: Config, settings: TrainSettings, data: DataInfo,
                 device: torch.device, stepper: Stepper):
        self.config, self.settings, self.data, self.device = config, settings, data, device
        self.stepper = stepper
        check_image_size(data.image_size, config.n_downsample)
        self.max_depth = float(data.depth_range_m[1])
        self.generator = GlobalGenerator(3, 1, config.ngf, config.n_downsample, config.n_blocks,
                                         config.noise_channels).to(device)
        self.discriminator = MultiscaleDiscriminator(3 + 1, config.ndf, config.n_layers_d,
                                                     config.num_d).to(device)
        self.vgg = VGGPerceptual(config.pretrained).to(device) if config.uses_vgg else None
        stepper.sync_parameters(*self.networks().values())
        betas = (config.beta1, ADAM_BETA2)
        self.generator_opt = torch.optim.Adam(self.generator.parameters(),
                                              lr=config.generator_lr, betas=betas)
        self.discriminator_opt = torch.optim.Adam(self.discriminator.parameters(),
                                                  lr=config.discriminator_lr, betas=betas)
        decay = linear_decay(settings.steps, config.decay_fraction)
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, decay)
                           for opt in (self.generator_opt, self.discriminator_opt)]

    def networks(self) -> dict[str, torch.nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    # --- between dataset units and the networks' [−1, 1] ---
    def _generate(self, x: torch.Tensor, noise: bool) -> torch.Tensor:
        """G(x, z): z ~ N(0, 1) maps while training, their mean 0 when predicting."""
        k = self.config.noise_channels
        if k:
            shape = (x.shape[0], k, *x.shape[-2:])
            z = torch.randn(shape, device=x.device) if noise else x.new_zeros(shape)
            x = torch.cat([x, z], dim=1)  # (B, 3 + k, H, W)
        return self.generator(x)  # (B, 1, H, W) in [−1, 1]

    def _to_net(self, batch: DepthBatch) -> tuple[torch.Tensor, torch.Tensor]:
        batch = batch.to(self.device)
        x = batch.image * 2 - 1  # (B, 3, H, W): pix2pixHD's Normalize(0.5, 0.5)
        y = to_tanh(batch.depth.clamp(0, self.max_depth), self.max_depth)  # NaN stays NaN
        return x, y

    def train_step(self, batches: Iterator[DepthBatch], step: int) -> dict[str, float]:
        """pix2pixHD's iteration on one batch: G step (D frozen), then D step on the same fake."""
        cfg = self.config
        x, y = self._to_net(next(batches))
        self.generator.train()
        fake = self._generate(x, noise=True)
        real = fill_invalid(y, fake)
        real_pair = torch.cat([x, real], dim=1)  # (B, 4, H, W)
        # D's outputs on the real pair serve both steps (pix2pixHD's pred_real): detached
        # as G's feature-matching targets, with their graph for D's loss.
        pred_real = self.discriminator(real_pair)

        self.discriminator.requires_grad_(False)  # G's step must leave D untouched
        pred_fake = self.discriminator(torch.cat([x, fake], dim=1))
        losses = {"gan_g": lsgan_loss(pred_fake, True),
                  "feat": feature_matching_loss(pred_fake, pred_real, cfg.n_layers_d)}
        loss_g = losses["gan_g"] + cfg.lambda_feat * losses["feat"]
        if self.vgg is not None:
            with torch.no_grad():
                targets = self.vgg(real)
            losses["vgg"] = vgg_perceptual_loss(self.vgg(fake), targets)
            loss_g = loss_g + cfg.vgg_weight * losses["vgg"]
        if cfg.l1_weight > 0:
            losses["l1"] = masked_l1(fake, y)
            loss_g = loss_g + cfg.l1_weight * losses["l1"]
        self.stepper.step(loss_g, self.generator_opt)
        self.discriminator.requires_grad_(True)

        pred_fake_d = self.discriminator(torch.cat([x, fake.detach()], dim=1))
        loss_d = 0.5 * (lsgan_loss(pred_fake_d, False) + lsgan_loss(pred_real, True))
        self.stepper.step(loss_d, self.discriminator_opt)
        for scheduler in self.schedulers:
            scheduler.step()
        return {"loss_g": loss_g.item(), "loss_d": loss_d.item(),
                **{name: value.item() for name, value in losses.items()}}

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B, 1, H, W) metres in [0, max depth]."""
        self.generator.eval()
        return from_tanh(self._generate(image.to(self.device) * 2 - 1, noise=False),
                         self.max_depth)

    def _optimizers(self) -> dict[str, Any]:
        return {"generator_opt": self.generator_opt,
                "discriminator_opt": self.discriminator_opt,
                "generator_schedule": self.schedulers[0],
                "discriminator_schedule": self.schedulers[1]}

    def state_dict(self) -> dict[str, Any]:
        return modules_state(self.networks(), self._optimizers())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_modules_state(state, self.networks(), self._optimizers())


def check_image_size(size: tuple[int, int], n_downsample: int) -> None:
    """H and W must be divisible by 2**n_downsample (and the bottleneck at least 2×2)."""
    factor = 2**n_downsample
    h, w = size
    if h % factor or w % factor or min(h, w) < 2 * factor:
        raise ValueError(
            f"pix2pixhd: image size {h}×{w} does not fit n_downsample={n_downsample}: "
            f"H and W must be divisible by 2**n_downsample = {factor} and at least {2 * factor}"
        )
