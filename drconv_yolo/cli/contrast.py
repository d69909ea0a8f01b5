"""``drconv-yolo contrast``: an arm's paired gain on a main dataset against its gain on a control dataset (see
:mod:`drconv_yolo.experiment.contrast`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from ..experiment.contrast import contrast, contrast_markdown
from ..io import atomic_write_json, atomic_write_text
from .options import HelpFormatter, parse


def build_parser() -> argparse.ArgumentParser:
    """The ``contrast`` parser."""
    p = argparse.ArgumentParser(
        prog="drconv-yolo contrast",
        usage="drconv-yolo contrast --main OUT_A --control OUT_B [--metric mAP50-95] [--out FILE.md]",
        description=(
            "Read two finished drconv-yolo compare folders with the same baseline (e.g. the built-in set and its "
            "--appearance uniform control) and, for every arm both hold, print its Δ to the baseline on each set "
            "and the difference of the two Δs, each with a paired-t 95%% interval over the seeds both hold. With "
            "--out, write the table as Markdown and the numbers as JSON next to it (FILE.json)."
        ),
        epilog="example: drconv-yolo contrast --main runs/study/main --control runs/study/control "
        "--out runs/study/contrast.md",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--main", required=True, help="compare --out folder on the main dataset")
    p.add_argument("--control", required=True, help="compare --out folder on the control dataset")
    p.add_argument("--metric", default="mAP50-95", help="metric key of results.json (mAP50-95, mAP50, AP, AP50, ...)")
    p.add_argument("--out", help="Markdown file to write (and FILE.json beside it); default: print only")
    return p


def run(argv: Sequence[str]) -> int:
    """``drconv-yolo contrast ...``: print (and write) the contrast; returns 0 (errors raise UserError)."""
    args, _ = parse(build_parser(), argv)
    result = contrast(args.main, args.control, args.metric)
    text = contrast_markdown(result)
    print(text, end="")
    if args.out:
        out = Path(args.out)
        atomic_write_json(out.with_suffix(".json"), result, indent=1)
        atomic_write_text(out, text)
        print(f"contrast: {out} and {out.with_suffix('.json')}")
    return 0
