"""Training-time augmentations of the five papers: batched torch ops that move image, depth
(with its NaN validity) and intrinsics together, and the papers' presets by name.

Paper ↔ code:
  002 Huang & Yu §3.3 (after Eigen et al. 2014): rotation r ∈ [−5°, 5°] ↔ `rotate`;
      horizontal flip, p = 0.5 ↔ `hflip`; colour c ∈ [0.8, 1.2]³ ↔ `colour_scale` → "eigen"
  001 Das et al. poster: horizontal and vertical flips ↔ `hflip`, `vflip`        → "flips"
  004 Angermann et al. §4.1: random cropping, flipping, gamma correction
      ↔ `zoom_crop` (the code's prepro.py: border ∈ [0, 31] px at 512), flips, `gamma`  → "surface"
  000 Chu et al., pix2pixHD defaults: random horizontal flip ↔ `hflip`              → "hflip"

Conventions: pixel centres sit at integer coordinates (x = column, y = row), so a flip maps
x → W − 1 − x; K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]] in those coordinates. Each op takes
explicit per-sample values (deterministic, testable); `Augmentation` draws them from a
`torch.Generator`.

Speed (the loader must stay ≥ 3× raw PNG decoding, benchmarks/data_throughput.py):
`apply_draw` resamples once per batch, with zoom, rotation and flips composed into one
map, and takes the image as uint8: flips-only draws flip the bytes and apply gamma (with
the colour scale) as a per-sample 256-entry lookup table while converting to float.
"""

import functools
import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from depthlab.data.batch import DepthBatch
from depthlab.registry import Registry

Tensor = torch.Tensor

AUGMENTATIONS = Registry("augmentation")


# ---------------------------------------------------------------------------- helpers


def _reference(batch: DepthBatch) -> Tensor:
    ref = batch.image if batch.image is not None else batch.depth
    if ref is None:
        raise ValueError("augmentation: the batch holds neither an image nor a depth map")
    return ref


def _per_sample(name: str, values: Tensor, batch: DepthBatch) -> Tensor:
    """`values` as a tensor on the batch's device, or a ValueError if it is not one per sample."""
    ref = _reference(batch)
    values = torch.as_tensor(values, device=ref.device)
    if values.dim() == 0 or values.shape[0] != ref.shape[0]:
        raise ValueError(f"{name}: expected one value per sample ({ref.shape[0]}), "
                         f"got shape {tuple(values.shape)}")
    return values


