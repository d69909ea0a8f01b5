"""Built-in synthetic aerial-scene detection dataset, generated offline and deterministically from a seed.

The scenes imitate drone imagery (VisDrone-like): a background split into 2-5 large regions with different
textures (road with lane marks, grass, roof tiles, water, soil, parking lot), clutter that is not an object (trees,
crates, stains, wires, specks) and several classes of SMALL objects (box sides about 6-48 px at 256 px, median about
23 px; sizes scale with ``imgsz`` and ``object_scale``). Each class has its own shape and colour pattern with
intra-class variation in size, aspect, colour and rotation. Vehicles prefer road-like regions and align with road
bands; every region has its own illumination and colour cast, applied after the objects are drawn, so an object's
appearance and contrast depend on the region it is in - the situation a region-aware convolution is designed for.

``appearance="uniform"`` (CLI ``--appearance uniform``) writes the control set: each object is lit by its own
light, drawn from the same distribution as a region's light but independent of the region it is in (and of every
other region). For the same seed and options it has the same backgrounds, layout, classes, boxes, label and COCO
files as the default set; only the objects' pixels (and, through the camera blur, a pixel or two around them)
differ. Shadows, the placement preferences and the vehicles' alignment with road bands stay region-dependent: they
are context and pose, not the lighting of the object itself (see :mod:`drconv_yolo.data.scene`). If a region-aware
model gains as much on the control set as on the default one, its gain does not come from region-dependent looks.

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

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

import cv2
import numpy as np

from ..errors import UserError
from ..io import (
    DataError,
    atomic_write_json,
    dataset_yaml_text,
    gt_images,
    temp_sibling,
    write_dataset_yaml,
    write_gt_json,
    write_yolo_labels,
)
from .scene import APPEARANCES, CLASS_NAMES, draw_scene

__all__ = [
    "APPEARANCES",
    "CLASS_NAMES",
    "IMGSZ_RANGE",
    "OBJECT_SCALE_RANGE",
    "VERSION",
    "SyntheticConfig",
    "SyntheticDatasetExistsError",
    "generate",
    "render_image",
]

VERSION = 1
"""Generator version stored in ``synthetic.json``; bump it whenever the drawn content changes."""

META_FILE = "synthetic.json"
YAML_NAME = "synthetic"
YAML_FILE = f"{YAML_NAME}.yaml"
YAML_COMMENT = "Synthetic aerial-scene detection dataset written by drconv_yolo.data.synthetic"
UNIFORM_COMMENT = "appearance: uniform - control set: objects lit independently of the region they are in"
JPEG_QUALITY = 95
META_INDENT = 2
SPLITS = ("train", "val")
STEM_DIGITS = 6  # image file stems 000001, 000002, ...
IMGSZ_RANGE = (64, 4096)  # smaller images cannot hold the objects; larger ones are not worth generating
OBJECT_SCALE_RANGE = (0.25, 4.0)
MAX_OBJECTS_PER_IMAGE = 200  # more would not fit on the smallest images without overlapping


class SyntheticDatasetExistsError(UserError, FileExistsError):
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
        appearance: ``"region"`` (objects lit by the region they are in) or ``"uniform"`` (the control set: lit
            independently of it; same layout and labels for the same seed).
    """

    n_train: int = 200
    n_val: int = 50
    imgsz: int = 256
    seed: int = 0
    n_classes: int = 5
    objects_per_image: Tuple[int, int] = (6, 20)
    object_scale: float = 1.0
    appearance: str = APPEARANCES[0]

    def __post_init__(self) -> None:
        """Normalise types and validate ranges.

        Raises:
            DataError: If a parameter is out of range.
        """
        object.__setattr__(self, "objects_per_image", tuple(int(v) for v in self.objects_per_image))
        object.__setattr__(self, "object_scale", float(self.object_scale))
        for name in ("n_train", "n_val", "imgsz", "seed", "n_classes"):
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.n_train < 1 or self.n_val < 1:
            raise DataError(f"n_train and n_val must be >= 1, got {self.n_train} and {self.n_val}")
        if not IMGSZ_RANGE[0] <= self.imgsz <= IMGSZ_RANGE[1]:
            raise DataError(f"imgsz must be in [{IMGSZ_RANGE[0]}, {IMGSZ_RANGE[1]}], got {self.imgsz}")
        if not 1 <= self.n_classes <= len(CLASS_NAMES):
            raise DataError(f"n_classes must be in [1, {len(CLASS_NAMES)}], got {self.n_classes}")
        if self.seed < 0:
            raise DataError(f"seed must be >= 0, got {self.seed}")
        lo, hi = self.objects_per_image if len(self.objects_per_image) == 2 else (-1, -1)
        if not 0 <= lo <= hi <= MAX_OBJECTS_PER_IMAGE:
            raise DataError(
                f"objects_per_image must be (min, max) with 0 <= min <= max <= {MAX_OBJECTS_PER_IMAGE}, got {lo, hi}"
            )
        if not OBJECT_SCALE_RANGE[0] <= self.object_scale <= OBJECT_SCALE_RANGE[1]:
            raise DataError(
                f"object_scale must be in [{OBJECT_SCALE_RANGE[0]:g}, {OBJECT_SCALE_RANGE[1]:g}], got "
                f"{self.object_scale}"
            )
        if self.appearance not in APPEARANCES:
            raise DataError(f"appearance must be one of {', '.join(APPEARANCES)}, got {self.appearance!r}")

    @property
    def names(self) -> List[str]:
        """Class names in class-index order."""
        return list(CLASS_NAMES[: self.n_classes])

    @property
    def comment(self) -> str:
        """The dataset YAML's comment lines."""
        return YAML_COMMENT if self.appearance == APPEARANCES[0] else f"{YAML_COMMENT}\n{UNIFORM_COMMENT}"

    def to_dict(self) -> Dict[str, Any]:
        """Return the parameters as a JSON-compatible dict (the cache key).

        ``appearance`` is left out when it is the default, so that sets written before the option existed (same
        content) keep their metadata and cache key; :func:`_cache_key` puts the default back when comparing.
        """
        params: Dict[str, Any] = {
            "n_train": self.n_train,
            "n_val": self.n_val,
            "imgsz": self.imgsz,
            "seed": self.seed,
            "n_classes": self.n_classes,
            "objects_per_image": list(self.objects_per_image),
            "object_scale": self.object_scale,
        }
        if self.appearance != APPEARANCES[0]:
            params["appearance"] = self.appearance
        return params


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
    scene = draw_scene(rng, cfg.imgsz, cfg.n_classes, cfg.objects_per_image, cfg.object_scale, cfg.appearance)
    return scene.image, scene.boxes


