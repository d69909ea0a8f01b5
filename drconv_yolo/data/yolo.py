"""A user's own Ultralytics detection dataset: its split's images, a fingerprint, and a COCO ground truth built from it.

Any data YAML ``yolo val`` accepts works: ``train``/``val``/``test`` as folders, ``.txt`` lists of image paths or
lists of those, resolved exactly as Ultralytics does (:func:`split_images`); labels as boxes or polygons. The ground
truth is built from what Ultralytics' own label check (``verify_image_label``) makes of each label file: polygons
become their enclosing box (``segments2boxes``), duplicate rows are dropped, image sizes have the EXIF orientation
applied, and an image or label it rejects as corrupt is left out, as ``yolo val`` leaves it out. Those rules are the
installed Ultralytics' own (8.4 rejects a label file that mixes polygon and box rows; 8.3 reads its box rows as
two-point polygons), so the ground truth always describes what the installed Ultralytics scores. The JSON follows
the convention in :mod:`drconv_yolo.io` (categories ``id = class + 1`` named from the YAML's ``names``).

Where the ground truth of an evaluation comes from (:func:`resolve_ground_truth`): a JSON the user gives; else the
one ``prepare`` wrote at ``<path>/annotations/instances_<split>.json``; else one built here and cached outside the
dataset, keyed by :func:`dataset_fingerprint`. A given or prepared JSON is checked against the images Ultralytics
scores (file names and sizes) before anything runs; it may lack the images Ultralytics skips (:func:`scored_split`),
and every :class:`GroundTruth` names those with Ultralytics' reason.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..io import DataError, DataNotFoundError, gt_images, read_gt_json, write_gt_json
from .summary import SKIPPED_IMAGES, PrepareSummary, Progress, SplitStats

__all__ = [
    "GT_SOURCES",
    "GroundTruth",
    "YoloSplit",
    "build_ground_truth",
    "check_ground_truth",
    "dataset_fingerprint",
    "load_split",
    "prepare_yolo",
    "resolve_ground_truth",
    "scored_split",
    "split_images",
]

GT_SOURCES = ("given", "prepared", "built")
DEFAULT_CACHE_DIR = Path("runs") / "ground_truth"  # relative to the working directory, outside the dataset
CACHE_KEY_CHARS = 16  # of the fingerprint, naming the cache folder
BUILD_VERSION = 1  # in the cache folder's name: bump when the builder's output changes
IO_THREADS = 8  # image headers are read in parallel (I/O bound)
EXAMPLES_SHOWN = 5
DATASET = "YOLO dataset"


@dataclass(frozen=True)
class YoloSplit:
    """One split of a data YAML, resolved as Ultralytics resolves it.

    Attributes:
        data: The data YAML.
        root: The dataset ``path`` (resolved).
        split: Split name.
        names: Class names in YOLO class order.
        images: Image paths exactly as Ultralytics' dataset lists them (sorted).
        keys: Per image, a name for it that does not depend on where the dataset lies (for the fingerprint):
            ``<entry index>:<path relative to the entry's folder>`` (a list file's folder for a list), or the
            absolute path for an image outside that folder.
    """

    data: Path
    root: Path
    split: str
    names: list[str]
    images: list[str]
    keys: list[str] = field(repr=False)

    @property
    def labels(self) -> list[str]:
        """The label file of each image (``/images/`` -> ``/labels/``, suffix ``.txt``), as Ultralytics finds it."""
        from ultralytics.data.utils import img2label_paths

        return img2label_paths(self.images)

    @property
    def prepared_gt(self) -> Path:
        """Where ``prepare`` writes this split's ground truth."""
        return self.root / "annotations" / f"instances_{self.split}.json"

    def file_name(self, image: str) -> str:
        """The ground-truth ``file_name`` of an image: relative to the dataset root when inside it, else absolute.

        Links are not followed: predictions name an image by the file name Ultralytics listed, not its target's.
        """
        return _relative(image, self.root)


