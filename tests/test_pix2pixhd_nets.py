"""pix2pixHD networks and losses of Chu et al. (000): shapes, counts and hand-computed losses."""

import pytest
import torch
from torch import nn

from depthlab.nn import count_parameters
from depthlab.nn.losses import (
    PIX2PIXHD_VGG_WEIGHTS,
    feature_matching_loss,
    lsgan_loss,
    vgg_perceptual_loss,
)
from depthlab.nn.pix2pixhd import (
    GlobalGenerator,
    MultiscaleDiscriminator,
    NLayerDiscriminator,
    VGGPerceptual,
    weights_init,
)

SMOKE_NGF = 8
# pix2pixHD's global generator at its option defaults (ngf 64, n_downsample_global 4,
# n_blocks_global 9) as RGB → depth (3 → 1): 182,436,993 parameters.
GLOBAL_G_PARAMS = 182_436_993
# One NLayer discriminator (ndf 64, n_layers 3) on concat(RGB, depth) = 4 channels.
NLAYER_D_PARAMS = 2_765_761


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def conv_params(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k + c_out


# --- generator -------------------------------------------------------------------------------


@pytest.mark.parametrize("n_downsample", [2, 3, 4])
def test_generator_shape_range_and_bottleneck(n_downsample):
    gen = GlobalGenerator(3, 1, ngf=SMOKE_NGF, n_downsample=n_downsample, n_blocks=2)
    y = gen(torch.randn(2, 3, 64, 64) * 3)
    assert y.shape == (2, 1, 64, 64)
    assert y.abs().max() <= 1.0
    blocks = [m for m in gen.model if m.__class__.__name__ == "ResnetBlock"]
    assert len(blocks) == 2
    assert blocks[0].conv_block[1].in_channels == SMOKE_NGF * 2**n_downsample
    y.mean().backward()  # in-place ReLUs must leave autograd intact


def test_generator_keeps_non_square_size():
    gen = GlobalGenerator(3, 1, ngf=4, n_downsample=2, n_blocks=1)
    assert gen(torch.randn(1, 3, 32, 96)).shape == (1, 1, 32, 96)


def test_generator_at_nyu_resolution_ngf4():
    gen = GlobalGenerator(3, 1, ngf=4)  # n_downsample 4, 9 blocks: 480 / 16 = 30, 640 / 16 = 40
    with torch.no_grad():
        assert gen(torch.randn(1, 3, 480, 640)).shape == (1, 1, 480, 640)


def test_generator_noise_channels_widen_the_first_conv():
    gen = GlobalGenerator(3, 1, ngf=4, n_downsample=2, n_blocks=1, noise_channels=2)
    assert gen.model[1].in_channels == 5
    x = torch.cat([torch.randn(1, 3, 32, 32), torch.randn(1, 2, 32, 32)], dim=1)
    assert gen(x).shape == (1, 1, 32, 32)
    with pytest.raises(ValueError, match="noise_channels 2"):
        gen(torch.randn(1, 3, 32, 32))  # noise forgotten


@pytest.mark.parametrize("size", [(60, 64), (64, 72), (16, 16)])
def test_generator_rejects_sizes_that_do_not_fit_n_downsample(size):
    gen = GlobalGenerator(3, 1, ngf=4, n_downsample=4, n_blocks=1)
    # 60 and 72 are not multiples of 16; 16×16 would leave a 1×1 bottleneck.
    with pytest.raises(ValueError, match="divisible by 2\\*\\*n_downsample = 16"):
        gen(torch.randn(1, 3, *size))


@pytest.mark.parametrize("field,kwargs", [
    ("ngf|width", {"ngf": 0}),
    ("n_downsample", {"n_downsample": -1}),
    ("n_blocks", {"n_blocks": 1.5}),
    ("noise_channels", {"noise_channels": -2}),
])
def test_generator_bad_settings_raise(field, kwargs):
    with pytest.raises(ValueError, match=field):
        GlobalGenerator(3, 1, **kwargs)


class _ReferenceResnetBlock(nn.Module):
    """pix2pixHD's ResnetBlock written out again, independently of depthlab."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim),
        )


def _reference_global_generator(input_nc, output_nc, ngf=64, n_down=4, n_blocks=9):
    """pix2pixHD networks.GlobalGenerator's layer list, as a plain Sequential."""
    model = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7), nn.InstanceNorm2d(ngf),
             nn.ReLU(True)]
    for i in range(n_down):
        mult = 2**i
        model += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1),
                  nn.InstanceNorm2d(ngf * mult * 2), nn.ReLU(True)]
    model += [_ReferenceResnetBlock(ngf * 2**n_down) for _ in range(n_blocks)]
    for i in range(n_down):
        mult = 2 ** (n_down - i)
        model += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, 2, 1, output_padding=1),
                  nn.InstanceNorm2d(ngf * mult // 2), nn.ReLU(True)]
    model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
    holder = nn.Module()
    holder.model = nn.Sequential(*model)
    return holder


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_generator_parameter_count_at_full_width():
    with torch.device("meta"):  # 182 M parameters: count them without allocating 730 MB
        ours, reference = GlobalGenerator(3, 1), _reference_global_generator(3, 1)
    assert _shapes(ours) == _shapes(reference)  # same layers, same pix2pixHD state-dict keys
    by_hand = (
        conv_params(3, 64, 7)
        + sum(conv_params(64 * 2**i, 128 * 2**i, 3) for i in range(4))
        + 9 * 2 * conv_params(1024, 1024, 3)
        + sum(conv_params(1024 // 2**i, 512 // 2**i, 3) for i in range(4))  # ConvT, same count
        + conv_params(64, 1, 7)
    )
    assert count_parameters(ours) == count_parameters(reference) == by_hand == GLOBAL_G_PARAMS


# --- discriminators --------------------------------------------------------------------------


def _patch_sizes(size: int, n_layers: int) -> list[int]:
    """Side of each NLayer output: k4 p2 maps H → H//2 + 1 at stride 2, H → H + 1 at stride 1."""
    sizes = []
    for _ in range(n_layers):
        size = size // 2 + 1
        sizes.append(size)
    for _ in range(2):
        size += 1
        sizes.append(size)
    return sizes


@pytest.mark.parametrize("num_d", [1, 2, 3])
def test_multiscale_discriminator_shapes(num_d):
    ndf = 8
    disc = MultiscaleDiscriminator(4, ndf=ndf, n_layers=3, num_d=num_d)
    x = torch.randn(2, 4, 64, 64)
    outputs = disc(x)
    assert len(outputs) == num_d
    channels = [ndf, 2 * ndf, 4 * ndf, 8 * ndf, 1]
    for k, scale in enumerate(outputs):
        assert len(scale) == 5  # n_layers + 2: four feature maps, then the scores
        side = 64 // 2**k  # D1 full, D2 half, D3 quarter resolution
        expected = [(2, c, s, s) for c, s in zip(channels, _patch_sizes(side, 3), strict=True)]
        assert [tuple(t.shape) for t in scale] == expected
    if num_d > 1:  # D2 sees the input average-pooled once
        half = nn.functional.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
        torch.testing.assert_close(outputs[1][-1], disc.scales[1](half)[-1])


def test_downsampler_does_not_darken_borders():
    disc = MultiscaleDiscriminator(4, ndf=4, num_d=2)
    pooled = disc.downsample(torch.ones(1, 4, 8, 8))
    assert pooled.shape == (1, 4, 4, 4)
    torch.testing.assert_close(pooled, torch.ones_like(pooled))  # count_include_pad=False


def test_discriminator_at_nyu_resolution_ndf4():
    disc = MultiscaleDiscriminator(4, ndf=4, num_d=2)
    with torch.no_grad():
        scores = [scale[-1].shape for scale in disc(torch.randn(1, 4, 480, 640))]
    # 480 → 241 → 121 → 61 → 62 → 63 and 640 → … → 83; D2 from 240×320 → 33×43.
    assert scores == [(1, 1, 63, 83), (1, 1, 33, 43)]


def test_nlayer_discriminator_parameter_count_at_full_width():
    # conv4 layers 4→64→128→256→512→1, each with a bias; instance norm has no parameters.
    chans = [4, 64, 128, 256, 512, 1]
    pairs = zip(chans[:-1], chans[1:], strict=True)
    by_hand = sum(c_in * c_out * 16 + c_out for c_in, c_out in pairs)
    assert by_hand == NLAYER_D_PARAMS
    with torch.device("meta"):
        assert count_parameters(NLayerDiscriminator(4)) == NLAYER_D_PARAMS
        assert count_parameters(MultiscaleDiscriminator(4, num_d=2)) == 2 * NLAYER_D_PARAMS


def test_nlayer_discriminator_caps_channels_at_512():
    with torch.device("meta"):
        disc = NLayerDiscriminator(4, ndf=128, n_layers=4)
    convs = [layer[0].out_channels for layer in disc.layers]
    assert convs == [128, 256, 512, 512, 512, 1]  # pix2pixHD's nf = min(2·nf, 512)


@pytest.mark.parametrize("kwargs", [{"num_d": 0}, {"n_layers": 0}, {"ndf": -1}])
def test_discriminator_bad_settings_raise(kwargs):
    with pytest.raises(ValueError, match="num_d|n_layers|width"):
        MultiscaleDiscriminator(4, **kwargs)


def test_weights_init_is_pix2pixhds():
    gen = GlobalGenerator(3, 1, ngf=16, n_downsample=2, n_blocks=2)
    weights = torch.cat([m.weight.flatten() for m in gen.modules()
                         if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)])
    assert weights.std().item() == pytest.approx(0.02, rel=0.02)
    assert abs(weights.mean().item()) < 1e-3
    bn = nn.Sequential(nn.Conv2d(2, 4000, 1), nn.BatchNorm2d(4000))
    weights_init(bn)
    assert bn[1].weight.mean().item() == pytest.approx(1.0, abs=2e-3)
    assert bn[1].weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert bn[1].bias.abs().max().item() == 0.0


# --- losses ----------------------------------------------------------------------------------


def test_lsgan_on_a_tensor():
    scores = torch.tensor([[0.5, 1.5]])
    assert lsgan_loss(scores, True).item() == pytest.approx((0.25 + 0.25) / 2)
    assert lsgan_loss(scores, False).item() == pytest.approx((0.25 + 2.25) / 2)


def test_lsgan_sums_the_last_map_of_each_scale():
    big = torch.full((1, 2, 2, 2), 100.0)  # intermediate features: must be ignored
    scale0 = [big, torch.tensor([[2.0, 0.0]])]  # real: (1 + 1) / 2 = 1, fake: (4 + 0) / 2 = 2
    scale1 = [big, torch.tensor([[0.5]])]  # real: 0.25, fake: 0.25
    assert lsgan_loss([scale0, scale1], True).item() == pytest.approx(1.25)
    assert lsgan_loss([scale0, scale1], False).item() == pytest.approx(2.25)
    assert lsgan_loss(scale0, False).item() == pytest.approx(2.0)  # one D's layer list


def test_feature_matching_by_hand():
    # n_layers 2: three feature maps and one score map per scale, two scales.
    def outputs(values):
        return [[torch.full((1, 2, 3, 3), v) for v in scale] for scale in values]

    fake = outputs([[1.0, 2.0, 3.0, 50.0], [0.5, 0.5, 1.0, -50.0]])
    real = outputs([[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    for scale in real:
        for t in scale:
            t.requires_grad_(True)
    loss = feature_matching_loss(fake, real, n_layers=2)
    # L1s 1 + 2 + 3 and 0.5 + 0.5 + 1 = 8 (score maps excluded); weight (1/2)·(4/3) = 2/3.
    assert loss.item() == pytest.approx(8 * 2 / 3)
    assert not loss.requires_grad  # only the real side needs grad here, and it is detached


def test_feature_matching_rejects_mismatched_outputs():
    scale = [torch.zeros(1, 1, 2, 2)] * 5
    with pytest.raises(ValueError, match="same number of scales"):
        feature_matching_loss([scale, scale], [scale], n_layers=3)
    with pytest.raises(ValueError, match="n_layers=2 .* 4 outputs"):
        feature_matching_loss([scale], [scale], n_layers=2)


def test_vgg_perceptual_loss_by_hand():
    targets = [torch.zeros(1, 2, 4, 4, requires_grad=True) for _ in range(5)]
    features = [torch.full((1, 2, 4, 4), float(k + 1), requires_grad=True) for k in range(5)]
    loss = vgg_perceptual_loss(features, targets)
    # Σ w_k·(k+1) = 1/32 + 2/16 + 3/8 + 4/4 + 5
    assert loss.item() == pytest.approx(6.53125)
    assert PIX2PIXHD_VGG_WEIGHTS == (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
    loss.backward()
    assert targets[0].grad is None  # the real image's features are detached
    assert features[0].grad.abs().sum() > 0
    with pytest.raises(ValueError, match="one target and one weight"):
        vgg_perceptual_loss(features[:4], targets[:4])


def test_vgg_perceptual_taps_relu_k_1():
    vgg = VGGPerceptual(None, width=0.125)
    # Convs before each tap: conv1_1 | conv1_2, conv2_1 | conv2_2, conv3_1 | conv3_2–4, conv4_1 | …
    convs = [sum(isinstance(m, nn.Conv2d) for m in s) for s in vgg.slices]
    assert convs == [1, 2, 2, 4, 4]
    assert all(isinstance(s[-1], nn.ReLU) for s in vgg.slices)
    depth = torch.rand(1, 1, 32, 32, requires_grad=True) * 2 - 1
    feats = vgg(depth)
    assert [tuple(f.shape) for f in feats] == [
        (1, 8, 32, 32), (1, 16, 16, 16), (1, 32, 8, 8), (1, 64, 4, 4), (1, 64, 2, 2)]
    for ours, rgb in zip(feats, vgg(depth.detach().repeat(1, 3, 1, 1)), strict=True):
        torch.testing.assert_close(ours, rgb)  # 1-channel depth = the same map on R, G, B
    assert count_parameters(vgg) == 0  # frozen
    with pytest.raises(ValueError, match="1 or 3"):
        vgg(torch.rand(1, 2, 32, 32))


def test_vgg_perceptual_missing_pretrained_file_raises(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        VGGPerceptual(tmp_path / "vgg19.pth")
