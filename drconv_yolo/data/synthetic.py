"""Built-in synthetic aerial-scene detection dataset, generated offline and deterministically from a seed.

The scenes imitate drone imagery (VisDrone-like): a background split into 2-5 large regions with different
textures (road with lane marks, grass, roof tiles, water, soil, parking lot), clutter that is not an object (trees,
crates, stains, wires, specks) and several classes of SMALL objects (box sides about 6-48 px at 256 px, median about
23 px; sizes scale with ``imgsz`` and ``object_scale``). Each class has its own shape and colour pattern with
intra-class variation in size, aspect, colour and rotation. Vehicles prefer road-like regions and align with road
bands; every region has its own illumination and colour cast, applied after the objects are drawn, so an object's
appearance and contrast depend on the region it is in - the situation a region-aware convolution is designed for.

Layout written under ``root`` (the same convention as the prepared real datasets)::

    root/images/{train,val}/000001.jpg ...       JPEG, quality 95
    root/labels/{train,val}/000001.txt ...       YOLO ``cls cx cy w h`` normalised, 6 decimals
    root/annotations/instances_{train,val}.json  COCO ground truth (image ids 1..N in file-name order)
    root/synthetic.yaml                          Ultralytics dataset YAML (absolute ``path``)
    root/synthetic.json                          generator version + parameters (the cache key)

Boxes are the exact pixel extent of each drawn object (shadows excluded), clipped to the image; objects do not
overlap. Determinism: every image is drawn from its own ``SeedSequence([seed, split, index])``, so the same
parameters give byte-identical label/JSON files and identical pixel arrays; the JPEG bytes are identical as long as the
same OpenCV/libjpeg build encodes them (fixed quality, baseline, default chroma subsampling).

Example:
    >>> from drconv_yolo.data.synthetic import generate
    >>> yaml_path = generate("datasets/synthetic", n_train=200, n_val=50, imgsz=256, seed=0)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import cv2
import numpy as np

__all__ = [
    "CLASS_NAMES",
    "VERSION",
    "SyntheticConfig",
    "SyntheticDatasetExistsError",
    "add_arguments",
    "generate",
    "render_image",
    "run",
]

VERSION = 1
"""Generator version stored in ``synthetic.json``; bump it whenever the drawn content changes."""

CLASS_NAMES: Tuple[str, ...] = ("car", "pedestrian", "truck", "bicycle", "bus", "van", "motor", "tricycle")
"""All available classes; ``n_classes`` keeps the first N."""

META_FILE = "synthetic.json"
YAML_FILE = "synthetic.yaml"
JPEG_QUALITY = 95
SPLITS = ("train", "val")
_REF = 256.0  # object sizes below are in pixels at imgsz=256 and scale linearly with imgsz

Rgb = Tuple[float, float, float]


class SyntheticDatasetExistsError(FileExistsError):
    """``root`` already holds something other than a synthetic dataset with the requested parameters."""


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of a synthetic dataset; together with :data:`VERSION` they fully determine its content.

    Attributes:
        n_train: Number of training images.
        n_val: Number of validation images.
        imgsz: Side of the square images in pixels; object and texture sizes scale with it (reference 256).
        seed: Master seed.
        n_classes: Number of classes, the first ``n_classes`` of :data:`CLASS_NAMES` (1-8).
        objects_per_image: Inclusive ``(min, max)`` number of objects drawn per image.
        object_scale: Multiplier on all object sizes (1.0: box sides about 6-48 px, median 23, at imgsz 256).
    """

    n_train: int = 200
    n_val: int = 50
    imgsz: int = 256
    seed: int = 0
    n_classes: int = 5
    objects_per_image: Tuple[int, int] = (6, 20)
    object_scale: float = 1.0

    def __post_init__(self) -> None:
        """Normalise types and validate ranges.

        Raises:
            ValueError: If a parameter is out of range.
        """
        object.__setattr__(self, "objects_per_image", tuple(int(v) for v in self.objects_per_image))
        object.__setattr__(self, "object_scale", float(self.object_scale))
        for name in ("n_train", "n_val", "imgsz", "seed", "n_classes"):
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.n_train < 1 or self.n_val < 1:
            raise ValueError(f"n_train and n_val must be >= 1, got {self.n_train} and {self.n_val}")
        if not 64 <= self.imgsz <= 4096:
            raise ValueError(f"imgsz must be in [64, 4096], got {self.imgsz}")
        if not 1 <= self.n_classes <= len(CLASS_NAMES):
            raise ValueError(f"n_classes must be in [1, {len(CLASS_NAMES)}], got {self.n_classes}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        lo, hi = self.objects_per_image if len(self.objects_per_image) == 2 else (-1, -1)
        if not 0 <= lo <= hi <= 200:
            raise ValueError(f"objects_per_image must be (min, max) with 0 <= min <= max <= 200, got {lo, hi}")
        if not 0.25 <= self.object_scale <= 4.0:
            raise ValueError(f"object_scale must be in [0.25, 4], got {self.object_scale}")

    @property
    def names(self) -> List[str]:
        """Class names in class-index order."""
        return list(CLASS_NAMES[: self.n_classes])

    def to_dict(self) -> Dict[str, Any]:
        """Return the parameters as a JSON-compatible dict (the cache key)."""
        return {
            "n_train": self.n_train,
            "n_val": self.n_val,
            "imgsz": self.imgsz,
            "seed": self.seed,
            "n_classes": self.n_classes,
            "objects_per_image": list(self.objects_per_image),
            "object_scale": self.object_scale,
        }


# ----------------------------------------------------------------------------------------------------------------------
# Background: regions and textures
# ----------------------------------------------------------------------------------------------------------------------
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
        self.s = size / _REF
        yy, xx = np.mgrid[0:size, 0:size]
        self.xx = xx.astype(np.float32)
        self.yy = yy.astype(np.float32)
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
    period = rng.uniform(20, 36) * ctx.s
    dash = rng.uniform(6, 12) * ctx.s
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
    bay = rng.uniform(12, 18) * ctx.s
    row = rng.uniform(40, 70) * ctx.s
    lines = (_fmod(u, bay) < max(1.0, ctx.s)) & (_fmod(v, row) < row * 0.45)
    return _paint(img, lines, ctx.jitter((235, 235, 230), 10))


_TEXTURES: Dict[str, Callable[[_Ctx, float], np.ndarray]] = {
    "road": _tex_road,
    "grass": _tex_grass,
    "roof": _tex_roof,
    "water": _tex_water,
    "soil": _tex_soil,
    "parking": _tex_parking,
}


class _Regions:
    """Region partition of one image: ``uint8`` label map, region types and orientations."""

    def __init__(self, label: np.ndarray, types: List[str], angles: List[float], band: int | None) -> None:
        self.label = label
        self.types = types
        self.angles = angles
        self.band = band  # index of the straight road band, if any

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
    k = int(rng.integers(2, 6))
    band = bool(rng.random() < 0.6)
    n_cells = max(1, k - int(band))
    seeds = rng.uniform(0.1, 0.9, (n_cells, 2)) * size
    amp = np.float32(0.08 * size)
    wx = ctx.xx + ctx.smooth(90, key=1) * amp
    wy = ctx.yy + ctx.smooth(90, key=2) * amp
    label = np.zeros((size, size), np.uint8)
    best = None
    for i, (sx, sy) in enumerate(seeds):
        d = np.square(wx - np.float32(sx)) + np.square(wy - np.float32(sy))
        if best is None:
            best = d
        else:
            closer = d < best
            label[closer] = i
            best = np.minimum(best, d)
    p = _REGION_WEIGHTS / _REGION_WEIGHTS.sum()
    types = [str(t) for t in rng.choice(_REGION_TYPES, size=n_cells, p=p)]
    angles = [float(a) for a in rng.uniform(0, math.pi, n_cells)]
    band_idx = None
    if band:
        angle = float(rng.uniform(0, math.pi))
        cx, cy = rng.uniform(0.25, 0.75, 2) * size
        across = (ctx.xx - np.float32(cx)) * np.float32(-math.sin(angle)) + (ctx.yy - np.float32(cy)) * np.float32(
            math.cos(angle)
        )
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


# ----------------------------------------------------------------------------------------------------------------------
# Clutter (not objects)
# ----------------------------------------------------------------------------------------------------------------------
def _clutter(ctx: _Ctx, img: np.ndarray) -> None:
    """Draw distractors in place (``(H, W, 3)`` float32): trees, crates, stains, wires and specks."""
    rng, size, s = ctx.rng, ctx.size, ctx.s
    for _ in range(int(rng.integers(0, 9))):  # trees: dark-green discs with a lighter crown
        c = rng.uniform(0, size, 2)
        r = rng.uniform(3, 10) * s
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
        x0, y0 = int(c[0] - a) - 1, int(c[1] - a) - 1
        side = int(2 * a) + 3
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


# ----------------------------------------------------------------------------------------------------------------------
# Objects
# ----------------------------------------------------------------------------------------------------------------------
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
    r, g, b = _col(rgb)
    return r, g, b, 255.0


def _rect(c: Sequence[float], length: float, width: float, angle: float, offset: float = 0.0) -> np.ndarray:
    """Corners of a ``length`` x ``width`` rectangle along ``angle``, centred ``offset`` along its axis from ``c``."""
    ux, uy = math.cos(angle), math.sin(angle)
    cx, cy = float(c[0]) + offset * ux, float(c[1]) + offset * uy
    lx, ly, wx, wy = ux * length / 2, uy * length / 2, -uy * width / 2, ux * width / 2
    return np.array(
        [
            [cx + lx + wx, cy + ly + wy],
            [cx + lx - wx, cy + ly - wy],
            [cx - lx - wx, cy - ly - wy],
            [cx - lx + wx, cy - ly + wy],
        ]
    )


class _Painter:
    """Draws primitives into a local RGBA patch whose alpha is the exact coverage mask (sub-pixel coordinates)."""

    def __init__(self, side: int) -> None:
        self.rgba = np.zeros((side, side, 4), np.uint8)
        self.c = (side / 2.0, side / 2.0)

    @property
    def rgb(self) -> np.ndarray:
        return self.rgba[..., :3]

    @property
    def mask(self) -> np.ndarray:
        return self.rgba[..., 3]

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
    p.circle(front, size * 0.2, tyre)  # dark wheels with a light hub: a "dumbbell" shape
    p.circle(back, size * 0.2, tyre)
    p.circle(front, size * 0.07, (200, 200, 200))
    p.circle(back, size * 0.07, (200, 200, 200))


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
    p.rect(
        size * 0.6,
        width * 0.95,
        a,
        _pick(ctx, ((40, 90, 210), (210, 40, 40), (40, 170, 80), (240, 150, 30))),
        offset=-size * 0.2,
    )  # canopy


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


def _place_objects(
    ctx: _Ctx, img: np.ndarray, reg: _Regions, n_classes: int, n_obj: int, scale: float
) -> List[List[int]]:
    """Draw ``n_obj`` non-overlapping objects with shadows in place; return ``[cls, x0, y0, x1, y1]`` pixel boxes."""
    rng, size, s = ctx.rng, ctx.size, ctx.s
    pools = {}
    for key, kinds in (("vehicle", _VEHICLE_REGIONS), ("walk", _WALK_REGIONS)):
        ok = reg.lookup(np.array([t in kinds for t in reg.types], np.float32))
        pools[key] = np.flatnonzero(ok.ravel() > 0)
    sun = rng.uniform(0, 2 * math.pi)
    off = max(1, int(round(1.8 * s)))
    shift = (int(round(off * math.cos(sun))), int(round(off * math.sin(sun))))
    shade = np.float32(rng.uniform(0.5, 0.75))
    gap = max(1, int(round(s)))
    boxes: List[List[int]] = []
    placed: List[Tuple[int, int, int, int]] = []
    for _ in range(n_obj):
        cls = int(rng.integers(n_classes))
        draw, (lo, hi), oriented = _CLASSES[cls]
        length = rng.uniform(lo, hi) * s * scale
        pool = pools["vehicle" if cls in _VEHICLES else "walk"]
        prefer = 0.8 if cls in _VEHICLES else 0.6
        r0 = 0.12 * length
        for _attempt in range(40):
            if pool.size and rng.random() < prefer:
                y, x = divmod(int(pool[rng.integers(pool.size)]), size)
                cx, cy = x + rng.uniform(-0.5, 0.5), y + rng.uniform(-0.5, 0.5)
            else:
                cx, cy = rng.uniform(-0.1, 1.1, 2) * size
            rid = int(reg.label[min(max(int(cy), 0), size - 1), min(max(int(cx), 0), size - 1)])
            if oriented and rid == reg.band and cls in _VEHICLES:  # vehicles drive along the road band
                angle = reg.angles[rid] + rng.normal(0, 0.12) + math.pi * int(rng.integers(2))
            else:
                angle = rng.uniform(0, 2 * math.pi)
            core = (int(cx - r0), int(cy - r0), int(cx + r0) + 1, int(cy + r0) + 1)  # (nearly) inside the object
            if _overlaps(core, placed, gap + off):  # cheap early rejection before drawing
                continue
            side = int(math.ceil(1.2 * length)) + 2 * (off + 3)
            painter = _Painter(side)
            draw(ctx, painter, length, angle)
            x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
            ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + side, size), min(y0 + side, size)
            if ix0 >= ix1 or iy0 >= iy1:
                continue
            vis = painter.mask[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] > 0
            area = int(np.count_nonzero(painter.mask))
            if area == 0 or np.count_nonzero(vis) < 0.5 * area:
                continue
            cols, rows = np.flatnonzero(vis.any(0)), np.flatnonzero(vis.any(1))
            box = (ix0 + int(cols[0]), iy0 + int(rows[0]), ix0 + int(cols[-1]) + 1, iy0 + int(rows[-1]) + 1)
            if box[2] - box[0] < 2 or box[3] - box[1] < 2 or _overlaps(box, placed, gap + off):
                continue
            full = painter.mask > 0
            shadow = np.roll(full, shift, axis=(1, 0)) & ~full
            sl = (slice(iy0, iy1), slice(ix0, ix1))
            local = (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))
            region = img[sl]
            region[shadow[local]] *= shade
            region[vis] = painter.rgb[local][vis]
            placed.append(box)
            boxes.append([cls, *box])
            break
    return boxes


