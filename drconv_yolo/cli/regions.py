"""``drconv-yolo regions``: draw the guided mask each DRConv layer chose on an image (see drconv_yolo.regions)."""

from __future__ import annotations

import argparse
from typing import Sequence

from ..regions import draw_regions
from .options import HelpFormatter, parse


def build_parser() -> argparse.ArgumentParser:
    """The ``regions`` parser (keys as ``key=value`` or ``--key value``)."""
    p = argparse.ArgumentParser(
        prog="drconv-yolo regions",
        usage="drconv-yolo regions model=WEIGHTS.pt source=IMAGE [out=DIR] [imgsz=N] [device=cpu] [alpha=0.5]",
        description=(
            "Draw what each DRConv layer learned: the region its guide conv picks at every output pixel, over the "
            "letterboxed image, one PNG per DRConv layer plus a grid (and regions.npz / regions.json). Keys are "
            "given as key=value or --key value."
        ),
        epilog="example: drconv-yolo regions model=runs/demo/runs/yolov8n-drconv/seed0/weights/best.pt "
        "source=datasets/synthetic/images/val/000001.jpg out=runs/regions",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--model", required=True, help="trained weights (.pt) or model YAML with DRConv layers")
    p.add_argument("--source", required=True, help="image file")
    p.add_argument("--out", default="runs/regions", help="output folder")
    p.add_argument(
        "--imgsz",
        type=int,
        default=None,
        help="inference size (letterboxed like predict); default the model's training imgsz, else 640",
    )
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda:0, ...")
    p.add_argument("--alpha", type=float, default=0.5, help="opacity of the region colours over the image")
    return p


def run(argv: Sequence[str]) -> int:
    """``drconv-yolo regions ...``: draw, then print one line per layer; returns 0 (errors raise UserError)."""
    args, _ = parse(build_parser(), argv)
    result = draw_regions(args.model, args.source, args.out, args.imgsz, args.device, args.alpha)
    h, w = result["input_shape"]
    print(f"regions: {len(result['layers'])} DRConv layer(s), input {h}x{w}")
    for layer in result["layers"]:
        shares = ", ".join(f"{j}:{layer['share'][j] * 100:.1f}%" for j in layer["used"])
        print(
            f"  {layer['name']:<12} {layer['out_shape'][1]}x{layer['out_shape'][2]}  "
            f"{len(layer['used'])}/{layer['regions']} regions used  [{shares}]  -> {layer['png']}"
        )
    print(f"grid: {result['grid']}")
    return 0
