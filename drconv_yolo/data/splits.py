"""Preparing one split of a dataset: which splits to prepare, placing images, a work folder swapped in when complete.

Every split is built in ``DST/.partial-<split>/`` and renamed to ``DST/images/<split>`` and ``DST/labels/<split>``
only when complete, its ground-truth JSON written last, so an interrupted run never leaves a half-written split
behind a final name and preparing again is safe.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

from ..io import DataError, DataNotFoundError, write_gt_json

__all__ = [
    "IMAGE_SUFFIXES",
    "LINK_MODES",
    "commit_split",
    "place_file",
    "read_image_size",
    "remove_tree",
    "select_splits",
    "split_workdir",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LINK_MODES = ("auto", "hardlink", "symlink", "copy")

Source = TypeVar("Source")


def select_splits(
    src: Path,
    requested: Iterable[str] | None,
    find: Callable[[str], Source | None],
    expected: Callable[[str], str],
    dataset: str,
    known: Sequence[str],
    aliases: Mapping[str, str] | None = None,
) -> dict[str, Source]:
    """Pick the splits to prepare and find their sources in ``src``.

    Args:
        src: Source folder given by the user.
        requested: Split names (aliases accepted), or ``None`` for every split whose source is found.
        find: Returns the source of a split in ``src``, or ``None`` if it is absent.
        expected: Describes what a split's source would be (for messages).
        dataset: Dataset name used in messages (``"COCO 2017"``).
        known: The dataset's split names, in preparation order.
        aliases: Other accepted names (``{"test-dev": "test"}``).

    Returns:
        ``{split: source}`` in the requested order (or ``known`` order), without duplicates.

    Raises:
        DataNotFoundError: If ``src`` is not a folder, a requested split is missing, or no split is found.
        DataError: For an unknown split name.
    """
    aliases = aliases or {}
    if not src.is_dir():
        raise DataNotFoundError(f"{dataset} source folder not found: {src}")
    names = list(known) if requested is None else [aliases.get(s, s) for s in requested]
    for s in names:
        if s not in known:
            also = f" (or {', '.join(aliases)})" if aliases else ""
            raise DataError(f"unknown {dataset} split {s!r}, expected one of {sorted(known)}{also}")
    chosen: dict[str, Source] = {}
    for split in dict.fromkeys(names):
        source = find(split)
        if source is not None:
            chosen[split] = source
        elif requested is not None:
            raise DataNotFoundError(f"{dataset} {split} split not found: expected {expected(split)}")
    if not chosen:
        need = "; ".join(expected(s) for s in known)
        raise DataNotFoundError(f"no {dataset} split found in {src}: expected any of {need}")
    return chosen


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Return ``(width, height)`` of an image, reading only its header.

    The size is the stored one: EXIF orientation is not applied (drone and COCO images carry none that matters).

    Args:
        path: Image file.

    Returns:
        ``(width, height)`` in pixels.

    Raises:
        DataError: If the file is not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from e


def place_file(src: str | os.PathLike, dst: str | os.PathLike, mode: str = "auto") -> str:
    """Put ``src`` at ``dst`` by hard link, symbolic link or copy.

    Args:
        src: Existing file.
        dst: New path (must not exist).
        mode: ``"auto"`` (hard link, else copy), ``"hardlink"``, ``"symlink"`` (absolute target) or ``"copy"``.
            ``"hardlink"`` falls back to a copy when linking fails (other file system, no permission).

    Returns:
        The method that was used: ``"hardlink"``, ``"symlink"`` or ``"copy"``.

    Raises:
        DataError: For an unknown ``mode``.
    """
    if mode not in LINK_MODES:
        raise DataError(f"unknown image placement mode {mode!r}, expected one of {LINK_MODES}")
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


def remove_tree(path: str | os.PathLike) -> None:
    """Delete a file, link or folder if it exists (a link is removed, never followed)."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


@contextlib.contextmanager
def split_workdir(dst: str | os.PathLike, split: str) -> Iterator[Path]:
    """Yield an empty work folder ``DST/.partial-<split>/`` with ``images/`` and ``labels/`` inside.

    A leftover from an interrupted run is deleted first; the folder is deleted if the body raises (Ctrl-C
    included). It is hidden and outside ``images/`` and ``labels/``, so nothing mistakes it for a prepared split.
    Hand it to :func:`commit_split` when complete.

    Args:
        dst: Dataset root.
        split: Split name (``"train"``, ``"val"``, ``"test"``).

    Yields:
        The work folder.
    """
    work = Path(dst) / f".partial-{split}"
    remove_tree(work)
    (work / "images").mkdir(parents=True)
    (work / "labels").mkdir()
    try:
        yield work
    except BaseException:
        remove_tree(work)
        raise


def commit_split(work: str | os.PathLike, dst: str | os.PathLike, split: str, gt: Mapping | None = None) -> None:
    """Swap a complete work folder in as ``DST/images/<split>`` and ``DST/labels/<split>``, then write its GT JSON.

    The old ground-truth JSON and Ultralytics' label cache (``labels/<split>.cache``) are removed first and the new
    JSON is written last, so a split with ``annotations/instances_<split>.json`` present is always complete.

    Args:
        work: Folder made by :func:`split_workdir`, holding ``images/`` and ``labels/``.
        dst: Dataset root.
        split: Split name.
        gt: ``{"images", "annotations", "categories", ["description"]}`` for :func:`~drconv_yolo.io.write_gt_json`,
            or ``None`` to write no ground truth for this split (any previous one is removed).
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