@dataclass(frozen=True)
class GroundTruth:
    """The ground truth an evaluation scores against, and where it came from.

    Attributes:
        path: The COCO-format ground-truth JSON.
        source: ``"given"`` (by the user), ``"prepared"`` (``<path>/annotations/instances_<split>.json``) or
            ``"built"`` (from the split's YOLO labels, cached).
        split: Split name.
        fingerprint: :func:`dataset_fingerprint` of the split.
        n_images: Images in the split.
        reused: A built ground truth was found in the cache (not built again).
        skipped: ``(file name, reason)`` of each image of the split that the installed Ultralytics skips as
            corrupt (its own words), so neither it nor the ground truth scores it.
    """

    path: Path
    source: str
    split: str
    fingerprint: str
    n_images: int = 0
    reused: bool = False
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def warnings(self) -> list[str]:
        """One line per skipped image: ``"<file name>: skipped by Ultralytics: <reason>"``."""
        return [f"{name}: skipped by Ultralytics: {reason}" for name, reason in self.skipped]

    def skipped_line(self) -> str:
        """The skipped images counted and named by reason (:func:`skipped_line`); ``""`` if none."""
        return skipped_line(self.skipped, self.n_images, self.split)

    def describe(self) -> str:
        """One line for summaries and reports, naming the source, the file and the images Ultralytics skips."""
        if self.source == "built":
            how = "reused from the cache" if self.reused else "cached"
            line = f"built from the YOLO labels of split '{self.split}' ({self.n_images} images), {how} at {self.path}"
        elif self.source == "prepared":
            line = f"prepared ground truth of split '{self.split}' ({self.n_images} images): {self.path}"
        else:
            line = f"given ground truth for split '{self.split}' ({self.n_images} images): {self.path}"
        return f"{line}; {self.skipped_line()}" if self.skipped else line

    def to_dict(self) -> dict[str, Any]:
        """``{"path", "source", "split", "fingerprint", "description", "skipped"}`` for reports."""
        return {
            "path": str(self.path),
            "source": self.source,
            "split": self.split,
            "fingerprint": self.fingerprint,
            "description": self.describe(),
            "skipped": [list(s) for s in self.skipped],
        }


def skipped_line(skipped: Sequence[tuple[str, str]], n_images: int, split: str) -> str:
    """Count and name skipped images by reason: ``"4 of 12 val images skipped by Ultralytics: <reason> (a.jpg, ...)"``.

    Args:
        skipped: ``(file name, reason)`` per skipped image.
        n_images: Images in the split.
        split: Split name.

    Returns:
        The line; ``""`` when nothing was skipped.
    """
    if not skipped:
        return ""
    by_reason: dict[str, list[str]] = {}
    for name, reason in skipped:
        by_reason.setdefault(reason, []).append(Path(name).name)
    groups = "; ".join(f"{reason} ({_examples(names)})" for reason, names in by_reason.items())
    return f"{len(skipped)} of {n_images} {split} images skipped by Ultralytics: {groups}"


# ----------------------------------------------------------------------------------------------------------------------
# The split's images, as Ultralytics lists them
# ----------------------------------------------------------------------------------------------------------------------


def _check_dataset(data: str | os.PathLike) -> dict[str, Any]:
    """Ultralytics' ``check_det_dataset`` without downloads; its errors become :class:`DataError` naming the YAML."""
    from ultralytics.data.utils import check_det_dataset

    if not Path(data).is_file():
        raise DataNotFoundError(f"dataset YAML not found: {data}")
    try:
        return check_det_dataset(str(data), autodownload=False)
    except FileNotFoundError as e:
        raise DataNotFoundError(f"{data}: {e}") from None
    except (SyntaxError, TypeError, KeyError, ValueError) as e:
        raise DataError(f"{data}: not a usable detection data YAML ({e})") from None


def _relative(path: str, base: Path) -> str:
    """``path`` relative to ``base`` when inside it (so the key survives moving the dataset), else absolute."""
    full = Path(os.path.abspath(path))
    return full.relative_to(base.absolute()).as_posix() if full.is_relative_to(base.absolute()) else full.as_posix()


