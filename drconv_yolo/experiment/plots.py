"""The comparison's plots: mAP per epoch (mean and min-max band over seeds) and the deltas to the baseline.

Drawn with matplotlib's Agg backend (no display needed) and written through :func:`drconv_yolo.io.atomic_path`.
"""

from __future__ import annotations

import math
import statistics
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..io import save_figure
from .regions_report import plot_file
from .report import METRICS

__all__ = ["plot_curves", "plot_deltas", "plot_region_usage"]

CURVES = (("metrics/mAP50-95(B)", "mAP50-95"), ("metrics/mAP50(B)", "mAP50"))  # (results.csv column, label)
DPI = 110
CURVE_PANEL_SIZE = (6, 4.2)  # inches per panel
DELTA_FIG_WIDTH = 12  # inches
DELTA_ROW_HEIGHT = 0.45  # inches per metric row, plus DELTA_MARGIN
DELTA_MARGIN = 1.8
ARM_OFFSET = 0.25  # vertical spacing of the arms' markers within one metric row
BAND_ALPHA = 0.2
GRID_ALPHA = 0.3
MARKER_SIZE = 3
LEGEND_FONTSIZE = 8
PERCENT = 100  # metrics are fractions; plotted in percent
REGION_PANEL_SIZE = (6.4, 3.6)  # inches


def _pyplot():
    """matplotlib's pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    """Lay out, save as PNG atomically and close."""
    fig.tight_layout()
    save_figure(fig, path, DPI)


def _curves(records: Sequence[Mapping[str, Any]], arm: str, column: str) -> list[list[float]]:
    """Per seed, the per-epoch values of ``column`` for ``arm``."""
    return [
        [row.get(column, math.nan) for row in r.get("per_epoch", [])]
        for r in records
        if r["spec"]["arm"] == arm and r.get("per_epoch")
    ]


def _seed_matrix(curves: Sequence[Sequence[float]]):
    """Per-seed curves as one ``(seeds, epochs)`` array in percent, NaN-padded where a seed stopped earlier."""
    import numpy as np

    y = np.full((len(curves), max(len(c) for c in curves)), np.nan)
    for k, c in enumerate(curves):
        y[k, : len(c)] = c
    return y * PERCENT


def plot_curves(results: Mapping[str, Any], path: Path) -> None:
    """mAP50-95 and mAP50 per epoch: per arm the mean over seeds (line) and the min-max band over seeds."""
    import numpy as np

    plt = _pyplot()
    width, height = CURVE_PANEL_SIZE
    fig, axes = plt.subplots(1, len(CURVES), figsize=(width * len(CURVES), height), squeeze=False)
    for ax, (column, label) in zip(axes[0], CURVES):
        for i, arm in enumerate(results["arms"]):
            curves = _curves(results["runs"], arm, column)
            if not curves:
                continue
            y = _seed_matrix(curves)
            x = np.arange(1, y.shape[1] + 1)
            with warnings.catch_warnings():  # an epoch no seed reached is all-NaN: left as a gap
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, lo, hi = np.nanmean(y, 0), np.nanmin(y, 0), np.nanmax(y, 0)
            ax.plot(x, mean, color=f"C{i}", marker="o", ms=MARKER_SIZE, label=f"{arm} (mean of {len(curves)} seeds)")
            ax.fill_between(x, lo, hi, color=f"C{i}", alpha=BAND_ALPHA, lw=0)
        ax.set(xlabel="epoch", ylabel=f"{label} (%)", title=f"{label} per epoch (band: min-max over seeds)")
        ax.grid(alpha=GRID_ALPHA)
        ax.legend(fontsize=LEGEND_FONTSIZE)
    _save(fig, path)


def _delta_points(results: Mapping[str, Any], arm: str, group: Sequence[Any]) -> list[tuple[int, float, float]]:
    """``(row, delta, error)`` in percent per metric of ``group`` with a delta: accuracy in points, cost relative."""
    points = []
    for row, m in enumerate(group):
        d = results["deltas"][arm][m.key]
        if d["mean"] is None:
            continue
        if m.kind == "accuracy":
            points.append((row, d["mean"] * PERCENT, (d["std"] or 0.0) * PERCENT))
            continue
        base = results["summary"][results["arms"][0]][m.key]["mean"]
        if base:
            points.append((row, d["mean"] / base * PERCENT, (d["std"] or 0.0) / abs(base) * PERCENT))
    return points


def plot_deltas(results: Mapping[str, Any], path: Path) -> None:
    """Δ to the baseline per metric with error bars (std of the paired delta): accuracy in points, cost in %."""
    plt = _pyplot()
    arms = results["arms"]
    acc = [m for m in METRICS if m.kind == "accuracy"]
    cost = [m for m in METRICS if m.kind == "cost"]
    height = DELTA_ROW_HEIGHT * max(len(acc), len(cost)) + DELTA_MARGIN
    fig, axes = plt.subplots(1, 2, figsize=(DELTA_FIG_WIDTH, height))
    n = max(1, len(arms) - 1)
    for ax, group, title in ((axes[0], acc, "accuracy: Δ points (%)"), (axes[1], cost, "cost: Δ relative (%)")):
        for i, arm in enumerate(arms[1:]):
            points = _delta_points(results, arm, group)
            ys = [row + (i - (n - 1) / 2) * ARM_OFFSET for row, _, _ in points]  # the arms side by side per row
            xs, errs = [x for _, x, _ in points], [e for _, _, e in points]
            ax.errorbar(xs, ys, xerr=errs, fmt="o", color=f"C{i + 1}", capsize=3, label=f"{arm} − {arms[0]}")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(range(len(group)), [m.label for m in group])
        ax.invert_yaxis()
        ax.set(title=title, xlabel="Δ (error bar: std over seeds of the paired Δ)")
        ax.grid(alpha=GRID_ALPHA, axis="x")
        ax.legend(fontsize=LEGEND_FONTSIZE)
    _save(fig, path)


def plot_region_usage(records: Sequence[Mapping[str, Any]], arms: Sequence[str], out: Path) -> list[Path]:
    """One PNG per arm with DRConv: regions used per epoch for every layer (mean over seeds); returns the paths."""
    plt = _pyplot()
    paths = []
    for arm in arms:
        runs = [r for r in records if r["spec"]["arm"] == arm and r.get("regions")]
        if not runs:
            continue
        fig, ax = plt.subplots(figsize=REGION_PANEL_SIZE)
        names = list(runs[0]["regions"][-1]["layers"])
        for name in names:
            epochs = sorted({h["epoch"] for r in runs for h in r["regions"]})
            used = [statistics.fmean(h["layers"][name]["used"] for r in runs for h in r["regions"]
                                     if h["epoch"] == e and name in h["layers"]) for e in epochs]  # fmt: skip
            ax.plot(epochs, used, marker="o", markersize=2, label=name)
        ax.set(xlabel="epoch", ylabel="regions used (>= 1% of pixels)", title=f"{arm}: regions used per epoch")
        ax.set_ylim(0, runs[0]["regions"][-1]["layers"][names[0]]["regions"] + 0.5)
        ax.grid(alpha=GRID_ALPHA)
        ax.legend(fontsize=LEGEND_FONTSIZE, ncol=2)
        path = Path(out) / plot_file(arm)
        _save(fig, path)
        paths.append(path)
    return paths
