"""pix2pixHD networks (Wang et al. 2018, NVIDIA/pix2pixHD) as Chu et al. (000) use them for
RGB→depth: one global generator and a two-scale conditional PatchGAN discriminator.

Paper ↔ code:
    G: {X, Z} → Y        ↔ `GlobalGenerator(in_channels=3, out_channels=1, noise_channels=…)`
    Z (noise vector)     ↔ `noise_channels` extra input maps, concatenated by the method
    D = {D1, D2}         ↔ `MultiscaleDiscriminator(num_d=2)`; scale 0 = D1 (full resolution),
                           scale 1 = D2 (input average-pooled to half resolution)
    D_k^(i) features     ↔ `NLayerDiscriminator.forward(x)[i]` (feature-matching loss)
    φ_k (VGG-19 relu k_1) ↔ `VGGPerceptual.forward(x)[k]`
    ngf, ndf             ↔ the width knobs (pix2pixHD defaults 64 and 64)

The layers, their order and the generator's state-dict names follow pix2pixHD's
`networks.py` (`GlobalGenerator`, `ResnetBlock`, `NLayerDiscriminator`,
`MultiscaleDiscriminator` with getIntermFeat=True, `Vgg19`, `weights_init`).
"""

from pathlib import Path

import torch
from torch import nn

from depthlab.nn.backbones import vgg_features, vgg_stage_ends
from depthlab.nn.blocks import check_width

DISC_KERNEL = 4
DISC_PADDING = 2  # pix2pixHD's padw = ceil((4 − 1) / 2)
DISC_MAX_CHANNELS = 512  # pix2pixHD caps nf at 512 (absolute, not scaled with ndf)
DISC_SLOPE = 0.2
INIT_STD = 0.02


