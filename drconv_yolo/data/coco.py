"""COCO 2017 from its official files to YOLO labels plus a ground-truth JSON for pycocotools.

Source folder ``SRC`` (as distributed: ``annotations_trainval2017.zip``, ``train2017.zip``, ``val2017.zip``
extracted in one place)::

    SRC/annotations/instances_train2017.json   SRC/train2017/*.jpg
    SRC/annotations/instances_val2017.json     SRC/val2017/*.jpg

What is written (see :mod:`drconv_yolo.io` for the ground-truth JSON convention):

* ``DST/images/{train,val}/``: the images, hard-linked by default (symlink or copy on request, copy when a hard
  link is impossible);
* ``DST/labels/{train,val}/``: YOLO labels for the 80 classes in Ultralytics' ``coco.yaml`` order (COCO category
  ids 1..90 with gaps -> 0..79), boxes clipped to the image, crowd annotations left out; every image gets a label
  file (empty for images without boxes);
* ``DST/annotations/instances_val.json``: images renumbered 1..N in file-name order (the original id is kept as
  ``coco_id``), every non-crowd box and every crowd box (``iscrowd=1``) with its original ``bbox``, ``area`` and
  COCO ``category_id``, so pycocotools reproduces the official protocol;
* ``DST/coco.yaml`` (absolute ``path``) and ``DST/prepare_summary.json``.

Annotations with a malformed or zero-area box, an unknown category or an unknown image are dropped with a warning
naming the JSON file and the annotation id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from ..io import DataError, gt_images, write_yolo_labels
from .splits import check_dst_outside, commit_split, place_file, select_splits, split_workdir
from .summary import PrepareSummary, Progress, SplitStats

__all__ = ["COCO80_TO_COCO91", "COCO_NAMES", "COCO_SPLITS", "CocoImage", "convert_coco_instances", "prepare_coco"]

#: The 80 class names in YOLO order, exactly as Ultralytics' ``coco.yaml``.
COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip

#: COCO category id of YOLO class ``i`` (``ultralytics.data.converter.coco80_to_coco91_class()``).
COCO80_TO_COCO91 = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
    35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)  # fmt: skip

#: Prepared split name -> official name (``instances_<official>.json``, ``<official>/`` image folder).
COCO_SPLITS = {"train": "train2017", "val": "val2017"}
DATASET = "COCO 2017"
_SPLIT_ALIASES = {"train2017": "train", "val2017": "val"}


class CocoImage:
    """One image of a converted split.

    Attributes:
        coco_id: Original image id.
        file_name: Original file name (``"000000397133.jpg"``).
        width: Width from the JSON.
        height: Height from the JSON.
        labels: ``(class, x1, y1, x2, y2)`` per non-crowd box, clipped to the image, in pixels.
        gt: Ground-truth annotations ``{"category_id", "bbox", "area", "iscrowd"}`` (original values).
    """

    __slots__ = ("coco_id", "file_name", "width", "height", "labels", "gt")

    def __init__(self, coco_id: int, file_name: str, width: int, height: int):
        self.coco_id, self.file_name, self.width, self.height = coco_id, file_name, width, height
        self.labels: list[tuple[int, float, float, float, float]] = []
        self.gt: list[dict[str, Any]] = []


def _bbox(ann: dict) -> list[float] | None:
    """Return the annotation's bbox as 4 finite floats, or ``None`` if malformed."""
    bbox = ann.get("bbox")
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None
    try:
        values = [float(v) for v in bbox]
    except (TypeError, ValueError):
        return None
    return values if all(v == v and abs(v) != float("inf") for v in values) else None


