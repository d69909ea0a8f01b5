"""``drconv-yolo prepare``: turn official dataset files into Ultralytics YOLO folders plus a pycocotools ground truth.

Usage::

    drconv-yolo prepare visdrone SRC DST [--splits train val test] [--keep-others]
                                 [--images auto|hardlink|symlink|copy] [--name VisDrone] [--quiet]
    drconv-yolo prepare coco SRC DST [--splits train val] [--images auto|hardlink|symlink|copy] [--name coco] [--quiet]
    drconv-yolo prepare synthetic DST [--n-train 200] [--n-val 50] [--imgsz 256] [--seed 0] [...]
    drconv-yolo prepare yolo DATA.yaml DST [--splits val test] [--quiet]

Each dataset is one entry of :data:`SUBCOMMANDS` (name -> :class:`Subcommand`); add an entry to add a dataset.
Options may also be given as ``key=value`` (``n_train=20``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, List, NamedTuple, Sequence

from ..data.splits import LINK_MODES
from ..data.synthetic import APPEARANCES, CLASS_NAMES, IMGSZ_RANGE, OBJECT_SCALE_RANGE, SyntheticConfig, generate
from ..errors import EXIT_OK, EXIT_USER_ERROR
from .options import HelpFormatter, parse

__all__ = ["SUBCOMMANDS", "Subcommand", "build_parser", "run"]

PROG = "drconv-yolo prepare"
SYNTHETIC = SyntheticConfig()  # the defaults of the synthetic set

_IMAGES_HELP = (
    "how images from folders are placed in DST: auto = hard link, falling back to a copy (default; no extra disk "
    "space, survives deleting SRC); hardlink (same, stated explicitly); symlink = absolute symbolic links (breaks if "
    "SRC moves); copy = independent copies"
)
_LAYOUT = (
    "Writes DST/images/<split>/, DST/labels/<split>/ (YOLO labels), DST/annotations/instances_<split>.json "
    "(COCO-format ground truth for evaluation; not for train), DST/<name>.yaml (Ultralytics dataset YAML with an "
    "absolute path: pass it as data=...) and DST/prepare_summary.json. Each split is built in DST/.partial-<split>/ "
    "and committed in one atomic step (images/<split>, labels/<split> and the JSON are links into "
    "DST/.splits/<split>, switched at once), so a run killed at any moment leaves the previous or the new split, "
    "complete, and the next run removes what it left behind. DST must not be SRC or inside it."
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


def _source_arguments(
    p: argparse.ArgumentParser, src_help: str, splits: Sequence[str], splits_help: str, default_name: str
) -> None:
    """The arguments every dataset converted from official files shares: SRC, DST, splits, image placement."""
    p.add_argument("src", metavar="SRC", help=src_help)
    p.add_argument("dst", metavar="DST", help="dataset root to write (created if missing)")
    p.add_argument("--splits", nargs="+", metavar="SPLIT", choices=splits, help=splits_help)
    p.add_argument("--images", choices=LINK_MODES, default="auto", help=_IMAGES_HELP)
    p.add_argument("--copy", dest="images", action="store_const", const="copy", help="shorthand for --images copy")
    p.add_argument(
        "--link", dest="images", action="store_const", const="hardlink", help="shorthand for --images hardlink"
    )
    p.add_argument("--name", default=default_name, help="stem of the dataset YAML written in DST")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors (no progress, no summary)")


def _visdrone_arguments(p: argparse.ArgumentParser) -> None:
    src = "folder holding VisDrone2019-DET-{train,val,test-dev}.zip and/or their extracted folders"
    splits = "splits to prepare: train val test (test = test-dev); default: every split found in SRC"
    _source_arguments(p, src, ("train", "val", "test", "test-dev"), splits, "VisDrone")
    p.add_argument(
        "--keep-others",
        action="store_true",
        help="keep category 11 'others' as class 10 (default: left out of labels and ground truth, counted)",
    )


def _run_visdrone(args: argparse.Namespace) -> int:
    from ..data.visdrone import prepare_visdrone

    prepare_visdrone(args.src, args.dst, args.splits, args.keep_others, args.images, args.name, not args.quiet)
    return EXIT_OK


def _coco_arguments(p: argparse.ArgumentParser) -> None:
    src = "folder holding annotations/instances_{train,val}2017.json, train2017/, val2017/"
    splits = "splits to prepare: train val; default: every split whose JSON and image folder are present"
    _source_arguments(p, src, ("train", "val", "train2017", "val2017"), splits, "coco")


def _run_coco(args: argparse.Namespace) -> int:
    from ..data.coco import prepare_coco

    prepare_coco(args.src, args.dst, args.splits, args.images, args.name, not args.quiet)
    return EXIT_OK


def _synthetic_arguments(p: argparse.ArgumentParser) -> None:
    (imgsz_lo, imgsz_hi), (scale_lo, scale_hi) = IMGSZ_RANGE, OBJECT_SCALE_RANGE
    classes = f"number of classes, the first N of {', '.join(CLASS_NAMES)} (1-{len(CLASS_NAMES)}, default: %(default)s)"
    sizes = f"side of the square images in pixels ({imgsz_lo}-{imgsz_hi}); object sizes scale with it"
    scale = (
        "multiplier on all object sizes; 1.0 gives boxes of about 6-48 px (median 23) at --imgsz 256, larger is "
        f"easier to learn ({scale_lo:g}-{scale_hi:g}, default: %(default)s)"
    )
    objects = "inclusive range of objects drawn per image (default: {} {})".format(*SYNTHETIC.objects_per_image)
    p.add_argument("dst", type=Path, help="output folder; must not exist, be empty, or hold a synthetic dataset")
    p.add_argument("--n-train", type=int, default=SYNTHETIC.n_train, help="number of training images")
    p.add_argument("--n-val", type=int, default=SYNTHETIC.n_val, help="number of validation images")
    p.add_argument("--imgsz", type=int, default=SYNTHETIC.imgsz, help=sizes)
    p.add_argument(
        "--seed",
        type=int,
        default=SYNTHETIC.seed,
        help="master seed; same seed and options, same files (default: %(default)s)",
    )
    p.add_argument("--n-classes", type=int, default=SYNTHETIC.n_classes, help=classes)
    p.add_argument(
        "--objects-per-image",
        type=int,
        nargs=2,
        default=SYNTHETIC.objects_per_image,
        metavar=("MIN", "MAX"),
        help=objects,
    )
    p.add_argument("--object-scale", type=float, default=SYNTHETIC.object_scale, help=scale)
    appearance = (
        "region: each object is lit by the region it is in (its illumination and colour cast), the case "
        "region-aware convolution targets; uniform: the control set, each object lit independently of its region, "
        "with the same backgrounds, boxes and labels for the same seed (default: %(default)s)"
    )
    p.add_argument("--appearance", choices=APPEARANCES, default=SYNTHETIC.appearance, help=appearance)
    overwrite = "replace a synthetic dataset in DST generated with different options (never deletes other folders)"
    p.add_argument("--overwrite", action="store_true", help=overwrite)
    p.add_argument("-q", "--quiet", action="store_true", help="do not print the start/end progress lines")


def _run_synthetic(args: argparse.Namespace) -> int:
    options = dict(vars(args))  # the options are named as generate()'s parameters
    quiet = options.pop("quiet")
    print(generate(options.pop("dst"), **options, verbose=not quiet))
    return EXIT_OK


def _yolo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", metavar="DATA.yaml", help="Ultralytics data YAML (any that 'yolo val' accepts)")
    dst = "folder to write annotations/instances_<split>.json and prepare_summary.json to (the dataset root is fine)"
    p.add_argument("dst", metavar="DST", help=dst)
    splits = "splits to write a ground truth for (default: val, and test when the YAML has one)"
    p.add_argument("--splits", "--split", nargs="+", metavar="SPLIT", help=splits)
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors (no progress, no summary)")


def _run_yolo(args: argparse.Namespace) -> int:
    from ..data.yolo import prepare_yolo

    prepare_yolo(args.data, args.dst, args.splits, not args.quiet)
    return EXIT_OK


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
            "folder generated with the same options is reused; building happens in a temporary folder. Prints the "
            "dataset YAML's path."
        ),
        add_arguments=_synthetic_arguments,
        run=_run_synthetic,
    ),
    "yolo": Subcommand(
        help="COCO-format ground truth for your own Ultralytics dataset (data YAML + YOLO labels)",
        description=(
            "Write DST/annotations/instances_<split>.json for splits of an Ultralytics detection dataset, from the "
            "YOLO labels exactly as Ultralytics reads them: folders, .txt image lists or lists of those; box or "
            "polygon rows (a polygon counts as its enclosing box); image sizes with the EXIF orientation applied; "
            "category id = class + 1 named from the YAML's names; images matched to predictions by file name (two "
            "images of a split must not share a file stem). An image or label Ultralytics rejects as corrupt is "
            "skipped and listed. Nothing else is written: the images and labels stay where they are. With DST the "
            "dataset root, 'eval' and 'compare' find the JSON there; without it they build the same JSON themselves "
            "and cache it."
        ),
        add_arguments=_yolo_arguments,
        run=_run_yolo,
    ),
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """Build the ``prepare`` parser with one subparser per entry of :data:`SUBCOMMANDS`.

    Returns:
        ``(parser, {dataset: its subparser})``.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Prepare a dataset from its official files for Ultralytics YOLO and pycocotools evaluation, or write the "
            "ground-truth JSON of your own Ultralytics dataset (prepare yolo)."
        ),
        epilog=f"Run '{PROG} <dataset> --help' for the options of one dataset.",
    )
    sub = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    datasets = {}
    for name, cmd in SUBCOMMANDS.items():
        datasets[name] = sub.add_parser(name, help=cmd.help, description=cmd.description, formatter_class=HelpFormatter)
        cmd.add_arguments(datasets[name])
    return parser, datasets


def run(argv: List[str]) -> int:
    """Run ``prepare <dataset> [SRC] DST [options]``.

    Args:
        argv: Arguments after ``prepare``.

    Returns:
        The exit code: 0 done, 2 a usage error (printed by argparse). Errors in the input propagate as
        :class:`~drconv_yolo.errors.UserError` (the command line prints them and exits with 2).
    """
    parser, datasets = build_parser()
    # --help and usage errors exit through argparse; the dispatcher turns them into its exit codes
    if not argv or argv[0] not in datasets:
        parser.parse_args(argv)  # prints the help, or the usage error of a missing or unknown dataset
        return EXIT_USER_ERROR
    args, _ = parse(datasets[argv[0]], argv[1:])
    return SUBCOMMANDS[argv[0]].run(args)
