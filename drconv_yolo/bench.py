"""Layer benchmark: DRConv2d (fast and reference op) against nn.Conv2d of the same c1, c2, k, s, in one process.

Prints a table and writes JSON. Times are medians of repeated runs, timed round-robin (conv, fast, reference, conv,
...) so a drift in machine speed cancels out of the ratios; ratios are taken against nn.Conv2d (and the
fast path against the reference) measured in the same process on the same inputs, so they are comparable across
machines while absolute times are not. Peak memory of a training step is the high-water mark of the tensors
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
from .measure import environment, median_ms, peak_mb
from .modules import DRConv2d, autopad

DEFAULT_OUT = Path("bench_results/drconv_layer.json")
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
    fast_infer_ms: float
    ref_infer_ms: float
    conv_train_ms: float
    fast_train_ms: float
    ref_train_ms: float
    conv_train_peak_mb: float
    fast_train_peak_mb: float
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
    """Measure one shape and batch size: nn.Conv2d, DRConv2d with the fast op and with the reference op.

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
    fast = DRConv2d(c1, c2, k, s, regions=regions, impl="fast").to(device)
    ref = copy.deepcopy(fast)
    ref.op.impl = "reference"
    x = torch.randn(batch, c1, size, size, device=device)
    xg = x.clone().requires_grad_(True)
    modules = {"conv": conv, "fast": fast, "ref": ref}
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
        infer = [r.fast_infer_ms / r.conv_infer_ms for r in rs]
        out[f"batch{batch}"] = {
            "fast_vs_conv_infer_median": statistics.median(infer),
            "fast_vs_conv_infer_max": max(infer),
            "ref_vs_conv_infer_median": statistics.median(r.ref_infer_ms / r.conv_infer_ms for r in rs),
            "fast_vs_ref_train_max": max(r.fast_train_ms / r.ref_train_ms for r in rs),
            "fast_vs_ref_train_peak_max": max(r.fast_train_peak_mb / r.ref_train_peak_mb for r in rs),
        }
    return out


def format_table(rows: Sequence[Row]) -> str:
    """Markdown table of times (ms), ratios and peak memory (MiB)."""
    head = (
        "| shape | B | conv ms | fast ms (x conv) | ref ms (x conv) | train: conv ms | fast ms (x ref) | ref ms |"
        " train peak MiB: conv | fast (x ref) | ref |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        ri, rt = r.fast_infer_ms / r.conv_infer_ms, r.ref_infer_ms / r.conv_infer_ms
        ft, fm = r.fast_train_ms / r.ref_train_ms, r.fast_train_peak_mb / r.ref_train_peak_mb
        lines.append(
            f"| {r.shape} | {r.batch} | {r.conv_infer_ms:.1f} | {r.fast_infer_ms:.1f} ({ri:.2f}x)"
            f" | {r.ref_infer_ms:.1f} ({rt:.2f}x) | {r.conv_train_ms:.1f} | {r.fast_train_ms:.1f} ({ft:.2f}x)"
            f" | {r.ref_train_ms:.1f} | {r.conv_train_peak_mb:.1f} | {r.fast_train_peak_mb:.1f} ({fm:.2f}x)"
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

    Returns:
        ``{"environment", "settings", "rows", "summary"}``, the JSON written.
    """
    torch.manual_seed(SEED)
    rows: List[Row] = []
    total = len(shapes) * len(batches)
    for batch in batches:
        for c1, c2, size, k, s in shapes:
            log(f"[{len(rows) + 1}/{total}] {c1}->{c2} @{size} k{k} s{s} batch {batch} ...", flush=True)
            rows.append(bench_shape(c1, c2, size, k, s, batch, regions, device, repeats))
    payload = {
        "environment": environment(str(device)),
        "settings": {"regions": regions, "device": str(device), "repeats": repeats, "dtype": "float32"},
        "rows": [asdict(r) for r in rows],
        "summary": summarize(rows),
    }
    log(format_table(rows))
    log(json.dumps(payload["summary"], indent=2))
    if out is not None:
        atomic_write_json(out, payload, indent=2)
        log(f"wrote {out}")
    return payload
