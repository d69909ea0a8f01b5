"""One run of a comparison: train, evaluate ``best.pt``, measure, and write ``run.json`` last.

By default each run has a fresh Python process of its own (``python -m drconv_yolo.cli _worker SPEC.json``, see
:func:`worker_command`), so the process's peak RSS belongs to that run; ``--in-process`` calls :func:`run_one` in the
comparison's process instead.

What is measured:

* training throughput: images per second of the training loop (``on_train_epoch_start`` .. ``on_train_epoch_end``,
  per-epoch validation excluded); under DDP (``--device 0,1``), where training runs in Ultralytics' worker processes,
  from ``results.csv``'s elapsed time instead (validation included), and the peak memory is not measured.
* peak memory: ``torch.cuda.max_memory_allocated`` during training on a GPU, else the process's peak RSS
  (``resource.getrusage``, dataloader worker processes not included).
* latency: the fused ``best.pt`` model, one ``(1, 3, imgsz, imgsz)`` input, fp32, untimed warm-up runs, then the
  median of the timed forward passes, on the first training device.
* parameters of the trained (unfused) model; GFLOPs of the fused model at the training image size (Ultralytics'
  thop counter, which counts the DRConv region-aware conv, its guide conv and filter generator); where it cannot
  count (thop missing, or it returns 0) the figure is None and the record's ``notes.GFLOPs`` says why, never 0.
* the worker watches its comparison and ends with it (:mod:`~drconv_yolo.experiment.process`).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import torch

from ..deploy import RuntimeMissing, deployed_latency
from ..diagnostics import STATS_FILE, read_stats
from ..io import atomic_write_json
from ..measure import cuda_peak_mb, forward_latency, gflops, peak_rss_mb, reset_cuda_peak
from .plan import RUN_FILE, RunSpec

__all__ = ["flat_metrics", "model_stats", "read_results_csv", "run_one", "run_spec_file", "worker_command"]

SPEC_FILE = "spec.json"  # what the worker is asked to do (written before it starts)
FLOPS_REFERENCE_IMGSZ = 640  # GFLOPs are also reported at this size, comparable with published tables
LATENCY_INPUT_SEED = 0  # the latency input is the same random image for every run
RECORD_INDENT = 1
EVAL_KEYS = ("ultralytics", "pycocotools", "max_det", "warnings", "report")  # of the evaluation report, kept


def worker_command(spec_path: Path, n_train: int) -> list[str]:
    """The command that runs one spec in a fresh process (served by ``drconv_yolo.cli.worker``), watching this one."""
    return [
        *(sys.executable, "-m", "drconv_yolo.cli", "_worker", str(spec_path)),
        *("--n-train", str(n_train), "--parent-pid", str(os.getpid())),
    ]


def write_spec(spec: RunSpec) -> Path:
    """Write ``spec.json`` into the run folder for the worker; returns its path."""
    return atomic_write_json(Path(spec.run_dir) / SPEC_FILE, asdict(spec), indent=RECORD_INDENT)


def model_stats(weights: str | Path, imgsz: int) -> tuple[Any, dict[str, Any]]:
    """Load trained weights; count parameters (unfused) and GFLOPs (fused, at ``imgsz``).

    Args:
        weights: ``best.pt``.
        imgsz: Image size for the FLOP count.

    Returns:
        ``(fused eval-mode model, {"params", "GFLOPs", "GFLOPs_640", "GFLOPs_note", "drconv_layers"})``; a GFLOPs
        figure the counter could not give is None, ``GFLOPs_note`` says why (None when counted).
    """
    from ultralytics import YOLO

    from ..modules import DRConv

    model = YOLO(str(weights)).model.float().eval()
    params = sum(p.numel() for p in model.parameters())
    n_drconv = sum(isinstance(m, DRConv) for m in model.modules())
    model = model.fuse(verbose=False) if hasattr(model, "fuse") else model
    at_imgsz, note = gflops(model, imgsz)
    stats = {
        "params": int(params),
        "GFLOPs": at_imgsz,
        f"GFLOPs_{FLOPS_REFERENCE_IMGSZ}": gflops(model, FLOPS_REFERENCE_IMGSZ)[0],
        "GFLOPs_note": note,
        "drconv_layers": int(n_drconv),
    }
    return model, stats


def read_results_csv(path: str | Path) -> list[dict[str, float]]:
    """Ultralytics' per-epoch ``results.csv`` as a list of ``{column: float}`` (column names stripped)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out = {}
            for k, v in row.items():
                try:
                    out[k.strip()] = float(v)
                except (TypeError, ValueError):
                    continue
            rows.append(out)
    return rows


