"""``drconv-yolo bench``: the layer benchmark's command line (the benchmark itself is :mod:`drconv_yolo.bench`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List

from .. import bench
from .options import HelpFormatter, parse

QUICK_SHAPES = 2  # --quick: the first shapes only
QUICK_REPEATS = 2


def build_parser() -> argparse.ArgumentParser:
    """The ``bench`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="drconv-yolo bench", description=bench.__doc__.split("\n\n")[0], formatter_class=HelpFormatter
    )
    parser.add_argument("--batches", type=int, nargs="+", default=list(bench.DEFAULT_BATCHES), help="batch sizes")
    parser.add_argument("--regions", type=int, default=bench.DEFAULT_REGIONS, help="number of regions m")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--repeats", type=int, default=bench.DEFAULT_REPEATS, help="timed repeats per measurement")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"only the first {QUICK_SHAPES} shapes, {QUICK_REPEATS} repeats (smoke run)",
    )
    parser.add_argument("--out", type=Path, default=bench.DEFAULT_OUT, help="JSON output path")
    return parser


def run(argv: List[str]) -> int:
    """``drconv-yolo bench [options]``; returns the exit code."""
    args, _ = parse(build_parser(), argv)
    shapes = bench.YOLOV8N_SHAPES[:QUICK_SHAPES] if args.quick else bench.YOLOV8N_SHAPES
    repeats = QUICK_REPEATS if args.quick else args.repeats
    bench.run(shapes, tuple(args.batches), args.regions, args.device, repeats, args.out)
    return 0
