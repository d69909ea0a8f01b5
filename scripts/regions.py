#!/usr/bin/env python
"""Draw the guided masks of every DRConv layer: the region chosen at each output pixel, over an image.

Usage::

    python scripts/regions.py model=WEIGHTS.pt source=IMAGE [out=DIR] [imgsz=N] [device=cpu] [alpha=0.5]

Writes one PNG per DRConv layer, regions_grid.png, regions.npz and regions.json into DIR (default runs/regions).
Same as ``drconv-yolo regions``; ``--help`` lists every key.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from drconv_yolo.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["regions", *sys.argv[1:]]))
