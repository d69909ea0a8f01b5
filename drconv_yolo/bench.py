"""Layer and model benchmarks: DRConv2d against nn.Conv2d, and the bundled DRConv configs against their baselines.

Layer benchmark (:func:`run`): DRConv2d as shipped (``impl="auto"``: the op :func:`drconv_yolo.ops.choose_impl`
picks for the device, batch and mode) and with the reference op, against nn.Conv2d of the same c1, c2, k, s, in one
process. Model benchmark (:func:`run_model`): each bundled DRConv config (``yolov8n-drconv.yaml``, ...) against its
baseline (``yolov8n.yaml``), both built from their YAML (no weights), fused, timed at batch 1 and 8 at 640 and 320 px
(inference) and for a training step (forward + backward of the sum of the outputs, unfused, train mode) at batch 8,
256 px; the ratio of the medians and the range of the per-round ratios are reported. Both print a table and write
JSON; ``busy`` background processes that each hold a core can run during the measurement
(:func:`drconv_yolo.measure.busy_processes`), so the figures of a busy machine can be reproduced.

Layer benchmark details: times are medians of repeated runs, timed round-robin (conv, DRConv, reference, then
DRConv, reference, conv, ...: the order turns each round, :func:`drconv_yolo.measure.round_robin_ms`) so a drift in
machine speed cancels out of the ratios; ratios are taken against nn.Conv2d (and DRConv against
the reference) measured in the same process on the same inputs, so they are comparable across machines while
absolute times are not. Peak memory of a training step is the high-water mark of the tensors
allocated during forward + backward (torch profiler memory events on CPU, ``max_memory_allocated`` on CUDA),
on top of what existed before the step.
"""

from __future__ import annotations

import copy
import functools
import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn as nn

from .io import atomic_write_json
from .measure import busy_processes, cpu_steal, environment, gflops, median_ms, peak_mb, round_robin_ms
from .modules import DRConv2d, autopad

DEFAULT_OUT = Path("bench_results/drconv_layer.json")
MODEL_OUT = Path("bench_results/drconv_model.json")
DEFAULT_BATCHES = (1, 8)
DEFAULT_REGIONS = 8
DEFAULT_REPEATS = 5
SEED = 0  # weights and inputs are the same on every run of the benchmark

# (c1, c2, input size, k, s): the stride-2 convs of the YOLOv8n backbone plus a neck-like and a 1x1 layer
YOLOV8N_SHAPES = (
    (16, 32, 320, 3, 2),
    (32, 64, 160, 3, 2),
    (64, 128, 80, 3, 2),
    (128, 256, 40, 3, 2),
    (64, 64, 80, 3, 2),
    (64, 64, 80, 1, 1),
)


@dataclass
class Row:
    """One shape at one batch size: medians in milliseconds and peak MiB of a training step, per implementation."""

    c1: int
    c2: int
    size: int
    k: int
    s: int
    batch: int
    conv_infer_ms: float
    dr_infer_ms: float
    ref_infer_ms: float
    conv_train_ms: float
    dr_train_ms: float
    ref_train_ms: float
    conv_train_peak_mb: float
    dr_train_peak_mb: float
    ref_train_peak_mb: float

    @property
    def shape(self) -> str:
        """``16->32 @320 k3 s2``."""
        return f"{self.c1}->{self.c2} @{self.size} k{self.k} s{self.s}"


