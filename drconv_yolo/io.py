"""Writing files so that a reader never sees half of one, in the formats this package writes: every writer goes here.

Each file is written to a temporary sibling (same folder, so the final ``os.replace`` is atomic) and renamed when
complete; a failure removes the temporary file and leaves the previous file, if any, untouched. The one exception
is :func:`write_yolo_labels`: label files are written into a split's work folder, which is swapped in whole.

Formats:

* YOLO labels: one ``"cls cx cy w h"`` row per box, normalised to the image, 6 decimals (:func:`yolo_label_line`);
* the Ultralytics dataset YAML: absolute ``path``, ``train``/``val`` (``test`` when present) and ``names``
  (:func:`write_dataset_yaml`);
* the ground-truth JSON (:func:`write_gt_json`), shared by every dataset this package prepares and read by
  :mod:`drconv_yolo.evaluation`:

  - written to ``DST/annotations/instances_<split>.json`` in COCO format;
  - ``images``: ``{id, file_name, width, height}`` with ``id`` = 1..N in sorted ``file_name`` order and ``file_name``
    relative to the dataset root (``"images/val/0000001_00000_d_0000001.jpg"``);
  - ``annotations``: ``{id, image_id, category_id, bbox: [x, y, w, h] in pixels, area, iscrowd}``;
  - ``categories``: ``[{id, name}]`` sorted by ``id``; the i-th category (by ascending id) is YOLO class ``i``.
    VisDrone, the synthetic set and a ground truth built from a user's YOLO labels (:mod:`drconv_yolo.data.yolo`)
    use ``id = class + 1`` with the names of the data YAML's ``names``, which is also the ``category_id``
    Ultralytics writes into ``predictions.json`` for such a dataset; COCO keeps its original ids (1..90 with gaps).
  - predictions are matched to ``images`` by file name (Ultralytics names an image by its stem and file name, not by
    these ids), so two images of one split must not share a file stem.
  - read back with :func:`read_gt_json`, which checks all of the above and names the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import yaml

from .errors import UserError

__all__ = [
    "save_figure",
    "DataError",
    "DataNotFoundError",
    "LABEL_DECIMALS",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "dataset_yaml_text",
    "gt_images",
    "read_gt_json",
    "temp_sibling",
    "write_dataset_yaml",
    "write_gt_json",
    "write_yolo_labels",
    "yolo_label_line",
]

LABEL_DECIMALS = 6  # Ultralytics' own converters write 6: sub-pixel for images up to 10^6 px wide
GT_JSON_SEPARATORS = (",", ":")  # ground truths are large (COCO val: 36k boxes) and read only by programs


class DataError(UserError, ValueError):
    """A dataset file, folder or parameter is malformed or inconsistent; the message names it."""


class DataNotFoundError(UserError, FileNotFoundError):
    """A dataset file or folder the user named is missing; the message names what was expected."""


def temp_sibling(path: str | os.PathLike) -> Path:
    """A unique temporary name beside ``path`` that keeps its suffix (``.name.tmp-<id>.png``), so writers that pick
    a format from the suffix (matplotlib, numpy) still do."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; on success it replaces ``path`` in one rename.

    Parent folders are created. On any exception the temporary file is removed and ``path`` is left as it was.

    Example::

        with atomic_path(out / "plot.png") as tmp:
            fig.savefig(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def save_figure(fig, path: str | os.PathLike, dpi: int) -> Path:
    """Save a matplotlib figure as PNG atomically, then close it (also on failure); returns ``path``."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (flushed to disk before the rename); returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    """Convert numpy scalars/arrays and paths, which ``json`` cannot serialise by itself."""
    if hasattr(obj, "tolist"):  # numpy scalar or array
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = None, **dumps_kwargs: Any) -> Path:
    """Serialise ``obj`` as JSON (numpy values and paths converted) and write it atomically; returns ``path``."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=_json_default, **dumps_kwargs) + "\n")


# ----------------------------------------------------------------------------------------------------------------------
# YOLO labels
# ----------------------------------------------------------------------------------------------------------------------


def yolo_label_line(cls: int, x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> str:
    """Format one YOLO label row ``"cls cx cy w h"`` (normalised, :data:`LABEL_DECIMALS` decimals) from pixel corners.

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
    return " ".join([str(cls)] + [f"{v:.{LABEL_DECIMALS}f}" for v in (cx, cy, w, h)])


def write_yolo_labels(path: str | os.PathLike, boxes: Iterable[Sequence[float]], width: int, height: int) -> Path:
    """Write one image's YOLO label file (empty for an image without boxes).

    Written in place, not atomically: label files go into a split's work folder, which is swapped in whole, and an
    atomic write per file would cost a sync for each of COCO's 118k images.

    Args:
        path: Label file (``labels/<split>/<stem>.txt``).
        boxes: ``(cls, x1, y1, x2, y2)`` per box, in pixels.
        width: Image width in pixels.
        height: Image height in pixels.

    Returns:
        The label path.
    """
    path = Path(path)
    rows = [yolo_label_line(int(c), x1, y1, x2, y2, width, height) + "\n" for c, x1, y1, x2, y2 in boxes]
    path.write_bytes("".join(rows).encode("utf-8"))
    return path


# ----------------------------------------------------------------------------------------------------------------------
# Dataset YAML
# ----------------------------------------------------------------------------------------------------------------------


def dataset_yaml_text(root: str | os.PathLike, names: Sequence[str], comment: str = "", test: bool = False) -> str:
    """The Ultralytics dataset YAML of a dataset at ``root``: absolute ``path``, the splits and the class names.

    Args:
        root: Dataset root written as ``path`` (resolved).
        names: Class names in YOLO class order.
        comment: Lines written as ``#`` comments at the top.
        test: Also write ``test: images/test``.

    Returns:
        The YAML text.
    """
    doc: dict[str, Any] = {"path": str(Path(root).resolve()), "train": "images/train", "val": "images/val"}
    if test:
        doc["test"] = "images/test"
    doc["names"] = dict(enumerate(str(n) for n in names))
    header = "".join(f"# {c}\n" if c else "#\n" for c in comment.splitlines())
    return header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def write_dataset_yaml(
    dst: str | os.PathLike,
    name: str,
    names: Sequence[str],
    comment: str = "",
    root: str | os.PathLike | None = None,
) -> Path:
    """Write ``DST/<name>.yaml`` (see :func:`dataset_yaml_text`) with the splits present on disk.

    ``train`` and ``val`` are always written (Ultralytics requires both keys); ``test`` only when
    ``DST/images/test`` exists.

    Args:
        dst: Folder the YAML is written to.
        name: File stem of the YAML.
        names: Class names in YOLO class order.
        comment: Lines written as ``#`` comments at the top.
        root: The ``path`` written (default ``dst``): a dataset built in a temporary folder points at its final one.

    Returns:
        The YAML path.
    """
    dst = Path(dst).resolve()
    text = dataset_yaml_text(dst if root is None else root, names, comment, (dst / "images" / "test").is_dir())
    return atomic_write_text(dst / f"{name}.yaml", text)


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
        DataError: If a file name appears twice.
    """
    rows = sorted(entries, key=lambda e: e[0])
    for a, b in zip(rows, rows[1:]):
        if a[0] == b[0]:
            raise DataError(f"duplicate image file name in ground truth: {a[0]}")
    return [{"id": i, "file_name": f, "width": int(w), "height": int(h)} for i, (f, w, h) in enumerate(rows, 1)]


def _check_unique_ints(ids: Sequence[Any], what: str) -> None:
    if len(set(ids)) != len(ids) or not all(isinstance(i, int) for i in ids):
        raise DataError(f"ground-truth {what} ids must be unique integers")


def _check_gt(images: Sequence[Mapping], annotations: Sequence[Mapping], categories: Sequence[Mapping]) -> None:
    """Raise :class:`DataError` naming the first entry that breaks the ground-truth convention."""
    for what, rows, keys in (("image", images, ("id",)), ("category", categories, ("id", "name"))):
        for row in rows:
            if not isinstance(row, Mapping) or any(k not in row for k in keys):
                raise DataError(f"ground-truth {what} needs {' and '.join(keys)}: {row!r}")
    for a in annotations:
        if not isinstance(a, Mapping) or any(k not in a for k in ("id", "image_id", "category_id", "bbox")):
            raise DataError(f"ground-truth annotation needs id, image_id, category_id and bbox: {a!r}")
    image_ids, cat_ids = [im["id"] for im in images], [c["id"] for c in categories]
    _check_unique_ints(image_ids, "image")
    _check_unique_ints(cat_ids, "category")
    _check_unique_ints([a["id"] for a in annotations], "annotation")
    for im in images:
        if not im.get("file_name") or int(im.get("width", 0)) <= 0 or int(im.get("height", 0)) <= 0:
            raise DataError(f"ground-truth image needs file_name, width > 0 and height > 0: {dict(im)}")
    known_images, known_cats = set(image_ids), set(cat_ids)
    for a in annotations:
        if a["image_id"] not in known_images:
            raise DataError(f"annotation refers to unknown image id {a['image_id']}: {dict(a)}")
        if a["category_id"] not in known_cats:
            raise DataError(f"annotation refers to unknown category id {a['category_id']}: {dict(a)}")
        bbox = a["bbox"]
        if len(bbox) != 4 or bbox[2] < 0 or bbox[3] < 0:
            raise DataError(f"annotation bbox must be [x, y, w, h] with w, h >= 0: {dict(a)}")
        if a.get("iscrowd", 0) not in (0, 1):
            raise DataError(f"annotation iscrowd must be 0 or 1: {dict(a)}")


def _gt_annotation(a: Mapping[str, Any], default_id: int) -> dict[str, Any]:
    """One annotation in the convention's field order, ``area`` (``w * h``) and ``iscrowd`` (0) filled in."""
    x, y, w, h = (float(v) for v in a["bbox"])
    return {
        "id": int(a.get("id", default_id)),
        "image_id": a["image_id"],
        "category_id": int(a["category_id"]),
        "bbox": [x, y, w, h],
        "area": float(a.get("area", w * h)),
        "iscrowd": int(a.get("iscrowd", 0)),
    }


def write_gt_json(
    path: str | os.PathLike,
    images: Sequence[Mapping[str, Any]],
    annotations: Iterable[Mapping[str, Any]],
    categories: Sequence[Mapping[str, Any]],
    description: str = "",
    timestamp: bool = True,
) -> dict[str, Any]:
    """Validate and atomically write a COCO-format ground-truth JSON following this package's convention.

    Missing annotation fields are filled in: ``id`` (1..M in the given order), ``area`` (``w * h``) and ``iscrowd``
    (0). Categories are written sorted by id, so the i-th one is YOLO class ``i``; fields beyond ``id`` and
    ``name`` (``supercategory``) are kept. Build ``images`` with :func:`gt_images`. The file is compact JSON.

    Args:
        path: Destination, normally ``DST/annotations/instances_<split>.json``.
        images: ``{"id", "file_name", "width", "height"}`` per image.
        annotations: ``{"image_id", "category_id", "bbox", ["area"], ["iscrowd"], ["id"]}`` per box; ``bbox`` is
            ``[x, y, w, h]`` in pixels.
        categories: ``{"id", "name", ...}`` per class.
        description: Stored in ``info.description``.
        timestamp: Store ``info.date_created``; without it the same content gives the same bytes.

    Returns:
        The dictionary that was written.

    Raises:
        DataError: If an id is duplicated or an annotation refers to an unknown image or category.
    """
    anns = [_gt_annotation(a, i) for i, a in enumerate(annotations, 1)]
    cats = [{**c, "id": int(c["id"]), "name": str(c["name"])} for c in sorted(categories, key=lambda c: c["id"])]
    imgs = [dict(im) for im in images]
    _check_gt(imgs, anns, cats)
    info = {"description": description}
    if timestamp:
        info["date_created"] = time.strftime("%Y-%m-%d %H:%M:%S")
    data = {"info": info, "images": imgs, "annotations": anns, "categories": cats}
    atomic_write_text(path, json.dumps(data, separators=GT_JSON_SEPARATORS, default=_json_default))
    return data


def read_gt_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ground-truth JSON and check it follows the convention (ids, references, boxes).

    Args:
        path: The JSON file.

    Returns:
        The parsed dictionary.

    Raises:
        DataNotFoundError: If the file is missing.
        DataError: If it is not valid JSON or breaks the convention; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"ground-truth JSON not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "categories")):
        raise DataError(f"{path}: not a COCO ground truth (needs 'images' and 'categories' lists)")
    data.setdefault("annotations", [])
    try:
        _check_gt(data["images"], data["annotations"], data["categories"])
    except (TypeError, ValueError) as e:  # DataError is a ValueError; a non-number where a number belongs is either
        raise DataError(f"{path}: {e}") from None
    return data
