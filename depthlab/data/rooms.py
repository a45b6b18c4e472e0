"""Procedural ray-cast indoor rooms with metric depth, modelled after NYU Depth v2.

A scene is a box-shaped room (floor, ceiling, four walls, maybe a door or
window recess) with furniture made of axis-aligned or yaw-rotated cuboids,
1–2 hanging lamps and a handheld camera with the Kinect's intrinsics
(Silberman et al., ECCV 2012). Everything is defined in metres and drawn
from the seed only, so one seed at 96×128 and at 480×640 is the same scene
rendered twice; only anti-aliasing of textures and pixel noise see the size.

World frame: x, y on the floor, z up; the room spans [0, W]×[0, D]×[0, H].
Camera frame (OpenCV): x right, y down, z forward. Rays carry a camera-z
component of 1, so the ray parameter of a hit is its z-depth (what a Kinect
measures), not the length along the ray. Depth is clipped to 10 m like NYU's.
"""

import colorsys
import itertools
from dataclasses import dataclass

import numpy as np

MAX_DEPTH_M = 10.0  # NYU v2's cap
# Kinect RGB intrinsics from the NYU toolbox (camera_params.m) at 640×480, in pixels;
# pixel (row i, col j) has its centre at (x=j, y=i).
NYU_SIZE = (480, 640)  # (H, W)
NYU_FX, NYU_FY, NYU_CX, NYU_CY = 518.857901, 519.469611, 325.582449, 253.736166

# Room and camera, metres and degrees.
ROOM_WIDTH_M = (3.0, 8.0)
ROOM_DEPTH_M = (3.0, 8.0)
ROOM_HEIGHT_M = (2.4, 3.2)
CAMERA_HEIGHT_M = (1.0, 1.8)
CAMERA_WALL_MARGIN_M = 0.4  # camera keeps this far from the walls
CAMERA_CLEARANCE_M = 0.3  # and this far from furniture, when it can
CAMERA_CANDIDATES = 64  # positions drawn at once; a fixed number keeps draws size-free
YAW_JITTER_DEG = 40.0  # around the direction to (near) the room centre
PITCH_DEG = (-30.0, 0.0)  # handheld, looking level to slightly down
ROLL_DEG = 4.0  # ± uniform

# Furniture: 3–10 items, each 1–6 cuboids; plus doors, windows, pictures, lamps.
ITEMS = (3, 10)
ITEM_TRIES = 30  # placements tried per item before it is dropped
ITEM_GAP_M = 0.05  # free space kept between items' bounding boxes
ITEM_KINDS = ("table", "chair", "shelf", "cabinet", "bed", "sofa", "crate", "desk")
ITEM_WEIGHTS = (0.14, 0.14, 0.15, 0.15, 0.08, 0.08, 0.14, 0.12)
P_DOOR, P_WINDOW = 0.7, 0.6
PICTURES = (0, 2)  # inclusive
LIGHTS = (1, 2)  # inclusive
LIGHT_INSET_M = 0.6  # lamps keep this far from the walls
LAMP_MIN_BOTTOM_M = 2.25  # above the camera (≤ 1.8 m) and the tallest furniture (2.0 m)

# Shading (linear radiance; arbitrary units before auto-exposure).
AMBIENT = (0.12, 0.3)  # relative to a lamp's power
LIGHT_FALLOFF_M = 3.0  # irradiance ∝ 1 / (1 + (r / LIGHT_FALLOFF_M)²): mild
SHADOW_BIAS_M = 0.005  # shadow rays stop this short of the shaded point
AO_AMP, AO_RANGE_M = 0.35, 0.25  # darkening of the room's inner corners and edges
MIN_COS = 0.15  # floor for the incidence cosine in texture footprints
EXPOSURE_KEY = (0.16, 0.3)  # median linear brightness after auto-exposure
WHITE_BALANCE = (0.5, 1.0)  # fraction of the lamps' colour cast the camera removes
WB_JITTER = 0.05  # per channel, uniform ±
VIGNETTE = (0.2, 0.7)  # brightness ∝ cos(θ)^(2·v) off the optical axis
GAMMA = 2.2
PIXEL_NOISE = (0.006, 0.02)  # std in [0, 1] after gamma


@dataclass(frozen=True, eq=False)
class Material:
    """Procedural albedo of one face; texture coordinates (u, v) are metres on it."""

    colour: np.ndarray  # (3,) linear albedo
    noise_amp: float = 0.04  # smooth albedo variation
    noise_scale_m: float = 0.8
    fine_amp: float = 0.0  # fine grain (carpet, fabric)
    fine_scale_m: float = 0.02
    cell_m: tuple[float, float] = (1e3, 1e3)  # tiles, planks, books, drawers, panes
    gap_m: tuple[float, float] = (0.0, 0.0)  # grout/gap width across u and v borders
    gap_colour: np.ndarray | None = None  # (3,), default: colour
    cell_lum: float = 0.0  # per-cell brightness variation
    cell_chroma: float = 0.0  # per-cell colour variation
    grain_amp: float = 0.0  # wood grain stripes
    grain_freq: float = 30.0  # cycles per metre
    grain_warp: float = 1.0  # cycles of warp by the smooth noise
    grain_axis: int = 0  # stripes vary along u (0) or v (1)
    glow: np.ndarray | None = None  # (3,) emitted radiance outside the gaps (lamps, windows)


@dataclass(frozen=True, eq=False)
class Box:
    """A cuboid: centre and half sizes in metres, yaw in radians about its vertical axis.

    Materials are per face, indexed 2·axis + (face on the + side). `inside` boxes
    (the room, recesses) are seen from within; `wall` is a recess's wall index.
    """

    centre: np.ndarray  # (3,)
    half: np.ndarray  # (3,)
    yaw: float
    materials: tuple[Material, ...]  # 6
    inside: bool = False
    wall: int = -1
    kind: str = ""


