"""The baseline comparison: every model x seed trained with one recipe, evaluated, measured and reported.

``drconv-yolo compare --data D --models BASE.yaml DRCONV.yaml --seeds 0 1 2 --epochs E --imgsz S [key=value ...]``
trains each model (an *arm*; the first one is the baseline) once per seed with identical Ultralytics arguments (only
``model`` differs; ``seed`` differs between seeds, not between arms), evaluates ``best.pt`` with
:func:`drconv_yolo.evaluation.evaluate` (Ultralytics mAP50/mAP50-95 and pycocotools AP/AR on the prepared ground
truth), measures parameters, GFLOPs, batch-1 latency, training throughput, wall time and peak memory, and writes a
report (:mod:`drconv_yolo.report`). ``drconv-yolo demo`` (:func:`demo_main`) runs it on the built-in synthetic set.

Output folder::

    OUT/report.md results.csv results.json map_per_epoch.png deltas.png   (each written to a temp name, renamed)
    OUT/runs/<arm>/seed<k>/           Ultralytics' run folder: weights/best.pt, results.csv (per epoch), args.yaml
    OUT/runs/<arm>/seed<k>/eval/      the evaluation: coco_eval.json, predictions
    OUT/runs/<arm>/seed<k>/run.json   the run's record, written last: its completion marker

Resuming: a run whose ``run.json`` exists (with the same settings) is skipped; a run folder without it was
interrupted and is deleted and trained again from scratch. A folder holding runs made with other settings is refused.

What is measured, per run:

* training runs in a fresh Python subprocess (``python -m drconv_yolo.compare --worker SPEC``), so the process's peak
  RSS (``resource.getrusage``, dataloader worker processes not included) belongs to that run; on a GPU the peak is
  ``torch.cuda.max_memory_allocated`` during training. ``--in-process`` trains in this process instead (faster to
  start; on CPU the peak RSS is then the whole process's high-water mark so far, not the run's own).
* training throughput: images per second of the training loop (``on_train_epoch_start`` .. ``on_train_epoch_end``,
  per-epoch validation excluded); under DDP (``--device 0,1``), where training runs in Ultralytics' worker processes,
  from ``results.csv``'s elapsed time instead (validation included), and the peak memory is not measured.
* latency: the fused ``best.pt`` model, one ``(1, 3, imgsz, imgsz)`` input, fp32, ``--latency-warmup`` untimed runs,
  then the median of ``--latency-runs`` timed forward passes, on the first training device, in the run's process.
* parameters of the trained (unfused) model; GFLOPs of the fused model at the training image size (Ultralytics'
  thop counter, which counts the DRConv region-aware conv, its guide conv and filter generator).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from .cli import HelpFormatter

__all__ = [
    "CompareError",
    "RunSpec",
    "arm_names",
    "build_parser",
    "compare",
    "demo",
    "demo_main",
    "environment",
    "main",
    "parse_overrides",
]

RUN_FILE = "run.json"  # a run's record, written last: its completion marker
SPEC_FILE = "spec.json"  # what the worker is asked to do (written before it starts)
DEFAULT_OUT = "runs/compare"
# Set by the comparison itself (per run or per arm): not accepted as key=value overrides.
RESERVED_KEYS = {
    "model": "give the models with --models",
    "data": "give the dataset with --data",
    "seed": "give the seeds with --seeds",
    "project": "the run folders live under --out",
    "name": "run folders are named <arm>/seed<k>",
    "exist_ok": "set by compare",
    "resume": "compare resumes by itself: run it again with the same --out",
    "mode": "compare trains",
    "task": "the task comes from the model",
}
# key=value overrides that are the same as an option.
OPTION_KEYS = ("epochs", "imgsz", "batch", "device", "workers")


class CompareError(Exception):
    """A problem with the user's input (missing file, bad argument, conflicting earlier runs): exit status 2."""


# ----------------------------------------------------------------------------------------------------------------------
# Inputs: models, dataset, overrides
# ----------------------------------------------------------------------------------------------------------------------


def arm_names(models: Sequence[str]) -> list[str]:
    """Unique arm names from model file stems (``yolov8n.yaml`` -> ``yolov8n``).

    Colliding stems (``a/weights/best.pt``, ``b/weights/best.pt``) get the nearest parent folder that is not
    ``weights`` as a prefix (``a-best``, ``b-best``); anything still colliding gets ``-2``, ``-3``, ...

    Args:
        models: Model YAML or weights paths, in order.

    Returns:
        One name per model, in the same order.
    """
    paths = [Path(str(m)) for m in models]
    stems = [p.stem for p in paths]
    names = list(stems)
    for i, p in enumerate(paths):
        if stems.count(p.stem) > 1:
            parents = [q.name for q in p.parents if q.name and q.name != "weights"]
            names[i] = f"{parents[0]}-{p.stem}" if parents else p.stem
    out: list[str] = []
    for name in names:
        unique, k = name, 2
        while unique in out:
            unique, k = f"{name}-{k}", k + 1
        out.append(unique)
    return out


