"""Preparing one split of a dataset: which splits to prepare, placing images, a work folder committed in one step.

A split has two folders Ultralytics reads together (``DST/images/<split>`` and ``DST/labels/<split>``) and a ground
truth; replacing them one after the other could leave new images beside old labels. So each version of a split is a
*generation* ``DST/.splits/<split>-<id>/{images,labels,instances_<split>.json}``, and the final names are fixed
relative symbolic links through one switch::

    DST/images/<split>                      -> ../.splits/<split>/images
    DST/labels/<split>                      -> ../.splits/<split>/labels
    DST/annotations/instances_<split>.json  -> ../.splits/<split>/instances_<split>.json   (splits with a GT)
    DST/.splits/<split>                     -> <split>-<id>        <- the switch

:func:`commit_split` builds nothing visible until the switch, which is one atomic rename: a kill at any instant
leaves the old split or the new one, complete (images, labels and ground truth of one generation). Leftovers of a
killed run (``.partial-*``, ``.old-*``, generations no switch points to, temporary links and files) are removed by
the next run (:func:`remove_leftovers`). Ultralytics resolves the links when it reads the YAML, so a validation that
has started keeps reading the generation it started on.

A dataset prepared before generations existed (real folders at the final names) is converted on its first commit;
only that one conversion has a moment where the split is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

from ..io import DataError, DataNotFoundError, write_gt_json

__all__ = [
    "GENERATIONS",
    "IMAGE_SUFFIXES",
    "LINK_MODES",
    "check_dst_outside",
    "commit_split",
    "place_file",
    "read_image_size",
    "remove_leftovers",
    "remove_tree",
    "select_splits",
    "split_workdir",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LINK_MODES = ("auto", "hardlink", "symlink", "copy")
GENERATIONS = ".splits"  # DST/.splits/<split>-<id>/: the versions of each split; DST/.splits/<split>: the switch
GENERATION_ID_CHARS = 8
KINDS = ("images", "labels")

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
    """Return ``(width, height)`` of an image as Ultralytics sees it, reading only its header.

    The EXIF orientation is applied as Ultralytics applies it (``ultralytics.data.utils.exif_size``): a JPEG stored
    on its side is as wide as it is displayed, and so are the boxes Ultralytics predicts on it.

    Args:
        path: Image file.

    Returns:
        ``(width, height)`` in pixels.

    Raises:
        DataError: If the file is not a readable image.
    """
    from PIL import Image, UnidentifiedImageError
    from ultralytics.data.utils import exif_size

    try:
        with Image.open(path) as im:
            width, height = exif_size(im)
            return int(width), int(height)
    except (UnidentifiedImageError, OSError, SyntaxError, ImportError) as e:
        # ImportError: with Ultralytics loaded, PIL's open retries an unidentified file with a HEIF plugin it may
        # not be able to import offline; SyntaxError: PIL's way of reporting some malformed headers.
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


def check_dst_outside(src: str | os.PathLike, dst: str | os.PathLike, dataset: str) -> None:
    """Refuse a destination equal to or inside the source folder (preparing would write into what it reads).

    Raises:
        DataError: Naming both folders.
    """
    src_path, dst_path = Path(src).resolve(), Path(dst).resolve()
    if dst_path == src_path or src_path in dst_path.parents:
        raise DataError(
            f"{dataset}: DST {dst} is {'the' if dst_path == src_path else 'inside the'} source folder SRC {src}; "
            "choose a DST outside SRC"
        )


def _temporary(path: Path) -> Path:
    """A unique hidden name beside ``path`` for a link or folder about to be renamed onto it."""
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:GENERATION_ID_CHARS]}")


def _link(path: Path, target: str) -> None:
    """Make ``path`` a symbolic link to ``target`` in one rename (replacing a link or file there)."""
    tmp = _temporary(path)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _gt_name(split: str) -> str:
    return f"instances_{split}.json"


def remove_leftovers(dst: str | os.PathLike, split: str) -> None:
    """Remove what an interrupted preparation of ``split`` may have left in ``dst``.

    That is ``DST/.partial-<split>``, ``DST/.old-<split>-*``, generations the switch does not point to, and the
    temporary links and files of :func:`commit_split` and the atomic writers (``.<name>.tmp-*``).
    """
    dst = Path(dst)
    store = dst / GENERATIONS
    current = os.readlink(store / split) if (store / split).is_symlink() else None
    doomed = [dst / f".partial-{split}", *dst.glob(f".old-{split}-*"), *dst.glob(".*.tmp-*")]
    doomed += [p for p in store.glob(f"{split}-*") if p.name != current]
    for folder in (store, dst / "annotations", *(dst / kind for kind in KINDS)):
        doomed += folder.glob(f".*{split}*.tmp-*")
    for path in doomed:
        remove_tree(path)


@contextlib.contextmanager
def split_workdir(dst: str | os.PathLike, split: str) -> Iterator[Path]:
    """Yield an empty work folder ``DST/.partial-<split>/`` with ``images/`` and ``labels/`` inside.

    Leftovers of an interrupted run are deleted first (:func:`remove_leftovers`); the folder is deleted if the body
    raises (Ctrl-C included). It is hidden and outside ``images/`` and ``labels/``, so nothing mistakes it for a
    prepared split.
    Hand it to :func:`commit_split` when complete.

    Args:
        dst: Dataset root.
        split: Split name (``"train"``, ``"val"``, ``"test"``).

    Yields:
        The work folder.
    """
    work = Path(dst) / f".partial-{split}"
    remove_leftovers(dst, split)
    (work / "images").mkdir(parents=True)
    (work / "labels").mkdir()
    try:
        yield work
    except BaseException:
        remove_tree(work)
        raise


def _final_links(dst: Path, split: str, with_gt: bool) -> None:
    """Make the fixed links of a split (converting real folders of an older layout; see the module docstring)."""
    targets = {dst / kind / split: f"../{GENERATIONS}/{split}/{kind}" for kind in KINDS}
    if with_gt:
        targets[dst / "annotations" / _gt_name(split)] = f"../{GENERATIONS}/{split}/{_gt_name(split)}"
    for path, target in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() and os.readlink(path) == target:
            continue
        if path.is_dir() and not path.is_symlink():  # the older layout: a real folder cannot be renamed over
            old = dst / f".old-{split}-{path.parent.name}"
            remove_tree(old)
            os.replace(path, old)
        _link(path, target)


def commit_split(work: str | os.PathLike, dst: str | os.PathLike, split: str, gt: Mapping | None = None) -> None:
    """Make a complete work folder the split ``split`` of ``dst`` in one atomic step (see the module docstring).

    Steps: the ground truth is written into the work folder; the folder becomes a new generation (a rename); the
    fixed links are made if missing; Ultralytics' label cache (``labels/<split>.cache``) is removed; the switch is
    renamed onto the new generation (the commit); the old generations are removed.

    Args:
        work: Folder made by :func:`split_workdir`, holding ``images/`` and ``labels/``.
        dst: Dataset root.
        split: Split name.
        gt: ``{"images", "annotations", "categories", ["description"]}`` for :func:`~drconv_yolo.io.write_gt_json`,
            or ``None`` to write no ground truth for this split (any previous one goes with its generation).
    """
    work, dst = Path(work), Path(dst)
    if gt is not None:
        description = gt.get("description", "")
        write_gt_json(work / _gt_name(split), gt["images"], gt["annotations"], gt["categories"], description)
    generation = f"{split}-{uuid.uuid4().hex[:GENERATION_ID_CHARS]}"
    (dst / GENERATIONS).mkdir(exist_ok=True)
    os.replace(work, dst / GENERATIONS / generation)
    _final_links(dst, split, gt is not None)
    remove_tree(dst / "labels" / f"{split}.cache")
    _link(dst / GENERATIONS / split, generation)
    if gt is None:  # this version of the split has no ground truth: drop the link to the previous one's
        remove_tree(dst / "annotations" / _gt_name(split))
    remove_leftovers(dst, split)