def render_image(cfg: SyntheticConfig, split: str, index: int) -> Tuple[np.ndarray, np.ndarray]:
    """Render one image of the dataset described by ``cfg``.

    Every image has its own random stream ``SeedSequence([seed, split, index])``, so an image does not depend on
    ``n_train``/``n_val`` or on the other images.

    Args:
        cfg: Dataset parameters.
        split: ``"train"`` or ``"val"``.
        index: Zero-based image index within the split.

    Returns:
        ``(image, boxes)``: a BGR ``uint8`` array of shape ``(imgsz, imgsz, 3)`` and an ``int64`` array of shape
        ``(n, 5)`` with rows ``[cls, x0, y0, x1, y1]`` (pixel edges, ``x1``/``y1`` exclusive).
    """
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, SPLITS.index(split), index]))
    ctx = _Ctx(rng, cfg.imgsz)
    reg = _make_regions(ctx)
    img = _background(ctx, reg)
    _clutter(ctx, img)
    n_obj = int(rng.integers(cfg.objects_per_image[0], cfg.objects_per_image[1] + 1))
    boxes = _place_objects(ctx, img, reg, cfg.n_classes, n_obj, cfg.object_scale)
    # Region-dependent illumination and colour cast, applied after the objects: appearance depends on the region.
    n_reg = len(reg.types)
    gains = rng.uniform(0.6, 1.15, (n_reg, 1)) * rng.uniform(0.9, 1.1, (n_reg, 3))
    img *= cv2.GaussianBlur(reg.lookup(gains), (0, 0), 1.5 * ctx.s)
    img = cv2.GaussianBlur(img, (0, 0), 0.5)  # camera softness
    noise = (rng.random((ctx.size, ctx.size), dtype=np.float32) - np.float32(0.5)) * np.float32(7.0)  # sensor noise
    img += cv2.merge([noise, noise, noise])
    out = cv2.cvtColor(np.clip(img + np.float32(0.5), 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
    return out, np.asarray(boxes, np.int64).reshape(-1, 5)


# ----------------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------------
def _yolo_lines(boxes: np.ndarray, size: int) -> str:
    lines = []
    for cls, x0, y0, x1, y1 in boxes.tolist():
        cx, cy, w, h = (x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size
        lines.append(f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
    return "".join(lines)


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def _yaml_text(root: Path, names: List[str]) -> str:
    import yaml

    doc = {"path": str(root), "train": "images/train", "val": "images/val", "names": dict(enumerate(names))}
    header = "# Synthetic aerial-scene detection dataset written by drconv_yolo.data.synthetic\n"
    return header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def _read_meta(root: Path) -> Dict[str, Any] | None:
    try:
        return json.loads((root / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _refresh_yaml(root: Path, names: List[str]) -> None:
    """Rewrite the YAML atomically if the dataset was moved (its absolute ``path`` is stale)."""
    path, text = root / YAML_FILE, _yaml_text(root, names)
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    tmp = root / f".{YAML_FILE}.{uuid.uuid4().hex}.tmp"
    _write_text(tmp, text)
    os.replace(tmp, path)


def _check_existing(root: Path, cfg: SyntheticConfig, overwrite: bool) -> bool | None:
    """Inspect ``root``: ``True`` = cached match, ``False`` = replace it, ``None`` = absent or empty.

    Raises:
        SyntheticDatasetExistsError: If ``root`` holds different content and may not be replaced.
    """
    if not root.exists():
        return None
    if not root.is_dir():
        raise SyntheticDatasetExistsError(f"{root} exists and is not a folder")
    meta = _read_meta(root)
    if meta is None:
        if not any(root.iterdir()):
            return None
        raise SyntheticDatasetExistsError(
            f"{root} is a non-empty folder without {META_FILE}: not a synthetic dataset, refusing to touch it "
            "(even with overwrite); choose another folder"
        )
    want = {"version": VERSION, **cfg.to_dict()}
    have = {"version": meta.get("version"), **meta.get("params", {})}
    if have == want and (root / YAML_FILE).is_file():
        return True
    if overwrite:
        return False
    diff = ", ".join(f"{k}: {have.get(k)!r} -> {v!r}" for k, v in want.items() if have.get(k) != v) or "incomplete"
    raise SyntheticDatasetExistsError(
        f"{root} holds a synthetic dataset generated with different parameters ({diff}); "
        "pass overwrite=True (CLI: --overwrite) to replace it, or choose another folder"
    )


def _build(tmp: Path, root: Path, cfg: SyntheticConfig) -> int:
    """Write the whole dataset into ``tmp`` (YAML pointing at ``root``); return the number of objects."""
    names = cfg.names
    categories = [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(names)]
    n_objects = 0
    for split, count in zip(SPLITS, (cfg.n_train, cfg.n_val)):
        (tmp / "images" / split).mkdir(parents=True)
        (tmp / "labels" / split).mkdir(parents=True)
        images, annotations = [], []
        for i in range(count):
            img, boxes = render_image(cfg, split, i)
            stem = f"{i + 1:06d}"
            jpg = tmp / "images" / split / f"{stem}.jpg"
            if not cv2.imwrite(str(jpg), img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
                raise OSError(f"cv2.imwrite failed for {jpg}")
            _write_text(tmp / "labels" / split / f"{stem}.txt", _yolo_lines(boxes, cfg.imgsz))
            images.append(
                {"id": i + 1, "file_name": f"images/{split}/{stem}.jpg", "width": cfg.imgsz, "height": cfg.imgsz}
            )
            for cls, x0, y0, x1, y1 in boxes.tolist():
                w, h = x1 - x0, y1 - y0
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": i + 1,
                        "category_id": cls + 1,
                        "bbox": [float(x0), float(y0), float(w), float(h)],
                        "area": float(w * h),
                        "iscrowd": 0,
                    }
                )
            n_objects += len(boxes)
        coco = {
            "info": {"description": f"drconv_yolo synthetic dataset v{VERSION}, split {split}"},
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        (tmp / "annotations").mkdir(exist_ok=True)
        _write_text(tmp / "annotations" / f"instances_{split}.json", json.dumps(coco, separators=(",", ":")))
    _write_text(tmp / YAML_FILE, _yaml_text(root, names))
    meta = {
        "generator": "drconv_yolo.data.synthetic",
        "version": VERSION,
        "params": cfg.to_dict(),
        "names": names,
        "objects": n_objects,
        "jpeg_quality": JPEG_QUALITY,
    }
    _write_text(tmp / META_FILE, json.dumps(meta, indent=2) + "\n")  # written last
    return n_objects


def generate(
    root: str | os.PathLike,
    n_train: int = 200,
    n_val: int = 50,
    imgsz: int = 256,
    seed: int = 0,
    n_classes: int = 5,
    objects_per_image: Tuple[int, int] = (6, 20),
    object_scale: float = 1.0,
    overwrite: bool = False,
    verbose: bool = True,
) -> Path:
    """Generate the synthetic dataset under ``root`` (or reuse it) and return the path of its YAML.

    The dataset is built in a temporary sibling folder and renamed to ``root`` only when complete, so an interrupted
    run never leaves a folder that looks complete. If ``root`` already holds a dataset generated with the same
    parameters and generator :data:`VERSION`, it is returned at once (cache); its YAML is rewritten only if the folder
    was moved.

    Args:
        root: Output folder; must not exist, be empty, or hold a synthetic dataset.
        n_train: Number of training images.
        n_val: Number of validation images.
        imgsz: Side of the square images in pixels (object sizes scale with it; reference 256).
        seed: Master seed; the same seed and parameters give identical labels and pixels.
        n_classes: Number of classes, the first ``n_classes`` of :data:`CLASS_NAMES` (1-8).
        objects_per_image: Inclusive ``(min, max)`` number of objects per image (a few may be dropped when no free
            spot is found).
        object_scale: Multiplier on all object sizes (1.0: box sides about 6-48 px, median 23, at imgsz 256);
            larger is easier to learn.
        overwrite: Replace a synthetic dataset generated with different parameters. A non-empty folder that is not a
            synthetic dataset is never deleted.
        verbose: Print one line at start and one at the end.

    Returns:
        Absolute path of ``root/synthetic.yaml``.

    Raises:
        SyntheticDatasetExistsError: If ``root`` holds a dataset with different parameters and ``overwrite`` is
            false, or holds something that is not a synthetic dataset.
        ValueError: If a parameter is out of range.
    """
    cfg = SyntheticConfig(n_train, n_val, imgsz, seed, n_classes, tuple(objects_per_image), object_scale)
    root = Path(root).expanduser().resolve()
    state = _check_existing(root, cfg, overwrite)
    if state is True:
        _refresh_yaml(root, cfg.names)
        if verbose:
            print(f"synthetic: reusing {root} (same parameters, generator v{VERSION})", flush=True)
        return root / YAML_FILE
    root.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = root.parent / f".{root.name}.tmp-{tag}"
    t0 = time.perf_counter()
    if verbose:
        print(
            f"synthetic: generating {cfg.n_train} train + {cfg.n_val} val images ({cfg.imgsz}px, {cfg.n_classes} "
            f"classes, seed {cfg.seed}) -> {root}",
            flush=True,
        )
    try:
        n_objects = _build(tmp, root, cfg)
        if state is False:  # overwrite: move the old dataset aside, then swap in the new one
            trash = root.parent / f".{root.name}.old-{tag}"
            os.replace(root, trash)
            os.replace(tmp, root)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            try:
                os.replace(tmp, root)  # also replaces an empty folder
            except OSError:
                if _check_existing(root, cfg, overwrite=False) is not True:  # lost a race to another writer?
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if verbose:
        n = cfg.n_train + cfg.n_val
        print(
            f"synthetic: wrote {n} images, {n_objects} objects in {time.perf_counter() - t0:.1f}s -> "
            f"{root / YAML_FILE}",
            flush=True,
        )
    return root / YAML_FILE


# ----------------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``prepare synthetic`` options to ``parser``.

    Args:
        parser: Parser (or sub-parser) to extend.

    Returns:
        The same parser.
    """
    parser.add_argument("dst", type=Path, help="output folder; must not exist, be empty, or hold a synthetic dataset")
    parser.add_argument("--n-train", type=int, default=200, help="number of training images (default: %(default)s)")
    parser.add_argument("--n-val", type=int, default=50, help="number of validation images (default: %(default)s)")
    parser.add_argument(
        "--imgsz",
        type=int,
        default=256,
        help="side of the square images in pixels; object sizes scale with it (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="master seed; same seed and options give identical labels and pixels (default: %(default)s)",
    )
    parser.add_argument(
        "--n-classes",
        type=int,
        default=5,
        help=f"number of classes, the first N of {', '.join(CLASS_NAMES)} (1-{len(CLASS_NAMES)}, default: %(default)s)",
    )
    parser.add_argument(
        "--objects-per-image",
        type=int,
        nargs=2,
        default=(6, 20),
        metavar=("MIN", "MAX"),
        help="inclusive range of objects drawn per image (default: 6 20)",
    )
    parser.add_argument(
        "--object-scale",
        type=float,
        default=1.0,
        help="multiplier on all object sizes; 1.0 gives boxes of about 6-48 px (median 23) at --imgsz 256, larger is "
        "(0.25-4, default: %(default)s)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a synthetic dataset in DST generated with different options (never deletes other folders)",
    )
    parser.add_argument("--quiet", action="store_true", help="do not print the start/end progress lines")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``prepare synthetic`` with parsed ``args`` (see :func:`add_arguments`).

    Args:
        args: Parsed arguments.

    Returns:
        Exit status: 0 on success, 2 on bad options or an existing incompatible ``dst``.
    """
    try:
        yaml_path = generate(
            args.dst,
            n_train=args.n_train,
            n_val=args.n_val,
            imgsz=args.imgsz,
            seed=args.seed,
            n_classes=args.n_classes,
            objects_per_image=tuple(args.objects_per_image),
            object_scale=args.object_scale,
            overwrite=args.overwrite,
            verbose=not args.quiet,
        )
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(yaml_path)
    return 0
