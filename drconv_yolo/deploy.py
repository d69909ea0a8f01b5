"""Deployed cost: models exported as ``yolo export format=onnx simplify=True`` exports them, timed in the runtimes
users deploy to (onnxruntime; OpenVINO on the same ONNX files), round-robin in one process.

:func:`export_onnx` exports a model (a checkpoint, or a module saved as one) through Ultralytics' own exporter, so
the graph is the one a user ships; DRConv takes the export path's formulation (:mod:`drconv_yolo.ops.export`).
:func:`load_session` opens it in a runtime with a number of threads; :func:`deployed_latency` is the batch-1 figure
the comparison reports per run; :func:`run_deploy` is ``drconv-yolo bench --deploy``: every bundled DRConv config
of a family against its baseline, at batch 1 and 8, 640 and 320 px, 1 and 2 threads, a table and JSON.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch

from .io import atomic_write_json
from .measure import cpu_steal, environment, round_robin_ms
from .ops.export import requested_formulation

RUNTIMES = ("onnxruntime", "openvino")
DEPLOY_OUT = Path("bench_results/drconv_deploy.json")
DEPLOY_VARIANTS = ("drconv", "drconv-backbone", "drconv-neck", "drconv-blocks", "drconv-blocks-neck",
                   "drconv-blocks-lite")  # fmt: skip
DEPLOY_BATCHES = (1, 8)
DEPLOY_SIZES = (640, 320)
DEPLOY_THREADS = (2, 1)
DEPLOY_REPEATS = 11  # rounds: the protocol
DEPLOY_WARMUP = 2
SEED = 0


class RuntimeMissing(RuntimeError):
    """The runtime asked for is not installed; the message says which extra brings it."""


def export_onnx(model: str | Path | torch.nn.Module, folder: str | Path, imgsz: int, batch: int = 1,
                dynamic: bool = False, name: Optional[str] = None) -> Path:  # fmt: skip
    """Export a model to ONNX as ``yolo export format=onnx simplify=True`` does; returns the file.

    Args:
        model: A checkpoint path, or a module (an Ultralytics ``DetectionModel``) saved to ``folder`` as one first.
        folder: Where the checkpoint copy and the ``.onnx`` go (the exporter writes beside its checkpoint).
        imgsz: Square input size.
        batch: Batch size of a static export.
        dynamic: Dynamic batch and image size.
        name: File stem (default the checkpoint's or ``model``).

    Returns:
        The ``.onnx`` path.
    """
    from ultralytics import YOLO

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = name or (Path(model).stem if isinstance(model, (str, Path)) else "model")
    ckpt = folder / f"{stem}.pt"
    if isinstance(model, torch.nn.Module):
        torch.save({"model": model, "train_args": {"imgsz": imgsz}}, ckpt)
    elif Path(model).resolve() != ckpt.resolve():
        shutil.copy(model, ckpt)
    out = YOLO(str(ckpt)).export(format="onnx", imgsz=imgsz, batch=batch, dynamic=dynamic, simplify=True,
                                 verbose=False)  # fmt: skip
    return Path(out)


def load_session(path: str | Path, runtime: str = "onnxruntime", threads: Optional[int] = None) -> Callable:
    """Open an ONNX file in a runtime on the CPU; returns ``run(x: np.ndarray) -> first output``.

    Args:
        path: The ``.onnx`` file.
        runtime: ``"onnxruntime"`` or ``"openvino"`` (its default CPU settings, latency hint).
        threads: Intra-op threads (default the runtime's: one per core).

    Raises:
        RuntimeMissing: The runtime is not installed.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {list(RUNTIMES)}, got {runtime!r}")
    if runtime == "onnxruntime":
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeMissing("onnxruntime is not installed: pip install onnxruntime") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    try:
        import openvino as ov
    except ImportError:
        raise RuntimeMissing('OpenVINO is not installed: pip install "drconv-yolo[openvino]"') from None
    config = {"PERFORMANCE_HINT": "LATENCY", **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
    request = ov.Core().compile_model(str(path), "CPU", config).create_infer_request()
    return lambda x: request.infer({0: x})[0]


def _input(batch: int, imgsz: int) -> np.ndarray:
    return torch.rand((batch, 3, imgsz, imgsz), generator=torch.Generator().manual_seed(SEED)).numpy()


def deployed_latency(weights: str | Path, imgsz: int, runs: int, warmup: int, runtime: str = "onnxruntime",
                     threads: Optional[int] = None) -> dict[str, Any]:  # fmt: skip
    """Batch-1 latency of a checkpoint exported to ONNX (in a temporary folder) and run in ``runtime``.

    Returns:
        ``{"median_ms", "min_ms", "runtime", "threads", "runs", "warmup"}``.
    """
    with tempfile.TemporaryDirectory(prefix="drconv-deploy-") as folder:
        run = load_session(export_onnx(weights, folder, imgsz), runtime, threads)
        x = _input(1, imgsz)
        times = sorted(round_robin_ms({"model": lambda: run(x)}, torch.device("cpu"), runs, warmup)["model"])
    return {"median_ms": statistics.median(times), "min_ms": times[0], "runtime": runtime, "threads": threads,
            "runs": runs, "warmup": warmup}  # fmt: skip


@dataclass
class DeployRow:
    """One model against its baseline in one runtime, thread count, batch and size: medians and the ratio."""

    model: str
    baseline: str
    runtime: str
    threads: int
    batch: int
    imgsz: int
    model_ms: float
    baseline_ms: float
    ratio: float
    ratio_min: float
    ratio_max: float

    @property
    def label(self) -> str:
        where = f"{self.runtime}, {self.threads} thr, batch {self.batch}, {self.imgsz} px"
        return f"{self.model} vs {self.baseline}, {where}"


def _built(cfg: str):
    """The seeded model of a bundled YAML (no weights), as the model benchmark builds it."""
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(SEED)
    return DetectionModel(cfg, verbose=False)


def format_deploy_table(rows: Sequence[DeployRow]) -> str:
    """Markdown: one row per model x runtime x case, the ratio of the medians with the range over rounds."""
    lines = ["| exported model vs exported baseline | runtime | threads | batch | px | baseline ms | model ms | ratio "
             "(range over rounds) |"]  # fmt: skip
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in rows:
        spread = f"{r.ratio:.2f}x ({r.ratio_min:.2f}-{r.ratio_max:.2f})"
        lines.append(f"| {r.model} vs {r.baseline} | {r.runtime} | {r.threads} | {r.batch} | {r.imgsz} | "
                     f"{r.baseline_ms:.1f} | {r.model_ms:.1f} | {spread} |")  # fmt: skip
    return "\n".join(lines)


def run_deploy(family: str = "yolov8", scale: str = "n", variants: Sequence[str] = DEPLOY_VARIANTS,
               runtimes: Sequence[str] = ("onnxruntime",), batches: Sequence[int] = DEPLOY_BATCHES,
               sizes: Sequence[int] = DEPLOY_SIZES, threads: Sequence[int] = DEPLOY_THREADS,
               repeats: int = DEPLOY_REPEATS, warmup: int = DEPLOY_WARMUP, out: Optional[Path] = DEPLOY_OUT,
               log=print, workdir: Optional[Path] = None) -> dict:  # fmt: skip
    """Export every DRConv config and its baseline (static shapes, per batch and size), time them per runtime and
    thread count round-robin (all models of one case in one rotation), print the table, write JSON to ``out``.

    Returns:
        ``{"environment", "settings", "rows", "summary"}``, the JSON written.
    """
    from .plugin import register

    register()
    installed = versions()
    for runtime in runtimes:  # refused before anything is exported
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {list(RUNTIMES)}, got {runtime!r}")
        if installed[runtime] is None:
            raise RuntimeMissing(f"{runtime} is not installed" + (': pip install "drconv-yolo[openvino]"'
                                 if runtime == "openvino" else ": pip install onnxruntime"))  # fmt: skip
    baseline = f"{family}{scale}"
    names = [baseline] + [f"{baseline}-{v}" for v in variants]
    rows: list[DeployRow] = []
    cases = [(b, s) for s in sizes for b in batches]
    with tempfile.TemporaryDirectory(prefix="drconv-deploy-", dir=workdir) as tmp, cpu_steal() as steal:
        models = {n: _built(f"{n}.yaml") for n in names}
        for batch, imgsz in cases:
            log(f"exporting {len(names)} models at batch {batch}, {imgsz} px ...", flush=True)
            folder = Path(tmp) / f"b{batch}_{imgsz}"
            files = {n: export_onnx(m, folder, imgsz, batch, name=n) for n, m in models.items()}
            x = _input(batch, imgsz)
            for runtime in runtimes:
                for nthreads in threads:
                    log(f"timing {runtime}, {nthreads} thread(s), batch {batch}, {imgsz} px ...", flush=True)
                    runs = {n: load_session(f, runtime, nthreads) for n, f in files.items()}
                    fns = {n: (lambda run=run, x=x: run(x)) for n, run in runs.items()}
                    times = round_robin_ms(fns, torch.device("cpu"), repeats, warmup)
                    base = times[baseline]
                    for n in names[1:]:
                        per_round = [a / b for a, b in zip(times[n], base)]
                        mid_m, mid_b = statistics.median(times[n]), statistics.median(base)
                        rows.append(DeployRow(n, baseline, runtime, nthreads, batch, imgsz, mid_m, mid_b,
                                              mid_m / mid_b, min(per_round), max(per_round)))  # fmt: skip
    settings = {"family": family, "scale": scale, "variants": list(variants), "runtimes": list(runtimes),
                "batches": list(batches), "sizes": list(sizes), "threads": list(threads), "repeats": repeats,
                "warmup": warmup, "export": "yolo export format=onnx simplify=True, static shapes per case",
                "export_formulation": requested_formulation(), "runtime_versions": dict(installed),
                "cpu_steal": steal["steal"]}  # fmt: skip
    payload = {"environment": environment("cpu"), "settings": settings, "rows": [asdict(r) for r in rows],
               "summary": {r.label: r.ratio for r in rows}}  # fmt: skip
    log(format_deploy_table(rows))
    if out is not None:
        atomic_write_json(out, payload, indent=2)
        log(f"wrote {out}")
    return payload


def versions() -> Mapping[str, Optional[str]]:
    """The installed runtimes' versions (None: not installed)."""
    from importlib import metadata

    found = {}
    for package in RUNTIMES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found
