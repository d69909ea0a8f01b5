"""``drconv-yolo demo``: the built-in comparison's command line (see :mod:`drconv_yolo.experiment.demo_profiles`)."""

from __future__ import annotations

import argparse
from typing import List

from ..experiment import DEMO_PROFILES, DEMO_TRAIN, demo, demo_profile, parse_overrides
from .compare import add_run_options, run_options, until_terminated
from .options import HelpFormatter, parse

USAGE = "drconv-yolo demo [--quick] [--out DIR] [--device DEV] [options] [key=value ...]"
DESCRIPTION = (
    "The built-in comparison: generate (or reuse) the synthetic aerial-scene dataset and compare YOLOv8n "
    "(yolov8n.yaml) with YOLOv8n + DRConv (yolov8n-drconv.yaml) from scratch, several seeds, identical recipe. "
    f"Default profile: {DEMO_PROFILES['default']} with train arguments {DEMO_TRAIN} and nbs = the batch size (an "
    "optimizer step every batch; about 12 minutes on 2 CPU "
    "cores). --quick: a smoke profile of about 1-2 minutes. Options and key=value Ultralytics arguments override the "
    "profile."
)
PROFILE_FIELDS = ("seeds", "epochs", "imgsz", "batch", "n_train", "n_val")  # demo_profile() keywords, None: keep


def build_parser() -> argparse.ArgumentParser:
    """The ``demo`` argument parser."""
    p = argparse.ArgumentParser(
        prog="drconv-yolo demo", usage=USAGE, description=DESCRIPTION, formatter_class=HelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny smoke profile (16 images, 64 px, 1 epoch)")
    p.add_argument("--out", help="output folder (default runs/demo, runs/demo-quick with --quick)")
    p.add_argument("--data-dir", help="synthetic dataset folder, generated once and reused (default from the profile)")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds (default from the profile)")
    p.add_argument("--epochs", type=int, help="epochs (default from the profile)")
    p.add_argument("--imgsz", type=int, help="image size of the dataset and training (default from the profile)")
    p.add_argument("--batch", type=int, help="batch size (default from the profile)")
    p.add_argument("--n-train", type=int, help="synthetic training images (default from the profile)")
    p.add_argument("--n-val", type=int, help="synthetic validation images (default from the profile)")
    add_run_options(p)
    return p


def run(argv: List[str]) -> int:
    """``drconv-yolo demo ...``; returns the exit code (user errors propagate to the dispatcher)."""
    args, extra = parse(build_parser(), argv, allow_extra=True)
    profile = demo_profile(args.quick, args.out, args.data_dir, **{key: getattr(args, key) for key in PROFILE_FIELDS})
    overrides = parse_overrides(extra)
    return until_terminated("demo", lambda: demo(profile, overrides=overrides, **run_options(args, "demo", argv)))
