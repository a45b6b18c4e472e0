"""Huang & Yu (002) FCN: output sizes, LeakyReLU encoder, pretrained loading, counts, inits."""

import pytest
import torch
import torchvision
from torch import nn

from depthlab.nn import count_parameters
from depthlab.nn.fcn_vgg import ABLATIONS, DECODERS, FcnVgg, decoder_sizes

SMOKE_WIDTH = 0.125  # VGG 64…512 → 8…64 channels, decoder 32/16/8

# VGG-19 "E" convolutions up to conv5_4, written out by hand (3×3 kernels, with biases).
VGG19_CONVS = [(3, 64), (64, 64), (64, 128), (128, 128)] + [(128, 256)] + [(256, 256)] * 3 \
    + [(256, 512)] + [(512, 512)] * 7


def vgg19_conv_params() -> int:
    return sum((c_in * 9 + 1) * c_out for c_in, c_out in VGG19_CONVS)


def decoder_params(decoder: str, channels=(512, 256, 128, 64)) -> int:
    """4×4 transposed convs and 3×3 convs without bias, BN γ/β each, 3×3 head with bias."""
    total = 0
    for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
        total += c_in * c_out * 16 + 2 * c_out
        if decoder == "tconv_conv":
            total += c_out * c_out * 9 + 2 * c_out
    return total + channels[-1] * 9 + 1


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_paper_input_gives_paper_output(decoder):
    net = FcnVgg(decoder, width=SMOKE_WIDTH)
    y = net(torch.randn(2, 3, 120, 160))  # the paper's 160×120 (W×H)
    assert y.shape == (2, 1, 60, 80)


def test_decoder_sizes_reach_half_the_input_from_floored_pools():
    # 120 pools to 60, 30, 15, 7: the first transposed conv needs output_padding 1.
    assert decoder_sizes(120, 160) == [(15, 20), (30, 40), (60, 80)]
    assert decoder_sizes(64, 64) == [(8, 8), (16, 16), (32, 32)]


@pytest.mark.parametrize("decoder", sorted(DECODERS))
@pytest.mark.parametrize("size,expected", [((64, 64), (32, 32)), ((48, 80), (24, 40)),
                                           ((50, 70), (25, 35))])
def test_output_is_half_the_input(decoder, size, expected):
    net = FcnVgg(decoder, width=SMOKE_WIDTH)
    assert net(torch.randn(1, 3, *size)).shape == (1, 1, *expected)


def test_encoder_is_vgg19_up_to_conv5_4_with_leaky_relu():
    net = FcnVgg(width=SMOKE_WIDTH, slope=0.1)
    convs = [m for m in net.encoder if isinstance(m, nn.Conv2d)]
    assert len(convs) == 16 and len(net.encoder) == 36  # pool5 (index 36) dropped
    assert not any(type(m) is nn.ReLU for m in net.modules())
    acts = [m for m in net.encoder if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 16 and all(a.negative_slope == 0.1 for a in acts)
    # The stride-16 map of a 64×64 input is 4×4 with 512·width channels.
    assert net.encoder(torch.randn(1, 3, 64, 64)).shape == (1, 64, 4, 4)


def test_leaky_relu_passes_negative_inputs_scaled():
    slope = 0.1
    net = FcnVgg(width=SMOKE_WIDTH, slope=slope)
    conv1_1 = net.encoder[0]
    with torch.no_grad():
        conv1_1.weight.zero_()
        conv1_1.bias.fill_(-2.0)  # every pre-activation is −2
    out = net.encoder[:2](torch.randn(1, 3, 32, 32))
    torch.testing.assert_close(out, torch.full_like(out, -2.0 * slope))


def test_pretrained_torchvision_weights_load(tmp_path):
    reference = torchvision.models.vgg19(weights=None)
    path = tmp_path / "vgg19.pth"
    torch.save(reference.state_dict(), path)
    net = FcnVgg(pretrained=path)
    ours, theirs = net.encoder.state_dict(), reference.features.state_dict()
    assert len(ours) == 32  # 16 convs × (weight, bias)
    for key, value in ours.items():
        torch.testing.assert_close(value, theirs[key], rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs width 1"):
        FcnVgg(width=0.5, pretrained=path)


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_parameter_count_at_full_width(decoder):
    net = FcnVgg(decoder)
    encoder, total = count_parameters(net.encoder), count_parameters(net)
    print(f"\nFcnVgg {decoder}: encoder {encoder:,}, decoder {total - encoder:,}, total {total:,}")
    assert encoder == vgg19_conv_params() == 20_024_384  # VGG-19 conv1_1 … conv5_4
    assert total == vgg19_conv_params() + decoder_params(decoder)


def test_a1_has_fewer_parameters_than_a2_by_the_interleaved_convs():
    a1 = FcnVgg(ABLATIONS["A1"]["decoder"], width=SMOKE_WIDTH)
    a2 = FcnVgg(ABLATIONS["A2"]["decoder"], width=SMOKE_WIDTH)
    extra = sum(c * c * 9 + 2 * c for c in (32, 16, 8))  # conv3×3 + BN per step
    assert count_parameters(a2) - count_parameters(a1) == extra > 0


def test_ablations_follow_table_1():
    assert {k: (v["decoder"], v["augment"]) for k, v in ABLATIONS.items()} == {
        "A1": ("tconv", True), "A2": ("tconv_conv", False), "A3": ("tconv_conv", True)}


@pytest.mark.parametrize("decoder", sorted(DECODERS))
@pytest.mark.parametrize("init", ["paper", "kaiming"])
def test_both_decoder_inits_stay_finite(decoder, init):
    net = FcnVgg(decoder, width=SMOKE_WIDTH, decoder_init=init)
    x = torch.randn(2, 3, 64, 64)
    y = net(x)
    assert torch.isfinite(y).all() and y.std() > 0
    y.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    net.eval()  # running stats barely moved: the N(0, 1) activations are not renormalised
    assert torch.isfinite(net(x)).all()


def test_paper_init_is_unit_normal_and_kaiming_is_not():
    paper = FcnVgg(width=SMOKE_WIDTH, decoder_init="paper").steps[0].tconv.weight
    kaiming = FcnVgg(width=SMOKE_WIDTH, decoder_init="kaiming").steps[0].tconv.weight
    assert paper.std().item() == pytest.approx(1.0, abs=0.05)  # 64·32·16 samples
    assert paper.mean().item() == pytest.approx(0.0, abs=0.05)
    assert kaiming.std().item() < 0.2


@pytest.mark.parametrize("kwargs,field", [
    (dict(decoder="unet"), "known: tconv, tconv_conv"),
    (dict(width=0), "width"),
    (dict(slope=-0.1), "slope"),
    (dict(slope=1.0), "slope"),
    (dict(decoder_channels=(64, 32)), "decoder_channels"),
    (dict(decoder_init="xavier"), "decoder_init"),
])
def test_bad_arguments_raise(kwargs, field):
    with pytest.raises(ValueError, match=field):
        FcnVgg(**kwargs)


def test_bad_input_shape_raises():
    net = FcnVgg(width=SMOKE_WIDTH)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="H, W >= 16"):
        net(torch.randn(1, 3, 8, 64))