def check_model(model: str) -> str:
    """Check that a model YAML (local, bundled or Ultralytics') or a weights file exists; return what to train from.

    Args:
        model: ``.yaml``/``.yml`` config (a bare name such as ``yolov8n-drconv.yaml`` is looked up like Ultralytics
            does, bundled DRConv configs included) or a ``.pt`` weights file (never downloaded).

    Returns:
        The absolute path for a local file, else the name as given (Ultralytics resolves it again).

    Raises:
        CompareError: If the file cannot be found or has another suffix.
    """
    path = Path(model).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if path.is_file():
            return str(path.resolve())
        from ultralytics.nn.tasks import yaml_model_load

        from drconv_yolo.plugin import register

        register()
        try:
            yaml_model_load(model)
        except FileNotFoundError:
            raise CompareError(
                f"model YAML not found: {model} (neither a file nor a config bundled with drconv-yolo or Ultralytics)"
            ) from None
        return model
    if path.suffix == ".pt":
        if not path.is_file():
            raise CompareError(f"model weights not found: {model} (compare never downloads weights)")
        return str(path.resolve())
    raise CompareError(f"model {model!r}: expected a model YAML (.yaml) or a weights file (.pt)")


@dataclass
class DataInfo:
    """A checked dataset: its YAML, ground-truth JSON and image counts."""

    yaml: str
    gt_json: str
    split: str
    n_train: int
    n_val: int
    names: list = field(default_factory=list)


def _count_images(source: Any, root: Path) -> int:
    """Images in an Ultralytics split entry: a folder, a ``.txt`` list, a single image, or a list of those."""
    from ultralytics.data.utils import IMG_FORMATS

    if isinstance(source, (list, tuple)):
        return sum(_count_images(s, root) for s in source)
    p = Path(str(source))
    p = p if p.is_absolute() else root / p
    if p.is_dir():
        return sum(1 for f in p.rglob("*") if f.suffix[1:].lower() in IMG_FORMATS)
    if p.suffix == ".txt" and p.is_file():
        return sum(1 for line in p.read_text(encoding="utf-8").splitlines() if line.strip())
    return int(p.is_file())


def check_data(data: str, split: str = "val", gt: str | None = None) -> DataInfo:
    """Check a detection dataset YAML and its ground-truth JSON without downloading anything.

    Args:
        data: Dataset YAML path.
        split: Split evaluated after training.
        gt: Ground-truth JSON; default ``<dataset path>/annotations/instances_<split>.json``.

    Returns:
        The checked dataset.

    Raises:
        CompareError: If the YAML, its images or the ground-truth JSON are missing.
    """
    from ultralytics.data.utils import check_det_dataset

    path = Path(data).expanduser()
    if not path.is_file():
        raise CompareError(f"dataset YAML not found: {data}")
    try:
        info = check_det_dataset(str(path.resolve()), autodownload=False)
    except (FileNotFoundError, SyntaxError, KeyError, ValueError) as e:
        raise CompareError(f"dataset {data}: {e}") from None
    if not info.get(split):
        raise CompareError(f"dataset {data} has no '{split}:' split to evaluate")
    root = Path(info["path"])
    gt_path = Path(gt).expanduser().resolve() if gt else root / "annotations" / f"instances_{split}.json"
    if not gt_path.is_file():
        raise CompareError(
            f"ground-truth JSON not found: {gt_path} (written by 'drconv-yolo prepare ...' next to the dataset; "
            "or pass --gt PATH)"
        )
    names = info.get("names", {})
    names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    return DataInfo(
        str(path.resolve()),
        str(gt_path),
        split,
        _count_images(info["train"], root),
        _count_images(info[split], root),
        names,
    )


def parse_overrides(tokens: Sequence[str]) -> dict[str, Any]:
    """Parse Ultralytics ``key=value`` train arguments (values typed like the ``yolo`` CLI does).

    Args:
        tokens: ``["lr0=0.01", "mosaic=0", ...]``.

    Returns:
        ``{key: typed value}``.

    Raises:
        CompareError: For a token without ``=``, an unknown key, or a key compare sets itself.
    """
    from ultralytics.cfg import smart_value
    from ultralytics.utils import DEFAULT_CFG_DICT

    out: dict[str, Any] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            raise CompareError(f"argument {token!r}: expected an Ultralytics train argument as key=value")
        if key in RESERVED_KEYS:
            raise CompareError(f"argument {token!r}: '{key}' cannot be overridden ({RESERVED_KEYS[key]})")
        if key not in DEFAULT_CFG_DICT:
            raise CompareError(f"argument {token!r}: '{key}' is not an Ultralytics train argument")
        out[key] = smart_value(value)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# The plan: one RunSpec per arm x seed
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class RunSpec:
    """Everything one run needs; saved as ``spec.json`` for the worker and inside ``run.json``.

    Attributes:
        index: 1-based position in the plan.
        total: Number of runs in the plan.
        arm: Arm name.
        seed: Training seed.
        model: Model YAML/weights (as resolved by :func:`check_model`).
        run_dir: Absolute run folder.
        train: Ultralytics train arguments (without project/name/exist_ok).
        eval: :func:`drconv_yolo.evaluation.evaluate` arguments.
        measure: ``latency_runs``, ``latency_warmup``, ``device`` (single device for latency).
    """

    index: int
    total: int
    arm: str
    seed: int
    model: str
    run_dir: str
    train: dict
    eval: dict
    measure: dict

    @property
    def label(self) -> str:
        """``[run 3/6] yolov8n-drconv seed 1``."""
        return f"[run {self.index}/{self.total}] {self.arm} seed {self.seed}"

    def settings(self) -> dict[str, Any]:
        """What must match for a finished run to be reused."""
        return {"model": self.model, "train": self.train, "eval": self.eval, "measure": self.measure}


