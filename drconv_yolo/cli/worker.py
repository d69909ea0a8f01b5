"""``drconv-yolo _worker SPEC.json``: internal, one run of a comparison in a fresh process (started by compare); with
``--preflight``, the pre-flight's building and stepping of the arms (:mod:`drconv_yolo.experiment.preflight`)."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import List

from ..experiment.preflight import run_job_file
from ..experiment.process import watch_parent
from ..experiment.worker import run_spec_file
from .options import HelpFormatter, parse


def build_parser() -> argparse.ArgumentParser:
    """The ``_worker`` argument parser."""
    p = argparse.ArgumentParser(
        prog="drconv-yolo _worker", description="internal: one compare run", formatter_class=HelpFormatter
    )
    p.add_argument("spec", type=Path, help="spec.json written by compare")
    p.add_argument("--n-train", type=int, default=None, help="training images (DDP throughput fallback)")
    p.add_argument("--preflight", action="store_true", help="SPEC is a pre-flight job: build and step its arms")
    p.add_argument("--parent-pid", type=int, default=None, help="the compare process: exit as soon as it is gone")
    return p


def run(argv: List[str]) -> int:
    """Run the spec (ending early if the comparison that started it dies); returns the exit code."""
    args, _ = parse(build_parser(), argv)
    if hasattr(signal, "SIGUSR2"):  # SLURM's warning (time limit near, preemption) is for the task: it requeues
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # the run (backends/slurm.py); the worker trains on meanwhile
    if args.parent_pid is not None:
        watch_parent(args.parent_pid)
    if args.preflight:
        run_job_file(args.spec)
    else:
        run_spec_file(args.spec, args.n_train)
    return 0
