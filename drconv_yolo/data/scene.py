"""One synthetic aerial scene: a textured background split into regions, clutter, small objects, region lighting.

:func:`draw_scene` draws one image from a random generator; :mod:`drconv_yolo.data.synthetic` turns scenes into a
dataset. The random stream is consumed in a fixed order (every texture is computed even where unused), so the same
generator state always gives the same pixels and boxes.

How the region an object is in shapes it (``appearance="region"``, the default): (1) its light - each region has
its own random illumination and colour cast, applied alike to its background and its objects (softened over
:data:`LIGHT_EDGE_SIGMA` at borders); (2) its surroundings - its shadow is the region's texture darkened, and the
camera blur mixes its edge with that texture; (3) its place and pose - vehicles prefer road-like regions and point
along a road band, pedestrians and bicycles prefer walkable ones. Its colours, shape and size depend on its class
alone. ``appearance="uniform"``, the control set, removes (1): each object gets its own light, from the same
distribution as a region's, drawn after everything else, so the same generator state gives the same layout, boxes,
unlit colours, shadows and every pixel off the objects as the default; (2) and (3) stay.

Sizes are in pixels at the reference image size :data:`REFERENCE_SIZE` and scale linearly with the image size. The
numbers inside the texture and object painters are appearance (colours, proportions), tuned by eye; the numbers
that shape the dataset (how many regions and objects, where objects go, how they are lit) are named constants.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, NamedTuple, Sequence, Tuple

import cv2
import numpy as np

__all__ = ["APPEARANCES", "CLASS_NAMES", "REFERENCE_SIZE", "Scene", "draw_scene"]

CLASS_NAMES: Tuple[str, ...] = ("car", "pedestrian", "truck", "bicycle", "bus", "van", "motor", "tricycle")
"""Every class the scene can draw, in class-index order (the painters in ``_CLASSES`` follow it)."""

REFERENCE_SIZE = 256.0  # object and texture sizes below are in pixels at this image size

APPEARANCES: Tuple[str, ...] = ("region", "uniform")
"""How objects are lit: by the region they are in (default), or independently of it (the control set)."""

Rgb = Tuple[float, float, float]

REGIONS = (2, 5)  # inclusive range of background regions per image (the road band counts as one)
ROAD_BAND_CHANCE = 0.6  # chance of one straight road band across the image
ON_ROAD_CHANCE = 0.8  # chance a vehicle is placed on a road-like region (else anywhere)
ON_GROUND_CHANCE = 0.6  # same for pedestrians and bicycles, on walkable regions
PLACEMENT_ATTEMPTS = 40  # spots tried per object before it is dropped
MIN_VISIBLE = 0.5  # an object must have at least this fraction of its pixels inside the image
MIN_BOX_SIDE = 2  # pixels: a box with a shorter side is not kept
SHADOW_OFFSET = 1.8  # reference px between an object and its shadow
SHADOW_SHADE = (0.5, 0.75)  # range of the brightness factor in shadows
REGION_GAIN = (0.6, 1.15)  # range of each region's illumination
REGION_CAST = (0.9, 1.1)  # range of each region's per-channel colour cast
LIGHT_EDGE_SIGMA = 1.5  # reference px: how softly the lighting changes across a region border
CAMERA_BLUR_SIGMA = 0.5  # pixels: camera softness
SENSOR_NOISE = 7.0  # peak-to-peak amplitude of the uniform per-pixel sensor noise (grey levels)


# Background: regions and textures
_REGION_TYPES = ("road", "grass", "roof", "water", "soil", "parking")
_REGION_WEIGHTS = np.array([0.2, 0.22, 0.16, 0.12, 0.14, 0.16])
_VEHICLE_REGIONS = ("road", "parking")
_WALK_REGIONS = ("road", "parking", "grass", "soil")


class _Ctx:
    """Per-image drawing context: size, scale, pixel grids, shared noise fields and the random generator.

    Background arrays are planar ``(3, H, W)`` float32 (fast numpy broadcasting); noise fields are cached and shared
    between the textures of one image - textures fill disjoint regions, so sharing is invisible.
    """

    def __init__(self, rng: np.random.Generator, size: int) -> None:
        self.rng = rng
        self.size = size
        self.s = size / REFERENCE_SIZE
        self.yy, self.xx = (grid.astype(np.float32) for grid in np.mgrid[0:size, 0:size])
        self._smooth: Dict[Tuple[int, int], np.ndarray] = {}
        self._grain: np.ndarray | None = None

    def smooth(self, cell: float, key: int = 0) -> np.ndarray:
        """Smooth noise (unit std, shape ``(H, W)``) with features of about ``cell`` reference pixels, cached."""
        cell = max(2, int(round(cell * self.s)))
        if (cell, key) not in self._smooth:
            # white noise on a grid of half-cell steps, blurred at low resolution, then bilinear upsampling
            step = max(1, cell // 2)
            n = self.size // step + 4
            grid = cv2.GaussianBlur(self.rng.standard_normal((n, n), dtype=np.float32), (0, 0), 1.0)
            big = cv2.resize(grid, (n * step, n * step), interpolation=cv2.INTER_LINEAR)
            field = big[2 * step : 2 * step + self.size, 2 * step : 2 * step + self.size]
            self._smooth[(cell, key)] = field * np.float32(1.0 / max(float(field.std()), 1e-3))
        return self._smooth[(cell, key)]

    def grain(self, sigma: float, channels: int = 1) -> np.ndarray:
        """Per-pixel zero-mean noise of std ``sigma``: ``(H, W)`` or, with ``channels=3``, ``(3, H, W)``."""
        if self._grain is None:
            u = self.rng.random((4, self.size, self.size), dtype=np.float32)
            self._grain = (u - np.float32(0.5)) * np.float32(math.sqrt(12.0))
        return self._grain[0] * np.float32(sigma) if channels == 1 else self._grain[1:] * np.float32(sigma)

    def along(self, angle: float) -> np.ndarray:
        """Coordinate along direction ``angle`` (radians) for every pixel, shape ``(H, W)``."""
        return self.xx * np.float32(math.cos(angle)) + self.yy * np.float32(math.sin(angle))

    def jitter(self, rgb: Sequence[float], amount: float) -> np.ndarray:
        """Colour ``rgb`` with uniform per-channel jitter of +-``amount``."""
        return np.clip(np.asarray(rgb, np.float32) + self.rng.uniform(-amount, amount, 3).astype(np.float32), 0, 255)


def _fmod(x: np.ndarray, period: float) -> np.ndarray:
    """Fast ``np.mod`` for a positive scalar period."""
    return x - np.floor(x * np.float32(1.0 / period)) * np.float32(period)


def _planar(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(rgb, np.float32).reshape(3, 1, 1)


def _paint(img: np.ndarray, where: np.ndarray, rgb: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Blend colour ``rgb`` into planar ``img`` where the boolean ``(H, W)`` mask is set."""
    m = where.astype(np.float32) * np.float32(alpha)
    return img + m * (_planar(rgb) - img)


