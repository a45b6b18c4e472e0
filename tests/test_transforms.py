"""Augmentations against hand-computed pixels and intrinsics; image, depth and K move together."""

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from depthlab.data.batch import DepthBatch
from depthlab.data.transforms import (
    AUGMENTATIONS,
    Augmentation,
    Draw,
    apply_draw,
    colour_scale,
    gamma,
    hflip,
    rotate,
    vflip,
    zoom_crop,
)

GEOMETRIC_OFF = dict(colour=None, gamma=None)  # photometric ops rewrite channel 0


def intrinsics(b: int, fx: float, fy: float, cx: float, cy: float) -> torch.Tensor:
    k = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return k.expand(b, 3, 3).clone()  # (B, 3, 3)


def ramp_batch(b: int = 4, h: int = 32, w: int = 32, paired: bool = True) -> DepthBatch:
    """Depth a smooth ramp in metres with NaN holes; image channel 0 = depth/10 (no holes)."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                            torch.arange(w, dtype=torch.float32), indexing="ij")
    offset = torch.arange(b, dtype=torch.float32)[:, None, None, None] * 0.1
    full = 1.0 + 0.05 * xs + 0.03 * ys + offset  # (B, 1, H, W), 1–3.5 m
    image = torch.cat([full / 10, torch.full_like(full, 0.5), (xs / w).expand_as(full)], dim=1)
    depth = full.clone()
    depth[:, :, 5:8, 20:24] = math.nan  # holes must move with the content
    return DepthBatch(image=image, depth=depth, paired=paired,
                      intrinsics=intrinsics(b, 30.0, 30.0, 13.0, 17.0),
                      ids=[str(i) for i in range(b)])


def bits(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view(torch.int32)  # bitwise comparison that treats NaN == NaN


# --------------------------------------------------------------------------- flips


def test_flips_move_pixels_and_update_cx_cy_exactly():
    batch = ramp_batch(b=2, h=24, w=32)
    out = hflip(batch, torch.tensor([True, False]))
    torch.testing.assert_close(out.image[0], batch.image[0].flip(-1), rtol=0, atol=0)
    assert torch.equal(bits(out.depth[0]), bits(batch.depth[0].flip(-1)))
    assert torch.equal(bits(out.depth[1]), bits(batch.depth[1]))
    assert out.intrinsics[:, 0, 2].tolist() == [32 - 1 - 13.0, 13.0]  # 18, 13
    assert out.intrinsics[:, 1, 2].tolist() == [17.0, 17.0]
    out = vflip(batch, torch.tensor([False, True]))
    assert torch.equal(bits(out.depth[1]), bits(batch.depth[1].flip(-2)))
    assert out.intrinsics[:, 1, 2].tolist() == [17.0, 24 - 1 - 17.0]  # 17, 6
    assert out.intrinsics[:, 0, 0].tolist() == [30.0, 30.0]
    assert batch.intrinsics[0, 0, 2].item() == 13.0  # the input batch is not modified


# --------------------------------------------------------------------------- rotation


def test_rotation_keeps_a_constant_depth_inside_and_blanks_the_corners():
    batch = DepthBatch(image=torch.full((2, 3, 32, 32), 0.5), depth=torch.full((2, 1, 32, 32), 2.5))
    out = rotate(batch, torch.tensor([30.0, -20.0]))
    centre = (slice(None), slice(None), slice(8, 24), slice(8, 24))
    assert (out.depth[centre] == 2.5).all()  # nearest copies, never blends
    torch.testing.assert_close(out.image[centre], torch.full_like(out.image[centre], 0.5))
    for y, x in [(0, 0), (0, 31), (31, 0), (31, 31)]:
        assert torch.isnan(out.depth[:, 0, y, x]).all()
        assert (out.image[:, :, y, x] == 0).all()
    # outside-the-frame pixels agree between image and depth
    assert torch.equal(torch.isnan(out.depth).expand(-1, 3, -1, -1), out.image == 0)


def test_rotation_by_90_degrees_is_rot90():
    batch = ramp_batch(b=1)
    out = rotate(batch, torch.tensor([90.0]))
    torch.testing.assert_close(out.image, torch.rot90(batch.image, 1, dims=(-2, -1)),
                               rtol=0, atol=1e-5)
    assert torch.equal(bits(out.depth), bits(torch.rot90(batch.depth, 1, dims=(-2, -1))))
    # principal point (13, 17) about c = 15.5: (u, v) = (−2.5, 1.5) → (v, −u) = (1.5, 2.5)
    torch.testing.assert_close(out.intrinsics[0, :2, 2], torch.tensor([17.0, 18.0]))


def test_rotation_by_30_degrees_matches_a_hand_computed_pixel():
    # 5×5, centre c = 2; output (x', y') = (3, 3) samples input
    # x = 2 + cos30 − sin30 = 2.3660, y = 2 + sin30 + cos30 = 3.3660.
    ys, xs = torch.meshgrid(torch.arange(5.0), torch.arange(5.0), indexing="ij")
    image = torch.stack([xs / 10, ys / 10, torch.zeros(5, 5)])[None]  # linear: bilinear is exact
    depth = (10 * ys + xs)[None, None]
    out = rotate(DepthBatch(image=image, depth=depth), torch.tensor([30.0]))
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    assert out.image[0, 0, 3, 3].item() == pytest.approx((2 + c - s) / 10, abs=1e-6)
    assert out.image[0, 1, 3, 3].item() == pytest.approx((2 + s + c) / 10, abs=1e-6)
    assert out.depth[0, 0, 3, 3].item() == 32.0  # nearest input pixel (x 2, y 3)


def test_drawn_angles_stay_in_range_and_apply_uses_them():
    aug = Augmentation(max_degrees=5.0)
    draw = aug.draw(64, torch.Generator().manual_seed(3))
    assert draw.degrees.abs().max() <= 5.0 and draw.degrees.abs().max() > 4.0
    assert draw.hflip is None and draw.colour is None
    batch = ramp_batch()
    out = aug.apply(batch, torch.Generator().manual_seed(3))
    ref = rotate(batch, aug.draw(4, torch.Generator().manual_seed(3)).degrees)
    assert torch.equal(bits(out.depth), bits(ref.depth))


@pytest.mark.parametrize("degrees", [30.0, -12.0])
def test_rotated_principal_point_follows_the_content(degrees):
    depth = torch.full((1, 1, 32, 32), 1.0)
    depth[..., 16:19, 9:12] = 5.0  # a 3×3 marker centred on pixel (x 10, y 17)
    batch = DepthBatch(image=None, depth=depth, intrinsics=intrinsics(1, 30.0, 30.0, 10.0, 17.0))
    out = rotate(batch, torch.tensor([degrees]))
    cx, cy = out.intrinsics[0, :2, 2].tolist()
    assert out.depth[0, 0, round(cy), round(cx)].item() == 5.0
    assert (cx, cy) != (10.0, 17.0)


# --------------------------------------------------------------------------- zoom crop


def test_zoom_crop_scales_intrinsics_by_hand():
    batch = ramp_batch(b=2)
    out = zoom_crop(batch, torch.tensor([0.125, 0.0]))  # border 4 px of 32 → scale 32/24
    k = out.intrinsics
    assert k[0, 0, 0].item() == pytest.approx(30 * 4 / 3)  # 40
    assert k[0, 1, 1].item() == pytest.approx(40.0)
    assert k[0, 0, 2].item() == pytest.approx((13 - 4 + 0.5) * 4 / 3 - 0.5)  # 12.1667
    assert k[0, 1, 2].item() == pytest.approx((17 - 4 + 0.5) * 4 / 3 - 0.5)  # 17.5
    torch.testing.assert_close(k[1], batch.intrinsics[1])  # no border: no change
    assert not torch.isnan(out.depth[0, :, 24:, :]).any()  # a crop never leaves the frame


def test_zoom_crop_equals_crop_then_resize():
    batch = ramp_batch(b=1)
    out = zoom_crop(batch, torch.tensor([0.125]))
    crop = (Ellipsis, slice(4, 28), slice(4, 28))
    image = F.interpolate(batch.image[crop], size=(32, 32), mode="bilinear", align_corners=False)
    depth = F.interpolate(batch.depth[crop], size=(32, 32), mode="nearest-exact")
    # interpolate clamps at the crop's edge; the zoom reads the true pixels just outside it
    inner = (Ellipsis, slice(1, -1), slice(1, -1))
    torch.testing.assert_close(out.image[inner], image[inner], rtol=0, atol=1e-6)
    assert torch.equal(bits(out.depth), bits(depth))


def test_zoom_crop_rejects_a_border_of_half_the_image():
    with pytest.raises(ValueError, match="border_fractions"):
        zoom_crop(ramp_batch(b=1), torch.tensor([0.5]))


# --------------------------------------------------------------------------- photometric


def test_colour_scale_leaves_depth_bitwise_and_keeps_the_range():
    batch = ramp_batch(b=2)
    batch = replace(batch, image=torch.full_like(batch.image, 0.9))
    out = colour_scale(batch, torch.tensor([[1.2, 1.0, 0.5], [0.8, 0.8, 0.8]]))
    assert torch.equal(bits(out.depth), bits(batch.depth))
    assert out.image.min() >= 0 and out.image.max() <= 1
    assert out.image[0, :, 0, 0].tolist() == pytest.approx([1.0, 0.9, 0.45])  # 1.08 clamped
    assert out.image[1, :, 0, 0].tolist() == pytest.approx([0.72] * 3)
    global_factor = colour_scale(batch, torch.tensor([0.5, 1.0]))
    assert global_factor.image[0].max().item() == pytest.approx(0.45)


def test_gamma_of_one_is_the_identity_and_two_squares():
    batch = ramp_batch(b=2)
    out = gamma(batch, torch.tensor([1.0, 2.0]))
    assert torch.equal(out.image[0], batch.image[0])
    torch.testing.assert_close(out.image[1], batch.image[1] ** 2)
    assert torch.equal(bits(out.depth), bits(batch.depth))
    via_config = Augmentation(gamma_range=(1.0, 1.0)).apply(batch, torch.Generator())
    assert torch.equal(via_config.image, batch.image)


# --------------------------------------------------------------------------- presets


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_paired_preset_moves_image_and_depth_together(name):
    batch = ramp_batch()
    aug = AUGMENTATIONS[name]
    draw = aug.draw(4, torch.Generator().manual_seed(11))
    out = apply_draw(batch, replace(draw, **GEOMETRIC_OFF))
    valid = torch.isfinite(out.depth)[:, 0]
    # bilinear image vs nearest depth differ by at most half a pixel of the ramp's slope
    err = (out.image[:, 0] - out.depth[:, 0] / 10)[valid].abs().max().item()
    assert err <= 0.5 * (0.05 + 0.03) / 10 * 1.5
    assert valid.sum() > 0.5 * valid.numel()
    if aug.max_degrees:  # rotation must have produced out-of-frame pixels somewhere
        assert (~valid).sum() > 4 * 3 * 4


def test_unpaired_batches_draw_independently():
    aug = AUGMENTATIONS["flips"]
    batch = ramp_batch(paired=False)
    out = aug.apply(batch, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    image_draw, depth_draw = aug.draw(4, g), aug.draw(4, g)
    assert not torch.equal(image_draw.vflip, depth_draw.vflip)  # seed 0 shows it
    moved_apart = [(out.image[i, 0] - out.depth[i, 0] / 10)[torch.isfinite(out.depth[i, 0])]
                   .abs().max().item() > 0.01 for i in range(4)]
    expected = [(image_draw.hflip[i] != depth_draw.hflip[i]).item()
                or (image_draw.vflip[i] != depth_draw.vflip[i]).item() for i in range(4)]
    assert moved_apart == expected and any(expected)
    # intrinsics follow the image's flips
    cx = torch.where(image_draw.hflip, 31 - 13.0, 13.0)
    assert out.intrinsics[:, 0, 2].tolist() == cx.tolist()
    paired = aug.apply(replace(batch, paired=True), torch.Generator().manual_seed(0))
    diff = (paired.image[:, 0] - paired.depth[:, 0] / 10)[torch.isfinite(paired.depth[:, 0])]
    assert diff.abs().max().item() < 1e-6


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_same_seed_same_output(name):
    batch = ramp_batch(paired=False)
    a = AUGMENTATIONS[name].apply(batch, torch.Generator().manual_seed(5))
    b = AUGMENTATIONS[name].apply(batch, torch.Generator().manual_seed(5))
    assert torch.equal(bits(a.image), bits(b.image)) and torch.equal(bits(a.depth), bits(b.depth))
    assert torch.equal(a.intrinsics, b.intrinsics)


def test_presets_carry_the_papers_numbers():
    eigen = AUGMENTATIONS["eigen"]
    assert (eigen.max_degrees, eigen.hflip_p, eigen.vflip_p, eigen.colour_range) == (
        5.0, 0.5, 0.0, (0.8, 1.2))
    assert AUGMENTATIONS["surface"].max_border_fraction * 512 == pytest.approx(31)
    assert (AUGMENTATIONS["flips"].hflip_p, AUGMENTATIONS["flips"].vflip_p) == (0.5, 0.5)
    assert AUGMENTATIONS["hflip"].vflip_p == 0.0
    assert AUGMENTATIONS["none"].draw(4, torch.Generator()) == Draw()  # every op off
    batch = ramp_batch()
    assert AUGMENTATIONS["none"].apply(batch, torch.Generator()) is batch


# --------------------------------------------------------------------------- fused warp


def noisy_batch(b: int = 8, h: int = 24, w: int = 40) -> DepthBatch:
    """Random image (worst case for interpolation), depth with NaN holes, skewed intrinsics;
    H ≠ W and W not a power of two, so a swapped axis or a rounding slip shows."""
    g = torch.Generator().manual_seed(21)
    depth = 1 + 9 * torch.rand(b, 1, h, w, generator=g)
    depth[depth < 1.6] = math.nan
    k = torch.tensor([[33.0, 0.25, 17.5], [0.0, 31.0, 10.0], [0.0, 0.0, 1.0]])
    return DepthBatch(image=torch.rand(b, 3, h, w, generator=g), depth=depth,
                      intrinsics=k.expand(b, 3, 3).clone(), ids=[str(i) for i in range(b)])


def one_by_one(batch: DepthBatch, draw: Draw) -> DepthBatch:
    """The public ops one after another, in apply_draw's order."""
    steps = ((zoom_crop, draw.border_fractions), (rotate, draw.degrees), (hflip, draw.hflip),
             (vflip, draw.vflip), (colour_scale, draw.colour), (gamma, draw.gamma))
    for op, values in steps:
        if values is not None:
            batch = op(batch, values)
    return batch


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_fused_warp_equals_the_ops_one_after_another(name):
    batch = noisy_batch()
    draw = AUGMENTATIONS[name].draw(8, torch.Generator().manual_seed(4))
    for flags in (draw.hflip, draw.vflip):  # the seed gives flipped and unflipped samples
        assert flags is None or 0 < int(flags.sum()) < 8
    fused, sequential = apply_draw(batch, draw), one_by_one(batch, draw)
    torch.testing.assert_close(fused.image, sequential.image, rtol=0, atol=1e-5)
    assert torch.equal(bits(fused.depth), bits(sequential.depth))
    assert torch.equal(fused.intrinsics, sequential.intrinsics)
    if AUGMENTATIONS[name].max_degrees:  # the warp did leave the frame somewhere
        assert torch.isnan(fused.depth[:, :, 0, 0]).any()


