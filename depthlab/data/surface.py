"""Procedural plateau-honed cylinder-liner surfaces and microscope-like renderings.

Geometry lives in physical units, not pixels: the field of view is
FOV_UM = 640 µm wide (10 µm/px at 64×64, 2.5 µm/px at 256×256), image
height is H/W of that, and every length below is a fraction of the width.
Fields are evaluated at pixel centres of that continuous surface, so one
seed at 64×64 and at 256×256 is the same surface sampled twice (the number
of random draws depends on the seed and the aspect ratio only).

Depth is µm relative to the core plateau, negative into the material, and
clipped to the paper's [-7.4, 1.8] µm (Angermann et al. 2022, §4.1).
Parameters follow the measured prototype in CALIBRATION.md (64 px = FOV).
"""

import numpy as np

FOV_UM = 640.0  # field of view across the image width, µm
DEPTH_RANGE_UM = (-7.4, 1.8)
_REF_PX = 1.0 / 64  # one pixel of the calibrated 64×64 prototype, in widths
NODES_PER_SIGMA = 2  # lattice of the random fields: nodes per smoothing std

# Cross-hatch grooves: two families at ±helix angle to the image rows.
HELIX_DEG = (30.0, 3.0)  # mean, std of the helix angle (per family)
GROOVE_SPACING = (6 * _REF_PX, 14 * _REF_PX)  # 60–140 µm between groove centres
GROOVE_SIGMA = (0.5 * _REF_PX, 1.5 * _REF_PX)  # Gaussian σ: FWHM 12–35 µm
GROOVE_DEPTH_UM = (1.0, 6.0)
GROOVE_MODULATION = 0.25  # relative depth variation along a groove
PITS = (1, 4)  # number of pits/pores, inclusive
PIT_RADIUS = (1 * _REF_PX, 3 * _REF_PX)  # 10–30 µm
PIT_DEPTH_UM = (3.0, 7.0)
ROUGHNESS_UM = 0.15  # plateau roughness, std
ROUGHNESS_SIGMA = 1.0 * _REF_PX  # smoothing of the roughness (white noise * Gaussian)
OFFSET_UM = 0.1  # std of a per-sample plateau offset

# Rendering (microscope-like): shading contrast and nuisances.
SLOPE_UM_PER_REF_PX = 1.5  # a rise of 1.5 µm over 10 µm tilts the normal by 45°
ELEVATION_DEG = (35.0, 60.0)
AMBIENT = 0.1
ALBEDO_STD = 0.08
ALBEDO_SIGMA = 1.0 * _REF_PX
VIGNETTE = (0.1, 0.3)  # brightness loss in the corners
TINT = np.array([1.0, 0.90, 0.74])  # brownish steel under a handheld microscope
TINT_JITTER = 0.08  # per channel, uniform ±
EXPOSURE = (0.55, 0.75)  # brightness of a flat plateau
PIXEL_NOISE = 0.02


