"""Layer benchmark: DRConv2d (fast and reference op) against nn.Conv2d of the same c1, c2, k, s, in one process.

Prints a table and writes JSON. Times are medians of repeated runs, timed round-robin (conv, fast, reference, conv,
...) so a drift in machine speed cancels out of the ratios; ratios are taken against nn.Conv2d (and the
fast path against the reference) measured in the same process on the same inputs, so they are comparable across
machines while absolute times are not. Peak memory of a training step is the high-water mark of the tensors
allocated during forward + backward (torch profiler memory events on CPU, ``max_memory_allocated`` on CUDA),
on top of what existed before the step.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from .modules import DRConv2d, autopad

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
        return f"{self.c1}->{self.c2} @{self.size} k{self.k} s{self.s}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fns: Dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int = 1):
    """Median wall time in milliseconds of each function, timed round-robin (one run of each per round), so a drift
    in the machine's speed during the measurement affects every function alike and their ratios stay fair."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}


def peak_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Peak MiB allocated by ``fn`` above what was allocated before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        current += e.nbytes()
        peak = max(peak, current)
    return peak / 2**20


def _train_step(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).sum().backward()

    return step


def bench_shape(c1, c2, size, k, s, batch, regions=8, device="cpu", repeats=5) -> Row:
    """Measure one shape and batch size; returns a ``Row``."""
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
    """Ratios per row and the medians/maxima the acceptance targets are stated in."""
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


def environment() -> dict:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_json(path: Path, payload: dict) -> None:
    """Write JSON atomically (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def run(
    shapes=YOLOV8N_SHAPES,
    batches=(1, 8),
    regions=8,
    device="cpu",
    repeats=5,
    out: Optional[Path] = Path("bench_results/drconv_layer.json"),
    log=print,
) -> dict:
    """Benchmark every shape x batch; print progress and the table; write JSON to ``out``; return the payload."""
    torch.manual_seed(0)
    rows: List[Row] = []
    total = len(shapes) * len(batches)
    for batch in batches:
        for c1, c2, size, k, s in shapes:
            log(f"[{len(rows) + 1}/{total}] {c1}->{c2} @{size} k{k} s{s} batch {batch} ...", flush=True)
            rows.append(bench_shape(c1, c2, size, k, s, batch, regions, device, repeats))
    payload = {
        "environment": environment(),
        "settings": {"regions": regions, "device": str(device), "repeats": repeats, "dtype": "float32"},
        "rows": [asdict(r) for r in rows],
        "summary": summarize(rows),
    }
    log(format_table(rows))
    log(json.dumps(payload["summary"], indent=2))
    if out is not None:
        write_json(Path(out), payload)
        log(f"wrote {out}")
    return payload


def main(argv: Optional[List[str]] = None) -> int:
    """``drconv-yolo bench``: the layer benchmark."""
    parser = argparse.ArgumentParser(prog="drconv-yolo bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes (default: 1 8)")
    parser.add_argument("--regions", type=int, default=8, help="number of regions m (default: 8)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default: cpu)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (default: 5)")
    parser.add_argument("--quick", action="store_true", help="only the first two shapes, 2 repeats (smoke run)")
    parser.add_argument("--out", type=Path, default=Path("bench_results/drconv_layer.json"), help="JSON output path")
    args = parser.parse_args(argv)
    shapes = YOLOV8N_SHAPES[:2] if args.quick else YOLOV8N_SHAPES
    repeats = 2 if args.quick else args.repeats
    run(shapes, tuple(args.batches), args.regions, args.device, repeats, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
