"""``drconv-yolo compare``: the baseline comparison's command line (the comparison is :mod:`drconv_yolo.experiment`).

The options ``compare`` shares with ``demo`` are defined here once (:func:`add_run_options`, :func:`run_options`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, List

from ..experiment import CompareSettings, compare, parse_overrides
from ..experiment.process import Terminated
from ..experiment.settings import DEPLOY_RUNTIMES
from .options import HelpFormatter, parse

DEFAULTS = CompareSettings  # the dataclass's field defaults are the options' defaults
USAGE = "drconv-yolo compare --data DATA.yaml --models BASE.yaml OTHER.yaml [...] [options] [key=value ...]"
DESCRIPTION = (
    "Train every model x seed with identical Ultralytics arguments (only the model differs), evaluate best.pt "
    "(Ultralytics mAP + pycocotools), measure params, GFLOPs, latency, throughput, wall time and peak memory, and "
    "write OUT/report.md, results.csv, results.json and plots. Finished runs are reused when run again with the same "
    "--out and the same data (a changed image list or label is refused); interrupted ones are trained again. One "
    "compare at a time may write an --out. Any further Ultralytics train argument can be given as key=value "
    "(e.g. optimizer=SGD lr0=0.01 mosaic=0); it applies to every run."
)
EPILOG = (
    "example: drconv-yolo compare --data datasets/synthetic/synthetic.yaml --models yolov8n.yaml yolov8n-drconv.yaml "
    "--seeds 0 1 2 --epochs 50 --imgsz 256 --device 0"
)
# The options of each parser that are CompareSettings fields of the same name.
RUN_FIELDS = ("device", "workers", "max_det", "latency_runs", "latency_warmup", "deploy_runtime", "in_process")
COMPARE_FIELDS = ("data", "models", "seeds", "epochs", "imgsz", "batch", "out", "split", "gt", "dry_run")
BACKEND_FIELDS = (
    *("backend", "gpus_per_run", "cpus_per_run", "ray_address", "retries"),
    *("slurm_partition", "slurm_time", "slurm_account", "slurm_max_parallel"),
)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Add the options shared by ``compare`` and ``demo``: device, workers, evaluation and latency settings."""
    parser.add_argument(
        "--device",
        default=None,
        help="Ultralytics device: cpu, 0, 0,1 (DDP), mps; default GPU 0 if available, else cpu",
    )
    parser.add_argument(
        "--workers", type=int, default=DEFAULTS.workers, help="dataloader workers (Ultralytics uses 0 on CPU)"
    )
    parser.add_argument(
        "--max-det", type=int, default=DEFAULTS.max_det, help="detections per image at evaluation (1000 on VisDrone)"
    )
    parser.add_argument(
        "--latency-runs", type=int, default=DEFAULTS.latency_runs, help="timed batch-1 forward passes (median reported)"
    )
    parser.add_argument(
        "--latency-warmup", type=int, default=DEFAULTS.latency_warmup, help="untimed forward passes before timing"
    )
    parser.add_argument(
        "--deploy-runtime",
        choices=DEPLOY_RUNTIMES,
        default=DEFAULTS.deploy_runtime,
        help="deployed latency: each best.pt exported to ONNX (as `yolo export format=onnx simplify=True`) and run "
        "at batch 1 on the CPU in this runtime (openvino: the 'openvino' extra); none skips it",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="train in this process, not one subprocess per run (faster start; the CPU peak RSS is then "
        "the whole process's high-water mark)",
    )


def until_terminated(name: str, call: Callable[[], Any]) -> int:
    """Run a comparison; on SIGTERM/SIGHUP (its worker already stopped) print one line and return 128 + the signal."""
    try:
        call()
    except Terminated as e:
        print(f"drconv-yolo {name}: {e}", file=sys.stderr)
        return e.exit_code
    return 0


def run_options(args: argparse.Namespace, name: str, argv: List[str]) -> dict[str, Any]:
    """The :class:`CompareSettings` fields of :func:`add_run_options`' options, plus the command line as typed."""
    return {**{key: getattr(args, key) for key in RUN_FIELDS}, "command": " ".join(["drconv-yolo", name, *argv])}


