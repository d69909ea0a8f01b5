"""Shared helpers for dataset preparation: atomic writes, the ground-truth JSON, image sizes, split folders.

Everything a preparation step writes goes through a temporary name and ``os.replace`` (files) or a rename of a
complete folder (splits), so an interrupted run never leaves a half-written file or split behind a final name.

Ground-truth JSON convention (shared by every dataset this package prepares, read by :mod:`drconv_yolo.evaluation`):

* written to ``DST/annotations/instances_<split>.json`` in COCO format;
* ``images``: ``{id, file_name, width, height}`` with ``id`` = 1..N in sorted ``file_name`` order and ``file_name``
  relative to the dataset root (``"images/val/0000001_00000_d_0000001.jpg"``);
* ``annotations``: ``{id, image_id, category_id, bbox: [x, y, w, h] in pixels, area, iscrowd}``;
* ``categories``: ``[{id, name}]`` sorted by ``id``; the i-th category (by ascending id) is YOLO class ``i``. VisDrone
  and the synthetic set use ``id = class + 1``; COCO keeps its original ids (1..90 with gaps).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "IMAGE_SUFFIXES",
    "PrepareSummary",
    "Progress",
    "SplitStats",
    "atomic_write_json",
    "atomic_write_text",
    "commit_split",
    "gt_images",
    "place_file",
    "read_image_size",
    "remove_tree",
    "split_workdir",
    "write_dataset_yaml",
    "write_gt_json",
    "yolo_label_line",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LINK_MODES = ("auto", "hardlink", "symlink", "copy")


# ----------------------------------------------------------------------------------------------------------------------
# Atomic writes
# ----------------------------------------------------------------------------------------------------------------------


def _temp_name(path: Path) -> Path:
    """Return a temporary sibling of ``path`` (same folder, so ``os.replace`` is atomic)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling file and ``os.replace``.

    Readers see either the previous file or the complete new one, never a partial write. Parent folders are created.

    Args:
        path: Destination file.
        text: Content, written as UTF-8.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _json_default(obj: Any) -> Any:
    """Convert numpy scalars/arrays and paths, which ``json`` cannot serialise by itself."""
    if hasattr(obj, "tolist"):  # numpy scalar or array
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    """Serialise ``obj`` as JSON and write it atomically (see :func:`atomic_write_text`).

    Args:
        path: Destination file.
        obj: JSON-serialisable object; numpy scalars/arrays and paths are converted.
        indent: Passed to ``json.dumps``; ``None`` writes a compact file.

    Returns:
        The destination path.
    """
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=_json_default) + "\n")


# ----------------------------------------------------------------------------------------------------------------------
# Ground-truth JSON
# ----------------------------------------------------------------------------------------------------------------------


def gt_images(entries: Iterable[tuple[str, int, int]]) -> list[dict[str, Any]]:
    """Build the ``images`` list of a ground-truth JSON: ids 1..N in sorted file-name order.

    Args:
        entries: ``(file_name, width, height)`` per image, ``file_name`` relative to the dataset root
            (``"images/val/x.jpg"``), in any order.

    Returns:
        ``[{"id", "file_name", "width", "height"}, ...]`` sorted by ``file_name``.

    Raises:
        ValueError: If a file name appears twice.
    """
    rows = sorted(entries, key=lambda e: e[0])
    for a, b in zip(rows, rows[1:]):
        if a[0] == b[0]:
            raise ValueError(f"duplicate image file name in ground truth: {a[0]}")
    return [{"id": i, "file_name": f, "width": int(w), "height": int(h)} for i, (f, w, h) in enumerate(rows, 1)]


def _check_gt(images: Sequence[Mapping], annotations: Sequence[Mapping], categories: Sequence[Mapping]) -> None:
    """Raise ``ValueError`` naming the first entry that breaks the ground-truth convention."""
    image_ids = [im["id"] for im in images]
    if len(set(image_ids)) != len(image_ids) or not all(isinstance(i, int) for i in image_ids):
        raise ValueError("ground-truth image ids must be unique integers")
    for im in images:
        if not im.get("file_name") or int(im.get("width", 0)) <= 0 or int(im.get("height", 0)) <= 0:
            raise ValueError(f"ground-truth image needs file_name, width > 0 and height > 0: {dict(im)}")
    cat_ids = [c["id"] for c in categories]
    if len(set(cat_ids)) != len(cat_ids) or not all(isinstance(i, int) for i in cat_ids):
        raise ValueError("ground-truth category ids must be unique integers")
    known_images, known_cats = set(image_ids), set(cat_ids)
    for a in annotations:
        if a["image_id"] not in known_images:
            raise ValueError(f"annotation refers to unknown image id {a['image_id']}: {dict(a)}")
        if a["category_id"] not in known_cats:
            raise ValueError(f"annotation refers to unknown category id {a['category_id']}: {dict(a)}")
        bbox = a["bbox"]
        if len(bbox) != 4 or bbox[2] < 0 or bbox[3] < 0:
            raise ValueError(f"annotation bbox must be [x, y, w, h] with w, h >= 0: {dict(a)}")
        if a.get("iscrowd", 0) not in (0, 1):
            raise ValueError(f"annotation iscrowd must be 0 or 1: {dict(a)}")