@dataclass(frozen=True, eq=False)
class Camera:
    position: np.ndarray  # (3,) metres
    yaw: float  # radians, 0 looks along +x, counter-clockwise seen from above
    pitch: float  # radians, positive looks up
    roll: float  # radians

    @property
    def rotation(self) -> np.ndarray:
        """Camera-to-world rotation (3, 3); columns are the camera's x (right), y (down), z."""
        cy, sy, cp, sp = np.cos(self.yaw), np.sin(self.yaw), np.cos(self.pitch), np.sin(self.pitch)
        forward = np.array([cy * cp, sy * cp, sp])
        right = np.array([sy, -cy, 0.0])
        down = np.cross(forward, right)
        cr, sr = np.cos(self.roll), np.sin(self.roll)
        return np.stack([right * cr + down * sr, down * cr - right * sr, forward], axis=1)


@dataclass(frozen=True, eq=False)
class Light:
    position: np.ndarray  # (3,) metres
    colour: np.ndarray  # (3,) radiance per unit power
    power: float


@dataclass(frozen=True, eq=False)
class Look:
    """Per-image camera response: all drawn from the seed, none from the size."""

    ambient: float
    white_balance: np.ndarray  # (3,) channel gains
    exposure_key: float
    vignette: float
    noise_std: float


@dataclass(frozen=True, eq=False)
class Scene:
    """One room. `boxes[0]` is the room, then recesses, then furniture and lamps."""

    seed: int
    room: tuple[float, float, float]  # W (x), D (y), H (z), metres
    boxes: tuple[Box, ...]
    camera: Camera
    lights: tuple[Light, ...]
    look: Look


# --- validation and intrinsics ------------------------------------------------------------

def _rng(seed: int, stream: int) -> np.random.Generator:
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return np.random.default_rng([int(seed), stream])


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if (not isinstance(size, tuple | list) or len(size) != 2
            or not all(isinstance(s, int | np.integer) and not isinstance(s, bool) for s in size)
            or min(size) <= 0):
        raise ValueError(f"size must be (H, W) with positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def intrinsics(size: tuple[int, int]) -> tuple[float, ...]:
    """The 3×3 row-major pinhole matrix (pixels) used at `size` = (H, W).

    NYU's Kinect matrix scaled by W/640 across and H/480 down (the field of view
    stays NYU's whatever the aspect); principal points scale about pixel edges,
    so pixel centres of every size sample the same continuous image.
    """
    h, w = _check_size(size)
    sx, sy = w / NYU_SIZE[1], h / NYU_SIZE[0]
    fx, fy = NYU_FX * sx, NYU_FY * sy
    cx, cy = (NYU_CX + 0.5) * sx - 0.5, (NYU_CY + 0.5) * sy - 0.5
    return (fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0)


def camera_rays(camera: Camera, size: tuple[int, int]) -> np.ndarray:
    """World-frame ray directions (3, H·W) of row-major pixels, each with camera z = 1."""
    h, w = _check_size(size)
    fx, _, cx, _, fy, cy, *_ = intrinsics((h, w))
    x = np.broadcast_to(((np.arange(w) - cx) / fx)[None, :], (h, w)).ravel()
    y = np.broadcast_to(((np.arange(h) - cy) / fy)[:, None], (h, w)).ravel()
    rot = camera.rotation
    return rot[:, :1] * x + rot[:, 1:2] * y + rot[:, 2:]


# --- materials ----------------------------------------------------------------------------

def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v))


def _paint(rng: np.random.Generator, value: tuple[float, float] = (0.5, 0.85)) -> Material:
    """Matt wall paint: pale, nearly uniform."""
    colour = _hsv(rng.uniform(), rng.uniform(0.03, 0.3), rng.uniform(*value))
    return Material(colour, noise_amp=rng.uniform(0.02, 0.06), noise_scale_m=rng.uniform(0.5, 1.5))


def _wood(rng: np.random.Generator, planks: bool = False, axis: int = 0) -> Material:
    """Wood (furniture, or floor planks running along the other axis than `axis`)."""
    if rng.uniform() < 0.2 and not planks:  # painted furniture: white, grey, black
        v = rng.choice([0.06, 0.35, 0.8])
        return Material(np.full(3, v) * rng.uniform(0.9, 1.1, 3), noise_amp=0.03)
    colour = np.array([0.45, 0.28, 0.15]) * rng.uniform(0.4, 1.5) * rng.uniform(0.9, 1.1, 3)
    cell, gap = (1e3, 1e3), (0.0, 0.0)
    if planks:
        width, length = rng.uniform(0.1, 0.22), rng.uniform(0.8, 2.0)
        cell = (width, length) if axis == 0 else (length, width)
        gap = (0.004, 0.004)
    return Material(np.clip(colour, 0.02, 0.9), noise_amp=0.08, noise_scale_m=0.3,
                    cell_m=cell, gap_m=gap, gap_colour=colour * 0.3,
                    cell_lum=0.25 if planks else 0.0, grain_amp=rng.uniform(0.06, 0.15),
                    grain_freq=rng.uniform(15, 50), grain_warp=rng.uniform(0.5, 2.5),
                    grain_axis=axis)


def _tiles(rng: np.random.Generator) -> Material:
    colour = _hsv(rng.uniform(), rng.uniform(0.0, 0.25), rng.uniform(0.3, 0.85))
    side = rng.uniform(0.3, 0.6)
    grout = np.full(3, rng.uniform(0.1, 0.8))
    return Material(colour, noise_amp=0.03, cell_m=(side, side),
                    gap_m=(g := rng.uniform(0.005, 0.012), g), gap_colour=grout,
                    cell_lum=rng.uniform(0.03, 0.12))


def _fabric(rng: np.random.Generator) -> Material:
    """Carpet, bedding, upholstery."""
    colour = _hsv(rng.uniform(), rng.uniform(0.1, 0.6), rng.uniform(0.15, 0.75))
    return Material(colour, noise_amp=rng.uniform(0.05, 0.12), noise_scale_m=0.25,
                    fine_amp=rng.uniform(0.08, 0.2), fine_scale_m=rng.uniform(0.005, 0.02))


def _books(rng: np.random.Generator, wood: Material, shelf_m: float) -> Material:
    """The front of a bookcase: rows of coloured spines between shelf boards."""
    return Material(np.full(3, 0.4), noise_amp=0.05, cell_m=(rng.uniform(0.025, 0.05), shelf_m),
                    gap_m=(0.004, 0.025), gap_colour=wood.colour, cell_lum=0.5,
                    cell_chroma=0.9)


