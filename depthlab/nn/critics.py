"""WGAN-GP critics of Angermann et al. (004), Appendix B Tables 4 (DCGAN) and 5 (PatchGAN).

Paper ↔ code: f_x / f_y ↔ a critic on RGB / depth; φ (layer l = L−2) ↔ `features`.
"""

import torch
from torch import nn

from depthlab.nn.blocks import (
    LRELU_SLOPE,
    TFConv2d,
    check_width,
    conv_norm_act,
    he_init_,
    make_act,
    make_norm,
)
from depthlab.registry import Registry

CRITICS = Registry("critic")

# At 256×256 the 'valid' convs see 16×16 (con6) and 13×13 (PatchGAN head) maps. On a
# 64×64 smoke input they would see 4×4 and collapse it, so below 8 px they pad 'same'.
VALID_MIN_SIZE = 8


class _WganCritic(nn.Module):
    """con1–con6 shared by both critics; subclasses add the head and pick φ."""

    phi_after_act: bool

    def __init__(self, in_channels: int, width: int = 64):
        super().__init__()
        f = check_width(width)
        channels = [in_channels, f, 2 * f, 4 * f, 8 * f, 8 * f]
        strides = [2, 2, 2, 2, 1]
        self.body = nn.Sequential(
            *[  # con1–con5, 'same' padding
                conv_norm_act(c_in, c_out, 4, s, norm="layer", act="lrelu")
                for c_in, c_out, s in zip(channels[:-1], channels[1:], strides, strict=True)
            ]
        )
        self.con6 = nn.Sequential(  # conv-norm, activation kept apart because φ may precede it
            TFConv2d(8 * f, 16 * f, 4, padding="valid", same_below=VALID_MIN_SIZE),
            make_norm("layer", 16 * f),
        )
        self.act = make_act("lrelu")
        self.head = self._make_head(16 * f)
        he_init_(self, "leaky_relu", LRELU_SLOPE)

    def _make_head(self, channels: int) -> nn.Module:
        raise NotImplementedError

    def score_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Critic score and φ(x) from one forward pass."""
        pre = self.con6(self.body(x))  # (B, 16f, 13, 13) at 256×256
        post = self.act(pre)
        return self.head(post), (post if self.phi_after_act else pre)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score_and_features(x)[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x): the paper's layer l = L−2, used by the perceptual reconstruction loss."""
        pre = self.con6(self.body(x))
        return self.act(pre) if self.phi_after_act else pre


@CRITICS.register("dcgan")
class DCGANCritic(_WganCritic):
    """Table 4: six conv-norm-LReLU layers, global average pooling, dense → (B, 1)."""

    # The authors' φ = layers[-3] is the LReLU output of con6 here (METHODS §1 item 9).
    phi_after_act = True

    def _make_head(self, channels: int) -> nn.Module:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 1))


@CRITICS.register("patchgan")
class PatchGANCritic(_WganCritic):
    """Table 5: six conv-norm-LReLU layers, then conv 4×4 valid → (B, 1, 10, 10) at 256."""

    # layers[-3] counts back over the head conv, so φ is con6 after norm, before LReLU.
    phi_after_act = False

    def _make_head(self, channels: int) -> nn.Module:
        return TFConv2d(channels, 1, 4, padding="valid", same_below=VALID_MIN_SIZE)