def split_images(entries: str | Sequence[str]) -> tuple[list[str], list[str]]:
    """List a split's images exactly as Ultralytics' ``BaseDataset.get_img_files`` does.

    A folder contributes every image below it; a ``.txt`` file one image per line, a line starting with ``./``
    relative to the list's folder (other relative lines are relative to the working directory, as in Ultralytics).

    Args:
        entries: The split's resolved path(s) from the data YAML.

    Returns:
        ``(images, keys)`` sorted by image path; see :attr:`YoloSplit.keys`.

    Raises:
        DataNotFoundError: If an entry does not exist or no image is found.
    """
    from ultralytics.data.utils import IMG_FORMATS

    found: list[tuple[str, str]] = []
    for i, entry in enumerate([entries] if isinstance(entries, (str, os.PathLike)) else entries):
        p = Path(entry)
        if p.is_dir():
            base, files = p, glob.glob(str(Path(glob.escape(p)) / "**" / "*.*"), recursive=True)
        elif p.is_file():
            lines = p.read_text(encoding="utf-8-sig").strip().splitlines()
            parent = str(p.parent) + os.sep
            base, files = p.parent, [x.replace("./", parent, 1) if x.startswith("./") else x for x in lines]
        else:
            raise DataNotFoundError(f"split path {p} does not exist")
        found += [(f, f"{i}:{_relative(f, base)}") for f in files]
    found = sorted((f.replace("/", os.sep), k) for f, k in found if f.rpartition(".")[-1].lower() in IMG_FORMATS)
    if not found:
        raise DataNotFoundError(f"no images found in {entries}")
    return [f for f, _ in found], [k for _, k in found]


def load_split(data: str | os.PathLike, split: str = "val") -> YoloSplit:
    """Resolve one split of a data YAML (offline, no downloads).

    Args:
        data: Data YAML path.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Returns:
        The split.

    Raises:
        DataNotFoundError: If the YAML, the split's paths or its images are missing.
        DataError: If the YAML is malformed or has no such split.
    """
    return _split(data, _check_dataset(data), split)


def _names(info: dict[str, Any]) -> list[str]:
    return [str(info["names"][i]) for i in sorted(info["names"])]


def _split(data: str | os.PathLike, info: dict[str, Any], split: str) -> YoloSplit:
    """The split ``split`` of a dataset ``info`` already checked by :func:`_check_dataset`."""
    if not info.get(split):
        raise DataError(f"dataset {data} has no '{split}:' split")
    images, keys = split_images(info[split])
    return YoloSplit(Path(data), Path(info["path"]).resolve(), split, _names(info), images, keys)


def _check_unique_stems(ds: YoloSplit) -> None:
    """Refuse two images with one stem: Ultralytics' predictions name an image by its stem (and file name)."""
    seen: dict[str, str] = {}
    for image in ds.images:
        stem = Path(image).stem
        if stem in seen:
            raise DataError(
                f"split '{ds.split}' of {ds.data} has two images named {stem!r} ({seen[stem]} and {image}): "
                "Ultralytics' predictions identify images by file stem, so they cannot be told apart; rename one"
            )
        seen[stem] = image


# ----------------------------------------------------------------------------------------------------------------------
# Fingerprint
# ----------------------------------------------------------------------------------------------------------------------


def _hash_split(h: Any, ds: YoloSplit) -> None:
    """Add one split to a running hash: its names, then per image its key, byte size and label file contents."""
    h.update(f"split\0{ds.split}\0names\0{json.dumps(ds.names)}\0{len(ds.images)}\0".encode())
    for key, image, label in sorted(zip(ds.keys, ds.images, ds.labels)):
        try:
            size = os.stat(image).st_size
        except OSError:
            size = -1
        try:
            content = Path(label).read_bytes()
        except OSError:
            content = None
        h.update(os.fsencode(key) + f"\0{size}\0".encode())
        h.update(b"-\0" if content is None else f"{len(content)}\0".encode() + content)