def _drawers(base: Material, width_m: float, height_m: float, rows: int, cols: int) -> Material:
    return Material(base.colour, noise_amp=base.noise_amp, cell_m=(width_m / cols, height_m / rows),
                    gap_m=(0.01, 0.01), gap_colour=base.colour * 0.25, grain_amp=base.grain_amp,
                    grain_freq=base.grain_freq, grain_warp=base.grain_warp)


def _panes(rng: np.random.Generator, width_m: float, height_m: float) -> Material:
    """A window seen from inside: bright sky/outdoors between frame bars."""
    cols, rows = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    frame = np.full(3, rng.choice([0.08, 0.8]))
    sky = np.array([0.95, 1.0, 1.1]) * rng.uniform(2.0, 5.0)
    return Material(np.full(3, 0.05), noise_amp=0.0, cell_m=(width_m / cols, height_m / rows),
                    gap_m=(0.06, 0.06), gap_colour=frame, glow=sky)


def _painting(rng: np.random.Generator, width_m: float, height_m: float) -> Material:
    """A framed picture: one strongly varying colour field inside a frame border."""
    colour = _hsv(rng.uniform(), rng.uniform(0.3, 0.9), rng.uniform(0.2, 0.8))
    frame = rng.uniform(0.03, 0.09)
    return Material(colour, noise_amp=0.5, noise_scale_m=rng.uniform(0.05, 0.2),
                    cell_m=(width_m, height_m), gap_m=(2 * frame, 2 * frame),
                    gap_colour=np.full(3, rng.choice([0.05, 0.5, 0.85])))


def _lamp(colour: np.ndarray) -> Material:
    return Material(np.full(3, 0.8), noise_amp=0.0, glow=colour * 6.0)


def _faces(default: Material, **per_face: Material) -> tuple[Material, ...]:
    """Six face materials; per_face keys like `y_pos` (front of wall items) override."""
    names = ("x_neg", "x_pos", "y_neg", "y_pos", "z_neg", "z_pos")
    return tuple(per_face.get(n, default) for n in names)


# --- furniture (item-local frame: footprint centred at the origin, +y is the front) ------

def _cuboid(centre: tuple[float, float, float], size: tuple[float, float, float],
            materials: tuple[Material, ...], kind: str) -> Box:
    return Box(np.array(centre, float), np.array(size, float) / 2, 0.0, materials, kind=kind)


def _table(rng: np.random.Generator, w: float, d: float, kind: str = "table") -> list[Box]:
    h, top, leg = rng.uniform(0.7, 0.78), rng.uniform(0.03, 0.05), rng.uniform(0.04, 0.07)
    faces = _faces(_wood(rng))
    boxes = [_cuboid((0, 0, h - top / 2), (w, d, top), faces, kind)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            boxes.append(_cuboid((sx * (w / 2 - 0.06), sy * (d / 2 - 0.06), (h - top) / 2),
                                 (leg, leg, h - top), faces, kind))
    return boxes


def _item(rng: np.random.Generator, kind: str) -> tuple[list[Box], bool]:
    """An item's cuboids in its local frame and whether it stands against a wall."""
    if kind == "table":
        return _table(rng, rng.uniform(0.8, 1.8), rng.uniform(0.6, 1.0)), False
    if kind == "desk":
        w, d = rng.uniform(1.0, 1.6), rng.uniform(0.55, 0.8)
        boxes = _table(rng, w, d, "desk")
        top = boxes[0].centre[2] + boxes[0].half[2]
        if rng.uniform() < 0.6:  # a monitor on the desk
            screen = _faces(Material(np.full(3, 0.03), noise_amp=0.0))
            boxes.append(_cuboid((0, -d / 4, top + 0.25), (rng.uniform(0.45, 0.7), 0.04, 0.32),
                                 screen, "monitor"))
        return boxes, True
    if kind == "chair":
        s, h = rng.uniform(0.4, 0.5), rng.uniform(0.43, 0.48)
        faces = _faces(_wood(rng) if rng.uniform() < 0.6 else _fabric(rng))
        boxes = [_cuboid((0, 0, h - 0.02), (s, s, 0.04), faces, kind),
                 _cuboid((0, -s / 2 + 0.015, h + 0.22), (s, 0.03, 0.44), faces, kind)]
        for sx in (-1, 1):
            for sy in (-1, 1):
                boxes.append(_cuboid((sx * (s / 2 - 0.03), sy * (s / 2 - 0.03), (h - 0.04) / 2),
                                     (0.035, 0.035, h - 0.04), faces, kind))
        return boxes, False
    if kind == "shelf":
        w, d, h = rng.uniform(0.6, 1.2), rng.uniform(0.28, 0.4), rng.uniform(1.2, 2.0)
        wood = _wood(rng)
        rows = max(2, round(h / rng.uniform(0.3, 0.4)))
        return [_cuboid((0, 0, h / 2), (w, d, h), _faces(wood, y_pos=_books(rng, wood, h / rows)),
                        kind)], True
    if kind == "cabinet":
        w, d, h = rng.uniform(0.45, 1.6), rng.uniform(0.4, 0.6), rng.uniform(0.5, 1.2)
        wood = _wood(rng)
        rows, cols = int(rng.integers(2, 5)), 1 + int(w > 0.9)
        front = _drawers(wood, w, h, rows, cols)
        return [_cuboid((0, 0, h / 2), (w, d, h), _faces(wood, y_pos=front), kind)], True
    if kind == "bed":
        w, length, h = rng.uniform(1.0, 1.8), rng.uniform(1.9, 2.1), rng.uniform(0.45, 0.6)
        head_h = rng.uniform(0.9, 1.2)
        total = length + 0.06
        return [_cuboid((0, 0.03, h / 2), (w, length, h), _faces(_fabric(rng)), kind),
                _cuboid((0, -total / 2 + 0.03, head_h / 2), (w + 0.04, 0.06, head_h),
                        _faces(_wood(rng)), kind)], True
    if kind == "sofa":
        w, d = rng.uniform(1.5, 2.3), rng.uniform(0.8, 0.95)
        back_h, arm_h = rng.uniform(0.75, 0.9), rng.uniform(0.55, 0.65)
        faces = _faces(_fabric(rng))
        return [_cuboid((0, 0.05, 0.21), (w, d - 0.1, 0.42), faces, kind),
                _cuboid((0, -d / 2 + 0.1, back_h / 2), (w, 0.2, back_h), faces, kind),
                _cuboid((-w / 2 + 0.08, 0.05, arm_h / 2), (0.16, d - 0.1, arm_h), faces, kind),
                _cuboid((w / 2 - 0.08, 0.05, arm_h / 2), (0.16, d - 0.1, arm_h), faces, kind)], True
    if kind == "crate":
        size = rng.uniform(0.3, 0.7, 3) * np.array([1.0, 1.0, 0.8])
        if rng.uniform() < 0.6:  # cardboard
            colour = np.array([0.55, 0.4, 0.25]) * rng.uniform(0.8, 1.2)
            mat = Material(colour, noise_amp=0.1, noise_scale_m=0.2, fine_amp=0.05)
        else:  # plastic
            mat = Material(_hsv(rng.uniform(), rng.uniform(0.4, 0.9), rng.uniform(0.3, 0.8)),
                           noise_amp=0.02)
        return [_cuboid((0, 0, size[2] / 2), tuple(size), _faces(mat), kind)], False
    raise ValueError(f"unknown furniture kind {kind!r}; known: {', '.join(ITEM_KINDS)}")


def _footprint(boxes: list[Box]) -> tuple[np.ndarray, np.ndarray]:
    """Local axis-aligned bounds (lo, hi) of an item's cuboids, (3,) each."""
    lo = np.min([b.centre - b.half for b in boxes], axis=0)
    hi = np.max([b.centre + b.half for b in boxes], axis=0)
    return lo, hi


def _world_aabb(lo: np.ndarray, hi: np.ndarray, pos: np.ndarray, yaw: float) -> np.ndarray:
    """World AABB (x0, y0, z0, x1, y1, z1) of a local box moved to `pos` and turned by `yaw`."""
    corners = np.array([[x, y] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])])
    c, s = np.cos(yaw), np.sin(yaw)
    xy = corners @ np.array([[c, s], [-s, c]]) + pos[:2]
    return np.array([*xy.min(0), pos[2] + lo[2], *xy.max(0), pos[2] + hi[2]])