def test_zoom_and_rotation_together_are_one_interpolation_of_the_composed_map():
    # not a preset: the composed map is sampled once, so on an image linear in x and y
    # (where bilinear is exact) it agrees with the two warps away from the frame's edge
    b, h, w = 4, 32, 48
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                            torch.arange(w, dtype=torch.float32), indexing="ij")
    image = torch.stack([xs / w, ys / h, 0.5 + 0 * xs])[None].expand(b, 3, h, w)
    batch = DepthBatch(image=image, depth=torch.full((b, 1, h, w), 3.0),
                       intrinsics=intrinsics(b, 40.0, 40.0, 20.0, 14.0))
    draw = Draw(border_fractions=torch.tensor([0.05, 0.1, 0.0, 0.2]),
                degrees=torch.tensor([4.0, -5.0, 3.0, 0.0]), hflip=torch.tensor([1, 0, 1, 0]) > 0)
    fused, sequential = apply_draw(batch, draw), one_by_one(batch, draw)
    inner = (Ellipsis, slice(4, -4), slice(4, -4))
    torch.testing.assert_close(fused.image[inner], sequential.image[inner], rtol=0, atol=1e-5)
    assert (fused.depth[inner] == 3.0).all()
    assert torch.equal(fused.intrinsics, sequential.intrinsics)


