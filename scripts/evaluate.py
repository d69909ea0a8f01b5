#!/usr/bin/env python
"""Evaluate a YOLO model: Ultralytics mAP50/mAP50-95 plus pycocotools AP/AR against a COCO-format ground truth.

Usage::

    python scripts/evaluate.py model=WEIGHTS.pt data=DATA.yaml [max_det=300] [gt=GT.json] [split=val]
                               [imgsz=N] [batch=16] [device=cpu|0] [conf=0.001] [iou=0.7] [out=REPORT.json]

The ground truth defaults to <dataset path>/annotations/instances_<split>.json written by the prepare step, else it
is built from the split's YOLO labels (any dataset ``yolo val`` accepts) and cached; imgsz defaults to the
checkpoint's training size. Use max_det=1000 on VisDrone. Same as ``drconv-yolo eval``; ``--help`` lists every key.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from drconv_yolo.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