class _TrainTimer:
    """Ultralytics callbacks: time the training loop of each epoch and count its images."""

    def __init__(self):
        self.seconds, self.images, self.epochs, self._t0 = 0.0, 0, 0, None

    def start(self, trainer) -> None:
        self._t0 = time.perf_counter()

    def end(self, trainer) -> None:
        if self._t0 is not None:
            self.seconds += time.perf_counter() - self._t0
            self.images += len(trainer.train_loader.dataset)
            self.epochs += 1
            self._t0 = None


def _cuda_device(device_single: str, ddp: bool) -> torch.device | None:
    """The CUDA device whose peak allocation is measured: single-GPU training only, else None."""
    if ddp or device_single == "cpu" or not torch.cuda.is_available():
        return None
    from ultralytics.utils.torch_utils import select_device

    dev = select_device(device_single, verbose=False)
    return dev if dev.type == "cuda" else None


def _memory(dev: torch.device | None, ddp: bool, in_process: bool) -> dict[str, Any]:
    """The training's peak memory in MiB and how it was measured."""
    if dev is not None:
        return {"peak_mem_MB": cuda_peak_mb(dev), "memory_basis": "torch.cuda.max_memory_allocated during training"}
    if ddp:
        return {
            "peak_mem_MB": None,
            "memory_basis": "not measured under DDP (training runs in Ultralytics' worker processes)",
        }
    basis = (
        "peak RSS of the whole compare process so far (--in-process)"
        if in_process
        else "peak RSS of the run's own process (dataloader workers excluded)"
    )
    return {"peak_mem_MB": peak_rss_mb(), "memory_basis": basis}


def _throughput(timer: _TrainTimer, epochs: list[dict[str, float]]) -> dict[str, Any]:
    """Training images per second from the timed loop; None (computed later from results.csv) under DDP."""
    if timer.epochs and timer.seconds > 0:
        return {
            "train_img_s": timer.images / timer.seconds,
            "train_loop_s": timer.seconds,
            "throughput_basis": "training loop (per-epoch validation excluded)",
        }
    if epochs and epochs[-1].get("time"):
        return {"train_img_s": None, "throughput_basis": "results.csv elapsed time (validation included)"}
    return {}


def _train(spec: RunSpec, device_single: str, in_process: bool) -> dict[str, Any]:
    """Train one run; return timing, memory and the per-epoch log."""
    from ultralytics import YOLO

    run_dir = Path(spec.run_dir)
    ddp = len(str(spec.train.get("device", "")).split(",")) > 1
    yolo = YOLO(spec.model)
    timer = _TrainTimer()
    yolo.add_callback("on_train_epoch_start", timer.start)
    yolo.add_callback("on_train_epoch_end", timer.end)
    dev = _cuda_device(device_single, ddp)
    if dev is not None:
        reset_cuda_peak(dev)
    t0 = time.perf_counter()
    yolo.train(**spec.train, project=str(run_dir.parent), name=run_dir.name, exist_ok=True)
    train_s = time.perf_counter() - t0
    epochs = read_results_csv(run_dir / "results.csv")
    return {
        "train_s": train_s,
        "epochs_completed": len(epochs),
        "per_epoch": epochs,
        **_throughput(timer, epochs),
        **_memory(dev, ddp, in_process),
    }


def _weights(run_dir: Path) -> Path:
    """``best.pt`` of a finished training, else ``last.pt``."""
    for name in ("best.pt", "last.pt"):
        if (run_dir / "weights" / name).is_file():
            return run_dir / "weights" / name
    raise RuntimeError(f"training finished without weights in {run_dir / 'weights'}")