def _train_step(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One forward + backward of ``module`` on ``x``, gradients cleared first so every step allocates alike."""

    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).sum().backward()

    return step


def bench_shape(c1, c2, size, k, s, batch, regions=DEFAULT_REGIONS, device="cpu", repeats=DEFAULT_REPEATS) -> Row:
    """Measure one shape and batch size: nn.Conv2d, DRConv2d as shipped (``impl="auto"``) and with the reference op.

    Args:
        c1: Input channels.
        c2: Output channels.
        size: Square input side.
        k: Kernel size.
        s: Stride.
        batch: Batch size.
        regions: DRConv regions ``m``.
        device: Torch device string.
        repeats: Timed rounds per median.

    Returns:
        The row: inference and training-step medians, and the training step's peak memory, per implementation.
    """
    device = torch.device(device)
    conv = nn.Conv2d(c1, c2, k, s, autopad(k)).to(device)
    dr = DRConv2d(c1, c2, k, s, regions=regions, impl="auto").to(device)  # what a user gets (see ops.choose_impl)
    ref = copy.deepcopy(dr)
    ref.op.impl = "reference"
    x = torch.randn(batch, c1, size, size, device=device)
    xg = x.clone().requires_grad_(True)
    modules = {"conv": conv, "dr": dr, "ref": ref}
    row = {}
    with torch.no_grad():
        infer = median_ms({name: functools.partial(mod, x) for name, mod in modules.items()}, device, repeats)
    train = median_ms({name: _train_step(mod, xg) for name, mod in modules.items()}, device, repeats)
    for name, mod in modules.items():
        row[f"{name}_infer_ms"], row[f"{name}_train_ms"] = infer[name], train[name]
        row[f"{name}_train_peak_mb"] = peak_mb(_train_step(mod, xg), device)
    return Row(c1, c2, size, k, s, batch, **row)


def summarize(rows: Sequence[Row]) -> dict:
    """Ratios per row and the medians/maxima the acceptance targets are stated in.

    Args:
        rows: Measured rows.

    Returns:
        ``{"batch<B>": {ratio name: value}}`` per batch size.
    """
    out = {}
    for batch in sorted({r.batch for r in rows}):
        rs = [r for r in rows if r.batch == batch]
        infer = [r.dr_infer_ms / r.conv_infer_ms for r in rs]
        train = [r.dr_train_ms / r.conv_train_ms for r in rs]
        out[f"batch{batch}"] = {
            "dr_vs_conv_infer_median": statistics.median(infer),
            "dr_vs_conv_infer_max": max(infer),
            "dr_vs_conv_train_median": statistics.median(train),
            "dr_vs_conv_train_max": max(train),
            "ref_vs_conv_infer_median": statistics.median(r.ref_infer_ms / r.conv_infer_ms for r in rs),
            "dr_vs_ref_train_max": max(r.dr_train_ms / r.ref_train_ms for r in rs),
            "dr_vs_ref_train_peak_max": max(r.dr_train_peak_mb / r.ref_train_peak_mb for r in rs),
        }
    return out


def format_table(rows: Sequence[Row]) -> str:
    """Markdown table of times (ms), ratios and peak memory (MiB)."""
    head = (
        "| shape | B | conv ms | DRConv ms (x conv) | ref ms (x conv) | train: conv ms | DRConv ms (x conv, x ref) |"
        " ref ms | train peak MiB: conv | DRConv (x ref) | ref |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        ri, rt = r.dr_infer_ms / r.conv_infer_ms, r.ref_infer_ms / r.conv_infer_ms
        tc, ft = r.dr_train_ms / r.conv_train_ms, r.dr_train_ms / r.ref_train_ms
        fm = r.dr_train_peak_mb / r.ref_train_peak_mb
        lines.append(
            f"| {r.shape} | {r.batch} | {r.conv_infer_ms:.1f} | {r.dr_infer_ms:.1f} ({ri:.2f}x)"
            f" | {r.ref_infer_ms:.1f} ({rt:.2f}x) | {r.conv_train_ms:.1f} | {r.dr_train_ms:.1f} ({tc:.2f}x, {ft:.2f}x)"
            f" | {r.ref_train_ms:.1f} | {r.conv_train_peak_mb:.1f} | {r.dr_train_peak_mb:.1f} ({fm:.2f}x)"
            f" | {r.ref_train_peak_mb:.1f} |"
        )
    return "\n".join(lines)


def run(
    shapes=YOLOV8N_SHAPES,
    batches=DEFAULT_BATCHES,
    regions=DEFAULT_REGIONS,
    device="cpu",
    repeats=DEFAULT_REPEATS,
    out: Optional[Path] = DEFAULT_OUT,
    log=print,
    busy: int = 0,
) -> dict:
    """Benchmark every shape x batch; print progress and the table; write JSON to ``out``; return the payload.

    Args:
        shapes: ``(c1, c2, input size, k, s)`` per layer.
        batches: Batch sizes, each measured at every shape.
        regions: DRConv regions ``m``.
        device: Torch device string.
        repeats: Timed rounds per median.
        out: JSON path, or None to write nothing.
        log: ``print``-like progress sink.
        busy: Background busy-loop processes running during the measurement.

    Returns:
        ``{"environment", "settings", "rows", "summary"}``, the JSON written.
    """
    torch.manual_seed(SEED)
    rows: List[Row] = []
    total = len(shapes) * len(batches)
    with busy_processes(busy), cpu_steal() as steal:
        for batch in batches:
            for c1, c2, size, k, s in shapes:
                log(f"[{len(rows) + 1}/{total}] {c1}->{c2} @{size} k{k} s{s} batch {batch} ...", flush=True)
                rows.append(bench_shape(c1, c2, size, k, s, batch, regions, device, repeats))
    settings = {"regions": regions, "device": str(device), "repeats": repeats, "dtype": "float32", "busy": busy}
    settings["cpu_steal"] = steal["steal"]
    payload = {
        "environment": environment(str(device)),
        "settings": settings,
        "rows": [asdict(r) for r in rows],
        "summary": summarize(rows),
    }
    log(format_table(rows))
    log(json.dumps(payload["summary"], indent=2))
    log(steal_note(steal["steal"]))
    return _write(payload, out, log)


# above this share of CPU time taken by the hypervisor, a run's figures are flagged as noisy
STEAL_WARN = 0.05


def steal_note(steal: Optional[float]) -> str:
    """The line a benchmark prints about the CPU time stolen by the hypervisor during its measurement."""
    if steal is None:
        return "CPU steal: not measured (no /proc/stat)"
    note = f"CPU steal during the measurement: {steal:.1%} of CPU time"
    if steal > STEAL_WARN:
        note += " (a neighbour on the host was busy: the figures are noisier than usual; repeat the run)"
    return note


def _write(payload: dict, out: Optional[Path], log) -> dict:
    """Write a benchmark's payload as JSON to ``out`` (None: nowhere); returns it."""
    if out is not None:
        atomic_write_json(out, payload, indent=2)
        log(f"wrote {out}")
    return payload


# ----------------------------------------------------------------------------------------------------------------------
# Model benchmark
# ----------------------------------------------------------------------------------------------------------------------

FAMILIES = ("yolov8", "yolo11", "yolo26")  # model families with bundled DRConv configs
DEFAULT_FAMILIES = ("yolov8",)
DEFAULT_SCALE = "n"
DEFAULT_VARIANTS = ("drconv",)  # config suffixes: yolov8n-<variant>.yaml
MODEL_REPEATS = 5
MODEL_WARMUP = 1
GFLOPS_IMGSZ = 640  # the published tables' size


@dataclass(frozen=True)
class Case:
    """One model measurement: ``mode`` ``"infer"`` (fused, no autograd) or ``"train"`` (forward + backward)."""

    mode: str
    batch: int
    imgsz: int

    def label(self, model: str, baseline: str) -> str:
        """``yolov8n-drconv vs yolov8n, fused, batch 1, 640 px``, as the issue's table names the rows."""
        what = "fused" if self.mode == "infer" else "training step (forward + backward)"
        return f"{model} vs {baseline}, {what}, batch {self.batch}, {self.imgsz} px"


MODEL_CASES = (Case("infer", 1, 640), Case("infer", 1, 320), Case("infer", 8, 640), Case("infer", 8, 320))
MODEL_CASES += (Case("train", 8, 256),)


@dataclass
class ModelRow:
    """A model and its baseline in one case: medians, the ratio of the medians and the range of per-round ratios."""

    model: str
    baseline: str
    mode: str
    batch: int
    imgsz: int
    model_ms: float
    baseline_ms: float
    ratio: float
    ratio_min: float
    ratio_max: float
    model_times_ms: list
    baseline_times_ms: list


def model_pairs(families=DEFAULT_FAMILIES, scale=DEFAULT_SCALE, variants=DEFAULT_VARIANTS) -> list:
    """``(baseline YAML, DRConv YAML)`` per family and variant: ``("yolov8n.yaml", "yolov8n-drconv.yaml")``."""
    return [(f"{f}{scale}.yaml", f"{f}{scale}-{v}.yaml") for f in families for v in variants]


def _build(cfg: str, device: torch.device, channels_last: bool = False) -> tuple:
    """The model of a YAML (seeded weights): ``(fused eval-mode copy, unfused train-mode copy, stats)``; with
    ``channels_last`` both copies' 4-D weights are in channels-last memory."""
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(SEED)
    model = DetectionModel(cfg, verbose=False)
    train = copy.deepcopy(model).to(device).train()
    fused = model.fuse(verbose=False).eval()
    value, why = gflops(fused, GFLOPS_IMGSZ)
    stats = {"params": sum(p.numel() for p in train.parameters()), f"GFLOPs_{GFLOPS_IMGSZ}": value, "GFLOPs_note": why}
    fused = fused.to(device)
    if channels_last:
        fused, train = (m.to(memory_format=torch.channels_last) for m in (fused, train))
    return fused, train, stats


def _total(out) -> torch.Tensor:
    """The sum of every tensor in a model's output (tensors, lists, tuples, dicts): one scalar to backpropagate."""
    if isinstance(out, torch.Tensor):
        return out.float().sum()
    parts = [_total(v) for v in (out.values() if isinstance(out, dict) else out)]
    return sum(parts[1:], parts[0])


def _case_fn(models: tuple, case: Case, x: torch.Tensor) -> Callable[[], object]:
    """What one round of ``case`` runs for a built model (:func:`_build`'s first two items)."""
    fused, train = models[:2]
    if case.mode == "infer":
        return functools.partial(fused, x)

    def step():
        train.zero_grad(set_to_none=True)
        _total(train(x)).backward()

    return step


def _time_case(
    built: dict, pair: tuple, case: Case, device: torch.device, repeats: int, warmup: int, channels_last: bool = False
) -> ModelRow:
    """Time the pair's two models round-robin in one case (on a channels-last input if ``channels_last``)."""
    x = torch.rand((case.batch, 3, case.imgsz, case.imgsz), generator=torch.Generator().manual_seed(SEED)).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    fns = {cfg: _case_fn(built[cfg], case, x) for cfg in pair}
    with torch.inference_mode(case.mode == "infer"):
        times = round_robin_ms(fns, device, repeats, warmup)
    base, model = times[pair[0]], times[pair[1]]
    per_round = [m / b for m, b in zip(model, base)]
    mid = statistics.median
    return ModelRow(
        *(Path(pair[1]).stem, Path(pair[0]).stem, case.mode, case.batch, case.imgsz, mid(model), mid(base)),
        *(mid(model) / mid(base), min(per_round), max(per_round), model, base),
    )


def format_model_table(rows: Sequence[ModelRow]) -> str:
    """Markdown table: one row per model x case, the ratio with the range of the per-round ratios."""
    lines = ["| measured side by side in one process | baseline ms | model ms | ratio (range over rounds) |"]
    lines.append("|---|---|---|---|")
    for r in rows:
        label = Case(r.mode, r.batch, r.imgsz).label(r.model, r.baseline)
        spread = f"{r.ratio:.2f}x ({r.ratio_min:.2f}-{r.ratio_max:.2f})"
        lines.append(f"| {label} | {r.baseline_ms:.1f} | {r.model_ms:.1f} | {spread} |")
    return "\n".join(lines)


def run_model(
    pairs=None,
    cases=MODEL_CASES,
    device="cpu",
    repeats=MODEL_REPEATS,
    warmup=MODEL_WARMUP,
    busy: int = 0,
    out: Optional[Path] = MODEL_OUT,
    log=print,
    channels_last: bool = False,
) -> dict:
    """Time every ``(baseline, DRConv)`` pair in every case; print progress and the table; write JSON to ``out``.

    By default both models run as Ultralytics runs them, in NCHW memory; DRConv's layers then hand channels-last
    tensors on (the layout their op reads without a copy), which speeds up the plain layers after them as well.
    ``channels_last`` puts both models and the input in channels-last memory, so that the ratio is DRConv's cost
    alone, the baseline having the same layout.

    Args:
        pairs: ``(baseline YAML, DRConv YAML)`` pairs (bundled names resolve); default :func:`model_pairs`.
        cases: The measurements (:data:`MODEL_CASES`: the issue's rows).
        device: Torch device string.
        repeats: Timed rounds per case.
        warmup: Untimed runs of each model first.
        busy: Background busy-loop processes running during the measurement.
        out: JSON path, or None to write nothing.
        log: ``print``-like progress sink.
        channels_last: Both models' weights and the input in channels-last memory.

    Returns:
        ``{"environment", "settings", "models", "rows", "summary"}``, the JSON written.
    """
    from .plugin import register

    register()
    pairs, dev = [tuple(p) for p in (pairs or model_pairs())], torch.device(device)
    rows: List[ModelRow] = []
    stats = {}
    with busy_processes(busy), cpu_steal() as steal:
        for pair in pairs:
            built = {cfg: _build(cfg, dev, channels_last) for cfg in pair}
            stats.update({Path(cfg).stem: b[2] for cfg, b in built.items()})
            for case in cases:
                label = case.label(Path(pair[1]).stem, Path(pair[0]).stem)
                log(f"[{len(rows) + 1}/{len(pairs) * len(cases)}] {label} ...", flush=True)
                rows.append(_time_case(built, pair, case, dev, repeats, warmup, channels_last))
    settings = {"device": str(device), "repeats": repeats, "warmup": warmup, "busy": busy, "dtype": "float32"}
    settings["memory_format"] = "channels_last" if channels_last else "as Ultralytics runs it (NCHW)"
    settings["cpu_steal"] = steal["steal"]
    payload = {
        "environment": environment(str(device)),
        "settings": {**settings, "pairs": [list(p) for p in pairs], "cases": [asdict(c) for c in cases]},
        "models": stats,
        "rows": [asdict(r) for r in rows],
        "summary": {Case(r.mode, r.batch, r.imgsz).label(r.model, r.baseline): r.ratio for r in rows},
    }
    log(format_model_table(rows))
    log(f"memory format of both models and the input: {settings['memory_format']}")
    log(steal_note(steal["steal"]))
    return _write(payload, out, log)