def _tex_road(ctx: _Ctx, angle: float) -> np.ndarray:
    rng = ctx.rng
    base = np.float32(rng.uniform(70, 120)) + rng.uniform(-5, 5, 3).astype(np.float32)
    img = _planar(base) + (ctx.smooth(20) * 7 + ctx.grain(5))
    u, v = ctx.along(angle + math.pi / 2), ctx.along(angle)  # u across the road, v along it
    period, dash = rng.uniform(20, 36) * ctx.s, rng.uniform(6, 12) * ctx.s
    marks = (_fmod(u, period) < max(1.0, 1.3 * ctx.s)) & (_fmod(v, 2 * dash) < dash)
    lane = ctx.jitter((225, 225, 215) if rng.random() < 0.7 else (220, 190, 60), 15)
    return _paint(img, marks, lane, 0.85)


def _tex_grass(ctx: _Ctx, angle: float) -> np.ndarray:
    base = ctx.jitter((75, 115, 50), 20)
    mod = ctx.smooth(28) * 14 + ctx.smooth(6) * 8
    return _planar(base) + mod * _planar((0.8, 1.0, 0.6)) + ctx.grain(9, 3) * 0.6 + ctx.grain(9)


def _tex_roof(ctx: _Ctx, angle: float) -> np.ndarray:
    rng = ctx.rng
    palette = ((160, 70, 55), (115, 115, 125), (95, 65, 50), (185, 175, 165), (70, 90, 110))
    base = ctx.jitter(palette[rng.integers(len(palette))], 15)
    u, v = ctx.along(angle), ctx.along(angle + math.pi / 2)
    period = rng.uniform(4, 7) * ctx.s
    lum = 10 * np.sin(u * np.float32(2 * math.pi / period)) + ctx.grain(4)
    tile = rng.uniform(18, 34) * ctx.s
    seams = (_fmod(u, tile) < max(1.0, ctx.s)) | (_fmod(v, tile * rng.uniform(1, 2)) < max(1.0, ctx.s))
    return (_planar(base) + lum) * (1 - np.float32(0.4) * seams)


