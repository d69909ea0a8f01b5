"""``drconv-yolo bench``: the layer benchmark, or with ``--model`` the model benchmark (both :mod:`drconv_yolo.bench`).

Examples::

    drconv-yolo bench                              # DRConv2d vs nn.Conv2d at the YOLOv8n shapes
    drconv-yolo bench --model                      # yolov8n-drconv vs yolov8n: fused inference and a training step
    drconv-yolo bench --model --family yolov8 yolo11 --busy 1   # with one other busy process on the machine
    drconv-yolo bench --deploy --runtime onnxruntime openvino    # every yolov8n DRConv config exported, vs yolov8n
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List

from .. import bench, deploy
from ..errors import UserError
from .options import HelpFormatter, parse

QUICK_SHAPES = 2  # --quick: the first shapes only
QUICK_REPEATS = 2
QUICK_PAIRS = 1  # --quick --model: the first pair only
MINIMUM = {"repeats": 1, "busy": 0, "threads": 1}  # the least value of each count option


class BenchError(UserError):
    """A benchmark option out of range."""


def build_parser() -> argparse.ArgumentParser:
    """The ``bench`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="drconv-yolo bench", description=bench.__doc__.split("\n\n")[0], formatter_class=HelpFormatter
    )
    parser.add_argument("--model", action="store_true", help="the model benchmark instead of the layer benchmark")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (default 5)")
    parser.add_argument("--busy", type=int, default=0, help="background busy-loop processes during the measurement")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default torch's: one per core); 1 gives steadier figures on a shared machine",
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_REPEATS} repeats and fewer shapes/pairs (smoke)")
    outs = ", ".join(str(p) for p in (bench.DEFAULT_OUT, bench.MODEL_OUT, deploy.DEPLOY_OUT))
    parser.add_argument("--out", type=Path, default=None, help=f"JSON output ({outs})")
    layer = parser.add_argument_group("layer benchmark")
    layer.add_argument("--batches", type=int, nargs="+", default=list(bench.DEFAULT_BATCHES), help="batch sizes")
    layer.add_argument("--regions", type=int, default=bench.DEFAULT_REGIONS, help="number of regions m")
    model = parser.add_argument_group("model benchmark (--model)")
    model.add_argument(
        "--family", nargs="+", choices=bench.FAMILIES, default=list(bench.DEFAULT_FAMILIES), help="model families"
    )
    model.add_argument("--scale", default=bench.DEFAULT_SCALE, choices=tuple("nsmlx"), help="model scale letter")
    model.add_argument(
        "--variant",
        nargs="+",
        default=list(bench.DEFAULT_VARIANTS),
        help="DRConv configs by suffix: drconv (yolov8n-drconv.yaml), drconv-neck, drconv-blocks, ...",
    )
    model.add_argument(
        "--channels-last",
        action="store_true",
        help="both models and the input in channels-last memory (default NCHW, as Ultralytics runs them: DRConv's "
        "layers still hand channels-last tensors on, which speeds up the plain layers after them)",
    )
    dep = parser.add_argument_group("deployment benchmark (--deploy): exported with `yolo export format=onnx "
                                    "simplify=True`, static shapes per case, timed on the CPU")  # fmt: skip
    dep.add_argument("--deploy", action="store_true", help="the deployment benchmark: --family's first family, "
                     "its DRConv configs (--variant, default all six) against the baseline")  # fmt: skip
    dep.add_argument("--runtime", nargs="+", choices=deploy.RUNTIMES, default=["onnxruntime"],
                     help="runtimes (openvino: the 'openvino' extra; it reads the same ONNX files)")  # fmt: skip
    dep.add_argument("--deploy-threads", type=int, nargs="+", default=list(deploy.DEPLOY_THREADS),
                     help="runtime intra-op thread counts")  # fmt: skip
    dep.add_argument("--sizes", type=int, nargs="+", default=list(deploy.DEPLOY_SIZES), help="image sizes")
    return parser


def _run_deploy(args) -> int:
    """``bench --deploy``: check the counts, then :func:`drconv_yolo.deploy.run_deploy`."""
    for name in ("deploy_threads", "sizes", "batches"):
        bad = [v for v in getattr(args, name) if v < 1 or (name == "sizes" and v % 32)]
        if bad:
            rule = "multiples of 32 (the model's largest stride)" if name == "sizes" else ">= 1"
            raise BenchError(f"--{name.replace('_', '-')} must be {rule}, got {bad}")
    variants = args.variant if args.variant != list(bench.DEFAULT_VARIANTS) else list(deploy.DEPLOY_VARIANTS)
    try:
        deploy.run_deploy(
            family=args.family[0], scale=args.scale, variants=variants, runtimes=args.runtime,
            batches=args.batches[:1] if args.quick else args.batches,
            sizes=args.sizes[-1:] if args.quick else args.sizes,
            threads=args.deploy_threads[:1] if args.quick else args.deploy_threads,
            repeats=QUICK_REPEATS if args.quick else (args.repeats or deploy.DEPLOY_REPEATS),
            out=args.out or deploy.DEPLOY_OUT,
        )  # fmt: skip
    except deploy.RuntimeMissing as e:
        raise BenchError(f"--runtime: {e}") from None
    return 0


def _check_device(device: str) -> None:
    """Refuse a device this machine does not have, naming it (torch would fail later with a traceback)."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise BenchError(f"--device {device}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"--device {device}: no CUDA device is available on this machine")


def run(argv: List[str]) -> int:
    """``drconv-yolo bench [options]``; returns the exit code."""
    args, _ = parse(build_parser(), argv)
    for name, least in MINIMUM.items():
        value = getattr(args, name)
        if value is not None and value < least:
            raise BenchError(f"--{name} must be >= {least}, got {value}")
    _check_device(args.device)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # recorded in the JSON's environment.torch_threads
    if args.deploy:
        return _run_deploy(args)
    repeats = QUICK_REPEATS if args.quick else args.repeats
    if args.model:
        pairs = bench.model_pairs(args.family, args.scale, args.variant)
        bench.run_model(
            pairs[:QUICK_PAIRS] if args.quick else pairs,
            device=args.device,
            repeats=repeats or bench.MODEL_REPEATS,
            busy=args.busy,
            out=args.out or bench.MODEL_OUT,
            channels_last=args.channels_last,
        )
        return 0
    shapes = bench.YOLOV8N_SHAPES[:QUICK_SHAPES] if args.quick else bench.YOLOV8N_SHAPES
    out, repeats = args.out or bench.DEFAULT_OUT, repeats or bench.DEFAULT_REPEATS
    bench.run(shapes, tuple(args.batches), args.regions, args.device, repeats, out, busy=args.busy)
    return 0
