"""Layer benchmark (DRConv2d vs nn.Conv2d at the YOLOv8n shapes) or, with --model, the model benchmark (bundled
DRConv configs vs their baselines); prints a table, writes JSON.

Usage: python scripts/bench_drconv.py [--model [--family yolov8 yolo11] [--variant drconv]] [--batches 1 8]
       [--regions 8] [--device cpu|cuda] [--repeats 5] [--busy N] [--quick] [--out PATH]
Same as ``drconv-yolo bench``; the logic lives in ``drconv_yolo.bench``.
"""

import sys

from drconv_yolo.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