def _tex_water(ctx: _Ctx, angle: float) -> np.ndarray:
    rng = ctx.rng
    base = ctx.jitter((40, 90, 130), 18)
    grad = ctx.along(angle) * np.float32(1 / ctx.size) - np.float32(0.5)
    period = rng.uniform(5, 9) * ctx.s
    ripple = np.sin(ctx.along(angle + 1.1) * np.float32(2 * math.pi / period) + ctx.smooth(16) * 2.0)
    return _planar(base) + (grad * rng.uniform(20, 40) + ripple * 4 + ctx.smooth(40) * 6 + ctx.grain(2))


def _tex_soil(ctx: _Ctx, angle: float) -> np.ndarray:
    base = ctx.jitter((165, 135, 95), 22)
    mod = ctx.smooth(10) * 14 + ctx.smooth(40) * 12
    return _planar(base) + mod * _planar((1.0, 0.9, 0.75)) + ctx.grain(7)


def _tex_parking(ctx: _Ctx, angle: float) -> np.ndarray:
    rng = ctx.rng
    base = np.float32(rng.uniform(135, 175)) + rng.uniform(-5, 5, 3).astype(np.float32)
    img = _planar(base) + (ctx.smooth(30) * 6 + ctx.grain(4))
    u, v = ctx.along(angle), ctx.along(angle + math.pi / 2)
    bay, row = rng.uniform(12, 18) * ctx.s, rng.uniform(40, 70) * ctx.s
    lines = (_fmod(u, bay) < max(1.0, ctx.s)) & (_fmod(v, row) < row * 0.45)
    return _paint(img, lines, ctx.jitter((235, 235, 230), 10))


_TEXTURE_PAINTERS = (_tex_road, _tex_grass, _tex_roof, _tex_water, _tex_soil, _tex_parking)  # _REGION_TYPES order
_TEXTURES: Dict[str, Callable[[_Ctx, float], np.ndarray]] = dict(zip(_REGION_TYPES, _TEXTURE_PAINTERS))


class _Regions(NamedTuple):
    """Region partition of one image: ``uint8`` label map, region types and orientations."""

    label: np.ndarray
    types: List[str]
    angles: List[float]
    band: int | None  # index of the straight road band, if any

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """Per-pixel ``values[label]`` for a ``(n_regions,)`` or ``(n_regions, C)`` float table (via ``cv2.LUT``)."""
        values = np.asarray(values, np.float32)
        table = np.zeros((256,) + values.shape[1:], np.float32)
        table[: len(values)] = values
        if values.ndim == 1:
            return cv2.LUT(self.label, table)
        c = values.shape[1]
        return cv2.LUT(cv2.merge([self.label] * c), table.reshape(256, 1, c))


def _make_regions(ctx: _Ctx) -> _Regions:
    """Split the image into 2-5 regions: warped Voronoi cells plus, often, one straight road band."""
    rng, size = ctx.rng, ctx.size
    k = int(rng.integers(REGIONS[0], REGIONS[1] + 1))
    band = bool(rng.random() < ROAD_BAND_CHANCE)
    n_cells = max(1, k - int(band))
    seeds = rng.uniform(0.1, 0.9, (n_cells, 2)) * size
    amp = np.float32(0.08 * size)
    wx = ctx.xx + ctx.smooth(90, key=1) * amp
    wy = ctx.yy + ctx.smooth(90, key=2) * amp
    label = np.zeros((size, size), np.uint8)
    best = np.full((size, size), np.inf, np.float32)
    for i, (sx, sy) in enumerate(seeds):
        d = np.square(wx - np.float32(sx)) + np.square(wy - np.float32(sy))
        label[d < best] = i
        best = np.minimum(best, d)
    p = _REGION_WEIGHTS / _REGION_WEIGHTS.sum()
    types = [str(t) for t in rng.choice(_REGION_TYPES, size=n_cells, p=p)]
    angles = [float(a) for a in rng.uniform(0, math.pi, n_cells)]
    band_idx = None
    if band:
        angle = float(rng.uniform(0, math.pi))
        cx, cy = rng.uniform(0.25, 0.75, 2) * size
        nx, ny = np.float32(-math.sin(angle)), np.float32(math.cos(angle))  # unit normal of the band
        across = (ctx.xx - np.float32(cx)) * nx + (ctx.yy - np.float32(cy)) * ny
        across += ctx.smooth(120, key=3) * np.float32(0.02 * size)
        band_idx = n_cells
        label[np.abs(across) < rng.uniform(14, 26) * ctx.s] = band_idx
        types.append("road")
        angles.append(angle)
    return _Regions(label, types, angles, band_idx)


