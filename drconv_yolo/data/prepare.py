"""``prepare`` command line: turn official dataset files into Ultralytics YOLO folders plus a pycocotools ground truth.

Usage::

    prepare visdrone SRC DST [--splits train val test] [--keep-others] [--images auto|hardlink|symlink|copy]
                             [--name VisDrone] [--quiet]
    prepare coco SRC DST [--splits train val] [--images auto|hardlink|symlink|copy] [--name coco] [--quiet]

Each dataset is one entry of :data:`SUBCOMMANDS` (name -> :class:`Subcommand`); add an entry to add a dataset.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, NamedTuple, Sequence

from ..cli import HelpFormatter

__all__ = ["SUBCOMMANDS", "Subcommand", "build_parser", "main"]

_IMAGES_HELP = (
    "how images from folders are placed in DST: auto = hard link, falling back to a copy (default; no extra disk "
    "space, survives deleting SRC); hardlink (same, stated explicitly); symlink = absolute symbolic links (breaks if "
    "SRC moves); copy = independent copies"
)


class Subcommand(NamedTuple):
    """One ``prepare <name>`` subcommand.

    Attributes:
        help: One-line help shown in ``prepare --help``.
        description: Longer text shown in ``prepare <name> --help``.
        add_arguments: Adds the subcommand's arguments to its parser.
        run: Runs it with the parsed arguments and returns an exit code.
    """

    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _common_arguments(p: argparse.ArgumentParser, default_name: str) -> None:
    p.add_argument("--images", choices=("auto", "hardlink", "symlink", "copy"), default="auto", help=_IMAGES_HELP)
    p.add_argument("--copy", dest="images", action="store_const", const="copy", help="shorthand for --images copy")
    p.add_argument(
        "--link", dest="images", action="store_const", const="hardlink", help="shorthand for --images hardlink"
    )
    p.add_argument("--name", default=default_name, help="stem of the dataset YAML written in DST")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors (no progress, no summary)")


def _visdrone_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "src",
        metavar="SRC",
        help="folder holding VisDrone2019-DET-{train,val,test-dev}.zip and/or their extracted folders",
    )
    p.add_argument("dst", metavar="DST", help="dataset root to write (created if missing)")
    p.add_argument(
        "--splits",
        nargs="+",
        metavar="SPLIT",
        choices=("train", "val", "test", "test-dev"),
        help="splits to prepare: train val test (test = test-dev); default: every split found in SRC",
    )
    p.add_argument(
        "--keep-others",
        action="store_true",
        help="keep category 11 'others' as class 10 (default: left out of labels and ground truth, counted)",
    )
    _common_arguments(p, "VisDrone")


def _run_visdrone(args: argparse.Namespace) -> int:
    from drconv_yolo.data.visdrone import prepare_visdrone

    prepare_visdrone(args.src, args.dst, args.splits, args.keep_others, args.images, args.name, not args.quiet)
    return 0


def _coco_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "src", metavar="SRC", help="folder holding annotations/instances_{train,val}2017.json, train2017/, val2017/"
    )
    p.add_argument("dst", metavar="DST", help="dataset root to write (created if missing)")
    p.add_argument(
        "--splits",
        nargs="+",
        metavar="SPLIT",
        choices=("train", "val", "train2017", "val2017"),
        help="splits to prepare: train val; default: every split whose JSON and image folder are present",
    )
    _common_arguments(p, "coco")


def _run_coco(args: argparse.Namespace) -> int:
    from drconv_yolo.data.coco import prepare_coco

    prepare_coco(args.src, args.dst, args.splits, args.images, args.name, not args.quiet)
    return 0


_LAYOUT = (
    "Writes DST/images/<split>/, DST/labels/<split>/ (YOLO labels), DST/annotations/instances_<split>.json "
    "(COCO-format ground truth for evaluation; not for train), DST/<name>.yaml (Ultralytics dataset YAML with an "
    "absolute path: pass it as data=...) and DST/prepare_summary.json. Each split is built in DST/.partial-<split>/ "
    "and swapped in when complete, so preparing again is safe and an interrupted run leaves no half-written split."
)

#: Subcommand name -> definition. Add an entry to add a dataset.
SUBCOMMANDS: dict[str, Subcommand] = {
    "visdrone": Subcommand(
        help="VisDrone2019-DET from the official zips or extracted folders",
        description=(
            "Convert VisDrone2019-DET: categories 1-10 become classes 0-9 (Ultralytics VisDrone.yaml names); "
            "ignored regions (category 0) and score-0 boxes go only to the ground truth, as one iscrowd=1 box per "
            "evaluated category; category 11 'others' is left out unless --keep-others; boxes are clipped to the "
            "image; malformed rows and zero-area boxes are reported with file and line. " + _LAYOUT
        ),
        add_arguments=_visdrone_arguments,
        run=_run_visdrone,
    ),
    "coco": Subcommand(
        help="COCO 2017 from annotations/instances_*2017.json and the image folders",
        description=(
            "Convert COCO 2017: category ids 1-90 become classes 0-79 (Ultralytics coco.yaml order); crowd "
            "annotations go only to the ground truth (iscrowd=1), which keeps the original category ids, boxes "
            "and areas. " + _LAYOUT
        ),
        add_arguments=_coco_arguments,
        run=_run_coco,
    ),
    "synthetic": Subcommand(
        help="the built-in synthetic drone-like set (generated offline from a seed)",
        description=(
            "Generate the built-in detection set: small objects of several classes on backgrounds made of a few "
            "distinct regions, deterministic from --seed; YOLO labels, a dataset YAML and COCO ground truth. A "
            "folder generated with the same options is reused; building happens in a temporary folder."
        ),
        add_arguments=lambda parser: _synthetic().add_arguments(parser),
        run=lambda args: _synthetic().run(args),
    ),
}


def _synthetic():
    from . import synthetic  # imported on use: the other datasets do not need numpy's image drawing

    return synthetic


def build_parser() -> argparse.ArgumentParser:
    """Build the ``prepare`` parser with one subparser per entry of :data:`SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="prepare",
        description="Prepare a dataset from its official files for Ultralytics YOLO and pycocotools evaluation.",
        epilog="Run 'prepare <dataset> --help' for the options of one dataset.",
    )
    sub = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    for name, cmd in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.description, formatter_class=HelpFormatter)
        cmd.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``prepare <dataset> SRC DST [options]``.

    Args:
        argv: Arguments without the program name (a leading ``"prepare"`` is ignored); default ``sys.argv[1:]``.

    Returns:
        0 on success, 1 when preparation fails (the error is printed to stderr), 2 for a usage error.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["prepare"]:
        argv = argv[1:]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help or a usage error, already printed by argparse
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    try:
        return SUBCOMMANDS[args.dataset].run(args)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"prepare {args.dataset}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
