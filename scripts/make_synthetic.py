"""Generate the built-in synthetic aerial-scene detection dataset (same as ``drconv-yolo prepare synthetic``).

Writes ``DST/images/{train,val}/NNNNNN.jpg``, YOLO labels, COCO ground truth and ``DST/synthetic.yaml``, offline
and deterministically from ``--seed``. Re-running with the same options reuses the existing dataset.

Example:
    python scripts/make_synthetic.py datasets/synthetic --n-train 200 --n-val 50 --imgsz 256 --seed 0
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from drconv_yolo.cli import main as cli_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run ``drconv-yolo prepare synthetic`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    return cli_main(["prepare", "synthetic", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
