#!/usr/bin/env python
"""Baseline comparison: train every model x seed with one recipe, evaluate, measure, write report/tables/plots.

Usage::

    python scripts/compare.py --data DATA.yaml --models BASE.yaml DRCONV.yaml [...] --seeds 0 1 2 --epochs E
                              --imgsz S [--batch B] [--device cpu|0|0,1] [--out DIR] [key=value ...]

Writes DIR/report.md, results.csv, results.json, map_per_epoch.png and deltas.png; run it again with the same --out
to resume. Same as ``drconv-yolo compare``; ``--help`` lists every option. ``--demo`` runs ``drconv-yolo demo``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from drconv_yolo.cli import main  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    sys.exit(main(["demo", *argv[1:]] if argv[:1] == ["--demo"] else ["compare", *argv]))
