"""``drconv-yolo eval``: Ultralytics validation plus pycocotools against a ground truth (given, prepared or built).

Arguments are Ultralytics-style ``key=value`` (``max_det=1000``) or options (``--max-det 1000``); the evaluation
itself is :func:`drconv_yolo.evaluation.evaluate`.
"""

from __future__ import annotations

import argparse
from typing import List

from ..errors import EXIT_OK
from ..evaluation import (
    DEFAULT_BATCH,
    DEFAULT_CONF,
    DEFAULT_IMGSZ,
    DEFAULT_IOU,
    DEFAULT_MAX_DET,
    GT_CACHE_FOLDER,
    REPORT_FILE,
    evaluate,
)
from .options import HelpFormatter, parse

__all__ = ["build_parser", "run"]

PROG = "drconv-yolo eval"
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _bool(text: str) -> bool:
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """Build the ``eval`` parser (keys are given as ``key=value`` or ``--key value``)."""
    p = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} model=WEIGHTS data=DATA.yaml [key=value ...]   (or --key value; keys below)",
        description=(
            "Validate a YOLO model with Ultralytics (its mAP50, mAP50-95) and score the same predictions with "
            "pycocotools (AP, AP50, AP75, APs/m/l, AR@1/10/100/max_det, per-class AP) against a ground truth: the "
            "one given with gt=, else the one 'prepare' wrote (<dataset path>/annotations/instances_<split>.json), "
            "else one built from the split's YOLO labels (any dataset 'yolo val' accepts) and cached outside the "
            "dataset. The ground truth is checked against the split's images and the model's classes before "
            "anything runs; where it came from is printed and stored in the report. Arguments are Ultralytics-style "
            "key=value (or --key value)."
        ),
        epilog=(
            f"example: {PROG} model=runs/detect/train/weights/best.pt data=datasets/VisDrone/VisDrone.yaml max_det=1000"
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("--model", required=True, help="weights (.pt) or model YAML, as for 'yolo val model=...'")
    p.add_argument("--data", required=True, help="dataset YAML (DST/<name>.yaml written by prepare)")
    gt = (
        "ground-truth JSON (default: <dataset path>/annotations/instances_<split>.json if present, else built from "
        "the split's YOLO labels)"
    )
    p.add_argument("--gt", dest="gt_json", metavar="JSON", help=gt)
    cache = (
        f"folder for ground truths built from YOLO labels (default: {GT_CACHE_FOLDER}/ beside --out, else in the "
        "run folder's parent), one per dataset fingerprint"
    )
    p.add_argument("--gt-cache", metavar="DIR", default=None, help=cache)
    p.add_argument("--split", default="val", help="split to evaluate: val or test")
    p.add_argument("--max-det", type=int, default=DEFAULT_MAX_DET, help="detections per image (use 1000 on VisDrone)")
    imgsz = f"inference image size (default: the checkpoint's training size, else {DEFAULT_IMGSZ}); printed"
    p.add_argument("--imgsz", type=int, default=None, help=imgsz)
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="batch size")
    p.add_argument("--device", default=None, help="device: cpu, 0, 0,1, mps (default: Ultralytics' choice)")
    p.add_argument("--conf", type=float, default=DEFAULT_CONF, help="confidence threshold")
    p.add_argument("--iou", type=float, default=DEFAULT_IOU, help="NMS IoU threshold")
    p.add_argument("--workers", type=int, default=None, help="dataloader workers (default: Ultralytics')")
    p.add_argument("--half", type=_bool, metavar="BOOL", default=False, help="FP16 inference (GPU)")
    p.add_argument("--project", default=None, help="run folder parent (default: Ultralytics' runs/detect)")
    p.add_argument("--name", default=None, help="run folder name (default: Ultralytics' val, val2, ...)")
    p.add_argument("--out", default=None, help=f"report JSON (default: <run folder>/{REPORT_FILE})")
    p.add_argument("--plots", type=_bool, metavar="BOOL", default=False, help="let Ultralytics draw its plots")
    p.add_argument(
        "--verbose", type=_bool, metavar="BOOL", default=True, help="print Ultralytics' per-class table and the report"
    )
    return p


def run(argv: List[str]) -> int:
    """Run ``eval model=... data=... [max_det=300 gt=... imgsz=... device=... batch=... out=...]``.

    Args:
        argv: Arguments after ``eval``.

    Returns:
        The exit code: 0 done, 2 a usage error (printed by argparse). Missing files and unusable inputs propagate
        as :class:`~drconv_yolo.errors.UserError` or ``OSError`` (the command line prints them and exits with 2).
    """
    a, _ = parse(build_parser(), argv)  # --help and usage errors exit through argparse (the dispatcher's codes)
    options = {k: v for k, v in vars(a).items() if v is not None}  # named as evaluate()'s parameters
    evaluate(options.pop("model"), options.pop("data"), **options)
    return EXIT_OK