def _overlaps(aabb: np.ndarray, occupied: list[np.ndarray], gap: float = ITEM_GAP_M) -> bool:
    return any(np.all(aabb[:3] < o[3:] + gap) and np.all(o[:3] < aabb[3:] + gap)
               for o in occupied)


def _place(boxes: list[Box], pos: np.ndarray, yaw: float) -> list[Box]:
    """Item-local cuboids moved to world position `pos` and turned by `yaw`."""
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return [Box(pos + rot @ b.centre, b.half, b.yaw + yaw, b.materials, kind=b.kind)
            for b in boxes]


def _wall_frame(wall: int, room: tuple[float, float, float]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Wall `wall` (0: x=0, 1: x=W, 2: y=0, 3: y=D): floor origin, direction, inward normal,
    length."""
    w, d, _ = room
    origin = np.array([[0.0, 0, 0], [w, 0, 0], [0, 0, 0], [0, d, 0]][wall])
    tangent = np.array([0.0, 1, 0]) if wall < 2 else np.array([1.0, 0, 0])
    normal = np.array([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]][wall])
    return origin, tangent, normal, d if wall < 2 else w


def _wall_pose(wall: int, along_m: float, room: tuple[float, float, float],
               back_m: float, height_m: float = 0.0) -> tuple[np.ndarray, float]:
    """World position and yaw of an item whose local +y faces into the room from `wall`;
    `back_m` is how far its back lies behind its origin."""
    origin, tangent, normal, _ = _wall_frame(wall, room)
    pos = origin + tangent * along_m + normal * (back_m + 0.01)
    pos[2] = height_m
    return pos, float(np.arctan2(-normal[0], normal[1]))


def _recess(rng: np.random.Generator, room: tuple[float, float, float], wall: int,
            width: float, bottom: float, top: float, depth: float, back: Material,
            jamb: Material, kind: str) -> tuple[Box, np.ndarray] | None:
    """A door or window opening: an inside box beyond the wall plane, and its free zone."""
    origin, tangent, normal, length = _wall_frame(wall, room)
    if length < width + 0.4:
        return None
    along = rng.uniform(0.2 + width / 2, length - 0.2 - width / 2)
    middle = origin + tangent * along + np.array([0.0, 0.0, (top + bottom) / 2])
    half = np.abs(tangent) * width / 2 + np.abs(normal) * depth / 2
    half[2] = (top - bottom) / 2
    axis = int(np.argmax(np.abs(normal)))
    back_face = 2 * axis + int(normal[axis] < 0)  # the far side seen from the room
    materials = tuple(back if i == back_face else jamb for i in range(6))
    box = Box(middle - normal * depth / 2, half, 0.0, materials, inside=True, wall=wall,
              kind=kind)
    reach = 0.8 if kind == "door" else 0.05  # keep doors passable, windows uncovered
    ends = np.stack([middle - normal * depth, middle + normal * reach])
    zone_lo = ends.min(0) - np.abs(tangent) * width / 2
    zone_hi = ends.max(0) + np.abs(tangent) * width / 2
    zone_lo[2], zone_hi[2] = bottom, top
    return box, np.concatenate([zone_lo, zone_hi])


def scene(seed: int) -> Scene:
    """The room of `seed`: geometry, materials, lights, camera and camera response."""
    rng = _rng(seed, 0)
    room = (rng.uniform(*ROOM_WIDTH_M), rng.uniform(*ROOM_DEPTH_M), rng.uniform(*ROOM_HEIGHT_M))
    w, d, h = room
    wall_mat = _paint(rng)
    floor_kind = rng.choice(["planks", "tiles", "carpet"], p=[0.5, 0.25, 0.25])
    floor = {"planks": lambda: _wood(rng, planks=True, axis=int(rng.integers(2))),
             "tiles": lambda: _tiles(rng), "carpet": lambda: _fabric(rng)}[floor_kind]()
    ceiling = _paint(rng, value=(0.75, 0.92))
    room_box = Box(np.array([w / 2, d / 2, h / 2]), np.array([w / 2, d / 2, h / 2]), 0.0,
                   (wall_mat,) * 4 + (floor, ceiling), inside=True, kind="room")
    recesses, occupied = [], []
    if rng.uniform() < P_DOOR:
        door_w, door_h = rng.uniform(0.8, 1.0), rng.uniform(2.0, min(2.2, h - 0.1))
        door = _wood(rng)
        rows = int(rng.integers(1, 4))
        found = _recess(rng, room, int(rng.integers(4)), door_w, 0.0, door_h,
                        rng.uniform(0.1, 0.25), _drawers(door, door_w, door_h, rows, 1),
                        wall_mat, "door")
        if found:
            recesses.append(found[0])
            occupied.append(found[1])
    if rng.uniform() < P_WINDOW:
        win_w, sill = rng.uniform(0.8, 2.0), rng.uniform(0.7, 1.0)
        top = min(sill + rng.uniform(0.9, 1.5), h - 0.2)
        wall = int(rng.integers(4))
        found = _recess(rng, room, wall, win_w, sill, top, rng.uniform(0.15, 0.35),
                        _panes(rng, win_w, top - sill), wall_mat, "window")
        if found and not _overlaps(found[1], occupied):
            recesses.append(found[0])
            occupied.append(found[1])
    furniture = _furnish(rng, room, occupied)
    lamps, lights = _lights(rng, room)
    camera = _camera(rng, room, occupied)
    look = Look(ambient=rng.uniform(*AMBIENT),
                white_balance=_white_balance(rng, lights), exposure_key=rng.uniform(*EXPOSURE_KEY),
                vignette=rng.uniform(*VIGNETTE), noise_std=rng.uniform(*PIXEL_NOISE))
    boxes = (room_box, *recesses, *furniture, *lamps)
    return Scene(int(seed), room, boxes, camera, lights, look)


def _furnish(rng: np.random.Generator, room: tuple[float, float, float],
             occupied: list[np.ndarray]) -> list[Box]:
    """3–10 items against walls or free-standing, then pictures; appends to `occupied`."""
    w, d, h = room
    placed: list[Box] = []
    for _ in range(rng.integers(ITEMS[0], ITEMS[1] + 1)):
        kind = str(rng.choice(ITEM_KINDS, p=ITEM_WEIGHTS))
        boxes, on_wall = _item(rng, kind)
        lo, hi = _footprint(boxes)
        for _ in range(ITEM_TRIES):
            if on_wall:
                wall = int(rng.integers(4))
                length = _wall_frame(wall, room)[3]
                half_w = (hi[0] - lo[0]) / 2
                if length < 2 * half_w + 0.1:
                    continue
                pos, yaw = _wall_pose(wall, rng.uniform(half_w + 0.05, length - half_w - 0.05),
                                      room, -lo[1])
            else:
                yaw = rng.uniform(0, 2 * np.pi)
                if kind == "table":  # tables mostly follow the walls
                    yaw = rng.integers(4) * np.pi / 2 + np.deg2rad(rng.normal(0, 8))
                pos = np.array([rng.uniform(0, w), rng.uniform(0, d), 0.0])
            aabb = _world_aabb(lo, hi, pos, yaw)
            inside = np.all(aabb[:2] > 0.0) and aabb[3] < w and aabb[4] < d
            if inside and not _overlaps(aabb, occupied):
                occupied.append(aabb)
                placed += _place(boxes, pos, yaw)
                break
    for _ in range(rng.integers(PICTURES[0], PICTURES[1] + 1)):
        pw, ph, depth = rng.uniform(0.3, 1.0), rng.uniform(0.3, 0.8), rng.uniform(0.02, 0.04)
        bottom = rng.uniform(1.3, 1.8) - ph / 2
        wall = int(rng.integers(4))
        length = _wall_frame(wall, room)[3]
        if bottom + ph > h - 0.1 or length < pw + 0.2:
            continue
        pos, yaw = _wall_pose(wall, rng.uniform(pw / 2 + 0.1, length - pw / 2 - 0.1), room,
                              depth / 2, bottom)
        frame = _wood(rng)
        box = _cuboid((0, 0, ph / 2), (pw, depth, ph),
                      _faces(frame, y_pos=_painting(rng, pw, ph)), "picture")
        aabb = _world_aabb(box.centre - box.half, box.centre + box.half, pos, yaw)
        if not _overlaps(aabb, occupied):
            occupied.append(aabb)
            placed += _place([box], pos, yaw)
    return placed


def _lights(rng: np.random.Generator, room: tuple[float, float, float]
            ) -> tuple[list[Box], tuple[Light, ...]]:
    """1–2 ceiling or pendant lamps (emissive boxes) with a point light just below each."""
    w, d, h = room
    lamps, lights = [], []
    for _ in range(rng.integers(LIGHTS[0], LIGHTS[1] + 1)):
        x = rng.uniform(min(LIGHT_INSET_M, w / 2), max(w - LIGHT_INSET_M, w / 2))
        y = rng.uniform(min(LIGHT_INSET_M, d / 2), max(d - LIGHT_INSET_M, d / 2))
        side, tall = rng.uniform(0.3, 0.5), rng.uniform(0.08, 0.16)
        # Pendants hang lower (lighting the ceiling) but stay above the camera's head room.
        top = h - rng.uniform(0.0, max(0.0, h - LAMP_MIN_BOTTOM_M - tall))
        warmth = rng.uniform(0.0, 1.0)  # 0: neutral white, 1: incandescent
        colour = np.array([1.0, 0.97 - 0.12 * warmth, 0.92 - 0.3 * warmth])
        lamps.append(Box(np.array([x, y, top - tall / 2]), np.array([side, side, tall]) / 2, 0.0,
                         _faces(_lamp(colour)), kind="lamp"))
        lights.append(Light(np.array([x, y, top - tall - 0.05]), colour, rng.uniform(0.7, 1.3)))
    return lamps, tuple(lights)


def _camera(rng: np.random.Generator, room: tuple[float, float, float],
            occupied: list[np.ndarray]) -> Camera:
    """A handheld pose: clear of furniture when possible, looking roughly into the room."""
    w, d, _ = room
    m = CAMERA_WALL_MARGIN_M
    # Density rising towards the walls: people shoot across the room, as in NYU's frames.
    edge = 0.5 + 0.5 * rng.choice([-1.0, 1.0], (CAMERA_CANDIDATES, 2)) * np.sqrt(
        rng.uniform(size=(CAMERA_CANDIDATES, 2)))
    xy = m + edge * (np.array([w, d]) - 2 * m)
    clearance = np.full(CAMERA_CANDIDATES, np.inf)
    for o in occupied:  # distance from each candidate to each item's footprint
        gap = np.maximum(np.maximum(o[:2] - xy, xy - o[3:5]), 0.0)
        clearance = np.minimum(clearance, np.hypot(gap[:, 0], gap[:, 1]))
    ok = np.flatnonzero(clearance >= CAMERA_CLEARANCE_M)
    pick = ok[0] if ok.size else int(np.argmax(clearance))
    height = rng.uniform(*CAMERA_HEIGHT_M)
    target = np.array([w, d]) * (0.5 + rng.uniform(-0.2, 0.2, 2))
    to_target = target - xy[pick]
    yaw = np.arctan2(to_target[1], to_target[0]) + np.deg2rad(
        rng.uniform(-YAW_JITTER_DEG, YAW_JITTER_DEG))
    pitch = np.deg2rad(rng.uniform(*PITCH_DEG))
    roll = np.deg2rad(rng.uniform(-ROLL_DEG, ROLL_DEG))
    return Camera(np.array([*xy[pick], height]), float(yaw), float(pitch), float(roll))


def _white_balance(rng: np.random.Generator, lights: tuple[Light, ...]) -> np.ndarray:
    """Channel gains that remove part of the lamps' colour cast, with a little jitter."""
    cast = np.mean([light.colour for light in lights], axis=0)
    return cast ** -rng.uniform(*WHITE_BALANCE) * rng.uniform(1 - WB_JITTER, 1 + WB_JITTER, 3)


# --- ray casting (arrays are (3, n): one contiguous row per coordinate) ------------------

def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot products of (3, n) with (3,) or (3, n), without BLAS (which stalls when other
    processes share the cores)."""
    if b.ndim == 1:
        b = b[:, None]
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _room_exit(origin: np.ndarray, dirs: np.ndarray, lo: np.ndarray, hi: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Where rays from inside an axis-aligned box leave it: (t, axis) per ray."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(dirs > 0, (hi - origin)[:, None] / dirs, (lo - origin)[:, None] / dirs)
    t[dirs == 0] = np.inf
    axis = np.argmin(t, axis=0)
    return np.take_along_axis(t, axis[None], axis=0)[0], axis


def _slab(origin: np.ndarray, dirs: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """Entry parameter (inf where missed) and entry axis of rays against a (turned) box."""
    c, s = np.cos(box.yaw), np.sin(box.yaw)
    o = origin - box.centre
    o_local = np.array([c * o[0] + s * o[1], -s * o[0] + c * o[1], o[2]])[:, None]
    d_local = np.stack([c * dirs[0] + s * dirs[1], -s * dirs[0] + c * dirs[1], dirs[2]])
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d_local
        t1 = (-box.half[:, None] - o_local) * inv
        t2 = (box.half[:, None] - o_local) * inv
    near = np.fmin(t1, t2)  # fmin/fmax skip the NaN of 0·inf on a slab's boundary
    axis = np.argmax(near, axis=0)
    t_near = np.take_along_axis(near, axis[None], axis=0)[0]
    t_far = np.fmax(t1, t2).min(axis=0)
    hit = (t_near <= t_far) & (t_near > 0)
    return np.where(hit, t_near, np.inf), axis


def _candidates(origin: np.ndarray, unit: np.ndarray, box: Box) -> np.ndarray:
    """Rays (indices) whose direction falls in the cone of the box's bounding sphere:
    a cheap cull before the slab test (all rays when the origin is inside the sphere).
    `unit` is float32: this pass over all rays per box is memory-bound."""
    offset = box.centre - origin
    dist, radius = np.linalg.norm(offset), np.linalg.norm(box.half)
    if dist <= radius:
        return np.arange(unit.shape[1])
    cos_cone = np.float32(np.sqrt(dist * dist - radius * radius) / dist * (1 - 1e-6))
    return np.flatnonzero(_dot(unit, (offset / dist).astype(np.float32)) >= cos_cone)


def _cast(origin: np.ndarray, dirs: np.ndarray, unit: np.ndarray, boxes: tuple[Box, ...],
          first: int, t_best: np.ndarray, best: np.ndarray, axis_best: np.ndarray) -> None:
    """Nearest hits of outside-seen boxes, updating (t, box index, axis) in place."""
    for k, box in enumerate(boxes):
        idx = _candidates(origin, unit, box)
        if idx.size:
            t, axis = _slab(origin, dirs[:, idx], box)
            closer = t < t_best[idx]
            idx = idx[closer]
            t_best[idx], best[idx], axis_best[idx] = t[closer], first + k, axis[closer]


def _occluded(light: np.ndarray, points: np.ndarray, boxes: tuple[Box, ...]) -> np.ndarray:
    """Whether the segment light → point crosses a box, for each point (3, n)."""
    dirs = points - light[:, None]
    length = np.sqrt(_dot(dirs, dirs))
    limit = 1.0 - SHADOW_BIAS_M / length  # stop short of the point's own surface
    unit = (dirs / length).astype(np.float32)
    blocked = np.zeros(points.shape[1], bool)
    for box in boxes:
        idx = _candidates(light, unit, box)
        idx = idx[~blocked[idx]]
        if idx.size:
            t, _ = _slab(light, dirs[:, idx], box)
            blocked[idx[t < limit[idx]]] = True
    return blocked


def _trace(sc: Scene, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Primary hits per pixel (flattened): z-depth `t`, box index and face axis."""
    cam = sc.camera.position
    dirs = camera_rays(sc.camera, size)
    room = sc.boxes[0]
    t, axis = _room_exit(cam, dirs, room.centre - room.half, room.centre + room.half)
    box = np.zeros(t.size, np.intp)
    points = cam[:, None] + t * dirs
    n_inside = 1 + sum(1 for _ in itertools.takewhile(lambda b: b.inside, sc.boxes[1:]))
    for k in range(1, n_inside):  # rays through a door or window opening go on beyond
        rec = sc.boxes[k]
        lo, hi = rec.centre - rec.half - 1e-9, rec.centre + rec.half + 1e-9
        through = np.flatnonzero((axis == (0 if rec.wall < 2 else 1)) & np.all(
            (points >= lo[:, None]) & (points <= hi[:, None]), axis=0))
        if through.size:
            t[through], axis[through] = _room_exit(cam, dirs[:, through], lo, hi)
            box[through] = k
    unit = (dirs / np.sqrt(_dot(dirs, dirs))).astype(np.float32)
    _cast(cam, dirs, unit, sc.boxes[n_inside:], n_inside, t, box, axis)
    return {"t": t, "box": box, "axis": axis, "dirs": dirs, "unit": unit}


# --- shading ------------------------------------------------------------------------------

def _hash(i: np.ndarray, j: np.ndarray, salt: int) -> np.ndarray:
    """Pseudo-random values in [0, 1) per integer lattice point (an integer hash)."""
    n = i.astype(np.int64) * 374761393 + j.astype(np.int64) * 668265263 + salt * 2654435761
    n &= 0xFFFFFFFF
    n = ((n ^ (n >> 13)) * 1274126177) & 0xFFFFFFFF
    return (n ^ (n >> 16)).astype(np.float64) / 2.0**32


def _value_noise(u: np.ndarray, v: np.ndarray, salt: int) -> np.ndarray:
    """Smooth lattice noise in [-1, 1] with unit feature size."""
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = u - iu, v - iv
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    iu, iv = iu.astype(np.int64), iv.astype(np.int64)
    a, b = _hash(iu, iv, salt), _hash(iu + 1, iv, salt)
    c, d = _hash(iu, iv + 1, salt), _hash(iu + 1, iv + 1, salt)
    return 2 * ((a + (b - a) * fu) * (1 - fv) + (c + (d - c) * fu) * fv) - 1


def _gap_cover(x: np.ndarray, cell: np.ndarray, gap: np.ndarray, foot: np.ndarray
               ) -> np.ndarray:
    """Fraction of a pixel's footprint `foot` on a gap line of width `gap` between cells."""
    frac = x / cell - np.floor(x / cell)
    dist = np.minimum(frac, 1 - frac) * cell  # to the nearest cell border, metres
    overlap = np.minimum(dist + foot / 2, gap / 2) - np.maximum(dist - foot / 2, -gap / 2)
    return np.clip(overlap / foot, 0.0, 1.0)


def _material_table(boxes: tuple[Box, ...]) -> dict[str, np.ndarray]:
    """Material fields stacked per face slot (6 per box); colours as (3, slots)."""
    mats = [m for b in boxes for m in b.materials]
    table = {f: np.array([getattr(m, f) for m in mats], float)
             for f in ("noise_amp", "noise_scale_m", "fine_amp", "fine_scale_m", "cell_lum",
                       "cell_chroma", "grain_amp", "grain_freq", "grain_warp", "grain_axis")}
    table["colour"] = np.array([m.colour for m in mats], float).T
    table["gap_colour"] = np.array([m.colour if m.gap_colour is None else m.gap_colour
                                    for m in mats], float).T
    table["glow"] = np.array([np.zeros(3) if m.glow is None else m.glow for m in mats], float).T
    table["cell_u"], table["cell_v"] = np.array([m.cell_m for m in mats], float).T
    table["gap_u"], table["gap_v"] = np.array([m.gap_m for m in mats], float).T
    table["cells"] = ((table["cell_lum"] > 0) | (table["cell_chroma"] > 0)
                      | (table["gap_u"] > 0) | (table["gap_v"] > 0)).astype(float)
    return table


def _albedo(mat: dict[str, np.ndarray], slot: np.ndarray, u: np.ndarray, v: np.ndarray,
            foot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel albedo and emitted radiance, (3, n) each, from the faces' textures.

    Each texture feature is computed only on the pixels whose material uses it
    (plain painted walls often fill most of the image).
    """
    n1 = _value_noise((u + slot * 17.31) / mat["noise_scale_m"][slot],  # offsets decorrelate
                      v / mat["noise_scale_m"][slot], 1)                  # the faces' noise
    shade = 1 + mat["noise_amp"][slot] * n1
    albedo = mat["colour"][:, slot]
    if (idx := np.flatnonzero(mat["fine_amp"][slot] > 0)).size:
        sl, scale = slot[idx], mat["fine_scale_m"][slot[idx]]
        fine = _value_noise(u[idx] / scale, v[idx] / scale, 2)
        fine *= np.exp(-2.0 * (foot[idx] / scale) ** 2)  # fades out instead of aliasing
        shade[idx] *= 1 + mat["fine_amp"][sl] * fine
    if (idx := np.flatnonzero(mat["grain_amp"][slot] > 0)).size:
        sl = slot[idx]
        along = np.where(mat["grain_axis"][sl] > 0, v[idx], u[idx])
        plank = _hash(np.floor(u[idx] / mat["cell_u"][sl]), np.floor(v[idx] / mat["cell_v"][sl]), 7)
        freq = mat["grain_freq"][sl]
        phase = freq * along + mat["grain_warp"][sl] * n1[idx] + plank
        grain = mat["grain_amp"][sl] * np.sin(2 * np.pi * phase)
        shade[idx] *= 1 + grain * np.exp(-0.5 * (np.pi * foot[idx] * freq) ** 2)
    albedo = albedo * shade
    glow = np.zeros_like(albedo)
    if (idx := np.flatnonzero(mat["cells"][slot] > 0)).size:
        sl, ui, vi, fi = slot[idx], u[idx], v[idx], foot[idx]
        cu, cv = mat["cell_u"][sl], mat["cell_v"][sl]
        iu, iv = np.floor(ui / cu), np.floor(vi / cv)
        fade = np.exp(-((fi / np.minimum(cu, cv)) ** 2))  # sub-pixel cells average out
        lum = 1 + (_hash(iu, iv, 3) - 0.5) * 2 * mat["cell_lum"][sl] * fade
        chroma = np.stack([_hash(iu, iv, 4 + c) for c in range(3)]) - 0.5
        cell = albedo[:, idx] * lum * (1 + 2 * chroma * mat["cell_chroma"][sl] * fade)
        cover = np.maximum(_gap_cover(ui, cu, mat["gap_u"][sl], fi),
                           _gap_cover(vi, cv, mat["gap_v"][sl], fi))
        albedo[:, idx] = cell * (1 - cover) + mat["gap_colour"][:, sl] * cover
        glow[:, idx] = mat["glow"][:, sl] * (1 - cover)
    if (idx := np.flatnonzero((mat["glow"][:, slot] > 0).any(0) & (mat["cells"][slot] == 0))).size:
        glow[:, idx] = mat["glow"][:, slot[idx]]
    return np.clip(albedo, 0.01, 0.95), glow


def _surface(sc: Scene, hits: dict[str, np.ndarray], size: tuple[int, int]
             ) -> dict[str, np.ndarray]:
    """World points, normals, face texture coordinates and slots of the primary hits."""
    t, box, axis, dirs = hits["t"], hits["box"], hits["axis"], hits["dirs"]
    points = sc.camera.position[:, None] + t * dirs
    centre = np.array([b.centre for b in sc.boxes]).T[:, box]
    half = np.array([b.half for b in sc.boxes]).T[:, box]
    yaw = np.array([b.yaw for b in sc.boxes])[box]
    inward = np.array([b.inside for b in sc.boxes])[box]
    c, s = np.cos(yaw), np.sin(yaw)
    rel = points - centre
    local = np.stack([c * rel[0] + s * rel[1], -s * rel[0] + c * rel[1], rel[2]])
    side = np.sign(np.take_along_axis(local, axis[None], 0)[0])
    out = np.where(inward, -side, side)  # the normal's sign along the face axis, local
    n_local = [np.where(axis == a, out, 0.0) for a in range(3)]
    normal = np.stack([c * n_local[0] - s * n_local[1], s * n_local[0] + c * n_local[1],
                       n_local[2]])
    corner = local + half  # face coordinates measured from the box's low corner
    u_axis, v_axis = np.where(axis == 0, 1, 0)[None], np.where(axis == 2, 1, 2)[None]
    u = np.take_along_axis(corner, u_axis, 0)[0]
    v = np.take_along_axis(corner, v_axis, 0)[0]
    extent_u = 2 * np.take_along_axis(half, u_axis, 0)[0]
    extent_v = 2 * np.take_along_axis(half, v_axis, 0)[0]
    edge = np.minimum(np.minimum(u, extent_u - u), np.minimum(v, extent_v - v))
    cos_in = np.maximum(np.abs(_dot(normal, hits["unit"])), MIN_COS)
    return {"points": points, "normal": normal, "u": u, "v": v,
            "slot": box * 6 + axis * 2 + (side > 0), "inward": inward, "edge": edge,
            "foot": t / intrinsics(size)[0] / cos_in}  # a pixel's width on the surface


def _radiance(sc: Scene, surf: dict[str, np.ndarray]) -> np.ndarray:
    """Linear radiance (3, n): textured Lambertian surfaces, lamps, shadows, ambient."""
    albedo, glow = _albedo(_material_table(sc.boxes), surf["slot"], surf["u"], surf["v"],
                           surf["foot"])
    ao = np.where(surf["inward"], 1 - AO_AMP * np.exp(-surf["edge"] / AO_RANGE_M), 1.0)
    light_sum = np.zeros_like(albedo) + sc.look.ambient * ao
    # Lamps cast no shadows: their light sits just below them.
    casters = tuple(b for b in sc.boxes if not b.inside and b.kind != "lamp")
    lit = ~(glow > 0).any(axis=0)
    points = surf["points"] + 1e-4 * surf["normal"]  # off the surface: no self-shadowing
    for light in sc.lights:
        to_light = light.position[:, None] - points
        dist = np.sqrt(_dot(to_light, to_light))
        cos = _dot(surf["normal"], to_light) / dist
        facing = np.flatnonzero((cos > 0) & lit)
        visible = facing[~_occluded(light.position, points[:, facing], casters)]
        irradiance = light.power * cos[visible] / (1 + (dist[visible] / LIGHT_FALLOFF_M) ** 2)
        light_sum[:, visible] += irradiance * light.colour[:, None]
    return albedo * light_sum + glow


def _develop(sc: Scene, radiance: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Camera response: white balance, auto-exposure, vignetting, gamma, noise → uint8."""
    h, w = size
    look = sc.look
    image = radiance.reshape(3, h, w) * look.white_balance[:, None, None]
    luminance = 0.2126 * image[0] + 0.7152 * image[1] + 0.0722 * image[2]
    fx, _, cx, _, fy, cy, *_ = intrinsics(size)
    r2 = ((np.arange(w) - cx) / fx)[None, :] ** 2 + ((np.arange(h) - cy) / fy)[:, None] ** 2
    gain = look.exposure_key / max(float(np.median(luminance)), 1e-6)
    image *= gain * (1 + r2) ** -look.vignette  # vignetting: cos(θ)^(2v)
    image = np.clip(image, 0.0, 1.0) ** (1 / GAMMA)
    image = image.transpose(1, 2, 0)
    image += _rng(sc.seed, 2).normal(0.0, look.noise_std, size=image.shape)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render(sc: Scene, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast a scene: (rgb (H, W, 3) uint8, z-depth (H, W) float32 metres, ≤ 10)."""
    size = _check_size(size)
    hits = _trace(sc, size)
    rgb = _develop(sc, _radiance(sc, _surface(sc, hits, size)), size)
    depth = np.minimum(hits["t"], MAX_DEPTH_M).reshape(size).astype(np.float32)
    return rgb, depth


def generate(seed: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One aligned sample: (rgb (H, W, 3) uint8, depth (H, W) float32 metres in (0, 10])."""
    size = _check_size(size)
    return render(scene(seed), size)