def _background(ctx: _Ctx, reg: _Regions) -> np.ndarray:
    """Textured background, ``(H, W, 3)`` float32 RGB."""
    img = np.empty((3, ctx.size, ctx.size), np.float32)
    for i, (kind, angle) in enumerate(zip(reg.types, reg.angles)):
        tex = _TEXTURES[kind](ctx, angle)  # always computed: keeps the random stream independent of the layout
        np.copyto(img, tex, where=reg.label == i)
    return cv2.merge(list(img))


# Clutter (not objects)
def _clutter(ctx: _Ctx, img: np.ndarray) -> None:
    """Draw distractors in place (``(H, W, 3)`` float32): trees, crates, stains, wires and specks."""
    rng, size, s = ctx.rng, ctx.size, ctx.s
    for _ in range(int(rng.integers(0, 9))):  # trees: dark-green discs with a lighter crown
        c, r = rng.uniform(0, size, 2), rng.uniform(3, 10) * s
        col = ctx.jitter((40, 75, 35), 12)
        cv2.circle(img, _pt(c), _len(r), _col(col), -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(img, _pt(c - r * 0.25), _len(r * 0.55), _col(col * 1.35), -1, cv2.LINE_AA, _SHIFT)
    for _ in range(int(rng.integers(0, 7))):  # crates / roof units: plain low-saturation rectangles
        c = rng.uniform(0, size, 2)
        col = np.clip(rng.uniform(60, 200) + rng.uniform(-12, 12, 3), 0, 255)
        length, width = rng.uniform(4, 13) * s, rng.uniform(3, 8) * s
        cv2.fillPoly(img, [_ipts(_rect(c, length, width, rng.uniform(0, math.pi)))], _col(col), cv2.LINE_AA, _SHIFT)
    for _ in range(int(rng.integers(0, 6))):  # stains / building shadows: darker or lighter ellipses
        a, b = rng.uniform(4, 22) * s, rng.uniform(3, 12) * s
        c, ang, gain = rng.uniform(0, size, 2), float(rng.uniform(0, 180)), np.float32(rng.uniform(0.55, 1.3))
        x0, y0, side = int(c[0] - a) - 1, int(c[1] - a) - 1, int(2 * a) + 3
        mask = np.zeros((side, side), np.uint8)
        cv2.ellipse(mask, _pt((c[0] - x0, c[1] - y0)), (_len(a), _len(b)), ang, 0, 360, 255, -1, cv2.LINE_8, _SHIFT)
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + side, size), min(y0 + side, size)
        if ix0 < ix1 and iy0 < iy1:
            sel = mask[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] > 0
            img[iy0:iy1, ix0:ix1][sel] *= gain
    for _ in range(int(rng.integers(0, 4))):  # wires / fences: thin long lines
        col = np.full(3, rng.uniform(30, 220))
        cv2.line(img, _pt(rng.uniform(0, size, 2)), _pt(rng.uniform(0, size, 2)), _col(col), 1, cv2.LINE_AA, _SHIFT)
    n = int(rng.integers(0, 30 * s * s + 1))  # specks
    if n:
        ys, xs = rng.integers(0, size, n), rng.integers(0, size, n)
        img[ys, xs] = rng.uniform(0, 255, (n, 3)).astype(np.float32)


# Objects
_SHIFT = 3
_MUL = 1 << _SHIFT


def _pt(p: Sequence[float]) -> Tuple[int, int]:
    return int(round(float(p[0]) * _MUL)), int(round(float(p[1]) * _MUL))


def _len(x: float) -> int:
    return max(1, int(round(float(x) * _MUL)))


def _ipts(pts: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(pts, np.float64) * _MUL).astype(np.int32)


def _col(rgb: Sequence[float]) -> Tuple[float, float, float]:
    return tuple(float(min(255.0, max(0.0, c))) for c in rgb)  # type: ignore[return-value]


def _col4(rgb: Sequence[float]) -> Tuple[float, float, float, float]:
    return (*_col(rgb), 255.0)


def _rect(c: Sequence[float], length: float, width: float, angle: float, offset: float = 0.0) -> np.ndarray:
    """Corners of a ``length`` x ``width`` rectangle along ``angle``, centred ``offset`` along its axis from ``c``."""
    ux, uy = math.cos(angle), math.sin(angle)
    cx, cy = float(c[0]) + offset * ux, float(c[1]) + offset * uy
    lx, ly, wx, wy = ux * length / 2, uy * length / 2, -uy * width / 2, ux * width / 2
    return np.array([[cx + a * lx + b * wx, cy + a * ly + b * wy] for a, b in ((1, 1), (1, -1), (-1, -1), (-1, 1))])


