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

Where a run ran: the backend that dispatched it (:mod:`~drconv_yolo.experiment.backends`) hands the worker a
*placement* (``DRCONV_YOLO_PLACEMENT``, JSON: backend, node, host, the GPUs and CPUs it was given, the attempt); the
worker trains and measures on the placement's ``device`` (the GPUs the backend gave it, not the plan's relative
``device``) with as many torch threads as the CPUs it was given (:func:`use_cpus`), and records the placement, with
``CUDA_VISIBLE_DEVICES`` as it found it and its start and end times, in ``run.json``. The spec inside ``run.json``
keeps the plan's device, so a rerun on other GPUs reuses the run.

Resuming (the SLURM backend's requeued tasks): ``launch(..., resume=True)`` keeps the run folder when its training
stopped part-way (``weights/last.pt`` there, fewer rows in ``results.csv`` than epochs, no ``run.json``) and records
``resumed_from`` (that ``last.pt``) in the placement; the worker then continues Ultralytics' training from it
(``YOLO(last.pt).train(resume=True)``, the device and dataloader workers set again for where it runs now) instead of
starting over. Anything else (no ``last.pt``, training already finished) starts from a clean folder as usual. The
local and Ray backends never resume: their interrupted or lost runs train again from scratch.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import torch

from ..deploy import RuntimeMissing, deployed_latency
from ..diagnostics import STATS_FILE, read_stats
from ..io import atomic_write_json
from ..measure import cuda_peak_mb, forward_latency, gflops, peak_rss_mb, reset_cuda_peak
from .plan import RUN_FILE, RunSpec, first_device
from .process import run_worker
from .settings import CompareError

__all__ = [
    "PLACEMENT_ENV",
    "PLACEMENT_FILE",
    "flat_metrics",
    "launch",
    "model_stats",
    "read_results_csv",
    "resumable",
    "run_one",
    "run_spec_file",
    "worker_command",
]

SPEC_FILE = "spec.json"  # what the worker is asked to do (written before it starts)
PLACEMENT_ENV = "DRCONV_YOLO_PLACEMENT"  # JSON: where the backend placed the run (see the module docstring)
PLACEMENT_FILE = "placement.json"  # the placement, written as the run starts (progress reads it)
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


def now_utc() -> str:
    """The time now, ISO 8601 in UTC to the second (the record's ``finished`` and the placement's times)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def placement_here(backend: str, device: str, **fields: Any) -> dict[str, Any]:
    """A placement on this machine: ``{"backend", "host", "device", **fields}``."""
    return {"backend": backend, "host": socket.gethostname(), "device": str(device), **fields}


def use_cpus(cpus: float) -> int:
    """Train and measure with as many threads as the CPUs a backend gave this run (at least one); returns it.

    Ultralytics' ``select_device`` resets torch's threads to ``min(8, cores - 1)`` of the whole machine: with several
    runs on one machine that oversubscribes its cores, so its figure is set to the run's share too.
    """
    from ultralytics.utils import torch_utils

    n = max(1, int(cpus))
    torch_utils.NUM_THREADS = n
    torch.set_num_threads(n)
    return n


def clean_folder(spec: RunSpec) -> Path:
    """The run's folder, emptied (whatever an interrupted or lost attempt left) and created; returns it."""
    run_dir = Path(spec.run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    return run_dir


def resumable(spec: RunSpec) -> Path | None:
    """The run's ``weights/last.pt`` when its training stopped part-way and can go on from it, else None.

    Part-way: no ``run.json``, and fewer rows in Ultralytics' ``results.csv`` than the run's epochs (a finished
    training's ``last.pt`` has no optimizer state left to resume from).
    """
    run_dir = Path(spec.run_dir)
    last = run_dir / "weights" / "last.pt"
    if not last.is_file() or (run_dir / RUN_FILE).is_file():
        return None
    return last if len(read_results_csv(run_dir / "results.csv")) < int(spec.train["epochs"]) else None


def launch(
    spec: RunSpec,
    n_train: int | None,
    placement: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    log: str | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run one spec from a clean folder in a fresh worker process placed as ``placement`` says; return its record.

    The run folder is deleted first (an interrupted or lost attempt leaves nothing behind), the placement is written
    to ``placement.json`` and handed to the worker (:data:`PLACEMENT_ENV`); the worker runs in a process group of
    its own that is stopped if this call is interrupted (:func:`~drconv_yolo.experiment.process.run_worker`). With
    ``resume``, a training that stopped part-way is continued from its ``last.pt`` instead (see the module
    docstring).

    Args:
        spec: The run.
        n_train: Training images (throughput fallback under DDP).
        placement: Where it runs (:func:`placement_here`, or a backend's): ``device`` is what it trains on.
        env: Further environment variables for the worker (e.g. ``CUDA_VISIBLE_DEVICES``).
        log: Name of a file in the run folder that takes the worker's output (default: this process's output); a
            failure then quotes its last lines.
        resume: Continue a training that stopped part-way (:func:`resumable`) rather than start over.

    Returns:
        The record the worker wrote (``run.json``).

    Raises:
        CompareError: If the worker failed or wrote no record (its exit code named).
    """
    last = resumable(spec) if resume else None
    run_dir = Path(spec.run_dir) if last is not None else clean_folder(spec)
    placement = {**placement, "started": now_utc(), **({"resumed_from": str(last)} if last is not None else {})}
    atomic_write_json(run_dir / PLACEMENT_FILE, placement, indent=RECORD_INDENT)
    child_env = {**os.environ, **dict(env or {}), PLACEMENT_ENV: json.dumps(placement)}
    log_path = run_dir / log if log else None
    rc = run_worker(worker_command(write_spec(spec), n_train or 0), env=child_env, log=log_path)
    record = run_dir / RUN_FILE
    if rc != 0 or not record.is_file():
        again = f"The partial folder {spec.run_dir} is trained again from scratch on the next invocation"
        if log_path is None:
            raise CompareError(f"{spec.label} failed (exit code {rc}); see the output above. {again}")
        tail = _tail(log_path)
        raise CompareError(f"{spec.label} failed (exit code {rc}). {again}. Its output ({log_path}) ends:\n{tail}")
    return json.loads(record.read_text(encoding="utf-8"))


def _tail(path: Path, lines: int = 15) -> str:
    """The last lines of a worker's log, indented."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").rstrip().splitlines()[-lines:]
    except OSError:
        return "  (no output)"
    return "\n".join(f"  {line}" for line in text)


def placed(spec: RunSpec, placement: Mapping[str, Any]) -> RunSpec:
    """The spec as it runs: trained and measured on the placement's ``device`` when it names one."""
    device = placement.get("device")
    if not device:
        return spec
    return replace(
        spec, train={**spec.train, "device": str(device)}, measure={**spec.measure, "device": first_device(device)}
    )


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


def _train(spec: RunSpec, device_single: str, in_process: bool, resume_from: str | None = None) -> dict[str, Any]:
    """Train one run (or continue its training from ``resume_from``, a ``last.pt``); return timing, memory and the
    per-epoch log (throughput and memory then cover the resumed part only)."""
    from ultralytics import YOLO

    run_dir = Path(spec.run_dir)
    ddp = len(str(spec.train.get("device", "")).split(",")) > 1
    yolo = YOLO(resume_from or spec.model)
    timer = _TrainTimer()
    yolo.add_callback("on_train_epoch_start", timer.start)
    yolo.add_callback("on_train_epoch_end", timer.end)
    dev = _cuda_device(device_single, ddp)
    if dev is not None:
        reset_cuda_peak(dev)
    t0 = time.perf_counter()
    if resume_from:  # the checkpoint's own arguments, on the device and workers of where it runs now
        yolo.train(resume=True, data=spec.train["data"], device=spec.train["device"], workers=spec.train["workers"])
    else:
        yolo.train(**spec.train, project=str(run_dir.parent), name=run_dir.name, exist_ok=True)
    train_s = time.perf_counter() - t0
    epochs = read_results_csv(run_dir / "results.csv")
    if resume_from:  # the epoch training stopped in is logged again when resumed: keep its last row
        epochs = list({row.get("epoch", i): row for i, row in enumerate(epochs)}.values())
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


def run_one(
    spec: RunSpec, n_train: int | None = None, in_process: bool = False, placement: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Train, evaluate and measure one run; write its ``run.json`` last and return the record.

    Args:
        spec: The run.
        n_train: Training images (throughput fallback under DDP).
        in_process: Whether this runs inside the compare process (memory basis note).
        placement: Where it runs (see the module docstring); default this machine, the spec's device.

    Returns:
        The record: ``spec`` (as planned), ``metrics`` (flat), ``per_epoch``, ``eval`` (the evaluation report),
        ``stats``, ``latency``, ``notes``, ``placement``, ``finished``.
    """
    t0 = time.perf_counter()
    planned = spec
    placement = {
        **(placement or placement_here("local", spec.train.get("device", "cpu"), started=now_utc())),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "pid": os.getpid(),
    }
    spec = placed(spec, placement)
    if placement.get("cpus") and not in_process:
        use_cpus(placement["cpus"])
    train = _train(spec, spec.measure["device"], in_process, placement.get("resumed_from"))
    weights = _weights(Path(spec.run_dir))
    report = _evaluate(spec, weights)
    model, stats = model_stats(weights, spec.train["imgsz"])
    latency = _latency(spec, model)
    deployed = _deployed(spec, weights)
    record = {
        "spec": asdict(planned),
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
        "finished": now_utc(),
    }
    record["placement"] = {**placement, "finished": record["finished"]}
    atomic_write_json(Path(spec.run_dir) / RUN_FILE, record, indent=RECORD_INDENT)
    return record


def run_spec_file(spec_path: str | Path, n_train: int | None = None) -> dict[str, Any]:
    """Run the spec a comparison wrote (:func:`write_spec`) in this process, as its own worker, placed as
    :data:`PLACEMENT_ENV` says; returns the record."""
    spec = RunSpec(**json.loads(Path(spec_path).read_text(encoding="utf-8")))
    placement = json.loads(os.environ.get(PLACEMENT_ENV) or "null")
    return run_one(spec, n_train, in_process=False, placement=placement)