def convert_coco_instances(instances: dict, where: str = "instances.json") -> tuple[list[CocoImage], SplitStats, list]:
    """Convert a parsed ``instances_*.json`` into per-image YOLO boxes and ground-truth annotations.

    Args:
        instances: The parsed JSON (``images``, ``annotations``, ``categories``).
        where: File name used in warnings.

    Returns:
        ``(images sorted by file name, stats, warnings)``. ``stats.images`` is left 0 (counted when written).
    """
    warnings: list[str] = []
    yolo_of = {cat: i for i, cat in enumerate(COCO80_TO_COCO91)}
    for cat in instances.get("categories", []):
        i = yolo_of.get(cat.get("id"))
        if i is None:
            warnings.append(f"{where}: category id {cat.get('id')} ({cat.get('name')!r}) is not a COCO 2017 class")
        elif cat.get("name") != COCO_NAMES[i]:
            name, expected = cat.get("name"), COCO_NAMES[i]
            warnings.append(f"{where}: category id {cat['id']} is named {name!r}, expected {expected!r}")
    images: dict[int, CocoImage] = {}
    for im in instances.get("images", []):
        images[im["id"]] = CocoImage(im["id"], im["file_name"], int(im["width"]), int(im["height"]))
    stats = SplitStats(boxes=[0] * len(COCO_NAMES))
    for ann in instances.get("annotations", []):
        _convert_annotation(ann, images, yolo_of, stats, warnings, where)
    return sorted(images.values(), key=lambda im: im.file_name), stats, warnings


def _convert_annotation(ann: dict, images: dict, yolo_of: dict, stats: SplitStats, warnings: list, where: str) -> None:
    """Add one annotation to its image's labels and ground truth, or warn why it is dropped."""
    aid = ann.get("id")
    image = images.get(ann.get("image_id"))
    cls = yolo_of.get(ann.get("category_id"))
    bbox = _bbox(ann)
    reason = None
    if image is None:
        reason = f"unknown image_id {ann.get('image_id')}"
    elif cls is None:
        reason = f"unknown category_id {ann.get('category_id')}"
    elif bbox is None:
        reason = f"malformed bbox {ann.get('bbox')!r}"
    elif bbox[2] <= 0 or bbox[3] <= 0:
        reason = f"zero-area bbox {ann.get('bbox')!r}"
    if reason is None:
        x, y, w, h = bbox
        x1, y1, x2, y2 = max(0.0, x), max(0.0, y), min(float(image.width), x + w), min(float(image.height), y + h)
        if x2 <= x1 or y2 <= y1:
            reason = f"bbox {ann.get('bbox')!r} outside the {image.width}x{image.height} image"
    if reason is not None:
        warnings.append(f"{where}: annotation id {aid}: {reason}, dropped")
        stats.dropped += 1
        return
    crowd = int(bool(ann.get("iscrowd", 0)))
    area = float(ann["area"]) if isinstance(ann.get("area"), (int, float)) else w * h
    image.gt.append({"category_id": int(ann["category_id"]), "bbox": bbox, "area": area, "iscrowd": crowd})
    stats.clipped += (x1, y1, x2, y2) != (x, y, x + w, y + h)
    if crowd:
        stats.ignored += 1
        stats.count("crowd annotations (ground truth only)")
    else:
        image.labels.append((cls, x1, y1, x2, y2))
        stats.boxes[cls] += 1