def _rng(seed: int, stream: int) -> np.random.Generator:
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return np.random.default_rng([int(seed), stream])


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if (len(size) != 2 or not all(isinstance(s, int | np.integer) for s in size)
            or min(size) <= 0):
        raise ValueError(f"size must be (H, W) with positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in units of the image width: y (H,), x (W,)."""
    return (np.arange(h) + 0.5) / w, (np.arange(w) + 0.5) / w


def _fast_len(n: int) -> int:
    """Smallest 2·3·5-smooth integer ≥ n (FFT sizes with large prime factors are slow)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _random_field(rng: np.random.Generator, y: np.ndarray, x: np.ndarray,
                  sigma: float) -> np.ndarray:
    """A smooth zero-mean random field, (H, W), unit variance before sampling.

    White noise on a physical lattice with NODES_PER_SIGMA nodes per `sigma`
    (so its size depends on sigma and the aspect ratio only, never on H, W),
    smoothed by a Gaussian of std `sigma` (in image widths) with an FFT, then
    sampled bilinearly at pixel centres: every resolution sees the same
    continuous field. FFT and gathers only: a BLAS product here stalls when
    other processes share the cores.
    """
    per_width = NODES_PER_SIGMA / sigma  # lattice nodes per image width
    s = NODES_PER_SIGMA  # kernel std in lattice nodes
    margin = 3 * s  # keeps the FFT's wrap-around off the image
    ny = _fast_len(int(np.ceil((y[-1] + y[0]) * per_width)) + 2 * margin + 2)
    nx = _fast_len(int(np.ceil(per_width)) + 2 * margin + 2)
    noise = rng.standard_normal((ny, nx))
    fy, fx = np.fft.fftfreq(ny)[:, None], np.fft.rfftfreq(nx)[None, :]
    gain = np.exp(-2 * (np.pi * s) ** 2 * (fy * fy + fx * fx))
    # Smoothing white noise by a unit-mass Gaussian leaves variance 1/(4π s²).
    field = np.fft.irfft2(np.fft.rfft2(noise) * gain, s=(ny, nx)) * np.sqrt(4 * np.pi) * s
    # Bilinear sampling, one axis at a time; node i sits at (i - margin) / per_width.
    out = field
    for axis, coords in ((0, y), (1, x)):
        pos = coords * per_width + margin
        i0 = np.floor(pos).astype(np.intp)
        t = pos - i0
        lo, hi = np.take(out, i0, axis=axis), np.take(out, i0 + 1, axis=axis)
        t = t[:, None] if axis == 0 else t[None, :]
        out = lo * (1 - t) + hi * t
    return out


def _groove_family(rng: np.random.Generator, y: np.ndarray, x: np.ndarray,
                   angle: float) -> np.ndarray:
    """One family of parallel Gaussian grooves (negative µm), (H, W)."""
    # u: distance across the grooves; grooves run along (cos a, sin a).
    s, c = np.sin(angle), np.cos(angle)
    u = np.add.outer(y * c, -x * s)  # (H, W)
    height = y[-1] + y[0]
    # Corners of the field of view bound u; draw a count fixed by the aspect.
    corners = np.array([0.0, -s, height * c, height * c - s])
    lo, hi = corners.min() - 4 * GROOVE_SIGMA[1], corners.max() + 4 * GROOVE_SIGMA[1]
    n = int(np.ceil((hi - lo) / GROOVE_SPACING[0])) + 1
    centres = lo - rng.uniform(0, GROOVE_SPACING[1]) + np.cumsum(
        rng.uniform(*GROOVE_SPACING, size=n))
    sigma = rng.uniform(*GROOVE_SIGMA, size=n)
    depth = rng.uniform(*GROOVE_DEPTH_UM, size=n)
    # The profile depends on u only: tabulate it finely, then interpolate.
    # Overlapping cuts remove the material of the deeper one (min, not sum).
    table_u = np.linspace(lo, hi, 4096)
    table = np.zeros_like(table_u)
    first = np.searchsorted(table_u, centres - 5 * sigma)
    last = np.searchsorted(table_u, centres + 5 * sigma)
    for c, sg, d, i, j in zip(centres, sigma, depth, first, last, strict=True):
        cut = -d * np.exp(-0.5 * ((table_u[i:j] - c) / sg) ** 2)
        np.minimum(table[i:j], cut, out=table[i:j])
    modulation = 1.0 + GROOVE_MODULATION * _random_field(rng, y, x, 8 * _REF_PX)
    return np.interp(u, table_u, table) * modulation


def _pits(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A few elliptic pores with steep walls (negative µm), (H, W)."""
    out = np.zeros((y.size, x.size))
    height = y[-1] + y[0]
    for _ in range(rng.integers(PITS[0], PITS[1] + 1)):
        cy, cx = rng.uniform(0, height), rng.uniform(0, 1)
        r = rng.uniform(*PIT_RADIUS)
        aspect, theta = rng.uniform(0.6, 1.0), rng.uniform(0, np.pi)
        depth = rng.uniform(*PIT_DEPTH_UM)
        dy, dx = (y - cy)[:, None], (x - cx)[None, :]
        a = (dx * np.cos(theta) + dy * np.sin(theta)) / r
        b = (-dx * np.sin(theta) + dy * np.cos(theta)) / (r * aspect)
        out = np.minimum(out, -depth * np.exp(-((a * a + b * b) ** 1.5)))
    return out


def surface_depth(seed: int, size: tuple[int, int]) -> np.ndarray:
    """Depth (H, W) float32 in µm relative to the core plateau, in [-7.4, 1.8]."""
    h, w = _check_size(size)
    rng = _rng(seed, 0)
    y, x = _grid(h, w)
    angles = np.deg2rad(rng.normal(*HELIX_DEG, size=2)) * np.array([1.0, -1.0])
    z = np.minimum(_groove_family(rng, y, x, angles[0]), _groove_family(rng, y, x, angles[1]))
    z = np.minimum(z, _pits(rng, y, x))
    z += ROUGHNESS_UM * _random_field(rng, y, x, ROUGHNESS_SIGMA)
    z += rng.normal(0.0, OFFSET_UM)
    return np.clip(z, *DEPTH_RANGE_UM).astype(np.float32)


def render_microscope(depth_um: np.ndarray, seed: int) -> np.ndarray:
    """A handheld-microscope-like RGB image (H, W, 3) uint8 of a depth map in µm.

    Lambertian shading of the surface normal under a random light
    (azimuth uniform, elevation 35–60°), auto-exposed so the plateau has a
    random brightness; smooth albedo variation, vignetting, a brownish colour
    cast and pixel noise. Everything random depends on `seed` only.
    """
    if depth_um.ndim != 2:
        raise ValueError(f"depth_um must be (H, W), got shape {depth_um.shape}")
    h, w = depth_um.shape
    rng = _rng(seed, 1)
    y, x = _grid(h, w)
    # Slopes per calibrated pixel (1/64 of the width), independent of resolution.
    gy, gx = np.gradient(depth_um.astype(np.float64))
    scale = (w * _REF_PX) / SLOPE_UM_PER_REF_PX
    nx, ny = -gx * scale, -gy * scale
    azimuth = rng.uniform(0, 2 * np.pi)
    elevation = np.deg2rad(rng.uniform(*ELEVATION_DEG))
    light = np.array([np.cos(elevation) * np.cos(azimuth),
                      np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
    lambert = np.maximum((nx * light[0] + ny * light[1] + light[2])
                         / np.sqrt(nx * nx + ny * ny + 1.0), 0.0)
    flat = AMBIENT + (1 - AMBIENT) * light[2]
    shade = (AMBIENT + (1 - AMBIENT) * lambert) / flat * rng.uniform(*EXPOSURE)
    albedo = 1.0 + ALBEDO_STD * _random_field(rng, y, x, ALBEDO_SIGMA)
    cy, cx = rng.uniform(0.4, 0.6) * h / w, rng.uniform(0.4, 0.6)
    # Squared distance from the optical centre, about 1 in the corners.
    r2 = ((y[:, None] - cy) ** 2 + (x[None, :] - cx) ** 2) / (0.25 * (1 + (h / w) ** 2))
    vignette = 1.0 - rng.uniform(*VIGNETTE) * r2
    tint = TINT * (1.0 + rng.uniform(-TINT_JITTER, TINT_JITTER, size=3))
    image = (shade * albedo * vignette)[..., None] * tint  # (H, W, 3)
    image += rng.normal(0.0, PIXEL_NOISE, size=image.shape)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def generate(seed: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One aligned sample: (rgb (H, W, 3) uint8, depth (H, W) float32 µm)."""
    depth = surface_depth(seed, size)
    return render_microscope(depth, seed), depth
