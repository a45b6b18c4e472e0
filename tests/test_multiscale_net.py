"""Paper 001's multi-scale network (shapes, counts, layer groups, stages, pretrained VGG)
and its losses (masked MSE, set loss, flip set) against values computed by hand."""

import pytest
import torch
import torchvision

from depthlab.nn import count_parameters
from depthlab.nn.losses import flip_set, masked_mse, set_loss, unflip
from depthlab.nn.multiscale import (
    PAPER_IMAGE_SIZE,
    REFERENCE_LR,
    MultiScaleNet,
    upsample_to,
)

SMOKE_WIDTH = 0.125
VGG16_CHANNELS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def conv(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k + c_out


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def expected_parameters(h: int, w: int, skips: bool = True) -> dict[str, int]:
    """Full-width counts by part, from the layer list of METHODS §3 (not from the code)."""
    vgg = sum(conv(a, b, 3) for a, b in zip([3, *VGG16_CHANNELS], VGG16_CHANNELS, strict=False))
    coarse = (h // 4) * (w // 4)
    fc = linear((h // 32) * (w // 32) * 512, coarse) + linear(coarse, coarse)
    skip = conv(256, 64, 5) + conv(512, 64, 5) if skips else 0
    extra = 64 if skips else 0
    scale2 = (conv(3, 96, 9) + conv(96 + extra, 64, 5) + conv(64, 64, 5)
              + conv(64 + extra, 64, 5) + conv(64, 64, 5)
              + conv(65, 64, 5) + 2 * conv(64, 64, 5) + conv(64, 1, 5))
    scale3 = (conv(3, 96, 9) + conv(96, 64, 5) + conv(65, 64, 5) + 2 * conv(64, 64, 5)
              + conv(64, 1, 5))
    return {"vgg": vgg, "fc": fc, "skip": skip, "scale2": scale2, "scale3": scale3}


def test_vgg16_conv_count_is_torchvisions():
    assert expected_parameters(96, 128)["vgg"] == 14_714_688


@pytest.mark.parametrize("size", [(64, 64), (96, 128)])
@pytest.mark.parametrize("skips", [True, False])
@pytest.mark.parametrize("scales", [2, 3])
def test_output_shapes(size, skips, scales):
    h, w = size
    net = MultiScaleNet(size, width=SMOKE_WIDTH, skips=skips)
    out = net(torch.rand(2, 3, h, w), scales=scales)
    expected = {"scale1": (2, 1, h // 4, w // 4), "scale2": (2, 1, h // 4, w // 4)}
    if scales == 3:
        expected["scale3"] = (2, 1, h // 2, w // 2)
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert out[f"scale{scales}"].min() >= 0  # 2.9 and 3.6 end in a ReLU
    out[f"scale{scales}"].mean().backward()  # in-place ReLUs leave autograd intact


def test_main_paths_need_no_resize():
    # The padding choices make 2.1 and 3.1 land exactly on H/4 and H/2, skips on ×2 and ×4.
    net = MultiScaleNet((64, 96), width=SMOKE_WIDTH)
    seen = {}
    for name in ("conv2_1", "conv3_1", "skip1_1", "skip1_2"):
        getattr(net, name).register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__(name, tuple(o.shape[-2:])))
    net(torch.rand(1, 3, 64, 96))
    assert seen == {"conv2_1": (16, 24), "conv3_1": (32, 48), "skip1_1": (8, 12),
                    "skip1_2": (4, 6)}


def test_predict_is_the_finest_scale_upsampled():
    net = MultiScaleNet((64, 64), width=SMOKE_WIDTH).eval()  # eval: no dropout
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(net.predict(x, 2), upsample_to(net(x, 2)["scale2"], (64, 64)))
    torch.testing.assert_close(net.predict(x, 3), upsample_to(net(x, 3)["scale3"], (64, 64)))
    assert net.predict(x).shape == (1, 1, 64, 64)


def test_upsample_to_keeps_corners_and_constants():
    small = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    big = upsample_to(small, (3, 5))
    assert big.shape == (1, 1, 3, 5)
    # align_corners=True (the code's UpsamplingBilinear2d): corners are copied, centre = mean.
    assert big[0, 0, [0, 0, -1, -1], [0, -1, 0, -1]].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert big[0, 0, 1, 2].item() == pytest.approx(2.5)


@pytest.mark.parametrize("size", [PAPER_IMAGE_SIZE, (224, 320)])
def test_parameter_count_at_full_width(size):
    # On the meta device: shapes are real, memory is not spent (224×320 has 165M parameters).
    with torch.device("meta"):
        net = MultiScaleNet(size)
    parts = expected_parameters(*size)
    assert count_parameters(net) == sum(parts.values())
    assert count_parameters(net.vgg) == parts["vgg"]
    assert sum(p.numel() for p in net.stage_parameters(2)) == parts["scale3"]


def test_paper_size_count_by_hand():
    # 96×128: VGG 14,714,688 + FCs 4,719,360 + 590,592 + skips 409,664 + 819,264
    # + scale 2 999,873 + scale 3 487,681.
    with torch.device("meta"):
        assert count_parameters(MultiScaleNet(PAPER_IMAGE_SIZE)) == 22_741_122


def test_no_skips_removes_the_skip_convs_and_their_input_channels():
    with torch.device("meta"):
        on, off = MultiScaleNet(PAPER_IMAGE_SIZE), MultiScaleNet(PAPER_IMAGE_SIZE, skips=False)
    no_skips = expected_parameters(*PAPER_IMAGE_SIZE, skips=False)
    assert count_parameters(off) == sum(no_skips.values())
    # skip convs + 64 fewer input channels into 2.2 and 2.4
    assert count_parameters(on) - count_parameters(off) == (
        conv(256, 64, 5) + conv(512, 64, 5) + 2 * 64 * 64 * 25)
    assert "skip" not in off.layer_groups()


def test_reference_learning_rates():
    assert REFERENCE_LR == {"vgg": 1e-4, "fc": 1e-1, "skip": 1e-2, "conv2_1": 1e-3,
                            "conv2_2_to_2_8": 1e-2, "conv2_9": 1e-3, "conv3_1": 1e-3,
                            "conv3_2_to_3_5": 1e-2, "conv3_6": 1e-3}


@pytest.mark.parametrize("skips", [True, False])
def test_layer_groups_cover_every_parameter_once(skips):
    net = MultiScaleNet((64, 64), width=SMOKE_WIDTH, skips=skips)
    groups = net.layer_groups()
    assert set(groups) <= set(REFERENCE_LR)
    grouped = [id(p) for params in groups.values() for p in params]
    assert len(grouped) == len(set(grouped))  # no parameter twice
    assert set(grouped) == {id(p) for p in net.parameters()}
    assert all(groups.values())  # no empty Adam group
    ids = lambda module: {id(p) for p in module.parameters()}  # noqa: E731
    assert {id(p) for p in groups["fc"]} == ids(net.fc)
    assert {id(p) for p in groups["conv2_9"]} == ids(net.conv2_9)
    # one Adam group per name, at the reference rates
    adam = torch.optim.Adam([{"params": p, "lr": REFERENCE_LR[n]} for n, p in groups.items()])
    assert sorted(g["lr"] for g in adam.param_groups)[-1] == 1e-1


def test_stage_parameters_split_scales_1_2_from_scale_3():
    net = MultiScaleNet((64, 64), width=SMOKE_WIDTH)
    stage1 = {id(p) for p in net.stage_parameters(1)}
    stage2 = {id(p) for p in net.stage_parameters(2)}
    scale3 = {id(p) for m in (net.conv3_1, net.conv3_2, net.conv3_3_5, net.conv3_6)
              for p in m.parameters()}
    assert stage2 == scale3
    assert not stage1 & stage2
    assert stage1 | stage2 == {id(p) for p in net.parameters()}
    assert set(net.layer_groups(2)) == {"conv3_1", "conv3_2_to_3_5", "conv3_6"}


def test_stage_2_trains_scale_3_only():
    net = MultiScaleNet((64, 64), width=SMOKE_WIDTH)
    for p in net.stage_parameters(1):
        p.requires_grad_(False)
    net(torch.rand(1, 3, 64, 64))["scale3"].sum().backward()
    assert all(p.grad is None for p in net.stage_parameters(1))
    assert all(p.grad is not None for p in net.stage_parameters(2))


def test_pretrained_vgg_loads_from_a_local_state_dict(tmp_path):
    reference = torchvision.models.vgg16(weights=None).state_dict()
    # the conv tensors plus one classifier tensor: a real file's extra keys must be ignored
    state = {k: v for k, v in reference.items() if k.startswith("features.")}
    state["classifier.6.bias"] = reference["classifier.6.bias"]
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    net = MultiScaleNet((64, 64), pretrained=str(path))
    torch.testing.assert_close(net.vgg[0].weight, state["features.0.weight"])
    torch.testing.assert_close(net.vgg[28].bias, state["features.28.bias"])
    with pytest.raises(ValueError, match="width 1"):
        MultiScaleNet((64, 64), width=0.5, pretrained=str(path))


@pytest.mark.parametrize("size", [(92, 120), (64,), (64, 0), "64x64"])
def test_bad_image_size_raises(size):
    with pytest.raises(ValueError, match="image_size"):
        MultiScaleNet(size, width=SMOKE_WIDTH)


def test_bad_forward_input_raises():
    net = MultiScaleNet((64, 64), width=SMOKE_WIDTH)
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        net(torch.rand(1, 3, 64, 96))
    with pytest.raises(ValueError, match="scales"):
        net(torch.rand(1, 3, 64, 64), scales=1)
    with pytest.raises(ValueError, match="stage"):
        net.stage_parameters(3)


# --- losses ---

D0 = torch.tensor([[[[0.0, 0.0]]]])  # (1, 1, 1, 2)
D1 = torch.tensor([[[[1.0, 1.0]]]])
D2 = torch.tensor([[[[0.0, 2.0]]]])
# pair MSEs: (0,1) = 1, (0,2) = (0 + 4)/2 = 2, (1,2) = (1 + 1)/2 = 1 → Σ_{j<k} = 4


@pytest.mark.parametrize("pairs, expected", [("unordered", 4 / 2), ("ordered", 8 / 2)])
def test_set_loss_by_hand(pairs, expected):
    assert set_loss([D0, D1, D2], pairs=pairs).item() == pytest.approx(expected)


def test_set_loss_ordered_is_the_posters_double_sum():
    preds = [torch.rand(2, 1, 3, 4) for _ in range(3)]
    poster = sum(((preds[i] - preds[j]) ** 2).mean()
                 for i in range(3) for j in range(3) if j != i) / (3 - 1)
    assert set_loss(preds, pairs="ordered").item() == pytest.approx(poster.item())


def test_set_loss_with_a_valid_mask():
    valid = torch.tensor([[[[True, False]]]])
    # only the first pixel: (0,1) = 1, (0,2) = 0, (1,2) = 1 → 2 / (N − 1) = 1
    assert set_loss([D0, D1, D2], valid=valid).item() == pytest.approx(1.0)
    nothing = torch.zeros_like(valid)
    assert set_loss([D0, D1, D2], valid=nothing).item() == 0.0


def test_set_loss_bad_input_raises():
    with pytest.raises(ValueError, match="pairs"):
        set_loss([D0, D1], pairs="all")
    with pytest.raises(ValueError, match="at least 2"):
        set_loss([D0])
    with pytest.raises(ValueError, match="one shape"):
        set_loss([D0, torch.zeros(1, 1, 2, 1)])
    with pytest.raises(ValueError, match="bool"):
        set_loss([D0, D1], valid=torch.ones(1, 1, 1, 2))


def test_flip_set_and_unflip():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    identity, lr, ud = flip_set(x)
    assert lr.flatten().tolist() == [2.0, 1.0, 4.0, 3.0]
    assert ud.flatten().tolist() == [3.0, 4.0, 1.0, 2.0]
    assert flip_set(x, rot180=True)[3].flatten().tolist() == [4.0, 3.0, 2.0, 1.0]
    for copies in (flip_set(x), flip_set(x, rot180=True)):
        for back in unflip(copies):
            torch.testing.assert_close(back, x)
    # a flip-equivariant predictor (here the identity) has zero set loss
    assert set_loss(unflip(flip_set(x))).item() == 0.0
    # one that is not (it ignores the flips) is penalised
    assert set_loss(unflip([x, x, x])).item() > 0
    with pytest.raises(ValueError, match="3"):
        unflip([x, x])


def test_masked_mse_ignores_nan_targets():
    pred = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    target = torch.tensor([1.0, float("nan"), 5.0, float("nan")])
    loss = masked_mse(pred, target)
    assert loss.item() == pytest.approx((0 + 4) / 2)
    loss.backward()
    assert pred.grad.tolist() == [0.0, 0.0, -2.0, 0.0]  # 2·(3 − 5)/2 at the one error


def test_masked_mse_without_valid_pixels_is_zero_with_grad():
    pred = torch.rand(1, 1, 2, 2, requires_grad=True)
    loss = masked_mse(pred, torch.full((1, 1, 2, 2), float("nan")))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))
    with pytest.raises(ValueError, match="same shape"):
        masked_mse(pred, torch.zeros(1, 1, 2, 3))