class _Painter:
    """Draws primitives into a local RGBA patch whose alpha is the exact coverage mask (sub-pixel coordinates)."""

    def __init__(self, side: int) -> None:
        self.rgba = np.zeros((side, side, 4), np.uint8)
        self.c = (side / 2.0, side / 2.0)

    def rect(self, length: float, width: float, angle: float, col: Sequence[float], offset: float = 0.0) -> None:
        self.poly(_rect(self.c, length, width, angle, offset), col)

    def poly(self, pts: np.ndarray, col: Sequence[float]) -> None:
        cv2.fillPoly(self.rgba, [_ipts(pts)], _col4(col), cv2.LINE_8, _SHIFT)

    def circle(self, c: Sequence[float], r: float, col: Sequence[float], thickness: int = -1) -> None:
        cv2.circle(self.rgba, _pt(c), _len(r), _col4(col), thickness, cv2.LINE_8, _SHIFT)

    def ellipse(self, c: Sequence[float], a: float, b: float, angle: float, col: Sequence[float]) -> None:
        axes = (_len(a), _len(b))
        cv2.ellipse(self.rgba, _pt(c), axes, math.degrees(angle), 0, 360, _col4(col), -1, cv2.LINE_8, _SHIFT)

    def line(self, a: Sequence[float], b: Sequence[float], col: Sequence[float], thickness: int = 1) -> None:
        cv2.line(self.rgba, _pt(a), _pt(b), _col4(col), thickness, cv2.LINE_8, _SHIFT)

    def at(self, along: float, across: float, angle: float) -> Tuple[float, float]:
        """Patch point at (``along``, ``across``) in the object's frame."""
        ux, uy = math.cos(angle), math.sin(angle)
        return self.c[0] + along * ux - across * uy, self.c[1] + along * uy + across * ux


_CAR_COLOURS = ((200, 35, 35), (35, 65, 175), (232, 232, 232), (165, 165, 172), (28, 28, 32), (225, 195, 45))
_BRIGHT = ((230, 40, 40), (40, 90, 230), (245, 200, 30), (40, 180, 60), (240, 120, 20), (200, 50, 200), (30, 200, 210))


def _pick(ctx: _Ctx, palette: Sequence[Rgb], amount: float = 18) -> np.ndarray:
    return ctx.jitter(palette[int(ctx.rng.integers(len(palette)))], amount)


def _glass(body: np.ndarray) -> Tuple[float, float, float]:
    return (120, 130, 150) if float(body.mean()) < 60 else (30, 38, 55)


def _draw_car(ctx: _Ctx, p: _Painter, size: float, a: float) -> None:
    width = size * ctx.rng.uniform(0.42, 0.52)
    body = _pick(ctx, _CAR_COLOURS)
    p.rect(size, width, a, body)
    p.rect(size * 0.2, width * 0.82, a, _glass(body), offset=size * 0.16)  # windscreen
    p.rect(size * 0.12, width * 0.8, a, _glass(body), offset=-size * 0.3)  # rear window


def _draw_pedestrian(ctx: _Ctx, p: _Painter, size: float, a: float) -> None:
    p.ellipse(p.c, size * 0.5, size * 0.32, a, _pick(ctx, _BRIGHT, 30))  # shoulders / clothing
    hair = ctx.jitter((35, 28, 22), 15) if ctx.rng.random() < 0.8 else ctx.jitter((200, 160, 130), 20)
    p.circle(p.at(size * 0.05, 0, a), size * 0.2, hair)  # head


def _draw_truck(ctx: _Ctx, p: _Painter, size: float, a: float) -> None:
    width = size * ctx.rng.uniform(0.32, 0.4)
    cab = _pick(ctx, ((200, 40, 35), (40, 70, 170), (230, 230, 230), (40, 140, 60), (235, 130, 30)))
    cargo = _pick(ctx, ((225, 225, 220), (150, 150, 150), (220, 110, 40), (60, 120, 70), (180, 40, 40)), 12)
    p.rect(size * 0.22, width * 0.92, a, cab, offset=size * 0.39)
    p.rect(size * 0.07, width * 0.85, a, _glass(cab), offset=size * 0.44)
    p.rect(size * 0.74, width, a, cargo, offset=-size * 0.13)
    n = max(3, int(size * 0.74 / (3.0 * ctx.s)))
    for i in range(1, n):  # corrugation lines across the container
        t = -size * 0.5 + size * 0.74 * i / n
        p.line(p.at(t, -width * 0.45, a), p.at(t, width * 0.45, a), cargo * 0.7)


