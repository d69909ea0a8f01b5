"""VisDrone2019-DET from its official zips (or their extracted folders) to YOLO labels plus a COCO ground truth.

Source: ``VisDrone2019-DET-train.zip``, ``VisDrone2019-DET-val.zip`` and ``VisDrone2019-DET-test-dev.zip``, each
holding ``VisDrone2019-DET-<split>/images/*.jpg`` and ``VisDrone2019-DET-<split>/annotations/*.txt``, or those
folders already extracted next to (or instead of) the zips. One annotation row per object::

    bbox_left,bbox_top,bbox_width,bbox_height,score,object_category,truncation,occlusion

(sometimes with a trailing comma). ``score`` is 1 for evaluated boxes and 0 for boxes to ignore; categories are
0 ignored region, 1..10 the evaluated classes, 11 "others".

What is written (see :mod:`drconv_yolo.io` for the ground-truth JSON convention):

* ``DST/images/{train,val,test}/``: the images (hard-linked, symlinked or copied from folders; extracted from zips);
* ``DST/labels/{train,val,test}/``: YOLO labels for categories 1..10 as classes 0..9 (Ultralytics' VisDrone.yaml
  names and order), boxes clipped to the image;
* ``DST/annotations/instances_{val,test}.json``: the same boxes (``category_id = class + 1``) plus one ``iscrowd=1``
  box per evaluated category for every ignored region (category 0) and every score-0 box, so pycocotools ignores
  detections there instead of counting them as false positives;
* ``DST/VisDrone.yaml`` (absolute ``path``) and ``DST/prepare_summary.json``.

Category 11 ("others") is left out and counted (``keep_others=True`` keeps it as class 10). Malformed rows,
zero-area boxes and boxes entirely outside the image are dropped with a warning naming the file and line.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from ..io import DataError, DataNotFoundError, gt_images, write_yolo_labels
from .splits import (
    IMAGE_SUFFIXES,
    check_dst_outside,
    commit_split,
    place_file,
    read_image_size,
    remove_tree,
    select_splits,
    split_workdir,
)
from .summary import SKIPPED_IMAGES, PrepareSummary, Progress, SplitStats

__all__ = [
    "VISDRONE_NAMES",
    "VISDRONE_SPLITS",
    "VisDroneBox",
    "VisDroneImage",
    "convert_visdrone_annotation",
    "parse_visdrone_line",
    "prepare_visdrone",
]

#: Class names in YOLO order, exactly as Ultralytics' ``VisDrone.yaml`` (VisDrone categories 1..10).
VISDRONE_NAMES = (
    "pedestrian",
    "people",
    "bicycle",
    "car",
    "van",
    "truck",
    "tricycle",
    "awning-tricycle",
    "bus",
    "motor",
)
OTHERS_NAME = "others"

#: Prepared split name -> official folder / zip stem.
VISDRONE_SPLITS = {
    "train": "VisDrone2019-DET-train",
    "val": "VisDrone2019-DET-val",
    "test": "VisDrone2019-DET-test-dev",
}
_SPLIT_ALIASES = {"test-dev": "test"}
DATASET = "VisDrone2019-DET"
FIELDS = 8  # numbers per annotation row
IGNORED_REGION = 0  # object_category of an ignored region
OTHERS = 11  # object_category "others"
COPY_BUFFER = 1 << 20  # bytes per read when extracting images from a zip
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)  # a damaged or unsupported member


# ----------------------------------------------------------------------------------------------------------------------
# One annotation file
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VisDroneBox:
    """One parsed annotation row (pixels, as in the file)."""

    left: float
    top: float
    width: float
    height: float
    score: int
    category: int
    truncation: int
    occlusion: int


@dataclass
class VisDroneImage:
    """The converted annotations of one image.

    Attributes:
        labels: ``(class, x1, y1, x2, y2)`` per kept box, clipped to the image, in pixels.
        ignore: ``(x1, y1, x2, y2)`` per ignored region or score-0 box, clipped, in pixels.
        warnings: One line per dropped row: ``"<file>:<line>: <reason>: '<row>'"``.
        clipped: Kept or ignored boxes that crossed the border.
        dropped: Rows dropped with a warning.
        left_out: Category-11 boxes left out.
        ignored_regions: Category-0 rows turned into ignore boxes.
        score0: Score-0 rows of categories 1..11 turned into ignore boxes.
    """

    labels: list[tuple[int, float, float, float, float]] = field(default_factory=list)
    ignore: list[tuple[float, float, float, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    clipped: int = 0
    dropped: int = 0
    left_out: int = 0
    ignored_regions: int = 0
    score0: int = 0


def parse_visdrone_line(line: str) -> VisDroneBox:
    """Parse one annotation row.

    Args:
        line: ``"left,top,width,height,score,category,truncation,occlusion"``, an optional trailing comma allowed.

    Returns:
        The parsed row.

    Raises:
        DataError: If the row does not hold exactly 8 numbers, a count is not an integer or the category is not
            0..11. The message states the reason (without file and line, which the caller adds).
    """
    fields = [f.strip() for f in line.strip().split(",")]
    if fields and fields[-1] == "":
        fields.pop()  # trailing comma
    if len(fields) != FIELDS:
        raise DataError(f"expected {FIELDS} comma-separated numbers, found {len(fields)} fields")
    try:
        values = [float(f) for f in fields]
    except ValueError:
        raise DataError("non-numeric field") from None
    if any(v != v or v in (float("inf"), float("-inf")) for v in values):
        raise DataError("non-finite number")
    ints = values[4:]
    if any(v != int(v) for v in ints):
        raise DataError("score, category, truncation and occlusion must be integers")
    score, category, truncation, occlusion = (int(v) for v in ints)
    if not IGNORED_REGION <= category <= OTHERS:
        raise DataError(f"unknown object_category {category} (expected {IGNORED_REGION}..{OTHERS})")
    return VisDroneBox(*values[:4], score, category, truncation, occlusion)


def convert_visdrone_annotation(
    text: str, width: int, height: int, where: str = "<annotation>", keep_others: bool = False
) -> VisDroneImage:
    """Convert the content of one VisDrone annotation file for an image of the given size.

    Rules, in order: blank rows are skipped; malformed rows and boxes with zero width or height are dropped with a
    warning; boxes are clipped to ``[0, width] x [0, height]`` (a box with nothing left inside is dropped with a
    warning); category 0 or score 0 becomes an ignore box; category 11 is left out unless ``keep_others`` (class
    10); categories 1..10 become classes 0..9.

    Args:
        text: File content.
        width: Image width in pixels.
        height: Image height in pixels.
        where: File name used in warnings (``"<where>:<line>: ..."``).
        keep_others: Keep category 11 as class 10 instead of leaving it out.

    Returns:
        The converted boxes, counts and warnings.
    """
    out = VisDroneImage()
    for lineno, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            box = parse_visdrone_line(raw)
        except ValueError as e:
            out.warnings.append(f"{where}:{lineno}: malformed line, {e}: {raw.strip()!r}")
            out.dropped += 1
            continue
        if box.width <= 0 or box.height <= 0:
            out.warnings.append(
                f"{where}:{lineno}: zero-area box (width {box.width:g}, height {box.height:g}): {raw.strip()!r}"
            )
            out.dropped += 1
            continue
        x1, y1 = max(0.0, box.left), max(0.0, box.top)
        x2, y2 = min(float(width), box.left + box.width), min(float(height), box.top + box.height)
        if x2 <= x1 or y2 <= y1:
            out.warnings.append(f"{where}:{lineno}: box outside the {width}x{height} image: {raw.strip()!r}")
            out.dropped += 1
            continue
        clipped = (x1, y1, x2, y2) != (box.left, box.top, box.left + box.width, box.top + box.height)
        if box.category == IGNORED_REGION or box.score == 0:
            out.ignore.append((x1, y1, x2, y2))
            if box.category == IGNORED_REGION:
                out.ignored_regions += 1
            else:
                out.score0 += 1
        elif box.category == OTHERS and not keep_others:
            out.left_out += 1
            continue
        else:
            out.labels.append((box.category - 1, x1, y1, x2, y2))
        out.clipped += clipped
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Sources: extracted folder or official zip
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class _Source:
    """The images and annotation files of one split, in a folder or a zip."""

    kind: str  # "dir" or "zip"
    path: Path
    images: dict[str, str]  # image file name -> path (dir) or member name (zip)
    annotations: dict[str, str]  # file stem -> path (dir) or member name (zip)

    def label(self, ref: str) -> str:
        """Name a file of this source in messages."""
        return ref if self.kind == "dir" else f"{self.path}:{ref}"

    def open(self) -> contextlib.AbstractContextManager[zipfile.ZipFile | None]:
        """The open zip for :meth:`place` and :meth:`read_text` (``None`` for a folder), closed on exit."""
        return zipfile.ZipFile(self.path) if self.kind == "zip" else contextlib.nullcontext()

    @contextlib.contextmanager
    def _member(self, member: str):
        """Turn a damaged zip member into one :class:`DataError` naming the zip and the member."""
        try:
            yield
        except _ZIP_ERRORS as e:
            raise DataError(f"{self.path}: member {member} is corrupt ({e}); download the zip again") from None

    def place(self, zf: zipfile.ZipFile | None, name: str, target: Path, mode: str) -> str:
        """Put image ``name`` at ``target``: extracted from the zip, else placed by ``mode``; returns the method."""
        if zf is None:
            return place_file(self.images[name], target, mode)
        with self._member(self.images[name]), zf.open(self.images[name]) as r, open(target, "wb") as w:
            shutil.copyfileobj(r, w, COPY_BUFFER)
        return "extract"

    def read_text(self, zf: zipfile.ZipFile | None, ref: str) -> str:
        """The content of annotation file ``ref`` (a BOM and undecodable bytes tolerated)."""
        if zf is None:
            return Path(ref).read_bytes().decode("utf-8-sig", errors="replace")
        with self._member(ref):
            return zf.read(ref).decode("utf-8-sig", errors="replace")


def _scan_dir(folder: Path) -> _Source:
    """Index ``folder/images/*`` and ``folder/annotations/*.txt``."""
    for sub in ("images", "annotations"):
        if not (folder / sub).is_dir():
            raise DataNotFoundError(f"VisDrone folder {folder} has no '{sub}/' subfolder (expected {folder / sub})")
    images = {p.name: str(p) for p in (folder / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    annotations = {p.stem: str(p) for p in (folder / "annotations").iterdir() if p.suffix.lower() == ".txt"}
    return _Source("dir", folder, images, annotations)


def _scan_zip(path: Path) -> _Source:
    """Index the ``*/images/*`` and ``*/annotations/*.txt`` members of an official zip."""
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not a zip file")
    images: dict[str, str] = {}
    annotations: dict[str, str] = {}
    with zipfile.ZipFile(path) as zf:
        for member in zf.namelist():
            p = PurePosixPath(member)
            if member.endswith("/") or "__MACOSX" in p.parts or len(p.parts) < 2:
                continue
            parent = p.parts[-2]
            if parent == "images" and p.suffix.lower() in IMAGE_SUFFIXES:
                if p.name in images:
                    raise DataError(f"{path}: image {p.name} appears twice ({images[p.name]} and {member})")
                images[p.name] = member
            elif parent == "annotations" and p.suffix.lower() == ".txt":
                annotations[p.stem] = member
    if not images:
        raise DataNotFoundError(f"{path} holds no '<folder>/images/*.jpg' members: not a VisDrone2019-DET zip")
    return _Source("zip", path, images, annotations)


def _expected(src: Path, split: str) -> str:
    stem = VISDRONE_SPLITS[split]
    return f"{src / (stem + '.zip')} or folder {src / stem}/ (with images/ and annotations/)"


def _find_source(src: Path, split: str) -> _Source | None:
    """Return the split's extracted folder if present, else its zip, else ``None``."""
    stem = VISDRONE_SPLITS[split]
    if (src / stem).is_dir():
        return _scan_dir(src / stem)
    if (src / f"{stem}.zip").is_file():
        return _scan_zip(src / f"{stem}.zip")
    return None


# ----------------------------------------------------------------------------------------------------------------------
# One split
# ----------------------------------------------------------------------------------------------------------------------


def _prepare_split(
    source: _Source,
    dst: Path,
    split: str,
    names: Sequence[str],
    keep_others: bool,
    images_mode: str,
    write_gt: bool,
    summary: PrepareSummary,
    verbose: bool,
) -> SplitStats:
    """Convert one split into ``DST/.partial-<split>`` and swap it in when complete."""
    stats = SplitStats(boxes=[0] * len(names))
    gt_entries: list[tuple[str, int, int]] = []
    per_image: dict[str, VisDroneImage] = {}
    progress = Progress(f"{split} ({source.path.name})", len(source.images), verbose)
    with split_workdir(dst, split) as work, source.open() as zf:
        for name in sorted(source.images):
            progress.update()
            size = _place_image(source, zf, name, work / "images" / name, images_mode, stats, summary)
            if size is None:
                continue
            width, height = size
            stem = Path(name).stem
            ann_ref = source.annotations.get(stem)
            if ann_ref is None:
                summary.warnings.append(f"{source.label(source.images[name])}: no annotation file, image kept empty")
            text = source.read_text(zf, ann_ref) if ann_ref is not None else ""
            conv = convert_visdrone_annotation(text, width, height, source.label(ann_ref or stem), keep_others)
            write_yolo_labels(work / "labels" / f"{stem}.txt", conv.labels, width, height)
            _count(stats, conv)
            summary.warnings.extend(conv.warnings)
            gt_entries.append((f"images/{split}/{name}", width, height))
            per_image[gt_entries[-1][0]] = conv
    for stem in sorted(set(source.annotations) - {Path(n).stem for n in source.images}):
        summary.warnings.append(f"{source.label(source.annotations[stem])}: annotation file without an image, skipped")
    gt = _gt_dict(gt_entries, per_image, names) if write_gt else None
    commit_split(work, dst, split, gt)
    return stats


def _place_image(
    source: _Source, zf, name: str, target: Path, mode: str, stats: SplitStats, summary: PrepareSummary
) -> tuple[int, int] | None:
    """Place one image and read its size; an unreadable image is removed and reported by its source path."""
    stats.placed(source.place(zf, name, target, mode))
    try:
        return read_image_size(target)
    except DataError as e:
        remove_tree(target)
        label = source.label(source.images[name])
        # PIL names the file it opened, the placed copy in the work folder: name the source instead
        detail = re.sub(r"'[^']*" + re.escape(target.name) + "'", repr(label), str(e.__cause__))
        summary.warnings.append(f"{label}: not a readable image ({detail}), skipped")
        stats.count(SKIPPED_IMAGES)
        return None


def _count(stats: SplitStats, conv: VisDroneImage) -> None:
    stats.images += 1
    stats.images_without_boxes += not conv.labels
    for c, *_ in conv.labels:
        stats.boxes[c] += 1
    stats.ignored += len(conv.ignore)
    stats.left_out += conv.left_out
    stats.clipped += conv.clipped
    stats.dropped += conv.dropped
    stats.count("ignored regions (category 0)", conv.ignored_regions)
    stats.count("score-0 boxes (categories 1-11)", conv.score0)
    stats.count("others (category 11) left out", conv.left_out)


def _gt_dict(entries: list[tuple[str, int, int]], per_image: dict[str, VisDroneImage], names: Sequence[str]) -> dict:
    """Build the ground-truth images/annotations/categories of one split."""
    images = gt_images(entries)
    annotations = []
    cat_ids = range(1, len(names) + 1)
    for im in images:
        conv = per_image[im["file_name"]]
        for c, x1, y1, x2, y2 in conv.labels:
            annotations.append({"image_id": im["id"], "category_id": c + 1, "bbox": [x1, y1, x2 - x1, y2 - y1]})
        for x1, y1, x2, y2 in conv.ignore:
            for cat in cat_ids:
                bbox = [x1, y1, x2 - x1, y2 - y1]
                annotations.append({"image_id": im["id"], "category_id": cat, "bbox": bbox, "iscrowd": 1})
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    return {"images": images, "annotations": annotations, "categories": categories, "description": DATASET}


# ----------------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------------


def prepare_visdrone(
    src: str | Path,
    dst: str | Path,
    splits: Iterable[str] | None = None,
    keep_others: bool = False,
    images: str = "auto",
    name: str = "VisDrone",
    verbose: bool = True,
) -> PrepareSummary:
    """Prepare VisDrone2019-DET for Ultralytics and pycocotools (see the module docstring for what is written).

    Preparing again overwrites cleanly: each split is built in ``DST/.partial-<split>/`` and swapped in only when
    complete (:func:`~drconv_yolo.data.splits.commit_split`), so a failed, interrupted or killed run leaves the
    previous version of that split (or none) in place.

    Args:
        src: Folder holding the official zips and/or their extracted ``VisDrone2019-DET-<split>/`` folders (an
            extracted folder is preferred over its zip).
        dst: Dataset root to write.
        splits: Any of ``"train"``, ``"val"``, ``"test"`` (``"test-dev"`` accepted); default: every split found.
        keep_others: Keep category 11 ("others") as class 10 instead of leaving it out.
        images: How images from extracted folders are placed: ``"auto"`` (hard link, else copy), ``"hardlink"``,
            ``"symlink"`` or ``"copy"``. Images in zips are always extracted.
        name: Stem of the dataset YAML written in ``dst``.
        verbose: Print progress and the summary.

    Returns:
        The summary (also written to ``DST/prepare_summary.json``).

    Raises:
        DataNotFoundError: If ``src`` or a requested split's zip/folder is missing (the message names them).
        DataError: For an unknown split name, a ``dst`` equal to or inside ``src`` or a file that is not a zip.
    """
    src, dst = Path(src), Path(dst)
    check_dst_outside(src, dst, DATASET)
    sources = select_splits(
        src,
        splits,
        lambda s: _find_source(src, s),
        lambda s: _expected(src, s),
        DATASET,
        list(VISDRONE_SPLITS),
        _SPLIT_ALIASES,
    )
    names = list(VISDRONE_NAMES) + ([OTHERS_NAME] if keep_others else [])
    summary = PrepareSummary(DATASET, dst.resolve(), names=names)
    dst.mkdir(parents=True, exist_ok=True)
    for split, source in sources.items():
        if verbose:
            print(f"VisDrone {split}: {len(source.images)} images from {source.path}", flush=True)
        summary.splits[split] = _prepare_split(
            source, dst, split, names, keep_others, images, split != "train", summary, verbose
        )
    comment = (
        "VisDrone2019-DET prepared by drconv_yolo.data.visdrone (prepare visdrone). Ground truth for pycocotools:\n"
        "annotations/instances_<split>.json (val, test). Evaluate with max_det=1000 for dense scenes."
    )
    return summary.finish(name, comment, verbose)