def dataset_fingerprint(data: str | os.PathLike, splits: Sequence[str] = ("train", "val")) -> str:
    """A SHA-256 over what a model trained or scored on these splits sees, cheap enough for COCO.

    Hashed, per split in the given order: the class names, the image count, and per image (sorted by its key, see
    :attr:`YoloSplit.keys`) the key, the image's size in bytes and the full content of its label file. Label contents
    count exactly; images count by name and byte size (hashing image bytes would read the whole dataset), so an image
    replaced in place by one of the same byte size is not noticed. Paths are relative to each split entry, so moving
    or re-preparing the same dataset keeps the fingerprint. Cost: listing the split, one ``stat`` per image and one
    read of each (small) label file, no image read: measured 5 s for 55k images on a warm disk and two slow cores,
    so about 10 s for COCO train2017 (118k).

    Args:
        data: Data YAML path.
        splits: Split names; a split the YAML does not define counts as absent.

    Returns:
        64 hex digits.
    """
    info = _check_dataset(data)
    h = hashlib.sha256()
    for split in splits:
        if info.get(split):
            _hash_split(h, _split(data, info, split))
        else:
            h.update(f"split\0{split}\0absent\0".encode())
    return h.hexdigest()


def _fingerprint(ds: YoloSplit) -> str:
    h = hashlib.sha256()
    _hash_split(h, ds)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------------
# Building the ground truth
# ----------------------------------------------------------------------------------------------------------------------