def _draw_bicycle(ctx: _Ctx, p: _Painter, size: float, a: float) -> None:
    frame = _pick(ctx, _BRIGHT, 25)
    tyre = ctx.jitter((30, 30, 34), 12)
    front, back = p.at(size * 0.3, 0, a), p.at(-size * 0.3, 0, a)
    p.rect(size * 0.6, size * 0.16, a, frame)  # coloured frame bar between the wheels
    for hub in (front, back):  # dark wheels with a light hub (the wheels do not touch): a "dumbbell" shape
        p.circle(hub, size * 0.2, tyre)
        p.circle(hub, size * 0.07, (200, 200, 200))


def _draw_bus(ctx: _Ctx, p: _Painter, size: float, a: float) -> None:
    width = size * ctx.rng.uniform(0.28, 0.34)
    body = _pick(ctx, ((235, 200, 40), (40, 150, 70), (40, 80, 190), (200, 40, 40), (235, 235, 235)))
    p.rect(size, width, a, body)
    for side in (-1, 1):  # window rows along both long edges
        edge = p.at(-size * 0.02, side * width * 0.36, a)
        p.poly(_rect(edge, size * 0.82, width * 0.14, a), (25, 30, 45))
    for t in (-0.2, 0.15):  # roof air-conditioning units
        p.rect(size * 0.12, width * 0.4, a, (170, 170, 175), offset=size * t)


def _draw_van(ctx: _Ctx, p: _Painter, size: float, a: float) -> None:
    width = size * ctx.rng.uniform(0.5, 0.58)
    body = _pick(ctx, ((238, 238, 238), (170, 170, 178), (40, 50, 110), (200, 190, 160)), 12)
    p.rect(size, width, a, body)
    p.rect(size * 0.16, width * 0.86, a, _glass(body), offset=size * 0.36)  # big windscreen
    for t in (-0.3, -0.12, 0.06):  # roof rack bars
        p.rect(max(size * 0.04, ctx.s), width * 0.7, a, body * 0.55, offset=size * t)


def _draw_motor(ctx: _Ctx, p: _Painter, size: float, a: float) -> None:
    p.rect(size, size * 0.32, a, ctx.jitter((30, 30, 35), 15))
    p.circle(p.at(-size * 0.05, 0, a), size * 0.22, _pick(ctx, _BRIGHT, 30))  # helmet


def _draw_tricycle(ctx: _Ctx, p: _Painter, size: float, a: float) -> None:
    width = size * 0.55
    frame = ctx.jitter((40, 40, 45), 15)
    nose = p.at(size * 0.5, 0, a)
    p.poly(np.stack([nose, p.at(-size * 0.5, width / 2, a), p.at(-size * 0.5, -width / 2, a)]), frame)
    canopy = _pick(ctx, ((40, 90, 210), (210, 40, 40), (40, 170, 80), (240, 150, 30)))
    p.rect(size * 0.6, width * 0.95, a, canopy, offset=-size * 0.2)


# class index -> (draw function, size range in reference px (length of the major axis), orientation matters)
_CLASSES: Tuple[Tuple[Callable[[_Ctx, _Painter, float, float], None], Tuple[float, float], bool], ...] = (
    (_draw_car, (16.0, 25.0), True),
    (_draw_pedestrian, (10.0, 15.0), False),
    (_draw_truck, (27.0, 40.0), True),
    (_draw_bicycle, (15.0, 21.0), True),
    (_draw_bus, (32.0, 45.0), True),
    (_draw_van, (19.0, 28.0), True),
    (_draw_motor, (11.0, 16.0), True),
    (_draw_tricycle, (15.0, 21.0), True),
)
_VEHICLES = frozenset({0, 2, 4, 5, 6, 7})


def _overlaps(box: Tuple[int, int, int, int], boxes: List[Tuple[int, int, int, int]], gap: int) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] + gap and b[0] < x1 + gap and y0 < b[3] + gap and b[1] < y1 + gap for b in boxes)


_Pose = Tuple[float, float, float]  # (cx, cy, angle in radians) of an object