# ----------------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------------
def _read_meta(root: Path) -> Dict[str, Any] | None:
    try:
        return json.loads((root / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _refresh_yaml(root: Path, cfg: SyntheticConfig) -> None:
    """Rewrite the YAML if the dataset was moved (its absolute ``path`` is stale)."""
    try:
        if (root / YAML_FILE).read_text(encoding="utf-8") == dataset_yaml_text(root, cfg.names, cfg.comment):
            return
    except OSError:
        pass
    write_dataset_yaml(root, YAML_NAME, cfg.names, cfg.comment)


def _cache_key(version: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    """What must match for a dataset on disk to be reused: the version and every parameter (defaults filled in)."""
    return {"version": version, "appearance": APPEARANCES[0], **params}


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
    want = _cache_key(VERSION, cfg.to_dict())
    have = _cache_key(meta.get("version"), meta.get("params", {}))
    if have == want and (root / YAML_FILE).is_file():
        return True
    if overwrite:
        return False
    diff = ", ".join(f"{k}: {have.get(k)!r} -> {v!r}" for k, v in want.items() if have.get(k) != v) or "incomplete"
    raise SyntheticDatasetExistsError(
        f"{root} holds a synthetic dataset generated with different parameters ({diff}); "
        "pass overwrite=True (CLI: --overwrite) to replace it, or choose another folder"
    )


def _build_split(tmp: Path, cfg: SyntheticConfig, split: str, count: int) -> int:
    """Write one split's images, labels and ground truth into ``tmp``; return the number of objects."""
    (tmp / "images" / split).mkdir(parents=True)
    (tmp / "labels" / split).mkdir(parents=True)
    entries, annotations = [], []
    for i in range(count):
        img, boxes = render_image(cfg, split, i)
        stem = f"{i + 1:0{STEM_DIGITS}d}"
        jpg = tmp / "images" / split / f"{stem}.jpg"
        if not cv2.imwrite(str(jpg), img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
            raise OSError(f"cv2.imwrite failed for {jpg}")
        rows = [(cls, x0, y0, x1, y1) for cls, x0, y0, x1, y1 in boxes.tolist()]
        write_yolo_labels(tmp / "labels" / split / f"{stem}.txt", rows, cfg.imgsz, cfg.imgsz)
        entries.append((f"images/{split}/{stem}.jpg", cfg.imgsz, cfg.imgsz))
        annotations += [
            {"image_id": i + 1, "category_id": cls + 1, "bbox": [x0, y0, x1 - x0, y1 - y0]}
            for cls, x0, y0, x1, y1 in rows
        ]
    categories = [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(cfg.names)]
    description = f"drconv_yolo synthetic dataset v{VERSION}, split {split}"
    path = tmp / "annotations" / f"instances_{split}.json"
    write_gt_json(path, gt_images(entries), annotations, categories, description, timestamp=False)
    return len(annotations)


def _build(tmp: Path, root: Path, cfg: SyntheticConfig) -> int:
    """Write the whole dataset into ``tmp`` (YAML pointing at ``root``); return the number of objects."""
    n_objects = sum(_build_split(tmp, cfg, split, n) for split, n in zip(SPLITS, (cfg.n_train, cfg.n_val)))
    write_dataset_yaml(tmp, YAML_NAME, cfg.names, cfg.comment, root=root)
    meta = {
        "generator": "drconv_yolo.data.synthetic",
        "version": VERSION,
        "params": cfg.to_dict(),
        "names": cfg.names,
        "objects": n_objects,
        "jpeg_quality": JPEG_QUALITY,
    }
    atomic_write_json(tmp / META_FILE, meta, indent=META_INDENT)  # written last: its presence means complete
    return n_objects


def _swap_in(tmp: Path, root: Path, cfg: SyntheticConfig, replace: bool) -> None:
    """Rename the complete ``tmp`` to ``root``; with ``replace``, the old dataset is moved aside and deleted."""
    if replace:
        trash = temp_sibling(root)
        os.replace(root, trash)
        os.replace(tmp, root)
        shutil.rmtree(trash, ignore_errors=True)
        return
    try:
        os.replace(tmp, root)  # also replaces an empty folder
    except OSError:
        if _check_existing(root, cfg, overwrite=False) is not True:  # lost a race to another writer?
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def generate(
    root: str | os.PathLike,
    n_train: int = SyntheticConfig.n_train,
    n_val: int = SyntheticConfig.n_val,
    imgsz: int = SyntheticConfig.imgsz,
    seed: int = SyntheticConfig.seed,
    n_classes: int = SyntheticConfig.n_classes,
    objects_per_image: Tuple[int, int] = SyntheticConfig.objects_per_image,
    object_scale: float = SyntheticConfig.object_scale,
    appearance: str = SyntheticConfig.appearance,
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
        appearance: ``"region"``: each object is lit by the region it is in (the default); ``"uniform"``: the
            control set, each object lit independently of its region, with the same layout and labels.
        overwrite: Replace a synthetic dataset generated with different parameters. A non-empty folder that is not a
            synthetic dataset is never deleted.
        verbose: Print one line at start and one at the end.

    Returns:
        Absolute path of ``root/synthetic.yaml``.

    Raises:
        SyntheticDatasetExistsError: If ``root`` holds a dataset with different parameters and ``overwrite`` is
            false, or holds something that is not a synthetic dataset.
        DataError: If a parameter is out of range.
    """
    cfg = SyntheticConfig(n_train, n_val, imgsz, seed, n_classes, tuple(objects_per_image), object_scale, appearance)
    root = Path(root).expanduser().resolve()
    state = _check_existing(root, cfg, overwrite)
    if state is True:
        _refresh_yaml(root, cfg)
        if verbose:
            print(f"synthetic: reusing {root} (same parameters, generator v{VERSION})", flush=True)
        return root / YAML_FILE
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(root)
    t0 = time.perf_counter()
    if verbose:
        print(
            f"synthetic: generating {cfg.n_train} train + {cfg.n_val} val images ({cfg.imgsz}px, {cfg.n_classes} "
            f"classes, seed {cfg.seed}, {cfg.appearance} appearance) -> {root}",
            flush=True,
        )
    try:
        n_objects = _build(tmp, root, cfg)
        _swap_in(tmp, root, cfg, replace=state is False)
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
