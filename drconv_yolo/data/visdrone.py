"""VisDrone2019-DET from its official zips (or their extracted folders) to YOLO labels plus a COCO ground truth.

Source: ``VisDrone2019-DET-train.zip``, ``VisDrone2019-DET-val.zip`` and ``VisDrone2019-DET-test-dev.zip``, each
holding ``VisDrone2019-DET-<split>/images/*.jpg`` and ``VisDrone2019-DET-<split>/annotations/*.txt``, or those
folders already extracted next to (or instead of) the zips. One annotation row per object::

    bbox_left,bbox_top,bbox_width,bbox_height,score,object_category,truncation,occlusion

(sometimes with a trailing comma). ``score`` is 1 for evaluated boxes and 0 for boxes to ignore; categories are
0 ignored region, 1..10 the evaluated classes, 11 "others".

What is written (see :mod:`drconv_yolo.data._io` for the ground-truth JSON convention):

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

import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from drconv_yolo.data._io import (
    IMAGE_SUFFIXES,
    PrepareSummary,
    Progress,
    SplitStats,
    atomic_write_json,
    commit_split,
    gt_images,
    place_file,
    read_image_size,
    remove_tree,
    split_workdir,
    write_dataset_yaml,
    yolo_label_line,
)

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
        ValueError: If the row does not hold exactly 8 numbers, a count is not an integer or the category is not
            0..11. The message states the reason (without file and line, which the caller adds).
    """
    fields = [f.strip() for f in line.strip().split(",")]
    if fields and fields[-1] == "":
        fields.pop()  # trailing comma
    if len(fields) != 8:
        raise ValueError(f"expected 8 comma-separated numbers, found {len(fields)} fields")
    try:
        values = [float(f) for f in fields]
    except ValueError:
        raise ValueError("non-numeric field") from None
    if any(v != v or v in (float("inf"), float("-inf")) for v in values):
        raise ValueError("non-finite number")
    ints = values[4:]
    if any(v != int(v) for v in ints):
        raise ValueError("score, category, truncation and occlusion must be integers")
    score, category, truncation, occlusion = (int(v) for v in ints)
    if not 0 <= category <= 11:
        raise ValueError(f"unknown object_category {category} (expected 0..11)")
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
        if box.category == 0 or box.score == 0:
            out.ignore.append((x1, y1, x2, y2))
            if box.category == 0:
                out.ignored_regions += 1
            else:
                out.score0 += 1
        elif box.category == 11 and not keep_others:
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


def _scan_dir(folder: Path) -> _Source:
    """Index ``folder/images/*`` and ``folder/annotations/*.txt``."""
    for sub in ("images", "annotations"):
        if not (folder / sub).is_dir():
            raise FileNotFoundError(f"VisDrone folder {folder} has no '{sub}/' subfolder (expected {folder / sub})")
    images = {p.name: str(p) for p in (folder / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    annotations = {p.stem: str(p) for p in (folder / "annotations").iterdir() if p.suffix.lower() == ".txt"}
    return _Source("dir", folder, images, annotations)


def _scan_zip(path: Path) -> _Source:
    """Index the ``*/images/*`` and ``*/annotations/*.txt`` members of an official zip."""
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a zip file")
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
                    raise ValueError(f"{path}: image {p.name} appears twice ({images[p.name]} and {member})")
                images[p.name] = member
            elif parent == "annotations" and p.suffix.lower() == ".txt":
                annotations[p.stem] = member
    if not images:
        raise FileNotFoundError(f"{path} holds no '<folder>/images/*.jpg' members: not a VisDrone2019-DET zip")
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


def _normalise_splits(splits: Iterable[str] | None) -> list[str] | None:
    if splits is None:
        return None
    out = []
    for s in splits:
        s = _SPLIT_ALIASES.get(s, s)
        if s not in VISDRONE_SPLITS:
            raise ValueError(f"unknown VisDrone split {s!r}, expected one of {sorted(VISDRONE_SPLITS)} (or test-dev)")
        if s not in out:
            out.append(s)
    return out


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
    work = split_workdir(dst, split)
    gt_entries: list[tuple[str, int, int]] = []
    per_image: dict[str, VisDroneImage] = {}
    progress = Progress(f"{split} ({source.path.name})", len(source.images), verbose)
    zf = zipfile.ZipFile(source.path) if source.kind == "zip" else None
    try:
        for name in sorted(source.images):
            target = work / "images" / name
            if zf is not None:
                with zf.open(source.images[name]) as r, open(target, "wb") as w:
                    shutil.copyfileobj(r, w, 1 << 20)
                method = "extract"
            else:
                method = place_file(source.images[name], target, images_mode)
            stats.placement[method] = stats.placement.get(method, 0) + 1
            width, height = read_image_size(target)
            stem = Path(name).stem
            ann_ref = source.annotations.get(stem)
            if ann_ref is None:
                summary.warnings.append(f"{source.label(source.images[name])}: no annotation file, image kept empty")
                text = ""
            elif zf is not None:
                text = zf.read(ann_ref).decode("utf-8-sig", errors="replace")
            else:
                text = Path(ann_ref).read_text(encoding="utf-8-sig", errors="replace")
            conv = convert_visdrone_annotation(text, width, height, source.label(ann_ref or stem), keep_others)
            rows = [yolo_label_line(c, x1, y1, x2, y2, width, height) for c, x1, y1, x2, y2 in conv.labels]
            (work / "labels" / f"{stem}.txt").write_text("".join(r + "\n" for r in rows), encoding="utf-8")
            _count(stats, conv)
            summary.warnings.extend(conv.warnings)
            gt_entries.append((f"images/{split}/{name}", width, height))
            per_image[f"images/{split}/{name}"] = conv
            progress.update()
    except BaseException:
        if zf is not None:
            zf.close()
        remove_tree(work)
        raise
    if zf is not None:
        zf.close()
    for stem in sorted(set(source.annotations) - {Path(n).stem for n in source.images}):
        summary.warnings.append(f"{source.label(source.annotations[stem])}: annotation file without an image, skipped")
    gt = _gt_dict(gt_entries, per_image, names) if write_gt else None
    commit_split(work, dst, split, gt)
    return stats


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
    return {"images": images, "annotations": annotations, "categories": categories, "description": "VisDrone2019-DET"}


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
    complete, so a failed or interrupted run leaves the previous version of that split (or none) in place.

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
        FileNotFoundError: If ``src`` or a requested split's zip/folder is missing (the message names them).
        ValueError: For an unknown split name or a file that is not a zip.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"VisDrone source folder not found: {src}")
    wanted = _normalise_splits(splits)
    sources: dict[str, _Source] = {}
    for split in wanted or list(VISDRONE_SPLITS):
        source = _find_source(src, split)
        if source is not None:
            sources[split] = source
        elif wanted is not None:
            raise FileNotFoundError(f"VisDrone {split} split not found: expected {_expected(src, split)}")
    if not sources:
        expected = "; ".join(_expected(src, s) for s in VISDRONE_SPLITS)
        raise FileNotFoundError(f"no VisDrone2019-DET split found in {src}: expected any of {expected}")

    names = list(VISDRONE_NAMES) + ([OTHERS_NAME] if keep_others else [])
    summary = PrepareSummary("VisDrone2019-DET", dst.resolve(), names=names)
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
    summary.yaml = write_dataset_yaml(dst, name, names, comment)
    atomic_write_json(dst / "prepare_summary.json", summary.to_dict(), indent=1)
    if verbose:
        print(summary.format(), flush=True)
    return summary