def write_gt_json(
    path: str | os.PathLike,
    images: Sequence[Mapping[str, Any]],
    annotations: Iterable[Mapping[str, Any]],
    categories: Sequence[Mapping[str, Any]],
    description: str = "",
) -> dict[str, Any]:
    """Validate and atomically write a COCO-format ground-truth JSON following this package's convention.

    Missing annotation fields are filled in: ``id`` (1..M in the given order), ``area`` (``w * h``) and ``iscrowd``
    (0). Categories are written sorted by id, so the i-th one is YOLO class ``i``. Build ``images`` with
    :func:`gt_images`.

    Args:
        path: Destination, normally ``DST/annotations/instances_<split>.json``.
        images: ``{"id", "file_name", "width", "height"}`` per image.
        annotations: ``{"image_id", "category_id", "bbox", ["area"], ["iscrowd"], ["id"]}`` per box; ``bbox`` is
            ``[x, y, w, h]`` in pixels.
        categories: ``{"id", "name"}`` per class.
        description: Stored in ``info.description``.

    Returns:
        The dictionary that was written.

    Raises:
        ValueError: If an id is duplicated or an annotation refers to an unknown image or category.
    """
    anns = []
    for i, a in enumerate(annotations, 1):
        x, y, w, h = (float(v) for v in a["bbox"])
        anns.append(
            {
                "id": int(a.get("id", i)),
                "image_id": a["image_id"],
                "category_id": int(a["category_id"]),
                "bbox": [x, y, w, h],
                "area": float(a.get("area", w * h)),
                "iscrowd": int(a.get("iscrowd", 0)),
            }
        )
    ann_ids = [a["id"] for a in anns]
    if len(set(ann_ids)) != len(ann_ids):
        raise ValueError("ground-truth annotation ids must be unique")
    cats = sorted(({"id": int(c["id"]), "name": str(c["name"])} for c in categories), key=lambda c: c["id"])
    imgs = [dict(im) for im in images]
    _check_gt(imgs, anns, cats)
    data = {
        "info": {"description": description, "date_created": time.strftime("%Y-%m-%d %H:%M:%S")},
        "images": imgs,
        "annotations": anns,
        "categories": cats,
    }
    atomic_write_json(path, data)
    return data


# ----------------------------------------------------------------------------------------------------------------------
# Images and labels
# ----------------------------------------------------------------------------------------------------------------------


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Return ``(width, height)`` of an image, reading only its header.

    The size is the stored one: EXIF orientation is not applied (drone and COCO images carry none that matters).

    Args:
        path: Image file.

    Returns:
        ``(width, height)`` in pixels.

    Raises:
        ValueError: If the file is not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from e


def place_file(src: str | os.PathLike, dst: str | os.PathLike, mode: str = "auto") -> str:
    """Put ``src`` at ``dst`` by hard link, symbolic link or copy.

    Args:
        src: Existing file.
        dst: New path (must not exist).
        mode: ``"auto"`` (hard link, else copy), ``"hardlink"``, ``"symlink"`` (absolute target) or ``"copy"``.
            ``"hardlink"`` falls back to a copy when linking fails (other file system, no permission).

    Returns:
        The method that was used: ``"hardlink"``, ``"symlink"`` or ``"copy"``.
    """
    if mode not in LINK_MODES:
        raise ValueError(f"unknown image placement mode {mode!r}, expected one of {LINK_MODES}")
    src, dst = Path(src), Path(dst)
    if mode == "symlink":
        os.symlink(src.resolve(), dst)
        return "symlink"
    if mode in ("auto", "hardlink"):
        try:
            os.link(src, dst)
            return "hardlink"
        except OSError:
            pass
    shutil.copyfile(src, dst)
    return "copy"


