#!/usr/bin/env python
"""Prepare VisDrone2019-DET from the official zips (or their extracted folders) for Ultralytics and pycocotools.

Usage::

    python scripts/prepare_visdrone.py SRC DST [--splits train val test] [--keep-others]
                                       [--images auto|hardlink|symlink|copy] [--name VisDrone] [--quiet]

SRC holds VisDrone2019-DET-{train,val,test-dev}.zip and/or the folders they extract to. DST receives
images/<split>/, labels/<split>/, annotations/instances_{val,test}.json (ground truth with ignored regions and
score-0 boxes as iscrowd=1) and VisDrone.yaml. Same as ``drconv-yolo prepare visdrone``; ``--help`` lists the options.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from drconv_yolo.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["prepare", "visdrone", *sys.argv[1:]]))