def first_device(device: str) -> str:
    """The single device latency and evaluation use: ``"0,1"`` -> ``"0"``, ``"cuda:1"`` -> ``"cuda:1"``."""
    return str(device).split(",")[0].strip() or "cpu"


def default_device() -> str:
    """``"0"`` when CUDA is available, else ``"cpu"``."""
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def plan_runs(
    models: Sequence[str],
    names: Sequence[str],
    seeds: Sequence[int],
    train: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    measure: Mapping[str, Any],
    out: Path,
) -> list[RunSpec]:
    """One :class:`RunSpec` per seed x arm, seed-major (both arms of seed 0 first: a partial result is paired).

    Args:
        models: Checked models.
        names: Arm names.
        seeds: Seeds.
        train: Train arguments shared by every run (seed added per run).
        evaluation: Evaluation arguments.
        measure: Measurement arguments.
        out: Output folder.

    Returns:
        The runs in execution order.
    """
    total = len(models) * len(seeds)
    runs = []
    for seed in seeds:
        for model, name in zip(models, names):
            run_dir = out / "runs" / name / f"seed{seed}"
            runs.append(
                RunSpec(
                    len(runs) + 1,
                    total,
                    name,
                    int(seed),
                    model,
                    str(run_dir),
                    {**train, "seed": int(seed)},
                    dict(evaluation),
                    dict(measure),
                )
            )
    return runs


def _diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two nested settings dicts."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def run_state(spec: RunSpec) -> str:
    """``"done"`` (``run.json`` with the same settings), ``"partial"`` (folder without it) or ``"new"``.

    Raises:
        CompareError: If ``run.json`` records other settings (another experiment in the same folder).
    """
    run_dir = Path(spec.run_dir)
    record = run_dir / RUN_FILE
    if record.is_file():
        try:
            old = json.loads(record.read_text(encoding="utf-8"))["spec"]
        except (OSError, ValueError, KeyError):
            return "partial"
        old_settings = {k: old.get(k) for k in ("model", "train", "eval", "measure")}
        diff = _diff(old_settings, json.loads(json.dumps(spec.settings())))
        if diff:
            raise CompareError(
                f"{run_dir} holds a finished run made with other settings ({'; '.join(diff[:6])}); "
                "use another --out, or delete that folder to train it again"
            )
        return "done"
    return "partial" if run_dir.exists() else "new"


# ----------------------------------------------------------------------------------------------------------------------
# One run (in the worker process)
# ----------------------------------------------------------------------------------------------------------------------


def _atomic_json(path: Path, obj: Any) -> None:
    """Write JSON through a temporary sibling and ``os.replace``."""
    from drconv_yolo.data._io import atomic_write_json

    atomic_write_json(path, obj, indent=1)


def _sync(device) -> None:
    """Wait for queued kernels on ``device`` (a torch.device)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def measure_latency(model, imgsz: int, device, runs: int = 50, warmup: int = 10) -> dict[str, float]:
    """Batch-1 forward latency of an eval-mode model.

    Args:
        model: ``nn.Module`` (fused, eval mode).
        imgsz: Square input side.
        device: ``torch.device``.
        runs: Timed forward passes.
        warmup: Untimed passes first.

    Returns:
        ``{"median_ms", "min_ms", "p90_ms", "runs", "warmup"}``.
    """
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.rand((1, 3, imgsz, imgsz), generator=gen).to(device)
    model = model.to(device).eval()
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            _sync(device)
            t0 = time.perf_counter()
            model(x)
            _sync(device)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    half = len(times) // 2
    return {
        "median_ms": times[half] if len(times) % 2 else (times[half - 1] + times[half]) / 2,
        "min_ms": times[0],
        "p90_ms": times[min(len(times) - 1, int(math.ceil(0.9 * len(times))) - 1)],
        "runs": runs,
        "warmup": warmup,
    }


def model_stats(weights: str | Path, imgsz: int) -> tuple[Any, dict[str, Any]]:
    """Load trained weights; count parameters (unfused) and GFLOPs (fused, at ``imgsz``).

    Args:
        weights: ``best.pt``.
        imgsz: Image size for the FLOP count.

    Returns:
        ``(fused eval-mode model, {"params", "GFLOPs", "GFLOPs_640", "drconv_layers"})``.
    """
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import get_flops

    from drconv_yolo.modules import DRConv

    model = YOLO(str(weights)).model.float().eval()
    params = sum(p.numel() for p in model.parameters())
    n_drconv = sum(isinstance(m, DRConv) for m in model.modules())
    model = model.fuse(verbose=False) if hasattr(model, "fuse") else model
    stats = {
        "params": int(params),
        "GFLOPs": float(get_flops(model, imgsz)),
        "GFLOPs_640": float(get_flops(model, 640)),
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


def _peak_rss_bytes() -> int | None:
    """This process's peak resident set size (Linux/macOS), else None."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


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