def flat_metrics(
    train: Mapping[str, Any],
    report: Mapping[str, Any],
    stats: Mapping[str, Any],
    latency: Mapping[str, Any],
    wall_s: float,
    n_train: int | None,
) -> dict[str, Any]:
    """The run's scalar metrics under the keys :mod:`drconv_yolo.experiment.report` tabulates.

    Args:
        train: :func:`_train` output.
        report: :func:`drconv_yolo.evaluation.evaluate` report.
        stats: :func:`model_stats` numbers.
        latency: :func:`drconv_yolo.measure.forward_latency` numbers.
        wall_s: Seconds for the whole run (train, evaluation, measurements).
        n_train: Training images (for the DDP throughput fallback).

    Returns:
        Flat ``{metric key: float | None}``.
    """
    coco = report["pycocotools"]
    max_det = coco["max_dets"][-1]
    throughput = train.get("train_img_s")
    if throughput is None and n_train and train.get("per_epoch") and train["per_epoch"][-1].get("time"):
        throughput = n_train * train["epochs_completed"] / train["per_epoch"][-1]["time"]
    return {
        "mAP50": report["ultralytics"]["mAP50"],
        "mAP50-95": report["ultralytics"]["mAP50-95"],
        **{k: coco.get(k) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")},
        "AR": coco.get(f"AR@{max_det}"),
        "params": stats["params"],
        "GFLOPs": stats["GFLOPs"],
        "latency_ms": latency["median_ms"],
        "train_img_s": throughput,
        "train_s": train["train_s"],
        "wall_s": wall_s,
        "peak_mem_MB": train.get("peak_mem_MB"),
    }


def _evaluate(spec: RunSpec, weights: Path) -> dict[str, Any]:
    """Evaluate the trained weights on the run's dataset (report beside the run, in ``eval/``)."""
    from ..evaluation import evaluate

    print(f"{spec.label}: evaluating {weights} ...", flush=True)
    return evaluate(
        model=str(weights),
        data=spec.train["data"],
        project=spec.run_dir,
        name="eval",
        exist_ok=True,
        imgsz=spec.train["imgsz"],
        device=spec.measure["device"],
        workers=spec.train.get("workers", 0),
        verbose=False,
        **spec.eval,
    )


def _latency(spec: RunSpec, model: torch.nn.Module) -> dict[str, Any]:
    """Batch-1 latency of the fused model at the training image size on the run's single device."""
    from ultralytics.utils.torch_utils import select_device

    imgsz, runs, warmup = spec.train["imgsz"], spec.measure["latency_runs"], spec.measure["latency_warmup"]
    print(f"{spec.label}: measuring latency ({runs} runs at {imgsz} px, batch 1) ...", flush=True)
    x = torch.rand((1, 3, imgsz, imgsz), generator=torch.Generator().manual_seed(LATENCY_INPUT_SEED))
    return forward_latency(model, x, select_device(spec.measure["device"], verbose=False), runs, warmup)


def _deployed(spec: RunSpec, weights: Path) -> dict[str, Any]:
    """Batch-1 latency of ``best.pt`` exported to ONNX and run in ``measure.deploy_runtime`` on the CPU, or
    ``{"note": why not}`` (skipped, the runtime missing, the export failing)."""
    runtime = spec.measure.get("deploy_runtime", "onnxruntime")
    if runtime == "none":
        return {"note": "not measured (--deploy-runtime none)"}
    imgsz, runs, warmup = spec.train["imgsz"], spec.measure["latency_runs"], spec.measure["latency_warmup"]
    print(f"{spec.label}: measuring deployed latency (ONNX in {runtime}, {runs} runs at {imgsz} px) ...", flush=True)
    try:
        return deployed_latency(weights, imgsz, runs, warmup, runtime)
    except RuntimeMissing as e:
        return {"note": f"not measured ({e})"}
    except Exception as e:  # an export or runtime failure is a finding of the run, not its end
        return {"note": f"not measured (export to ONNX or {runtime} failed: {type(e).__name__}: {e})"[:500]}


def run_one(spec: RunSpec, n_train: int | None = None, in_process: bool = False) -> dict[str, Any]:
    """Train, evaluate and measure one run; write its ``run.json`` last and return the record.

    Args:
        spec: The run.
        n_train: Training images (throughput fallback under DDP).
        in_process: Whether this runs inside the compare process (memory basis note).

    Returns:
        The record: ``spec``, ``metrics`` (flat), ``per_epoch``, ``eval`` (the evaluation report), ``stats``,
        ``latency``, ``notes``, ``finished``.
    """
    t0 = time.perf_counter()
    train = _train(spec, spec.measure["device"], in_process)
    weights = _weights(Path(spec.run_dir))
    report = _evaluate(spec, weights)
    model, stats = model_stats(weights, spec.train["imgsz"])
    latency = _latency(spec, model)
    deployed = _deployed(spec, weights)
    record = {
        "spec": asdict(spec),
        "metrics": {
            **flat_metrics(train, report, stats, latency, time.perf_counter() - t0, n_train),
            "deployed_latency_ms": deployed.get("median_ms"),
        },
        "per_epoch": train["per_epoch"],
        "epochs_completed": train["epochs_completed"],
        "weights": str(weights),
        "stats": stats,
        "latency": latency,
        "deployed_latency": deployed,
        "torch_threads": torch.get_num_threads(),
        "notes": {
            "memory": train.get("memory_basis"),
            "throughput": train.get("throughput_basis"),
            "GFLOPs": stats["GFLOPs_note"],
            "deployed_latency_ms": deployed.get("note"),
        },
        "eval": {k: report[k] for k in EVAL_KEYS if k in report},
        "regions": read_stats(Path(spec.run_dir) / STATS_FILE),  # per-epoch region statistics (DRConv arms)
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(Path(spec.run_dir) / RUN_FILE, record, indent=RECORD_INDENT)
    return record


def run_spec_file(spec_path: str | Path, n_train: int | None = None) -> dict[str, Any]:
    """Run the spec a comparison wrote (:func:`write_spec`) in this process, as its own worker; returns the record."""
    spec = RunSpec(**json.loads(Path(spec_path).read_text(encoding="utf-8")))
    return run_one(spec, n_train, in_process=False)
