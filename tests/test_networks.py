"""Shapes, ranges, errors and parameter counts of every registered critic and generator."""

import pytest
import torch

from depthlab.nn import CRITICS, GENERATORS, build_critic, build_generator, count_parameters
from depthlab.nn.blocks import tf_same_pad

SMOKE_WIDTH = 8
CHANNEL_PAIRS = [(3, 1), (1, 3)]  # RGB→depth (G_y), depth→RGB (G_x)

# Paper (Sec. 4 text) counts at paper widths, in millions. The authors' code gives 15.34 /
# 19.84 / 21.19 / 11.37 (METHODS §1 item 12). Critics are counted on RGB input and
# generators as RGB→depth (3→1); the 1→3 direction differs by under 0.03 %.
PAPER_PARAMS_M = {
    ("critic", "dcgan"): 15.3,
    ("generator", "resnet18"): 19.8,
    ("generator", "unet"): 21.2,
    ("generator", "style"): 11.4,
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("in_channels", [3, 1])
@pytest.mark.parametrize("name", sorted(CRITICS))
def test_critic_shapes_at_smoke_size(name, in_channels):
    critic = build_critic(name, in_channels, width=SMOKE_WIDTH)
    x = torch.randn(2, in_channels, 64, 64)
    score, phi = critic.score_and_features(x)
    # 64 → 32 → 16 → 8 → 4 → 4, then con6 and the PatchGAN head pad 'same' below 8 px.
    assert phi.shape == (2, 16 * SMOKE_WIDTH, 4, 4)
    assert score.shape == ((2, 1) if name == "dcgan" else (2, 1, 4, 4))
    torch.testing.assert_close(critic(x), score)
    torch.testing.assert_close(critic.features(x), phi)


@pytest.mark.parametrize("name", sorted(CRITICS))
def test_critic_shapes_at_paper_size(name):
    critic = build_critic(name, 1, width=2)
    score, phi = critic.score_and_features(torch.randn(1, 1, 256, 256))
    assert phi.shape == (1, 32, 13, 13)  # con6 'valid': 16 → 13
    assert score.shape == ((1, 1) if name == "dcgan" else (1, 1, 10, 10))


def test_phi_is_pre_activation_only_for_patchgan():
    x = torch.randn(2, 3, 64, 64)
    dc_phi = build_critic("dcgan", 3, SMOKE_WIDTH).features(x)
    pg_phi = build_critic("patchgan", 3, SMOKE_WIDTH).features(x)
    # LReLU(0.2) output is ≥ 0.2·(normalised value); the normalised map has mean ≈ 0.
    assert dc_phi.mean() > 0.1
    assert pg_phi.mean().abs() < 1e-4


@pytest.mark.parametrize("name", sorted(CRITICS))
def test_critic_supports_gradient_penalty(name):
    critic = build_critic(name, 1, width=4)
    x = torch.randn(2, 1, 64, 64, requires_grad=True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    grad.norm().backward()  # double backward, as WGAN-GP needs
    # The head's bias shifts f by a constant, so it alone gets no gradient from ∇ₓf.
    no_grad = [k for k, p in critic.named_parameters() if p.grad is None]
    assert all(k.startswith("head") and k.endswith("bias") for k in no_grad)


@pytest.mark.parametrize("in_channels,out_channels", CHANNEL_PAIRS)
@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generator_shape_and_tanh_range(name, in_channels, out_channels):
    gen = build_generator(name, in_channels, out_channels, width=SMOKE_WIDTH)
    y = gen(torch.randn(2, in_channels, 64, 64) * 3)
    assert y.shape == (2, out_channels, 64, 64)
    assert y.abs().max() <= 1.0
    y.mean().backward()  # in-place activations must leave autograd intact


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generator_keeps_non_square_size(name):
    gen = build_generator(name, 3, 1, width=4)
    assert gen(torch.randn(1, 3, 32, 96)).shape == (1, 1, 32, 96)


def test_resnet18_paper_resblock_adds_a_skip_conv_per_block():
    cls = GENERATORS["resnet18"]
    code, paper = cls(3, 1, width=SMOKE_WIDTH), cls(3, 1, width=SMOKE_WIDTH, paper_resblock=True)
    # The two f-channel blocks of res1–res2 and one block per later stage gain a 1×1 conv-norm.
    f = SMOKE_WIDTH
    extra = sum((c * c + c) + 2 * c for c in [f, f, 2 * f, 4 * f, 8 * f])
    assert count_parameters(paper) - count_parameters(code) == extra
    assert paper(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="known: dcgan, patchgan"):
        build_critic("wgan", 3)
    with pytest.raises(ValueError, match="known: resnet18, style, unet"):
        build_generator("vgg", 3, 1)


@pytest.mark.parametrize("width", [0, -4])
def test_bad_width_raises(width):
    with pytest.raises(ValueError, match="width"):
        build_critic("dcgan", 3, width=width)
    with pytest.raises(ValueError, match="width"):
        build_generator("unet", 3, 1, width=width)


def test_tf_same_pad_puts_the_odd_pixel_after():
    assert tf_same_pad(256, 4, 2) == (1, 1)
    assert tf_same_pad(16, 4, 1) == (1, 2)
    assert tf_same_pad(8, 3, 2) == (0, 1)


@pytest.mark.parametrize("kind,name", sorted(PAPER_PARAMS_M))
def test_parameter_count_at_paper_width(kind, name):
    net = build_critic(name, 3) if kind == "critic" else build_generator(name, 3, 1)
    millions = count_parameters(net) / 1e6
    assert millions == pytest.approx(PAPER_PARAMS_M[kind, name], rel=0.03)