class _Canvas(NamedTuple):
    """The image objects are drawn into, which object owns each pixel, and what a new object must keep clear of."""

    img: np.ndarray  # (H, W, 3) float32 RGB
    owner: np.ndarray  # (H, W) int16: index of the object drawn at each pixel, -1 where none
    placed: List[Tuple[int, int, int, int]]  # boxes of the objects drawn so far, in drawing order
    gap: int  # free pixels between two objects, shadows included
    shadow_off: int  # pixels between an object and its shadow
    shadow_shift: Tuple[int, int]  # (x, y) pixels, towards the side away from the sun
    shade: np.float32  # brightness factor in the shadow


def _place_objects(
    ctx: _Ctx, img: np.ndarray, reg: _Regions, n_classes: int, n_obj: int, scale: float
) -> Tuple[List[List[int]], np.ndarray]:
    """Draw ``n_obj`` non-overlapping objects with shadows in place; return the ``[cls, x0, y0, x1, y1]`` pixel boxes
    and the ``(H, W)`` int16 map of the object (row of the boxes) drawn at each pixel, -1 where none."""
    rng, s = ctx.rng, ctx.s
    pools = {}
    for key, kinds in (("vehicle", _VEHICLE_REGIONS), ("walk", _WALK_REGIONS)):
        ok = reg.lookup(np.array([t in kinds for t in reg.types], np.float32))
        pools[key] = np.flatnonzero(ok.ravel() > 0)
    sun = rng.uniform(0, 2 * math.pi)
    shade = np.float32(rng.uniform(*SHADOW_SHADE))
    off = max(1, int(round(SHADOW_OFFSET * s)))
    shift = (int(round(off * math.cos(sun))), int(round(off * math.sin(sun))))
    owner = np.full((ctx.size, ctx.size), -1, np.int16)
    canvas = _Canvas(img, owner, [], max(1, int(round(s))) + off, off, shift, shade)
    boxes: List[List[int]] = []
    for _ in range(n_obj):
        cls = int(rng.integers(n_classes))
        draw, (lo, hi), oriented = _CLASSES[cls]
        length = rng.uniform(lo, hi) * s * scale
        vehicle = cls in _VEHICLES
        pool = pools["vehicle" if vehicle else "walk"]
        r0 = 0.12 * length  # half the side of a square (nearly) inside any object
        for _attempt in range(PLACEMENT_ATTEMPTS):
            cx, cy = _spot(ctx, pool, ON_ROAD_CHANCE if vehicle else ON_GROUND_CHANCE)
            rid = int(reg.label[min(max(int(cy), 0), ctx.size - 1), min(max(int(cx), 0), ctx.size - 1)])
            if oriented and rid == reg.band and vehicle:  # vehicles drive along the road band
                angle = reg.angles[rid] + rng.normal(0, 0.12) + math.pi * int(rng.integers(2))
            else:
                angle = rng.uniform(0, 2 * math.pi)
            core = (int(cx - r0), int(cy - r0), int(cx + r0) + 1, int(cy + r0) + 1)
            if _overlaps(core, canvas.placed, canvas.gap):  # cheap early rejection before drawing
                continue
            box = _draw_object(ctx, canvas, draw, length, (cx, cy, angle))
            if box is not None:
                boxes.append([cls, *box])
                break
    return boxes, owner


def _spot(ctx: _Ctx, pool: np.ndarray, prefer: float) -> Tuple[float, float]:
    """A candidate centre: in a preferred region (a pixel of ``pool``) with chance ``prefer``, else anywhere."""
    rng, size = ctx.rng, ctx.size
    if pool.size and rng.random() < prefer:
        y, x = divmod(int(pool[rng.integers(pool.size)]), size)
        return x + rng.uniform(-0.5, 0.5), y + rng.uniform(-0.5, 0.5)
    return tuple(rng.uniform(-0.1, 1.1, 2) * size)  # a little outside too: objects cut by the border