def yolo_label_line(cls: int, x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> str:
    """Format one YOLO label row ``"cls cx cy w h"`` (normalised, 6 decimals) from pixel corners.

    Args:
        cls: Class index.
        x1: Left edge in pixels.
        y1: Top edge in pixels.
        x2: Right edge in pixels.
        y2: Bottom edge in pixels.
        width: Image width in pixels.
        height: Image height in pixels.

    Returns:
        The row, without newline.
    """
    cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
    w, h = (x2 - x1) / width, (y2 - y1) / height
    return f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"


# ----------------------------------------------------------------------------------------------------------------------
# Split folders: build aside, swap in when complete
# ----------------------------------------------------------------------------------------------------------------------


def remove_tree(path: str | os.PathLike) -> None:
    """Delete a file, link or folder if it exists (a link is removed, never followed)."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def split_workdir(dst: str | os.PathLike, split: str) -> Path:
    """Create an empty work folder ``DST/.partial-<split>/`` with ``images/`` and ``labels/`` inside.

    A leftover from an interrupted run is deleted first. The folder is hidden and outside ``images/`` and
    ``labels/``, so nothing mistakes it for a prepared split.

    Args:
        dst: Dataset root.
        split: Split name (``"train"``, ``"val"``, ``"test"``).

    Returns:
        The work folder.
    """
    work = Path(dst) / f".partial-{split}"
    remove_tree(work)
    (work / "images").mkdir(parents=True)
    (work / "labels").mkdir()
    return work


def commit_split(work: str | os.PathLike, dst: str | os.PathLike, split: str, gt: Mapping | None = None) -> None:
    """Swap a complete work folder in as ``DST/images/<split>`` and ``DST/labels/<split>``, then write its GT JSON.

    The old ground-truth JSON and Ultralytics' label cache (``labels/<split>.cache``) are removed first and the new
    JSON is written last, so a split with ``annotations/instances_<split>.json`` present is always complete.

    Args:
        work: Folder made by :func:`split_workdir`, holding ``images/`` and ``labels/``.
        dst: Dataset root.
        split: Split name.
        gt: ``{"images", "annotations", "categories", ["description"]}`` for :func:`write_gt_json`, or ``None`` to
            write no ground truth for this split (any previous one is removed).
    """
    work, dst = Path(work), Path(dst)
    gt_path = dst / "annotations" / f"instances_{split}.json"
    remove_tree(gt_path)
    remove_tree(dst / "labels" / f"{split}.cache")
    for kind in ("images", "labels"):
        final = dst / kind / split
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists() or final.is_symlink():
            old = dst / f".old-{split}-{kind}"
            remove_tree(old)
            os.replace(final, old)
            remove_tree(old)
        os.replace(work / kind, final)
    if gt is not None:
        write_gt_json(gt_path, gt["images"], gt["annotations"], gt["categories"], gt.get("description", ""))
    remove_tree(work)


def write_dataset_yaml(dst: str | os.PathLike, name: str, names: Sequence[str], comment: str = "") -> Path:
    """Write ``DST/<name>.yaml`` (Ultralytics format) with an absolute ``path`` and the splits present on disk.

    ``train`` and ``val`` are always written (Ultralytics requires both keys); ``test`` only when
    ``DST/images/test`` exists.

    Args:
        dst: Dataset root.
        name: File stem of the YAML.
        names: Class names in YOLO class order.
        comment: Lines written as ``#`` comments at the top.

    Returns:
        The YAML path.
    """
    dst = Path(dst).resolve()
    lines = [f"# {c}" if c else "#" for c in comment.splitlines()]
    lines += [f"path: {json.dumps(str(dst))}", "train: images/train", "val: images/val"]
    if (dst / "images" / "test").is_dir():
        lines.append("test: images/test")
    lines.append("names:")
    lines += [f"  {i}: {json.dumps(n)}" for i, n in enumerate(names)]
    return atomic_write_text(dst / f"{name}.yaml", "\n".join(lines) + "\n")


class Progress:
    """Print ``"<label>: i/n images (p%)"`` about every ``every`` items and at the end (no-op when not verbose).

    Args:
        label: Prefix of each line.
        total: Number of items.
        verbose: Print or stay silent.
        every: Print every this many items (default: about 10 lines per loop, at least every 500 items).
    """

    def __init__(self, label: str, total: int, verbose: bool = True, every: int | None = None):
        self.label, self.total, self.verbose = label, total, verbose
        self.every = every or max(1, min(500, total // 10 or 1))
        self.count = 0

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` items and print when a multiple of ``every`` or the end is reached."""
        before, self.count = self.count, self.count + n
        if self.verbose and (self.count // self.every > before // self.every or self.count == self.total):
            pct = 100.0 * self.count / self.total if self.total else 100.0
            print(f"{self.label}: {self.count}/{self.total} images ({pct:.0f}%)", file=sys.stdout, flush=True)


# ----------------------------------------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class SplitStats:
    """Counts for one prepared split.

    Attributes:
        images: Images written.
        images_without_boxes: Images whose label file is empty.
        boxes: YOLO boxes written, per class index.
        ignored: Boxes kept out of the labels but written to the ground truth as ``iscrowd=1`` (counted once per
            source box, not once per category).
        left_out: Boxes deliberately left out of both (VisDrone "others" without ``--keep-others``).
        clipped: Boxes that crossed the image border and were clipped.
        dropped: Boxes dropped with a warning (malformed, zero-area, outside the image).
        details: Further named counts (e.g. ``"ignored regions (category 0)"``).
        placement: How images were placed: ``{"hardlink": n, "copy": n, ...}``.
    """

    images: int = 0
    images_without_boxes: int = 0
    boxes: list[int] = field(default_factory=list)
    ignored: int = 0
    left_out: int = 0
    clipped: int = 0
    dropped: int = 0
    details: dict[str, int] = field(default_factory=dict)
    placement: dict[str, int] = field(default_factory=dict)

    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to ``details[key]``."""
        self.details[key] = self.details.get(key, 0) + n


@dataclass
class PrepareSummary:
    """What a preparation run wrote, returned by ``prepare_*`` and printed at the end.

    Attributes:
        dataset: Dataset name (``"VisDrone2019-DET"``, ``"COCO 2017"``).
        dst: Dataset root.
        yaml: Dataset YAML written.
        names: Class names in YOLO order.
        splits: Counts per split.
        warnings: One line per problem, naming the file and line (or annotation id).
    """

    dataset: str
    dst: Path
    yaml: Path | None = None
    names: list[str] = field(default_factory=list)
    splits: dict[str, SplitStats] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable copy."""
        return {
            "dataset": self.dataset,
            "dst": str(self.dst),
            "yaml": str(self.yaml) if self.yaml else None,
            "names": list(self.names),
            "splits": {k: vars(v) for k, v in self.splits.items()},
            "warnings": list(self.warnings),
        }

    def format(self, max_warnings: int = 100) -> str:
        """Render the summary as a text table followed by (at most ``max_warnings``) warnings."""
        splits = list(self.splits)
        cols = ["images", "empty", "boxes", "ignored", "left out", "clipped", "dropped"]
        out = [f"{self.dataset} -> {self.dst}", f"{'split':<8}" + "".join(f"{c:>10}" for c in cols)]
        for s, st in self.splits.items():
            vals = [st.images, st.images_without_boxes, sum(st.boxes), st.ignored, st.left_out, st.clipped, st.dropped]
            out.append(f"{s:<8}" + "".join(f"{v:>10}" for v in vals))
        out.append("  (ignored: kept only in the ground-truth JSON as iscrowd=1; dropped: see warnings)")
        for s, st in self.splits.items():
            for k, v in st.details.items():
                if v:
                    out.append(f"  {s}: {k}: {v}")
            if st.placement:
                out.append(f"  {s}: images placed by " + ", ".join(f"{k} {v}" for k, v in st.placement.items()))
        width = max([len(n) for n in self.names] + [5])
        out.append("boxes per class:")
        out.append(f"  {'class':<{width + 5}}" + "".join(f"{s:>10}" for s in splits))
        for i, n in enumerate(self.names):
            counts = [st.boxes[i] if i < len(st.boxes) else 0 for st in self.splits.values()]
            out.append(f"  {i:>3}  {n:<{width}}" + "".join(f"{c:>10}" for c in counts))
        if self.yaml:
            out.append(f"dataset YAML: {self.yaml}")
        out.append(f"{len(self.warnings)} warning(s)" + (":" if self.warnings else ""))
        out += [f"  {w}" for w in self.warnings[:max_warnings]]
        if len(self.warnings) > max_warnings:
            more = len(self.warnings) - max_warnings
            out.append(f"  ... and {more} more (all in {self.dst / 'prepare_summary.json'})")
        return "\n".join(out)