def _load_instances(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: no '{key}' list, not a COCO instances file")
    return data


def _prepare_split(
    src: Path, dst: Path, split: str, images_mode: str, write_gt: bool, summary: PrepareSummary, verbose: bool
) -> SplitStats:
    """Convert one split into ``DST/.partial-<split>`` and swap it in when complete."""
    official = COCO_SPLITS[split]
    json_path = src / "annotations" / f"instances_{official}.json"
    if verbose:
        print(f"COCO {split}: reading {json_path}", flush=True)
    images, stats, warnings = convert_coco_instances(_load_instances(json_path), json_path.name)
    summary.warnings.extend(warnings)
    entries, kept = [], {}  # (ground-truth file name, width, height); file name -> CocoImage
    progress = Progress(f"{split} ({official})", len(images), verbose)
    with split_workdir(dst, split) as work:
        for im in images:
            source = src / official / im.file_name
            if source.is_file():
                name = Path(im.file_name).name
                stats.placed(place_file(source, work / "images" / name, images_mode))
                write_yolo_labels(work / "labels" / f"{Path(name).stem}.txt", im.labels, im.width, im.height)
                stats.written(im.labels)
                entries.append((f"images/{split}/{name}", im.width, im.height))
                kept[entries[-1][0]] = im
            else:
                summary.warnings.append(f"{json_path.name}: image id {im.coco_id}: {source} not found, skipped")
                stats.dropped += len(im.labels)
                for c, *_ in im.labels:
                    stats.boxes[c] -= 1
            progress.update()
    commit_split(work, dst, split, _gt_dict(entries, kept) if write_gt else None)
    return stats


def _gt_dict(entries: list[tuple[str, int, int]], kept: dict[str, CocoImage]) -> dict:
    images = gt_images(entries)  # a file name listed twice in the JSON is an error here
    annotations = []
    for im in images:
        source = kept[im["file_name"]]
        im["coco_id"] = source.coco_id
        annotations += [{"image_id": im["id"], **a} for a in source.gt]
    categories = [{"id": cid, "name": n} for cid, n in zip(COCO80_TO_COCO91, COCO_NAMES)]
    return {"images": images, "annotations": annotations, "categories": categories, "description": DATASET}


def _expected(src: Path, split: str) -> str:
    official = COCO_SPLITS[split]
    return f"{src / 'annotations' / f'instances_{official}.json'} and {src / official}/"


def _find(src: Path, split: str) -> str | None:
    official = COCO_SPLITS[split]
    need = [src / "annotations" / f"instances_{official}.json", src / official]
    return split if all(p.exists() for p in need) else None


def prepare_coco(
    src: str | Path,
    dst: str | Path,
    splits: Iterable[str] | None = None,
    images: str = "auto",
    name: str = "coco",
    verbose: bool = True,
) -> PrepareSummary:
    """Prepare COCO 2017 detection for Ultralytics and pycocotools (see the module docstring for what is written).

    Preparing again overwrites cleanly: each split is built in ``DST/.partial-<split>/`` and swapped in only when
    complete, in one atomic step (:func:`~drconv_yolo.data.splits.commit_split`). A ground-truth JSON is written
    for ``val`` (not for ``train``).

    Args:
        src: Folder holding ``annotations/instances_{train,val}2017.json`` and ``train2017/``, ``val2017/``.
        dst: Dataset root to write.
        splits: Any of ``"train"``, ``"val"`` (``"train2017"``, ``"val2017"`` accepted); default: every split whose
            JSON and image folder are both present.
        images: ``"auto"`` (hard link, else copy), ``"hardlink"``, ``"symlink"`` or ``"copy"``.
        name: Stem of the dataset YAML written in ``dst``.
        verbose: Print progress and the summary.

    Returns:
        The summary (also written to ``DST/prepare_summary.json``).

    Raises:
        DataNotFoundError: If ``src`` or a requested split's JSON or image folder is missing (named in the message).
        DataError: For an unknown split name, a ``dst`` equal to or inside ``src`` or an annotation file that is
            not a COCO instances JSON.
    """
    src, dst = Path(src), Path(dst)
    check_dst_outside(src, dst, DATASET)
    chosen = select_splits(
        src, splits, lambda s: _find(src, s), lambda s: _expected(src, s), DATASET, list(COCO_SPLITS), _SPLIT_ALIASES
    )
    summary = PrepareSummary(DATASET, dst.resolve(), names=list(COCO_NAMES))
    dst.mkdir(parents=True, exist_ok=True)
    for split in chosen:
        summary.splits[split] = _prepare_split(src, dst, split, images, split != "train", summary, verbose)
    comment = (
        "COCO 2017 prepared by drconv_yolo.data.coco (prepare coco). Ground truth for pycocotools:\n"
        "annotations/instances_val.json (original COCO category ids, crowd boxes as iscrowd=1)."
    )
    return summary.finish(name, comment, verbose)