def _draw_object(
    ctx: _Ctx, canvas: _Canvas, draw: Callable[[_Ctx, _Painter, float, float], None], length: float, pose: _Pose
) -> Tuple[int, int, int, int] | None:
    """Draw one object centred at ``pose = (cx, cy, angle)`` with its shadow and record it in ``canvas``; its box, or
    ``None`` if rejected (mostly outside the image, too thin, or too close to a placed object)."""
    cx, cy, angle = pose
    size = ctx.size
    side = int(math.ceil(1.2 * length)) + 2 * (canvas.shadow_off + 3)  # the patch holds the object, rotated, + shadow
    painter = _Painter(side)
    draw(ctx, painter, length, angle)
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + side, size), min(y0 + side, size)
    if ix0 >= ix1 or iy0 >= iy1:
        return None
    local = (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))  # the part of the patch inside the image
    mask = painter.rgba[..., 3]  # coverage
    vis = mask[local] > 0
    area = int(np.count_nonzero(mask))
    if area == 0 or np.count_nonzero(vis) < MIN_VISIBLE * area:
        return None
    cols, rows = np.flatnonzero(vis.any(0)), np.flatnonzero(vis.any(1))
    box = (ix0 + int(cols[0]), iy0 + int(rows[0]), ix0 + int(cols[-1]) + 1, iy0 + int(rows[-1]) + 1)
    if box[2] - box[0] < MIN_BOX_SIDE or box[3] - box[1] < MIN_BOX_SIDE or _overlaps(box, canvas.placed, canvas.gap):
        return None
    full = mask > 0
    dark = np.roll(full, canvas.shadow_shift, axis=(1, 0)) & ~full
    region = canvas.img[iy0:iy1, ix0:ix1]
    region[dark[local]] *= canvas.shade
    region[vis] = painter.rgba[..., :3][local][vis]
    canvas.owner[iy0:iy1, ix0:ix1][vis] = len(canvas.placed)
    canvas.placed.append(box)
    return box


def _lights(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random lights, ``(n, 3)``: an illumination times a per-channel colour cast each."""
    return rng.uniform(*REGION_GAIN, (n, 1)) * rng.uniform(*REGION_CAST, (n, 3))


class Scene(NamedTuple):
    """One drawn scene and what it was drawn with (the fields after ``boxes`` are for tests and diagnostics)."""

    image: np.ndarray  # (H, W, 3) BGR uint8
    boxes: np.ndarray  # (n, 5) int64 rows [cls, x0, y0, x1, y1], pixel edges, x1/y1 exclusive
    owner: np.ndarray  # (H, W) int16: row of ``boxes`` drawn at each pixel, -1 where none
    label: np.ndarray  # (H, W) uint8: region index of each pixel
    region_lights: np.ndarray  # (n_regions, 3) float: each region's light (its objects' too with "region")


def draw_scene(
    rng: np.random.Generator,
    size: int,
    n_classes: int,
    objects_per_image: Tuple[int, int],
    object_scale: float,
    appearance: str = APPEARANCES[0],
) -> Scene:
    """Draw one scene.

    Args:
        rng: The image's own random generator.
        size: Side of the square image in pixels.
        n_classes: Draw objects of the first ``n_classes`` of :data:`CLASS_NAMES`.
        objects_per_image: Inclusive ``(min, max)`` number of objects to try to place.
        object_scale: Multiplier on all object sizes.
        appearance: ``"region"``: objects are lit by the region they are in; ``"uniform"``: each by its own light,
            independent of the regions (the module docstring says what stays the same).

    Returns:
        The :class:`Scene`: a BGR ``uint8`` image of shape ``(size, size, 3)``, the ``(n, 5)`` boxes, the object
        and region maps and the region lights.

    Raises:
        ValueError: If ``appearance`` is not one of :data:`APPEARANCES`.
    """
    if appearance not in APPEARANCES:
        raise ValueError(f"appearance must be one of {', '.join(APPEARANCES)}, got {appearance!r}")
    ctx = _Ctx(rng, size)
    reg = _make_regions(ctx)
    img = _background(ctx, reg)
    _clutter(ctx, img)
    n_obj = int(rng.integers(objects_per_image[0], objects_per_image[1] + 1))
    boxes, owner = _place_objects(ctx, img, reg, n_classes, n_obj, object_scale)
    # Region-dependent illumination and colour cast, applied after the objects: appearance depends on the region.
    region_lights = _lights(rng, len(reg.types))
    noise = (rng.random((ctx.size, ctx.size), dtype=np.float32) - np.float32(0.5)) * np.float32(SENSOR_NOISE)
    light = cv2.GaussianBlur(reg.lookup(region_lights), (0, 0), LIGHT_EDGE_SIGMA * ctx.s)
    if appearance == "uniform":  # drawn last, so that every other draw and pixel is the same as with "region"
        drawn = owner >= 0
        light[drawn] = _lights(rng, len(boxes))[owner[drawn]]
    img *= light
    img = cv2.GaussianBlur(img, (0, 0), CAMERA_BLUR_SIGMA)
    img += cv2.merge([noise, noise, noise])
    out = cv2.cvtColor(np.clip(img + np.float32(0.5), 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)  # round to uint8
    return Scene(out, np.asarray(boxes, np.int64).reshape(-1, 5), owner, reg.label, region_lights)
