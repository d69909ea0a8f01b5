"""Generate the built-in synthetic aerial-scene detection dataset (same as ``drconv-yolo prepare synthetic``).

Writes ``DST/images/{train,val}/NNNNNN.jpg``, YOLO labels, COCO ground truth and ``DST/synthetic.yaml``, offline
and deterministically from ``--seed``. Re-running with the same options reuses the existing dataset.

Example:
    python scripts/make_synthetic.py datasets/synthetic --n-train 200 --n-val 50 --imgsz 256 --seed 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from drconv_yolo.data.synthetic import add_arguments, run
except ImportError:  # running from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from drconv_yolo.data.synthetic import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and generate the dataset.

    Args:
        argv: Command-line arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        Exit status (0 on success).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