def _map(fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
    with ThreadPoolExecutor(IO_THREADS) as pool:
        return list(pool.map(fn, items))


CORRUPT_MARK = "ignoring corrupt image/label: "  # Ultralytics' message for an image or label it skips


@dataclass(frozen=True)
class ScoredSplit:
    """A split as the installed Ultralytics reads it for validation (its ``verify_image_label``, per image).

    Attributes:
        split: The split.
        labels: Per image of ``split.images``: ``(labels (n, 5) [cls, x, y, w, h] normalized, (h, w))``, or
            ``None`` where Ultralytics skips the image.
        skipped: ``(file name, reason)`` per skipped image, the reason in Ultralytics' words.
        missing_labels: Images without a label file (background images, scored with no boxes).
        empty_labels: Images whose label file is empty.
    """

    split: YoloSplit
    labels: list[tuple[Any, tuple[int, int]] | None] = field(repr=False)
    skipped: tuple[tuple[str, str], ...]
    missing_labels: int
    empty_labels: int

    @property
    def n_scored(self) -> int:
        """Images Ultralytics scores."""
        return len(self.labels) - len(self.skipped)


def scored_split(ds: YoloSplit) -> ScoredSplit:
    """Run Ultralytics' own check of each image and label file of a split (the one its data loader runs).

    Args:
        ds: The split.

    Returns:
        What Ultralytics makes of it: the labels it reads and the images it skips, with its reasons.
    """
    from ultralytics.data.utils import verify_image_label

    nc = len(ds.names)
    rows = _map(verify_image_label, [(im, lb, "", False, nc, 0, 0, False) for im, lb in zip(ds.images, ds.labels)])
    labels = [None if r[1] is None else (r[1], tuple(r[2])) for r in rows]
    skipped = tuple(
        (ds.file_name(im), r[9].split(CORRUPT_MARK, 1)[-1].strip()) for im, r in zip(ds.images, rows) if r[1] is None
    )
    return ScoredSplit(ds, labels, skipped, sum(r[5] for r in rows), sum(r[7] for r in rows))


def _convert(scored: ScoredSplit, stats: SplitStats, verbose: bool) -> dict[str, Any]:
    """The ground-truth dict of the images Ultralytics scores; the ones it skips are counted."""
    ds, entries, boxes = scored.split, [], {}
    progress = Progress(f"{ds.split} (ground truth)", len(ds.images), verbose)
    for image, row in zip(ds.images, scored.labels):
        progress.update()
        if row is None:
            stats.count(SKIPPED_IMAGES)
            continue
        labels, (height, width) = row
        name = ds.file_name(image)
        entries.append((name, width, height))
        boxes[name] = [
            (int(c), [(x - w / 2) * width, (y - h / 2) * height, w * width, h * height])
            for c, x, y, w, h in labels.astype(float).tolist()
        ]
        stats.written(boxes[name])
        for c, _ in boxes[name]:
            stats.boxes[c] += 1
    images = gt_images(entries)
    annotations = [
        {"image_id": im["id"], "category_id": c + 1, "bbox": bbox}
        for im in images
        for c, bbox in boxes[im["file_name"]]
    ]
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(ds.names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _build(scored: ScoredSplit, dst: Path, verbose: bool = False) -> SplitStats:
    ds = scored.split
    _check_unique_stems(ds)
    stats = SplitStats(boxes=[0] * len(ds.names))
    gt = _convert(scored, stats, verbose)
    if not gt["images"]:
        raise DataError(f"split '{ds.split}' of {ds.data}: Ultralytics skips every image ({scored.skipped[0][1]})")
    description = f"built by drconv_yolo.data.yolo from the YOLO labels of split '{ds.split}' of {ds.data}"
    write_gt_json(dst, gt["images"], gt["annotations"], gt["categories"], description, timestamp=False)
    return stats


def build_ground_truth(data: str | os.PathLike, split: str, dst: str | os.PathLike) -> Path:
    """Write the COCO-format ground truth of one split from its YOLO labels (see the module docstring).

    Args:
        data: Data YAML path.
        split: Split name.
        dst: The JSON file to write (atomically).

    Returns:
        ``dst``.

    Raises:
        DataError: If two images share a stem, or Ultralytics skips every image of the split.
    """
    _build(scored_split(load_split(data, split)), Path(dst))
    return Path(dst)


# ----------------------------------------------------------------------------------------------------------------------
# Checking a given or prepared ground truth against the split
# ----------------------------------------------------------------------------------------------------------------------


def _examples(items: Iterable[str]) -> str:
    items = sorted(items)
    more = f" and {len(items) - EXAMPLES_SHOWN} more" if len(items) > EXAMPLES_SHOWN else ""
    return ", ".join(items[:EXAMPLES_SHOWN]) + more


def check_ground_truth(path: str | os.PathLike, ds: YoloSplit | ScoredSplit) -> dict[str, Any]:
    """Read a ground-truth JSON and check it describes the images Ultralytics scores: their names, their sizes.

    It must hold every image the installed Ultralytics scores; it may lack the ones Ultralytics skips as corrupt
    (:func:`scored_split`), and an image it holds that Ultralytics skips is simply not scored.

    Args:
        path: Ground-truth JSON.
        ds: The split it should describe (checked by Ultralytics' rules here unless already a :class:`ScoredSplit`).

    Returns:
        The parsed ground truth.

    Raises:
        DataNotFoundError: If the file is missing.
        DataError: If it is not valid ground-truth JSON, lacks an image Ultralytics scores, holds one not in the
            split, or gives an image another size (the message names the file and the first differences), or two
            images of the split share a stem.
    """
    scored = ds if isinstance(ds, ScoredSplit) else scored_split(ds)
    ds = scored.split
    _check_unique_stems(ds)
    gt = read_gt_json(path)
    where = f"ground truth {path} does not match split '{ds.split}' of {ds.data}"
    on_disk = {Path(im).name: (im, row) for im, row in zip(ds.images, scored.labels)}
    in_gt = {Path(im["file_name"]).name: im for im in gt["images"]}
    if len(in_gt) < len(gt["images"]):
        raise DataError(f"{where}: two of its images share a file name")
    if missing := {name for name, (_, row) in on_disk.items() if row is not None} - set(in_gt):
        raise DataError(
            f"{where}: {len(missing)} image(s) of the split that Ultralytics scores are not in it: {_examples(missing)}"
        )
    if extra := set(in_gt) - set(on_disk):
        raise DataError(f"{where}: {len(extra)} of its image(s) are not in the split: {_examples(extra)}")
    for name, (image, row) in sorted(on_disk.items()):
        im = in_gt.get(name)
        if im is not None and row is not None and (row[1][1], row[1][0]) != (im["width"], im["height"]):
            raise DataError(
                f"{where}: image {name} is {im['width']}x{im['height']} in the ground truth but "
                f"{row[1][1]}x{row[1][0]} on disk ({image}, EXIF orientation applied)"
            )
    return gt


# ----------------------------------------------------------------------------------------------------------------------
# Resolving, and the prepare command
# ----------------------------------------------------------------------------------------------------------------------


def resolve_ground_truth(
    data: str | os.PathLike,
    split: str = "val",
    gt: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> GroundTruth:
    """Find, check or build the ground truth to score ``split`` of ``data`` against.

    In order: ``gt`` if given (``"given"``); else ``<path>/annotations/instances_<split>.json`` if present
    (``"prepared"``); else built from the split's YOLO labels into
    ``<cache_dir>/<fingerprint[:16]>-v<BUILD_VERSION>/instances_<split>.json`` and reused while the fingerprint is
    unchanged (``"built"``). A given or prepared file is checked against the images Ultralytics scores
    (:func:`check_ground_truth`). Each image is read by Ultralytics' own check (:func:`scored_split`) every time, so
    the images it skips are named even when a built ground truth is reused.

    Args:
        data: Data YAML path.
        split: Split name.
        gt: A ground-truth JSON to use.
        cache_dir: Folder for built ground truths; default ``runs/ground_truth`` in the working directory.

    Returns:
        The ground truth.

    Raises:
        DataNotFoundError: If the YAML, the split or the given JSON is missing.
        DataError: If the given or prepared JSON does not match the split, or the split cannot be built from.
    """
    ds = load_split(data, split)
    scored = scored_split(ds)
    fingerprint = _fingerprint(ds)
    n = len(ds.images)
    if gt is not None or ds.prepared_gt.is_file():
        path, source = (Path(gt), "given") if gt is not None else (ds.prepared_gt, "prepared")
        check_ground_truth(path, scored)
        return GroundTruth(path, source, split, fingerprint, n, skipped=scored.skipped)
    key = f"{fingerprint[:CACHE_KEY_CHARS]}-v{BUILD_VERSION}"
    path = Path(cache_dir or DEFAULT_CACHE_DIR).resolve() / key / f"instances_{split}.json"
    reused = path.is_file()
    if not reused:
        _build(scored, path)
    return GroundTruth(path, "built", split, fingerprint, n, reused=reused, skipped=scored.skipped)


def prepare_yolo(
    data: str | os.PathLike, dst: str | os.PathLike, splits: Iterable[str] | None = None, verbose: bool = True
) -> PrepareSummary:
    """Write ``DST/annotations/instances_<split>.json`` for splits of an Ultralytics dataset, and a summary.

    Nothing else is written: the dataset itself stays where it is (DST may be the dataset root, which makes the JSON
    the split's "prepared" ground truth).

    Args:
        data: Data YAML path.
        dst: Output folder.
        splits: Split names; default ``val``, plus ``test`` when the YAML has one.
        verbose: Print progress and the summary.

    Returns:
        The summary (also written to ``DST/prepare_summary.json``).
    """
    info = _check_dataset(data)
    chosen = list(dict.fromkeys(splits)) if splits else ["val"] + (["test"] if info.get("test") else [])
    dst = Path(dst).resolve()
    summary = PrepareSummary(DATASET, dst, names=_names(info))
    for split in chosen:
        scored = scored_split(_split(data, info, split))
        path = dst / "annotations" / f"instances_{split}.json"
        summary.splits[split] = _build(scored, path, verbose)
        summary.warnings += [f"{name}: skipped by Ultralytics: {reason}" for name, reason in scored.skipped]
        if verbose:
            print(f"{split}: ground truth {path}", flush=True)
    summary.yaml = Path(data).resolve()
    return summary.write(verbose)