def build_parser() -> argparse.ArgumentParser:
    """The ``compare`` argument parser (``key=value`` tokens that name no option are Ultralytics train overrides)."""
    p = argparse.ArgumentParser(
        prog="drconv-yolo compare", usage=USAGE, description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter
    )
    p.add_argument(
        "--data",
        required=True,
        help="any Ultralytics detection data YAML (folders or .txt lists, boxes or polygons; no JSON needed)",
    )
    p.add_argument(
        "--models",
        nargs="+",
        required=True,
        metavar="MODEL",
        help="model YAMLs or .pt weights; the first is the baseline, arm names are the file stems",
    )
    p.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=list(DEFAULTS.seeds),
        help="training seeds, each arm trains once per seed",
    )
    p.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="training epochs")
    p.add_argument("--imgsz", type=int, default=DEFAULTS.imgsz, help="train, evaluation and latency image size")
    p.add_argument("--batch", type=int, default=DEFAULTS.batch, help="train and evaluation batch size")
    p.add_argument("--out", default=DEFAULTS.out, help="output folder (reused runs are found here)")
    p.add_argument("--split", default=DEFAULTS.split, help="split evaluated after training")
    p.add_argument(
        "--gt",
        help="ground-truth JSON (default <dataset>/annotations/instances_<split>.json if prepared, else built from "
        "the split's YOLO labels into OUT/ground_truth)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="run the pre-flight (data, ground truth, every arm built and stepped once, output folder) and print "
        "the plan: what is reused, what would train, a time estimate; train nothing",
    )
    add_run_options(p)
    add_backend_options(p)
    return p


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """Where the runs run: ``--backend`` and its resources (docs/clusters.md)."""
    from ..experiment.backends import BACKENDS

    g = parser.add_argument_group("where the runs run (docs/clusters.md)")
    g.add_argument(
        "--backend",
        choices=BACKENDS,
        default=DEFAULTS.backend,
        help="local: one run after another on this machine, on --device; ray: one Ray task per run, as many at once "
        "as the resources allow, on this machine or the cluster at --ray-address (the 'ray' extra); slurm: one SLURM "
        "job array, a task per run (the 'slurm' extra)",
    )
    g.add_argument(
        "--gpus-per-run",
        type=float,
        default=DEFAULTS.gpus_per_run,
        help="GPUs each run is given (ray, slurm); more than 1 trains that run with DDP; default 1 where the cluster "
        "has GPUs (slurm: the partition's nodes), else 0",
    )
    g.add_argument(
        "--cpus-per-run", type=float, default=DEFAULTS.cpus_per_run, help="CPUs each run is given (ray, slurm)"
    )
    g.add_argument(
        "--ray-address",
        default=DEFAULTS.ray_address,
        help="the Ray cluster to run on (host:port or auto); default $RAY_ADDRESS, else Ray is started on this "
        "machine for the comparison",
    )
    g.add_argument(
        "--retries",
        type=int,
        default=DEFAULTS.retries,
        help="times a run whose node or worker was lost is run again from a clean folder (never a run that failed "
        "by itself)",
    )
    g.add_argument(
        "--slurm-partition",
        default=DEFAULTS.slurm_partition,
        help="slurm: the partition the job array goes to (default: the cluster's default partition)",
    )
    g.add_argument(
        "--slurm-time",
        default=DEFAULTS.slurm_time,
        help="slurm: each run's time limit, minutes (90) or [D-]HH:MM:SS; a run that reaches it is requeued and "
        "resumes from its last.pt (default: the partition's limit)",
    )
    g.add_argument("--slurm-account", default=DEFAULTS.slurm_account, help="slurm: the account the array is charged to")
    g.add_argument(
        "--slurm-max-parallel",
        type=int,
        default=DEFAULTS.slurm_max_parallel,
        help="slurm: at most this many runs at once (the array's %%N cap; default every run at once)",
    )


def run(argv: List[str]) -> int:
    """``drconv-yolo compare ...``; returns the exit code (user errors propagate to the dispatcher)."""
    args, extra = parse(build_parser(), argv, allow_extra=True)
    fields = {key: getattr(args, key) for key in (*COMPARE_FIELDS, *BACKEND_FIELDS)}
    settings = CompareSettings(**fields, overrides=parse_overrides(extra), **run_options(args, "compare", argv))
    return until_terminated("compare", lambda: compare(settings))
