"""Layer benchmark: DRConv2d (fast and reference op) vs nn.Conv2d at the YOLOv8n shapes; prints a table, writes JSON.

Usage: python scripts/bench_drconv.py [--batches 1 8] [--regions 8] [--device cpu] [--repeats 5] [--out PATH]
Same as ``drconv-yolo bench``; the logic lives in ``drconv_yolo.bench``.
"""

import sys

from drconv_yolo.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