def _train(spec: RunSpec, device_single: str, in_process: bool) -> dict[str, Any]:
    """Train one run; return timing, memory and the per-epoch log."""
    import torch
    from ultralytics import YOLO

    run_dir = Path(spec.run_dir)
    ddp = len(str(spec.train.get("device", "")).split(",")) > 1
    yolo = YOLO(spec.model)
    timer = _TrainTimer()
    yolo.add_callback("on_train_epoch_start", timer.start)
    yolo.add_callback("on_train_epoch_end", timer.end)
    dev = None  # the CUDA device whose peak allocation is measured (single-GPU training only)
    if not ddp and device_single != "cpu" and torch.cuda.is_available():
        from ultralytics.utils.torch_utils import select_device

        dev = select_device(device_single, verbose=False)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        else:
            dev = None
    t0 = time.perf_counter()
    yolo.train(**spec.train, project=str(run_dir.parent), name=run_dir.name, exist_ok=True)
    train_s = time.perf_counter() - t0
    epochs = read_results_csv(run_dir / "results.csv")
    out: dict[str, Any] = {"train_s": train_s, "epochs_completed": len(epochs), "per_epoch": epochs}
    if timer.epochs and timer.seconds > 0:
        out["train_img_s"] = timer.images / timer.seconds
        out["train_loop_s"] = timer.seconds
        out["throughput_basis"] = "training loop (per-epoch validation excluded)"
    elif epochs and epochs[-1].get("time"):
        out["train_img_s"] = None
        out["throughput_basis"] = "results.csv elapsed time (validation included)"
    if dev is not None:
        out["peak_mem_MB"] = torch.cuda.max_memory_allocated(dev) / 2**20
        out["memory_basis"] = "torch.cuda.max_memory_allocated during training"
    elif ddp:
        out["peak_mem_MB"] = None
        out["memory_basis"] = "not measured under DDP (training runs in Ultralytics' worker processes)"
    else:
        rss = _peak_rss_bytes()
        out["peak_mem_MB"] = None if rss is None else rss / 2**20
        out["memory_basis"] = (
            "peak RSS of the whole compare process so far (--in-process)"
            if in_process
            else "peak RSS of the run's own process (dataloader workers excluded)"
        )
    return out


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
    """The run's scalar metrics under the keys :mod:`drconv_yolo.report` tabulates.

    Args:
        train: :func:`_train` output.
        report: :func:`drconv_yolo.evaluation.evaluate` report.
        stats: :func:`model_stats` numbers.
        latency: :func:`measure_latency` numbers.
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
    import torch

    from drconv_yolo.evaluation import evaluate
    from drconv_yolo.plugin import register

    register()
    t0 = time.perf_counter()
    run_dir = Path(spec.run_dir)
    device = spec.measure["device"]
    train = _train(spec, device, in_process)
    weights = _weights(run_dir)
    print(f"{spec.label}: evaluating {weights} ...", flush=True)
    ev = dict(spec.eval)
    report = evaluate(
        str(weights),
        spec.train["data"],
        project=str(run_dir),
        name="eval",
        exist_ok=True,
        imgsz=spec.train["imgsz"],
        device=device,
        workers=spec.train.get("workers", 0),
        verbose=False,
        **ev,
    )
    model, stats = model_stats(weights, spec.train["imgsz"])
    runs, warmup = spec.measure["latency_runs"], spec.measure["latency_warmup"]
    print(f"{spec.label}: measuring latency ({runs} runs at {spec.train['imgsz']} px, batch 1) ...", flush=True)
    from ultralytics.utils.torch_utils import select_device

    latency = measure_latency(model, spec.train["imgsz"], select_device(device, verbose=False), runs, warmup)
    wall_s = time.perf_counter() - t0
    record = {
        "spec": asdict(spec),
        "metrics": flat_metrics(train, report, stats, latency, wall_s, n_train),
        "per_epoch": train["per_epoch"],
        "epochs_completed": train["epochs_completed"],
        "weights": str(weights),
        "stats": stats,
        "latency": latency,
        "torch_threads": torch.get_num_threads(),
        "notes": {"memory": train.get("memory_basis"), "throughput": train.get("throughput_basis")},
        "eval": {k: report[k] for k in ("ultralytics", "pycocotools", "max_det", "warnings", "report") if k in report},
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _atomic_json(run_dir / RUN_FILE, record)
    return record


def _worker_main(argv: Sequence[str]) -> int:
    """``python -m drconv_yolo.compare --worker SPEC.json [--n-train N]``: one run in a fresh process."""
    p = argparse.ArgumentParser(prog="python -m drconv_yolo.compare", description="internal: one compare run")
    p.add_argument("--worker", required=True, type=Path, help="spec.json written by compare")
    p.add_argument("--n-train", type=int, default=None, help="training images (DDP throughput fallback)")
    args = p.parse_args(argv)
    spec = RunSpec(**json.loads(args.worker.read_text(encoding="utf-8")))
    run_one(spec, args.n_train, in_process=False)
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# Orchestration
# ----------------------------------------------------------------------------------------------------------------------


def _cpu_name() -> str:
    """The CPU model name (Linux /proc/cpuinfo), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str) -> dict[str, Any]:
    """Versions and hardware for the report.

    Args:
        device: The device string the runs use.

    Returns:
        ``python``, ``torch``, ``ultralytics``, ``drconv_yolo``, ``numpy``, ``platform``, ``device``, ``cpu``,
        ``cpu_count``, ``torch_threads``, ``gpus`` (names), ``cuda``.
    """
    import numpy
    import torch
    import ultralytics

    import drconv_yolo

    gpus = []
    if torch.cuda.is_available():
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ultralytics": ultralytics.__version__,
        "drconv_yolo": drconv_yolo.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "device": device,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpus": gpus,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
    }


