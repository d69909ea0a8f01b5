#!/usr/bin/env python
"""Prepare COCO 2017 detection from its official files for Ultralytics and pycocotools.

Usage::

    python scripts/prepare_coco.py SRC DST [--splits train val] [--images auto|hardlink|symlink|copy]
                                   [--name coco] [--quiet]

SRC holds annotations/instances_{train,val}2017.json, train2017/ and val2017/. DST receives images/<split>/,
labels/<split>/ (80 classes, Ultralytics order), annotations/instances_val.json (original COCO category ids, crowd
boxes as iscrowd=1) and coco.yaml. Same as ``drconv-yolo prepare coco``; ``--help`` lists the options.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from drconv_yolo.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["prepare", "coco", *sys.argv[1:]]))