def test_separable_grid_equals_affine_grid():
    from depthlab.data.transforms import _grid

    linear = torch.tensor([[[0.9, -0.2], [0.15, 1.1]], [[-1.0, 0.0], [0.0, 1.0]]])
    theta = torch.cat([linear, torch.zeros(2, 2, 1)], dim=-1)  # (B, 2, 3), no shift
    expected = F.affine_grid(theta, [2, 1, 24, 40], align_corners=False)
    torch.testing.assert_close(_grid(linear, 24, 40), expected, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- uint8 images


def test_bytes_become_the_float_image_with_colour_and_gamma_as_a_table():
    batch = noisy_batch(b=4)
    as_bytes = replace(batch, image=(batch.image * 255).round().to(torch.uint8))
    as_float = replace(batch, image=as_bytes.image.float() / 255)
    draw = Draw(colour=torch.tensor([[1.2, 1.0, 0.7], [0.8] * 3, [1.1] * 3, [1.0] * 3]),
                gamma=torch.tensor([0.5, 2.0, 1.3, 1.0]))
    out = apply_draw(as_bytes, draw)
    assert out.image.dtype == torch.float32 and out.image.shape == batch.image.shape
    torch.testing.assert_close(out.image, apply_draw(as_float, draw).image, rtol=0, atol=1e-6)
    assert torch.equal(bits(out.depth), bits(batch.depth))
    plain = apply_draw(as_bytes, Draw())
    assert torch.equal(plain.image, as_float.image)  # no ops: just the conversion


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_bytes_and_floats_agree_for_every_preset(name):
    # per-sample constant images: the photometric-then-warp order of the byte path and the
    # warp-then-photometric order of the float path differ only where interpolation blends
    levels = torch.tensor([0, 40, 128, 200, 255, 90, 17, 230], dtype=torch.uint8)
    batch = replace(noisy_batch(), image=levels[:, None, None, None].expand(8, 3, 24, 40))
    floats = replace(batch, image=batch.image.float() / 255)
    draw = AUGMENTATIONS[name].draw(8, torch.Generator().manual_seed(9))
    a, b = apply_draw(batch, draw), apply_draw(floats, draw)
    torch.testing.assert_close(a.image, b.image, rtol=0, atol=1e-6)
    assert torch.equal(bits(a.depth), bits(b.depth))
    assert torch.equal(a.intrinsics, b.intrinsics)
    assert torch.equal(a.image == 0, b.image == 0)  # the same pixels left the frame


def test_flips_on_bytes_are_exact():
    batch = noisy_batch(b=8)
    as_bytes = replace(batch, image=(batch.image * 255).round().to(torch.uint8))
    draw = AUGMENTATIONS["flips"].draw(8, torch.Generator().manual_seed(2))
    out = apply_draw(as_bytes, draw)
    assert torch.equal(out.image, one_by_one(replace(batch, image=as_bytes.image.float() / 255),
                                             draw).image)


def test_random_batches_hand_bytes_to_the_augmentation():
    import numpy as np

    from depthlab.data.datasets import RandomBatches, SplitArrays

    rng = np.random.default_rng(0)
    split = SplitArrays(images=rng.integers(0, 256, (6, 24, 40, 3), dtype=np.uint8),
                        depth=rng.uniform(1, 5, (6, 24, 40)).astype(np.float32),
                        ids=[f"s{i}" for i in range(6)])
    for name in sorted(AUGMENTATIONS):
        batch = next(RandomBatches(split, split, 4, seed=1, augmentation=AUGMENTATIONS[name]))
        assert batch.image.dtype == torch.float32 and batch.image.shape == (4, 3, 24, 40)
        assert 0 <= batch.image.min() and batch.image.max() <= 1
    plain = next(RandomBatches(split, split, 4, seed=1, augmentation=AUGMENTATIONS["none"]))
    first = torch.from_numpy(split.images[int(plain.ids[0][1:])]).permute(2, 0, 1)
    assert torch.equal(plain.image[0], first.float() / 255)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, field", [
    (dict(max_degrees=-1.0), "max_degrees"),
    (dict(max_degrees=200.0), "max_degrees"),
    (dict(hflip_p=1.5), "hflip_p"),
    (dict(vflip_p=-0.1), "vflip_p"),
    (dict(colour_range=(1.2, 0.8)), "colour_range"),
    (dict(colour_range=(0.0, 1.2)), "colour_range"),
    (dict(gamma_range=(2.0, 0.5)), "gamma_range"),
    (dict(max_border_fraction=0.5), "max_border_fraction"),
    (dict(colour_per_channel="yes"), "colour_per_channel"),
])
def test_bad_parameters_raise_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Augmentation(**kwargs)


def test_unknown_preset_and_wrong_value_count_raise():
    with pytest.raises(ValueError, match="unknown augmentation 'rotate9'"):
        AUGMENTATIONS.get_or_raise("rotate9")
    with pytest.raises(ValueError, match="hflip flags"):
        hflip(ramp_batch(b=2), torch.tensor([True, False, True]))


def test_ranges_from_lists_become_tuples():
    aug = Augmentation(colour_range=[0.8, 1.2])
    assert aug.colour_range == (0.8, 1.2)
    hash(aug)  # frozen and hashable, so it can sit in a config