def _launch(spec: RunSpec, n_train: int, in_process: bool) -> dict[str, Any]:
    """Run one spec in a subprocess (default) or in this process; return its record."""
    run_dir = Path(spec.run_dir)
    if in_process:
        return run_one(spec, n_train, in_process=True)
    spec_path = run_dir / SPEC_FILE
    _atomic_json(spec_path, asdict(spec))
    cmd = [sys.executable, "-m", "drconv_yolo.compare", "--worker", str(spec_path), "--n-train", str(n_train)]
    rc = subprocess.call(cmd)
    if rc != 0 or not (run_dir / RUN_FILE).is_file():
        raise CompareError(
            f"{spec.label} failed (exit code {rc}); see the output above. The partial folder {run_dir} is trained "
            "again from scratch on the next invocation"
        )
    return json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))


def _run_all(runs: Sequence[RunSpec], n_train: int, in_process: bool) -> tuple[list[dict], int]:
    """Skip finished runs, restart interrupted ones, train the rest; return (records, number trained now)."""
    states = [run_state(s) for s in runs]  # raises before any training if an old run conflicts
    records, trained = [], 0
    for spec, state in zip(runs, states):
        run_dir = Path(spec.run_dir)
        if state == "done":
            print(f"{spec.label}: finished earlier ({run_dir / RUN_FILE}), skipped", flush=True)
            record = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
            record["spec"].update(index=spec.index, total=spec.total, run_dir=spec.run_dir)  # the folder may have moved
            record["weights"] = str(run_dir / "weights" / Path(record["weights"]).name)
            records.append(record)
            continue
        if state == "partial":
            print(f"{spec.label}: {run_dir} was interrupted; deleting it and training again", flush=True)
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        print(f"{spec.label}: training {spec.model} ...", flush=True)
        t0 = time.perf_counter()
        record = _launch(spec, n_train, in_process)
        m = record["metrics"]
        print(
            f"{spec.label}: done in {(time.perf_counter() - t0) / 60:.1f} min: mAP50-95 {m['mAP50-95']:.4f}, "
            f"mAP50 {m['mAP50']:.4f}, latency {m['latency_ms']:.1f} ms",
            flush=True,
        )
        records.append(record)
        trained += 1
    return records, trained


