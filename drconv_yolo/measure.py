"""Timing, memory and environment measurement shared by the layer benchmark and the comparison.

Times are wall-clock milliseconds taken after the device finished its queued work; several functions are timed
round-robin (one run of each per round) so a drift in machine speed affects them alike and their ratios stay fair.
Peak memory is either the tensors a function allocates (CUDA allocator, or torch profiler memory events on CPU) or
the process's peak resident set size. :func:`environment` describes what the figures were measured on.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

__all__ = [
    "BUSY_LOOP",
    "MIB",
    "busy_processes",
    "cpu_steal",
    "cuda_peak_mb",
    "environment",
    "forward_latency",
    "gflops",
    "median_ms",
    "peak_mb",
    "peak_rss_mb",
    "reset_cuda_peak",
    "round_robin_ms",
    "sync",
]

MIB = 2**20
LATENCY_PERCENTILE = 0.9  # the tail figure reported next to the median
BUSY_LOOP = "# drconv-yolo busy loop\nwhile True: pass"  # a process that holds one core; the comment names it
BUSY_STOP_S = 5.0  # how long a busy process may take to die after SIGKILL


@contextlib.contextmanager
def busy_processes(n: int) -> Iterator[list]:
    """Run ``n`` background processes that each keep one core busy while inside; they are always killed on exit.

    Reproduces a machine where something else runs (a data loader, a second job): the contention a benchmark's
    ``--busy N`` measures.

    Args:
        n: Number of busy processes (0: none).

    Yields:
        The processes (``subprocess.Popen``).
    """
    procs: list = []
    try:
        for _ in range(max(0, int(n))):
            procs.append(subprocess.Popen([sys.executable, "-c", BUSY_LOOP], stdin=subprocess.DEVNULL))
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(timeout=BUSY_STOP_S)


def _cpu_jiffies(stat: str) -> tuple[int, int]:
    """(steal, total) jiffies of the ``cpu`` line of a /proc/stat text (steal is its eighth value; 0 if absent)."""
    for line in stat.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            values = [int(v) for v in fields[1:]]
            return (values[7] if len(values) > 7 else 0), sum(values[:8])
    raise ValueError("no 'cpu' line in /proc/stat")


@contextlib.contextmanager
def cpu_steal(stat_path: str = "/proc/stat") -> Iterator[dict]:
    """Measure the share of CPU time the hypervisor took from this machine (steal) while inside.

    On a shared VM a busy neighbour shows up as steal: the machine is slower by that share, unevenly over time, so
    figures taken under much steal (more than a few percent) are less trustworthy. Yields a dict whose ``"steal"``
    is set on exit: the fraction in [0, 1], or None where ``stat_path`` cannot be read (not Linux).

    Args:
        stat_path: The kernel's CPU statistics file.

    Yields:
        ``{"steal": float | None}``.
    """

    def read():
        try:
            return _cpu_jiffies(Path(stat_path).read_text())
        except (OSError, ValueError):
            return None

    result: dict = {"steal": None}
    before = read()
    try:
        yield result
    finally:
        after = read()
        if before is not None and after is not None and after[1] > before[1]:
            result["steal"] = (after[0] - before[0]) / (after[1] - before[1])


def sync(device: torch.device) -> None:
    """Wait until ``device`` has run every queued kernel, so a clock read after it covers the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def round_robin_ms(
    fns: Mapping[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Time each function ``repeats`` times, one run of each per round, after ``warmup`` untimed runs of each.

    The order turns by one place each round (``a b c``, ``b c a``, ``c a b``, ...; two functions alternate which
    runs first), so each function runs first equally often and is not always timed right after the same other one: a
    function timed after a different workload pays for it (caches and the allocator hold the other's state), and with
    a fixed order that cost falls on the same function every round. An A/A comparison of one model's training step in
    a fixed three-function order put the same code at 1.06-1.10x itself.

    Args:
        fns: ``{name: function}``; called without arguments.
        device: Device the functions run on (synchronised around every timed run).
        repeats: Timed rounds.
        warmup: Untimed runs of each function first.

    Returns:
        ``{name: [milliseconds per round]}``.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def median_ms(
    fns: Mapping[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Median milliseconds of each function, timed by :func:`round_robin_ms`; returns ``{name: median}``."""
    return {name: statistics.median(ts) for name, ts in round_robin_ms(fns, device, repeats, warmup).items()}


def forward_latency(
    model: torch.nn.Module, x: torch.Tensor, device: torch.device, runs: int, warmup: int
) -> dict[str, float]:
    """Inference latency of ``model(x)`` on ``device`` (model and input moved there, eval mode, no autograd).

    Args:
        model: The module.
        x: Its input.
        device: Where to run.
        runs: Timed forward passes.
        warmup: Untimed passes first.

    Returns:
        ``{"median_ms", "min_ms", "p90_ms", "runs", "warmup"}``.
    """
    model = model.to(device).eval()
    x = x.to(device)
    with torch.inference_mode():
        times = sorted(round_robin_ms({"model": lambda: model(x)}, device, runs, warmup)["model"])
    tail = min(len(times) - 1, int(math.ceil(LATENCY_PERCENTILE * len(times))) - 1)
    return {
        "median_ms": statistics.median(times),
        "min_ms": times[0],
        "p90_ms": times[tail],
        "runs": runs,
        "warmup": warmup,
    }


def gflops(model: torch.nn.Module, imgsz: int) -> tuple[float | None, str | None]:
    """GFLOPs of ``model`` at ``imgsz`` from Ultralytics' counter, or None and why (it returns 0 when it cannot count).

    Args:
        model: The (fused) model.
        imgsz: Square input size.

    Returns:
        ``(GFLOPs, None)``, or ``(None, reason)`` when there is no figure.
    """
    import importlib.util

    from ultralytics.utils.torch_utils import get_flops

    if importlib.util.find_spec("thop") is None:
        return None, "thop is not installed (pip install ultralytics-thop)"
    value = float(get_flops(model, imgsz))
    if value <= 0:
        return None, "Ultralytics' FLOP counter returned 0 (its profiling of this model failed)"
    return value, None


def reset_cuda_peak(device: torch.device) -> int:
    """Start a CUDA peak-memory measurement on ``device``; returns the bytes allocated now (the baseline)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def cuda_peak_mb(device: torch.device, base: int = 0) -> float:
    """MiB of the CUDA allocator's high-water mark on ``device`` since :func:`reset_cuda_peak`, above ``base``."""
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / MIB


def peak_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Peak MiB allocated by ``fn`` above what was allocated before it.

    On CUDA the allocator's high-water mark; elsewhere the running sum of the torch profiler's memory events.
    """
    if device.type == "cuda":
        base = reset_cuda_peak(device)
        fn()
        return cuda_peak_mb(device, base)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        current += e.nbytes()
        peak = max(peak, current)
    return peak / MIB


def peak_rss_mb() -> float | None:
    """This process's peak resident set size in MiB (child processes not included); None where unknown (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak if sys.platform == "darwin" else peak * 1024) / MIB  # bytes on macOS, KiB on Linux


def _cpu_name() -> str:
    """The CPU model name (Linux /proc/cpuinfo), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


SIMD_LEVELS = ("avx512f", "avx2", "avx", "neon", "asimd")  # widest first: what math kernels dispatch on


def _cpu_simd() -> str | None:
    """The widest vector instruction set the CPU reports (oneDNN, MKL and OpenCV pick kernels by it, which changes
    floating-point rounding: figures are comparable only between machines with the same one)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith(("flags", "Features"))), [])  # fmt: skip
    return next((level for level in SIMD_LEVELS if level in flags), None)


def _version(package: str) -> str | None:
    """An installed distribution's version, read from its metadata (the package itself is not imported)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment(device: str | None = None) -> dict[str, Any]:
    """Versions and hardware the figures were measured on.

    Args:
        device: The device string the measurements use, recorded as given.

    Returns:
        ``python``, ``torch``, ``ultralytics``, ``drconv_yolo``, ``numpy``, ``platform``, ``device``, ``cpu``,
        ``cpu_simd``, ``opencv`` (it encodes the synthetic set's JPEGs), ``cpu_count``, ``torch_threads``, ``gpus``
        (names), ``cuda`` (the CUDA version, None without a GPU).
    """
    import numpy

    from . import __version__

    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ultralytics": _version("ultralytics"),
        "drconv_yolo": __version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "device": device,
        "cpu": _cpu_name(),
        "cpu_simd": _cpu_simd(),
        "opencv": _version("opencv-python") or _version("opencv-python-headless"),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "cuda": torch.version.cuda if cuda else None,
    }