@functools.lru_cache(maxsize=16)
def _pixel_centres(size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Pixel centres in grid_sample's [−1, 1] (align_corners=False), exactly antisymmetric:
    x ↔ −x is a flip bit for bit. Cached: every batch of a stream has the same size."""
    return (2 * torch.arange(size, dtype=dtype, device=device) + 1 - size) / size


def _grid(linear: Tensor, h: int, w: int) -> Tensor:
    """F.affine_grid([linear | 0], (B, ·, h, w), align_corners=False), built as a per-column
    plus a per-row term: ~15× cheaper on a CPU than affine_grid's batched matmul.

    linear (B, 2, 2) maps output to input in normalised coordinates about the image centre.
    """
    xs = _pixel_centres(w, linear.dtype, linear.device)
    ys = _pixel_centres(h, linear.dtype, linear.device)
    per_column = (linear[:, :, 0, None] * xs)[:, :, None, :]  # (B, x|y, 1, W)
    per_row = (linear[:, :, 1, None] * ys)[:, :, :, None]  # (B, x|y, H, 1)
    # Built as planes (one contiguous add) and handed over as a view: grid_sample reads a
    # strided grid as fast, and interleaving x and y would cost more than the whole sum.
    return (per_column + per_row).permute(0, 2, 3, 1)  # (B, H, W, x|y)


def _warp(batch: DepthBatch, linear: Tensor, may_leave: bool) -> DepthBatch:
    """Resample image (bilinear) and depth (nearest, NaN kept) where the map `linear`
    (B, 2, 2), in normalised coordinates about the image centre, sends each output pixel.

    `may_leave`: the map can reach outside the frame (a rotation; a zoom crop's and a flip's
    sources always lie inside), so out-of-frame pixels become 0 in the image and NaN in the
    depth. Intrinsics are left to the caller.
    """
    ref = _reference(batch)
    b, (h, w) = ref.shape[0], ref.shape[-2:]
    grid = _grid(linear.to(ref.device, ref.dtype), h, w)
    sample = lambda x, mode, pad: F.grid_sample(x, grid, mode=mode,  # noqa: E731
                                                padding_mode=pad, align_corners=False)
    # One nearest pass gives depth (nearest copies NaN as it is) and, when the map may leave
    # the frame, the in-frame test (grid_sample's own rounding, so image and depth agree
    # exactly on which pixels came from outside).
    planes = [torch.ones(b, 1, h, w, dtype=ref.dtype, device=ref.device)] if may_leave else []
    planes += [] if batch.depth is None else [batch.depth]
    nearest = None
    if planes:
        nearest = sample(planes[0] if len(planes) == 1 else torch.cat(planes, 1), "nearest",
                         "zeros")  # (B, 1 or 2, H, W)
    # exactly 1.0 in the frame and 0.0 outside: nearest copies the ones or pads with 0
    inside = nearest[:, :1] if may_leave else None  # (B, 1, H, W)
    image = depth = None
    if batch.image is not None:
        # 'border' keeps rim pixels undarkened; what lies outside is zeroed below.
        image = sample(batch.image, "bilinear", "border")
        if inside is not None:
            image.mul_(inside)
    if batch.depth is not None:
        depth = nearest[:, -1:]
        if inside is not None:
            depth = depth / inside  # d / 1 is d bit for bit; outside 0 / 0 is NaN
    return replace(batch, image=image, depth=depth)


# ---------------------------------------------------------------------------- the ops


def _mirror_intrinsics(k: Tensor | None, flags: Tensor, axis: int, size: int) -> Tensor | None:
    """K of a mirror along `axis` where flagged: the principal point moves to size − 1 − c
    and the skew changes sign (≈ 0 anyway)."""
    if k is None:
        return None
    k = k.clone()
    f = flags.to(k.device)
    row = 0 if axis == -1 else 1  # cx sits in row 0 of K, cy in row 1
    k[:, row, 2] = torch.where(f, (size - 1) - k[:, row, 2], k[:, row, 2])
    k[:, 0, 1] = torch.where(f, -k[:, 0, 1], k[:, 0, 1])
    return k


def _flip_each(x: Tensor | None, dims: list[tuple[int, ...]]) -> Tensor | None:
    """Sample b of x flipped along dims[b]: one copy of the batch, where a flip of the whole
    batch and a torch.where per axis read and write it four times (~5× slower on a CPU)."""
    if x is None:
        return None
    return torch.stack([x[b].flip(d) if d else x[b] for b, d in enumerate(dims)])


def _mirrors(batch: DepthBatch, hflags: Tensor | None, vflags: Tensor | None) -> DepthBatch:
    """Mirror left↔right the samples whose hflag is set, then top↔bottom those whose vflag is;
    one pass over the pixels for both."""
    h, w = _reference(batch).shape[-2:]
    dims: list[tuple[int, ...]] = [()] * _reference(batch).shape[0]
    k = batch.intrinsics
    for flags, axis, size, name in ((hflags, -1, w, "hflip"), (vflags, -2, h, "vflip")):
        if flags is not None:
            flags = _per_sample(f"{name} flags", flags, batch).bool()
            dims = [d + (axis,) if f else d for d, f in zip(dims, flags.tolist(), strict=True)]
            k = _mirror_intrinsics(k, flags, axis, size)
    return replace(batch, image=_flip_each(batch.image, dims),
                   depth=_flip_each(batch.depth, dims), intrinsics=k)


def hflip(batch: DepthBatch, flags: Tensor) -> DepthBatch:
    """Mirror left↔right the samples whose flag (B,) is set; cx → W − 1 − cx."""
    return _mirrors(batch, flags, None)


def vflip(batch: DepthBatch, flags: Tensor) -> DepthBatch:
    """Mirror top↔bottom the samples whose flag (B,) is set; cy → H − 1 − cy."""
    return _mirrors(batch, None, flags)


def _rotation(batch: DepthBatch, degrees: Tensor) -> tuple[Tensor, Tensor]:
    """The rotation matrices A (B, 2, 2) float64 and the image centre c (2,) of `rotate`."""
    degrees = _per_sample("rotate degrees", degrees, batch)
    h, w = _reference(batch).shape[-2:]
    theta = torch.deg2rad(degrees.to(torch.float64))
    cos, sin = torch.cos(theta), torch.sin(theta)
    a = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B,2,2)
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=torch.float64, device=a.device)
    return a, centre


def _rotation_linear(a: Tensor, h: int, w: int) -> Tensor:
    """The map of `rotate` (B, 2, 2) in normalised coordinates, D A D⁻¹ with D = diag(2/W, 2/H):
    in pixels, input = A (output − c) + c; y points down, so A turns the content
    counter-clockwise."""
    aspect = torch.tensor([[1.0, h / w], [w / h, 1.0]], dtype=torch.float64, device=a.device)
    return a * aspect


def _rotation_intrinsics(k: Tensor | None, a: Tensor, centre: Tensor) -> Tensor | None:
    if k is None:
        return None
    k = k.clone()
    p = k[:, :2, 2].to(torch.float64) - centre.to(k.device)
    moved = torch.einsum("bji,bj->bi", a.to(k.device), p) + centre.to(k.device)  # Aᵀ(p − c) + c
    k[:, :2, 2] = moved.to(k.dtype)
    return k


def rotate(batch: DepthBatch, degrees: Tensor) -> DepthBatch:
    """Rotate each sample about the image centre by its angle (B,), counter-clockwise on screen.

    90° equals `torch.rot90(x, 1, dims=(-2, -1))` on a square image. Image: bilinear.
    Depth: nearest, so a pixel takes one measured depth and never a blend of the two sides
    of an occlusion edge (bilinear-with-validity would invent depths between them); NaN
    stays NaN. Pixels that come from outside the frame become 0 in the image and NaN in
    the depth (Huang & Yu's "black margin").

    Intrinsics: a roll of the camera about its optical axis keeps z-depth, and with
    square pixels (fx = fy, no skew) it is the image rotation about the principal point
    with K unchanged; a rotation about the image centre adds a shift, so cx, cy become
    the rotated principal point and fx, fy, skew are kept. Exact for fx = fy; with
    fx ≠ fy no pinhole K describes the rotated image and this is the nearest one. Eigen
    et al. and Huang & Yu do not say (they use no intrinsics).
    """
    a, centre = _rotation(batch, degrees)
    h, w = _reference(batch).shape[-2:]
    out = _warp(batch, _rotation_linear(a, h, w), may_leave=True)
    return replace(out, intrinsics=_rotation_intrinsics(batch.intrinsics, a, centre))


def _zoom_fractions(batch: DepthBatch, border_fractions: Tensor) -> Tensor:
    u = _per_sample("zoom_crop border_fractions", border_fractions, batch).to(torch.float64)
    if bool(((u < 0) | (u >= 0.5)).any()):
        raise ValueError(f"zoom_crop border_fractions must lie in [0, 0.5), got {u.tolist()}")
    return u


def _zoom_linear(u: Tensor) -> Tensor:
    """The map of `zoom_crop` (B, 2, 2) in normalised coordinates: s·I with s = 1 − 2u. In
    pixels, x = s·x' + s/2 + u·W − 1/2, i.e. x − c = s (x' − c): centres of crop and
    output align."""
    eye = torch.eye(2, dtype=torch.float64, device=u.device)
    return (1 - 2 * u)[:, None, None] * eye


def _zoom_intrinsics(k: Tensor | None, u: Tensor, h: int, w: int) -> Tensor | None:
    if k is None:
        return None
    # K' = Z K with Z the inverse pixel map: x' = (x − u·W + 1/2)/s − 1/2.
    s = 1 - 2 * u
    zoom = torch.zeros(u.shape[0], 3, 3, dtype=torch.float64, device=u.device)
    zoom[:, 0, 0] = zoom[:, 1, 1] = 1 / s
    zoom[:, 0, 2] = (0.5 - u * w) / s - 0.5
    zoom[:, 1, 2] = (0.5 - u * h) / s - 0.5
    zoom[:, 2, 2] = 1
    return (zoom.to(k.device) @ k.to(torch.float64)).to(k.dtype)


def zoom_crop(batch: DepthBatch, border_fractions: Tensor) -> DepthBatch:
    """Cut a border of u·H rows and u·W columns (u (B,) in [0, 0.5)) off every side and
    resize back to H × W: image bilinear, depth nearest; fx, fy × 1/(1 − 2u), cx, cy shifted.

    As the authors' prepro.py `zoom_in` (centred crop, same border all round), with the
    border a real number so that any H × W keeps its aspect ratio; an integer border b
    at H = W gives exactly crop-then-resize (align_corners=False).
    """
    u = _zoom_fractions(batch, border_fractions)
    h, w = _reference(batch).shape[-2:]
    out = _warp(batch, _zoom_linear(u), may_leave=False)
    return replace(out, intrinsics=_zoom_intrinsics(batch.intrinsics, u, h, w))


def colour_scale(batch: DepthBatch, factors: Tensor) -> DepthBatch:
    """Multiply each image by its factor, (B,), (B, 1) or one per channel (B, 3); clamp to
    [0, 1]. Depth and intrinsics are the same tensors as before."""
    factors = _per_sample("colour_scale factors", factors, batch)
    if batch.image is None:
        return batch
    factors = factors.to(batch.image.dtype).reshape(factors.shape[0], -1, 1, 1)  # (B, 1|3, 1, 1)
    return replace(batch, image=(batch.image * factors).clamp_(0.0, 1.0))


def gamma(batch: DepthBatch, exponents: Tensor) -> DepthBatch:
    """image ** γ with one γ (B,) per sample; depth and intrinsics are untouched."""
    exponents = _per_sample("gamma exponents", exponents, batch)
    if batch.image is None:
        return batch
    g = exponents.to(batch.image.dtype)[:, None, None, None]
    return replace(batch, image=batch.image.clamp(min=0.0).pow(g))


# ---------------------------------------------------------------------------- drawing


@dataclass(frozen=True)
class Draw:
    """Per-sample values of one `Augmentation` application; None = that op is off."""

    border_fractions: Tensor | None = None  # (B,) zoom_crop
    degrees: Tensor | None = None  # (B,) rotate
    hflip: Tensor | None = None  # (B,) bool
    vflip: Tensor | None = None  # (B,) bool
    colour: Tensor | None = None  # (B, 1) or (B, 3)
    gamma: Tensor | None = None  # (B,)


def _geometric(batch: DepthBatch, draw: Draw) -> DepthBatch:
    """Zoom crop, rotation and flips as one resampling, K updated op by op as each op does.

    In normalised coordinates each op is a linear map about the image centre, so the
    composition is a product of 2 × 2 matrices. A flip is x → −x there: negating a column
    samples the points of the unflipped map in mirrored order, bit for bit what a flip of
    the output gives.
    """
    if draw.border_fractions is None and draw.degrees is None:
        if draw.hflip is None and draw.vflip is None:
            return batch
        return _mirrors(batch, draw.hflip, draw.vflip)  # exact index flips, no resampling
    h, w = _reference(batch).shape[-2:]
    linear, k = None, batch.intrinsics
    if draw.border_fractions is not None:
        u = _zoom_fractions(batch, draw.border_fractions)
        linear, k = _zoom_linear(u), _zoom_intrinsics(k, u, h, w)
    if draw.degrees is not None:
        a, centre = _rotation(batch, draw.degrees)
        rotation = _rotation_linear(a, h, w)
        # output → rotate's input (the zoomed image) → zoom's input: Z · R
        linear = rotation if linear is None else linear @ rotation
        k = _rotation_intrinsics(k, a, centre)
    for flags, column, axis, name in ((draw.hflip, 0, -1, "hflip"), (draw.vflip, 1, -2, "vflip")):
        if flags is not None:
            flags = _per_sample(f"{name} flags", flags, batch).bool()
            linear[..., column] *= 1.0 - 2.0 * flags.to(linear.device, linear.dtype)[:, None]
            k = _mirror_intrinsics(k, flags, axis, h if axis == -2 else w)
    out = _warp(batch, linear, may_leave=draw.degrees is not None)
    return replace(out, intrinsics=k)


def _bytes_to_unit(batch: DepthBatch, draw: Draw) -> DepthBatch:
    """uint8 image → float in [0, 1], colour-scaled and gamma-corrected. With a gamma, both go
    through a per-sample 256-entry table: the public ops applied to the 256 levels, so the
    values are theirs, at the cost of a gather instead of a pow per pixel."""
    image = batch.image
    if draw.gamma is None:  # a multiply is cheaper than the table's gather
        batch = replace(batch, image=image.float().div_(255.0))
        return batch if draw.colour is None else colour_scale(batch, draw.colour)
    b, c = image.shape[:2]
    levels = torch.arange(256, dtype=torch.float32, device=image.device).div_(255.0)
    table = DepthBatch(image=levels.expand(b, c, 1, 256), depth=None)  # (B, C, 1, 256)
    if draw.colour is not None:
        table = colour_scale(table, draw.colour)
    table = gamma(table, draw.gamma)
    lut = table.image.expand(b, c, 1, 256).reshape(b, c, 256)
    index = image.reshape(b, c, -1).long()  # (B, C, H·W)
    return replace(batch, image=torch.gather(lut, 2, index).reshape(image.shape))


def apply_draw(batch: DepthBatch, draw: Draw) -> DepthBatch:
    """Apply the drawn values in a fixed order: zoom crop, rotate, flips, colour, gamma.

    Zoom, rotation and flips are one composed map sampled once (bilinear image, nearest
    depth); for the presets, which combine at most one of zoom or rotation with
    flips, that is bit for bit the ops one after another. Zoom and rotation together are
    interpolated once instead of twice. Flips alone stay exact index flips.

    An image given as uint8 (0–255, as `RandomBatches` keeps it) becomes float in [0, 1]
    here. Without a zoom or rotation, the exact flips run on the bytes and colour scale
    and gamma follow as a per-sample lookup table on the 256 byte values (a gather
    instead of a pow per pixel; the same values). With a warp the float image is warped
    first, as before.
    """
    if batch.image is not None and batch.image.dtype == torch.uint8:
        if draw.border_fractions is None and draw.degrees is None:
            # exact flips first, on bytes: a quarter of the memory to move
            return _bytes_to_unit(_geometric(batch, draw), draw)
        # A warp keeps the papers' order (photometric after it): with colour and gamma first,
        # interpolation blends other values, and the surface WGAN's 150-step learning test
        # (tests/test_learning.py) fell from corr 0.21 to 0.10 at seed 0.
        batch = replace(batch, image=batch.image.float().div_(255.0))
    batch = _geometric(batch, draw)
    if draw.colour is not None:
        batch = colour_scale(batch, draw.colour)
    if draw.gamma is not None:
        batch = gamma(batch, draw.gamma)
    return batch


def _check_probability(name: str, p: float) -> None:
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
        raise ValueError(f"Augmentation.{name} must be a probability in [0, 1], got {p!r}")


def _check_range(name: str, value) -> tuple[float, float] | None:
    """A (low, high) pair with 0 < low ≤ high as a tuple, or None; else a ValueError."""
    if value is None:
        return None
    ok = (isinstance(value, tuple | list) and len(value) == 2
          and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value))
    if not ok or not 0 < value[0] <= value[1] or not all(map(math.isfinite, value)):
        raise ValueError(f"Augmentation.{name} must be None or (low, high) with "
                         f"0 < low <= high, got {value!r}")
    return (float(value[0]), float(value[1]))


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


@dataclass(frozen=True)
class Augmentation:
    """Which ops run and their ranges; `apply` draws per-sample values and applies them.

    Paired batches: image and depth share one draw. Unpaired (`paired` False): they get
    independent draws, and the intrinsics follow the image (they describe its camera).
    `source` says where a preset's numbers come from.
    """

    hflip_p: float = 0.0
    vflip_p: float = 0.0
    max_degrees: float = 0.0  # angle ~ U[−d, d]
    colour_range: tuple[float, float] | None = None  # factor ~ U[low, high]
    colour_per_channel: bool = False  # one factor per RGB channel (Eigen's c ∈ [0.8, 1.2]³)
    gamma_range: tuple[float, float] | None = None  # log γ ~ U[log low, log high]
    max_border_fraction: float = 0.0  # zoom crop border u ~ U[0, f]
    source: str = field(default="", compare=False)

    def __post_init__(self):
        _check_probability("hflip_p", self.hflip_p)
        _check_probability("vflip_p", self.vflip_p)
        d = self.max_degrees
        if isinstance(d, bool) or not isinstance(d, int | float) or not 0 <= d <= 180:
            raise ValueError(f"Augmentation.max_degrees must be a number in [0, 180], got {d!r}")
        f = self.max_border_fraction
        if isinstance(f, bool) or not isinstance(f, int | float) or not 0 <= f < 0.5:
            raise ValueError(f"Augmentation.max_border_fraction must be in [0, 0.5), got {f!r}")
        if not isinstance(self.colour_per_channel, bool):
            raise ValueError("Augmentation.colour_per_channel must be a bool, "
                             f"got {self.colour_per_channel!r}")
        # frozen: normalise lists (from TOML/JSON) to hashable tuples
        object.__setattr__(self, "colour_range", _check_range("colour_range", self.colour_range))
        object.__setattr__(self, "gamma_range", _check_range("gamma_range", self.gamma_range))

    def draw(self, batch_size: int, generator: torch.Generator) -> Draw:
        """Per-sample values for a batch; only enabled ops consume random numbers."""
        n, g = batch_size, generator
        values = {}
        if self.max_border_fraction > 0:
            values["border_fractions"] = _uniform(n, 0.0, self.max_border_fraction, g)
        if self.max_degrees > 0:
            values["degrees"] = _uniform(n, -self.max_degrees, self.max_degrees, g)
        if self.hflip_p > 0:
            values["hflip"] = torch.rand(n, generator=g) < self.hflip_p
        if self.vflip_p > 0:
            values["vflip"] = torch.rand(n, generator=g) < self.vflip_p
        if self.colour_range is not None:
            channels = 3 if self.colour_per_channel else 1
            low, high = self.colour_range
            values["colour"] = low + (high - low) * torch.rand(n, channels, generator=g)
        if self.gamma_range is not None:
            # log-uniform: γ and 1/γ are equally likely when the range is symmetric.
            low, high = (math.log(v) for v in self.gamma_range)
            values["gamma"] = torch.exp(_uniform(n, low, high, g))
        return Draw(**values)

    def apply(self, batch: DepthBatch, generator: torch.Generator) -> DepthBatch:
        """The augmented batch: one draw if paired, independent image/depth draws if not; a
        uint8 image comes back as float in [0, 1] (see `apply_draw`)."""
        if batch.paired or batch.image is None or batch.depth is None:
            return apply_draw(batch, self.draw(_reference(batch).shape[0], generator))
        image_half = apply_draw(replace(batch, depth=None),
                                self.draw(batch.image.shape[0], generator))
        depth_half = apply_draw(replace(batch, image=None, intrinsics=None),
                                self.draw(batch.depth.shape[0], generator))
        return replace(batch, image=image_half.image, intrinsics=image_half.intrinsics,
                       depth=depth_half.depth)


# ---------------------------------------------------------------------------- presets

AUGMENTATIONS.register("none")(Augmentation(source="no augmentation"))

# 001 (Das et al. poster): "horizontal and vertical flips"; p = 0.5 each is not stated.
AUGMENTATIONS.register("flips")(Augmentation(
    hflip_p=0.5, vflip_p=0.5, source="001 Das et al.: horizontal and vertical flips"))

# 000 (Chu et al.): the paper is silent; pix2pixHD's default is a random horizontal flip.
AUGMENTATIONS.register("hflip")(Augmentation(
    hflip_p=0.5, source="000 Chu et al. / pix2pixHD default: random horizontal flip"))

# 002 (Huang & Yu §3.3), 3 of Eigen et al.'s 5: "multiplied globally by a random RGB value"
# is Eigen's c ∈ [0.8, 1.2]³: one factor per channel, the same over all pixels.
AUGMENTATIONS.register("eigen")(Augmentation(
    hflip_p=0.5, max_degrees=5.0, colour_range=(0.8, 1.2), colour_per_channel=True,
    source="002 Huang & Yu §3.3 after Eigen et al. 2014: rotation ±5°, h-flip 0.5, "
           "colour × [0.8, 1.2]³"))

# 004 (Angermann et al. §4.1): "random cropping, flipping and gamma correction [37]". Crop
# from the authors' prepro.py (border ∈ {0..31} px at 512 → 31/512); flips h and v (the
# surfaces have no up); the γ range is not given: [0.5, 2] spans the Γ that [37]'s auto-
# gamma assigns to images of mean grey 0.25–0.71.
AUGMENTATIONS.register("surface")(Augmentation(
    hflip_p=0.5, vflip_p=0.5, max_border_fraction=31 / 512, gamma_range=(0.5, 2.0),
    source="004 Angermann et al. §4.1: random (zoom) crop, flips, gamma correction"))
