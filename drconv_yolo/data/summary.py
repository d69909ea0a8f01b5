"""What a preparation run reports: progress lines while it works, per-split counts and warnings when it is done."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..io import atomic_write_json, write_dataset_yaml

__all__ = ["SKIPPED_IMAGES", "SUMMARY_FILE", "PrepareSummary", "Progress", "SplitStats"]

SUMMARY_FILE = "prepare_summary.json"
SKIPPED_IMAGES = "corrupt images skipped"  # a SplitStats.details key; each one is named in the warnings
PROGRESS_LINES = 10  # about this many progress lines per split
PROGRESS_MAX_EVERY = 500  # but at least one every this many images
MAX_WARNINGS_SHOWN = 100  # the rest are only in SUMMARY_FILE
SUMMARY_JSON_INDENT = 1
COLUMN = 10  # width of a number column in the summary table
SPLIT_COLUMN = 8


class Progress:
    """Print ``"<label>: i/n images (p%)"`` about every ``every`` items and at the end (no-op when not verbose).

    Args:
        label: Prefix of each line.
        total: Number of items.
        verbose: Print or stay silent.
        every: Print every this many items (default: about :data:`PROGRESS_LINES` lines per loop, at least every
            :data:`PROGRESS_MAX_EVERY` items).
    """

    def __init__(self, label: str, total: int, verbose: bool = True, every: int | None = None):
        self.label, self.total, self.verbose = label, total, verbose
        self.every = every or max(1, min(PROGRESS_MAX_EVERY, total // PROGRESS_LINES or 1))
        self.count = 0

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` items and print when a multiple of ``every`` or the end is reached."""
        before, self.count = self.count, self.count + n
        if self.verbose and (self.count // self.every > before // self.every or self.count == self.total):
            pct = 100.0 * self.count / self.total if self.total else 100.0
            print(f"{self.label}: {self.count}/{self.total} images ({pct:.0f}%)", file=sys.stdout, flush=True)


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

    def placed(self, method: str) -> None:
        """Count one image placed by ``method`` (``"hardlink"``, ``"copy"``, ``"extract"``, ...)."""
        self.placement[method] = self.placement.get(method, 0) + 1

    def written(self, labels: Sequence[Sequence[Any]]) -> None:
        """Count one image written with ``labels`` (``(class, ...)`` per box) as its label file."""
        self.images += 1
        self.images_without_boxes += not labels


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

    def finish(self, name: str, comment: str, verbose: bool) -> PrepareSummary:
        """Write the dataset YAML ``DST/<name>.yaml`` and ``DST/prepare_summary.json``; print the summary.

        Args:
            name: Stem of the dataset YAML.
            comment: Comment lines at the top of the YAML.
            verbose: Print the summary.

        Returns:
            This summary, its ``yaml`` set.
        """
        self.yaml = write_dataset_yaml(self.dst, name, self.names, comment)
        return self.write(verbose)

    def write(self, verbose: bool) -> PrepareSummary:
        """Write ``DST/prepare_summary.json`` and print the summary (``verbose``); returns this summary."""
        atomic_write_json(self.dst / SUMMARY_FILE, self.to_dict(), indent=SUMMARY_JSON_INDENT)
        if verbose:
            print(self.format(), flush=True)
        return self

    def format(self, max_warnings: int = MAX_WARNINGS_SHOWN) -> str:
        """Render the summary as a text table followed by (at most ``max_warnings``) warnings."""
        cols = ["images", "empty", "boxes", "ignored", "left out", "clipped", "dropped"]
        out = [f"{self.dataset} -> {self.dst}", f"{'split':<{SPLIT_COLUMN}}" + "".join(f"{c:>{COLUMN}}" for c in cols)]
        for s, st in self.splits.items():
            vals = [st.images, st.images_without_boxes, sum(st.boxes), st.ignored, st.left_out, st.clipped, st.dropped]
            out.append(f"{s:<{SPLIT_COLUMN}}" + "".join(f"{v:>{COLUMN}}" for v in vals))
        out.append("  (ignored: kept only in the ground-truth JSON as iscrowd=1; dropped: see warnings)")
        for s, st in self.splits.items():
            out += [f"  {s}: {k}: {v}" for k, v in st.details.items() if v]
            if st.placement:
                out.append(f"  {s}: images placed by " + ", ".join(f"{k} {v}" for k, v in st.placement.items()))
        out += self._class_table()
        if self.yaml:
            out.append(f"dataset YAML: {self.yaml}")
        out.append(f"{len(self.warnings)} warning(s)" + (":" if self.warnings else ""))
        out += [f"  {w}" for w in self.warnings[:max_warnings]]
        if len(self.warnings) > max_warnings:
            more = len(self.warnings) - max_warnings
            out.append(f"  ... and {more} more (all in {self.dst / SUMMARY_FILE})")
        return "\n".join(out)

    def _class_table(self) -> list[str]:
        width = max([len(n) for n in self.names] + [len("class")])
        out = ["boxes per class:", f"  {'class':<{width + 5}}" + "".join(f"{s:>{COLUMN}}" for s in self.splits)]
        for i, n in enumerate(self.names):
            counts = [st.boxes[i] if i < len(st.boxes) else 0 for st in self.splits.values()]
            out.append(f"  {i:>3}  {n:<{width}}" + "".join(f"{c:>{COLUMN}}" for c in counts))
        return out