def _check_count(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int ≥ {minimum}, got {value!r}")
    return value


def _instance_norm(channels: int) -> nn.Module:
    # pix2pixHD's norm='instance': no learned γ/β and no running statistics.
    return nn.InstanceNorm2d(channels, affine=False)


class ResnetBlock(nn.Module):
    """pix2pixHD residual block: reflpad1-conv3-IN-ReLU-reflpad1-conv3-IN, plus x, no ReLU after."""

    def __init__(self, channels: int):
        super().__init__()
        # Attribute name and indices as in pix2pixHD, so its state-dict keys carry over.
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _instance_norm(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _instance_norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class GlobalGenerator(nn.Module):
    """pix2pixHD's global generator G (netG='global'), RGB (+ noise maps) → depth in [−1, 1].

    pix2pixHD itself has no noise input and no dropout (use_dropout=False), so G is a
    deterministic map; the paper's Z is therefore nominal there, and `noise_channels=0`
    (the default) reproduces pix2pixHD. With noise_channels=k the first conv takes
    in_channels + k maps and the caller concatenates the noise after the image.
    Defaults are pix2pixHD's options (n_downsample_global=4, n_blocks_global=9, ngf=64).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        ngf: int = 64,
        n_downsample: int = 4,
        n_blocks: int = 9,
        noise_channels: int = 0,
    ):
        super().__init__()
        ngf = check_width(ngf)
        self.in_channels = _check_count("in_channels", in_channels, 1)
        self.noise_channels = _check_count("noise_channels", noise_channels, 0)
        self.n_downsample = _check_count("n_downsample", n_downsample, 0)
        _check_count("n_blocks", n_blocks, 0)
        _check_count("out_channels", out_channels, 1)
        c_in = in_channels + noise_channels
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(c_in, ngf, 7), _instance_norm(ngf),
                  nn.ReLU(inplace=True)]
        for i in range(n_downsample):  # (B, ngf·2^i, H/2^i, W/2^i) → half size, twice the maps
            c = ngf * 2**i
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), _instance_norm(2 * c),
                       nn.ReLU(inplace=True)]
        bottleneck = ngf * 2**n_downsample
        layers += [ResnetBlock(bottleneck) for _ in range(n_blocks)]
        for i in range(n_downsample):  # back up: twice the size, half the maps
            c = ngf * 2 ** (n_downsample - i)
            layers += [
                nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1),
                _instance_norm(c // 2),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)  # pix2pixHD's name: keys are model.<i>.…
        weights_init(self)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError unless x is (B, in+noise, H, W) with H, W fitting n_downsample."""
        expected = self.in_channels + self.noise_channels
        if x.dim() != 4 or x.shape[1] != expected:
            raise ValueError(
                f"GlobalGenerator input must be (B, {expected}, H, W) = in_channels "
                f"{self.in_channels} + noise_channels {self.noise_channels}, got {tuple(x.shape)}"
            )
        factor = 2**self.n_downsample
        h, w = x.shape[-2:]
        # Reflection padding (1 px) at the bottleneck needs ≥ 2 px there, and so does
        # instance norm, which cannot normalise a single pixel.
        if h % factor or w % factor or min(h, w) < 2 * factor:
            raise ValueError(
                f"GlobalGenerator input H×W = {h}×{w}: H and W must be divisible by "
                f"2**n_downsample = {factor} and at least {2 * factor} "
                f"(n_downsample={self.n_downsample})"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.model(x)  # (B, out_channels, H, W) in [−1, 1]


class NLayerDiscriminator(nn.Module):
    """pix2pixHD's PatchGAN (one scale); forward returns every layer's output, last = scores."""

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        ndf = check_width(ndf)
        _check_count("in_channels", in_channels, 1)
        self.n_layers = _check_count("n_layers", n_layers, 1)
        k, p = DISC_KERNEL, DISC_PADDING
        # LeakyReLU not in place: the outputs are kept for feature matching.
        groups = [[nn.Conv2d(in_channels, ndf, k, stride=2, padding=p), nn.LeakyReLU(DISC_SLOPE)]]
        nf = ndf
        for _ in range(1, n_layers):
            nf_prev, nf = nf, min(2 * nf, DISC_MAX_CHANNELS)
            groups.append([nn.Conv2d(nf_prev, nf, k, stride=2, padding=p), _instance_norm(nf),
                           nn.LeakyReLU(DISC_SLOPE)])
        nf_prev, nf = nf, min(2 * nf, DISC_MAX_CHANNELS)
        groups.append([nn.Conv2d(nf_prev, nf, k, stride=1, padding=p), _instance_norm(nf),
                       nn.LeakyReLU(DISC_SLOPE)])
        groups.append([nn.Conv2d(nf, 1, k, stride=1, padding=p)])  # patch scores, no sigmoid
        self.layers = nn.ModuleList([nn.Sequential(*g) for g in groups])
        weights_init(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for layer in self.layers:
            x = layer(x)  # the stride-2 layers map H → H/2 + 1 (padding 2), stride 1: H → H + 1
            outputs.append(x)
        return outputs  # n_layers + 2 tensors; outputs[-1] is (B, 1, h, w)


class MultiscaleDiscriminator(nn.Module):
    """num_d NLayer discriminators; scale k sees the input average-pooled k times.

    Conditional as in pix2pixHD: the method feeds concat(RGB, depth), so in_channels = 3 + 1.
    """

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, num_d: int = 2):
        super().__init__()
        self.num_d = _check_count("num_d", num_d, 1)
        self.scales = nn.ModuleList(
            [NLayerDiscriminator(in_channels, ndf, n_layers) for _ in range(num_d)]
        )
        # pix2pixHD's downsampler; without count_include_pad the borders are not darkened.
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        results = []
        for k, scale in enumerate(self.scales):
            if k:
                x = self.downsample(x)  # (B, C, H/2^k, W/2^k)
            results.append(scale(x))
        return results  # results[k][i]: scale k (0 = D1, full resolution), layer i


class VGGPerceptual(nn.Module):
    """Frozen VGG-19 up to relu5_1 returning relu1_1 … relu5_1, as pix2pixHD's `Vgg19`.

    Inputs are used as given in [−1, 1] (pix2pixHD applies no ImageNet normalisation);
    1-channel depth is replicated to 3 channels. Random weights (`pretrained=None`) are
    only a weak stand-in, so the method should enable the VGG loss with a local
    torchvision VGG-19 state dict.
    """

    def __init__(self, pretrained: str | Path | None, width: float = 1.0):
        super().__init__()
        features = vgg_features(19, width, pretrained)
        # relu k_1 is the layer after the first conv of stage k; stage k+1 starts after pool k.
        starts = [0] + [end + 1 for end in vgg_stage_ends(features)[:4]]
        taps = [s + 1 for s in starts]  # torchvision indices 1, 6, 11, 20, 29
        bounds = [0, *(t + 1 for t in taps)]
        self.slices = nn.ModuleList(
            [features[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        )
        self.requires_grad_(False)  # a fixed feature extractor: G's gradients pass through it
        self.eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"VGGPerceptual input must be (B, 1 or 3, H, W), got {tuple(x.shape)}")
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # (B, 3, H, W)
        features = []
        for block in self.slices:
            x = block(x)
            features.append(x)
        return features  # relu1_1 (H) … relu5_1 (H/16)


def weights_init(module: nn.Module) -> None:
    """pix2pixHD's weights_init: conv weights ~ N(0, 0.02); affine norm γ ~ N(1, 0.02), β = 0."""
    # As in pix2pixHD, conv biases keep PyTorch's default init; its instance norm has no
    # affine parameters, so only an affine (batch/instance) norm is touched here.
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, INIT_STD)
        elif isinstance(m, nn.modules.batchnorm._NormBase) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, INIT_STD)
            nn.init.zeros_(m.bias)