def compare(
    data: str,
    models: Sequence[str],
    seeds: Sequence[int] = (0,),
    epochs: int = 100,
    imgsz: int = 640,
    batch: int = 16,
    device: str | None = None,
    workers: int = 8,
    out: str | os.PathLike = DEFAULT_OUT,
    overrides: Mapping[str, Any] | None = None,
    max_det: int = 300,
    split: str = "val",
    gt: str | None = None,
    latency_runs: int = 50,
    latency_warmup: int = 10,
    in_process: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Train and evaluate every model x seed with one recipe and write the report.

    Args:
        data: Dataset YAML (with ``annotations/instances_<split>.json`` beside it, or ``gt``).
        models: Model YAMLs or weights; the first is the baseline.
        seeds: Training seeds (each arm trains once per seed).
        epochs: Training epochs.
        imgsz: Training, evaluation and latency image size.
        batch: Training and evaluation batch size.
        device: Ultralytics device (``"cpu"``, ``"0"``, ``"0,1"`` for DDP); default GPU 0 if available, else CPU.
        workers: Dataloader workers (Ultralytics uses 0 on CPU).
        out: Output folder.
        overrides: Further Ultralytics train arguments, the same for every run.
        max_det: Detections per image for evaluation.
        split: Split evaluated.
        gt: Ground-truth JSON (default beside the dataset).
        latency_runs: Timed batch-1 forward passes (median reported).
        latency_warmup: Untimed passes before them.
        in_process: Train in this process instead of one subprocess per run.
        command: The command line, for the report.

    Returns:
        ``results.json``'s content plus ``"paths"`` (written files) and ``"trained"`` (runs trained by this call).

    Raises:
        CompareError: For a missing model, dataset or ground truth, a bad argument, or a conflicting earlier run
            (all checked before any training) and for a failed run.
    """
    from drconv_yolo import report as rep

    if len(models) < 2:
        raise CompareError("--models needs a baseline and at least one other model (the first one is the baseline)")
    if not seeds or len(set(seeds)) != len(seeds):
        raise CompareError(f"--seeds must be distinct and non-empty, got {list(seeds)}")
    for name, value in (("epochs", epochs), ("imgsz", imgsz), ("batch", batch), ("latency-runs", latency_runs)):
        if int(value) < 1:
            raise CompareError(f"--{name} must be >= 1, got {value}")
    checked = [check_model(m) for m in models]
    info = check_data(data, split, gt)
    names = arm_names(models)
    device = str(device) if device not in (None, "") else default_device()
    out = Path(out).expanduser().resolve()
    train = {
        "data": info.yaml,
        "epochs": int(epochs),
        "imgsz": int(imgsz),
        "batch": int(batch),
        "device": device,
        "workers": int(workers),
        "deterministic": True,
        "plots": False,
        "val": True,
    }
    train.update(dict(overrides or {}))
    evaluation = {"max_det": int(max_det), "split": split, "gt_json": info.gt_json, "batch": int(batch)}
    measure = {"latency_runs": int(latency_runs), "latency_warmup": int(latency_warmup), "device": first_device(device)}
    runs = plan_runs(checked, names, seeds, train, evaluation, measure, out)
    print(
        f"compare: {len(names)} arms ({', '.join(names)}; baseline {names[0]}) x {len(seeds)} seeds "
        f"= {len(runs)} runs, {epochs} epochs at {imgsz} px on {device}, {info.n_train} train / {info.n_val} "
        f"{split} images -> {out}",
        flush=True,
    )
    t0 = time.perf_counter()
    records, trained = _run_all(runs, info.n_train, in_process)
    settings = {
        "data": info.yaml,
        "gt_json": info.gt_json,
        "split": split,
        "n_train": info.n_train,
        "n_eval": info.n_val,
        "classes": info.names,
        "arms": dict(zip(names, checked)),
        "baseline": names[0],
        "seeds": [int(s) for s in seeds],
        "train": dict(train),
        "eval": evaluation,
        "measure": measure,
        "subprocess_per_run": not in_process,
        "command": command,
    }
    results = rep.write_report(out, records, settings, environment(device))
    print(rep.console_summary(results), flush=True)
    print(
        f"compare: {trained} run(s) trained now, {len(runs) - trained} reused, {(time.perf_counter() - t0) / 60:.1f} "
        f"min; report: {results['paths']['report']}",
        flush=True,
    )
    results["trained"] = trained
    return results


# ----------------------------------------------------------------------------------------------------------------------
# Command line: compare
# ----------------------------------------------------------------------------------------------------------------------


def _split_kv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate ``key=value`` tokens (Ultralytics overrides) from argparse options."""
    options, kv = [], []
    for token in argv:
        (kv if "=" in token and not token.startswith("-") else options).append(token)
    return options, kv


def _add_common(p: argparse.ArgumentParser) -> None:
    """Options shared by ``compare`` and ``demo``."""
    p.add_argument(
        "--device",
        default=None,
        help="Ultralytics device: cpu, 0, 0,1 (DDP), mps; default GPU 0 if available, else cpu",
    )
    p.add_argument("--workers", type=int, default=8, help="dataloader workers (Ultralytics uses 0 on CPU)")
    p.add_argument("--max-det", type=int, default=300, help="detections per image at evaluation (1000 on VisDrone)")
    p.add_argument("--latency-runs", type=int, default=50, help="timed batch-1 forward passes (median reported)")
    p.add_argument("--latency-warmup", type=int, default=10, help="untimed forward passes before timing")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="train in this process, not one subprocess per run (faster start; the CPU peak RSS is then "
        "the whole process's high-water mark)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``compare`` argument parser (``key=value`` tokens are collected separately as train overrides)."""
    p = argparse.ArgumentParser(
        prog="drconv-yolo compare",
        usage="drconv-yolo compare --data DATA.yaml --models BASE.yaml OTHER.yaml [...] [options] [key=value ...]",
        description=(
            "Train every model x seed with identical Ultralytics arguments (only the model differs), evaluate "
            "best.pt (Ultralytics mAP + pycocotools), measure params, GFLOPs, latency, throughput, wall time and peak "
            "memory, and write OUT/report.md, results.csv, results.json and plots. Finished runs are reused when run "
            "again with the same --out; interrupted ones are trained again. Any further Ultralytics train argument "
            "can be given as key=value (e.g. optimizer=SGD lr0=0.01 mosaic=0); it applies to every run."
        ),
        epilog="example: drconv-yolo compare --data datasets/synthetic/synthetic.yaml "
        "--models yolov8n.yaml yolov8n-drconv.yaml --seeds 0 1 2 --epochs 50 --imgsz 256 --device 0",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--data", required=True, help="dataset YAML (its annotations/instances_<split>.json is the GT)")
    p.add_argument(
        "--models",
        nargs="+",
        required=True,
        metavar="MODEL",
        help="model YAMLs or .pt weights; the first is the baseline, arm names are the file stems",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds, each arm trains once per seed")
    p.add_argument("--epochs", type=int, default=100, help="training epochs")
    p.add_argument("--imgsz", type=int, default=640, help="train, evaluation and latency image size")
    p.add_argument("--batch", type=int, default=16, help="train and evaluation batch size")
    p.add_argument("--out", default=DEFAULT_OUT, help="output folder (reused runs are found here)")
    p.add_argument("--split", default="val", help="split evaluated after training")
    p.add_argument(
        "--gt", default=None, help="ground-truth JSON (default <dataset>/annotations/instances_<split>.json)"
    )
    _add_common(p)
    return p


def _apply_option_keys(args: argparse.Namespace, overrides: dict[str, Any]) -> None:
    """Move ``epochs=``/``imgsz=``/``batch=``/``device=``/``workers=`` overrides onto the options."""
    for key in OPTION_KEYS:
        if key in overrides:
            setattr(args, key, overrides.pop(key))


def main(argv: Sequence[str] | None = None) -> int:
    """``drconv-yolo compare ...``; returns the exit status (0, or 2 for a usage or input error).

    Args:
        argv: Arguments after ``compare`` (default ``sys.argv[1:]``).

    Returns:
        Exit status.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    options, kv = _split_kv(argv)
    args = build_parser().parse_args(options)
    try:
        overrides = parse_overrides(kv)
        _apply_option_keys(args, overrides)
        compare(
            args.data,
            args.models,
            args.seeds,
            args.epochs,
            args.imgsz,
            args.batch,
            args.device,
            args.workers,
            args.out,
            overrides,
            args.max_det,
            args.split,
            args.gt,
            args.latency_runs,
            args.latency_warmup,
            args.in_process,
            command=" ".join(["drconv-yolo", "compare", *argv]),
        )
    except CompareError as e:
        print(f"drconv-yolo compare: error: {e}", file=sys.stderr)
        return 2
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# The built-in default: drconv-yolo demo
# ----------------------------------------------------------------------------------------------------------------------

DEMO_MODELS = ("yolov8n.yaml", "yolov8n-drconv.yaml")
# A short from-scratch schedule, the same for both arms: warm-up over 1 epoch, no mosaic (it shrinks the objects of
# small images further), AdamW at a higher learning rate than Ultralytics' auto choice so a 12-epoch run learns
# something (measured on the default profile: mAP50-95 about 0.05 after 12 epochs for both arms, about 0.01 with the
# auto optimizer). Chosen by measurement on 2 shared CPU cores: the default profile ends within 15 minutes there.
DEMO_TRAIN = {"warmup_epochs": 1, "mosaic": 0.0, "optimizer": "AdamW", "lr0": 0.004}
DEMO_PROFILES = {
    "default": {
        "n_train": 160,
        "n_val": 40,
        "imgsz": 128,
        "object_scale": 2.0,
        "epochs": 12,
        "batch": 4,
        "seeds": [0, 1],
        "data_dir": "datasets/synthetic",
    },
    "quick": {
        "n_train": 16,
        "n_val": 8,
        "imgsz": 64,
        "object_scale": 2.0,
        "epochs": 1,
        "batch": 8,
        "seeds": [0, 1],
        "data_dir": "datasets/synthetic-quick",
    },
}
# Measured on 2 CPU cores at 128 px, batch 4: seconds per training image per epoch for (baseline, DRConv arm),
# per-epoch validation and checkpoints included, and the fixed cost of one run (process start, evaluation, latency).
# The full default demo took 9.4 minutes there (4 runs: 1.4 min per baseline run, 3.0-3.5 min per DRConv run).
DEMO_COST = {"img_s": (0.040, 0.095), "run_s": 15.0}


def estimate_seconds(profile: Mapping[str, Any], device: str) -> float | None:
    """Rough wall time of a demo profile on CPU, scaled from :data:`DEMO_COST` by pixels and cores.

    Args:
        profile: A :data:`DEMO_PROFILES` entry (possibly overridden).
        device: The device string.

    Returns:
        Seconds, or None when not on CPU.
    """
    if device != "cpu":
        return None
    px = (profile["imgsz"] / 128) ** 2
    cores = 2 / max(1, min(os.cpu_count() or 2, 16))
    train = sum(DEMO_COST["img_s"]) * px * cores * profile["n_train"] * profile["epochs"]
    runs = len(profile["seeds"]) * len(DEMO_MODELS)
    return len(profile["seeds"]) * train + runs * DEMO_COST["run_s"] * (0.5 + 0.5 * px)


def build_demo_parser() -> argparse.ArgumentParser:
    """The ``demo`` argument parser."""
    p = argparse.ArgumentParser(
        prog="drconv-yolo demo",
        usage="drconv-yolo demo [--quick] [--out DIR] [--device DEV] [options] [key=value ...]",
        description=(
            "The built-in comparison: generate (or reuse) the synthetic aerial-scene dataset and compare YOLOv8n "
            "(yolov8n.yaml) with YOLOv8n + DRConv (yolov8n-drconv.yaml) from scratch, several seeds, identical recipe. "
            f"Default profile: {DEMO_PROFILES['default']} with train arguments {DEMO_TRAIN} (about 10 minutes "
            "on 2 CPU cores). --quick: a smoke profile of about 1-2 minutes. Options and key=value Ultralytics "
            "arguments override the profile."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="tiny smoke profile (16 images, 64 px, 1 epoch)")
    p.add_argument("--out", default=None, help="output folder (default runs/demo, runs/demo-quick with --quick)")
    p.add_argument(
        "--data-dir",
        default=None,
        help="synthetic dataset folder, generated once and reused (default from the profile)",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds (default from the profile)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default from the profile)")
    p.add_argument("--imgsz", type=int, default=None, help="image size of the dataset and training (profile)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default from the profile)")
    p.add_argument("--n-train", type=int, default=None, help="synthetic training images (default from the profile)")
    p.add_argument("--n-val", type=int, default=None, help="synthetic validation images (default from the profile)")
    _add_common(p)
    return p


def demo_profile(args: argparse.Namespace, overrides: dict[str, Any]) -> dict[str, Any]:
    """The profile after ``--quick``, options and key=value overrides (epochs/imgsz/batch)."""
    base = "quick" if args.quick else "default"
    profile = dict(DEMO_PROFILES[base])
    for key in ("seeds", "epochs", "imgsz", "batch", "n_train", "n_val"):
        if key in overrides:  # epochs=, imgsz=, batch= given Ultralytics-style
            profile[key] = overrides.pop(key)
        if getattr(args, key, None) is not None:
            profile[key] = getattr(args, key)
    data_keys = ("n_train", "n_val", "imgsz", "object_scale")
    if args.data_dir:
        profile["data_dir"] = args.data_dir
    elif any(profile[k] != DEMO_PROFILES[base][k] for k in data_keys):
        profile["data_dir"] = f"datasets/synthetic-{profile['n_train']}-{profile['n_val']}-{profile['imgsz']}"
    profile["out"] = args.out or ("runs/demo-quick" if args.quick else "runs/demo")
    profile["name"] = base
    return profile


def demo(
    profile: Mapping[str, Any],
    device: str | None = None,
    workers: int = 8,
    overrides: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Generate (or reuse) the synthetic dataset and compare YOLOv8n with and without DRConv.

    Args:
        profile: ``n_train``, ``n_val``, ``imgsz``, ``object_scale``, ``epochs``, ``batch``, ``seeds``, ``data_dir``,
            ``out`` (see :data:`DEMO_PROFILES`).
        device: Ultralytics device (default GPU 0 if available, else CPU).
        workers: Dataloader workers.
        overrides: Further Ultralytics train arguments (on top of :data:`DEMO_TRAIN`).
        **kwargs: Further :func:`compare` arguments (``max_det``, ``latency_runs``, ``in_process``, ``command``).

    Returns:
        :func:`compare`'s result.
    """
    from drconv_yolo.data.synthetic import generate

    device = str(device) if device not in (None, "") else default_device()
    est = estimate_seconds(profile, device)
    when = f"estimate ~{est / 60:.0f} min (measured on 2 CPU cores, scaled)" if est else "estimate: minutes on a GPU"
    print(
        f"demo ({profile.get('name', 'custom')} profile): {' vs '.join(DEMO_MODELS)}, {len(profile['seeds'])} "
        f"seeds x {profile['epochs']} epochs, {profile['n_train']} train images at {profile['imgsz']} px on "
        f"{device}; {when}",
        flush=True,
    )
    try:
        data = generate(
            profile["data_dir"],
            n_train=profile["n_train"],
            n_val=profile["n_val"],
            imgsz=profile["imgsz"],
            object_scale=profile["object_scale"],
            seed=0,
        )
    except (ValueError, FileExistsError) as e:  # bad sizes, or the folder holds something else
        raise CompareError(f"synthetic dataset {profile['data_dir']}: {e} (choose another --data-dir)") from None
    return compare(
        str(data),
        list(DEMO_MODELS),
        profile["seeds"],
        profile["epochs"],
        profile["imgsz"],
        profile["batch"],
        device,
        workers,
        profile["out"],
        {**DEMO_TRAIN, **dict(overrides or {})},
        **kwargs,
    )


def demo_main(argv: Sequence[str] | None = None) -> int:
    """``drconv-yolo demo ...``; returns the exit status.

    Args:
        argv: Arguments after ``demo``.

    Returns:
        Exit status (0, or 2 for a usage or input error).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    options, kv = _split_kv(argv)
    args = build_demo_parser().parse_args(options)
    try:
        overrides = parse_overrides(kv)
        profile = demo_profile(args, overrides)
        device = overrides.pop("device", args.device)
        workers = overrides.pop("workers", args.workers)
        demo(
            profile,
            device,
            workers,
            overrides,
            max_det=args.max_det,
            latency_runs=args.latency_runs,
            latency_warmup=args.latency_warmup,
            in_process=args.in_process,
            command=" ".join(["drconv-yolo", "demo", *argv]),
        )
    except CompareError as e:
        print(f"drconv-yolo demo: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
