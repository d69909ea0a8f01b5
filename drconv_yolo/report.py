"""Tables and plots of a comparison: summary statistics, deltas to the baseline, report.md, CSV, JSON and PNGs.

Input: the run records written by :mod:`drconv_yolo.compare` (``run.json``: ``spec`` with ``arm`` and ``seed``,
``metrics`` flat, ``per_epoch`` from Ultralytics' ``results.csv``). Everything here is pure except
:func:`write_report`, which writes each file to a temporary name and renames it when complete.

Statistics: per arm, the mean and sample standard deviation (``ddof=1``; none with one seed) over seeds. Delta to the
baseline (the first arm): paired by seed, ``mean_s(arm_s - baseline_s) ± std_s(arm_s - baseline_s)`` over the seeds
both arms finished; ``rel`` is the mean delta relative to the baseline's mean on those seeds.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "METRICS",
    "Metric",
    "console_summary",
    "deltas",
    "fmt_delta",
    "fmt_mean_std",
    "markdown_report",
    "stats",
    "summarize",
    "write_report",
]

FILES = {
    "report": "report.md",
    "csv": "results.csv",
    "json": "results.json",
    "curves": "map_per_epoch.png",
    "deltas": "deltas.png",
}


@dataclass(frozen=True)
class Metric:
    """A tabulated metric: ``value * scale`` is displayed with ``digits`` decimals in ``unit``.

    Attributes:
        key: Key in a run's flat ``metrics``.
        label: Table label.
        unit: Display unit.
        scale: Display factor (accuracy 100 -> percent, parameters 1e-6 -> M).
        digits: Display decimals.
        kind: ``"accuracy"`` (deltas in points) or ``"cost"`` (deltas also in percent).
    """

    key: str
    label: str
    unit: str
    scale: float
    digits: int
    kind: str

    @property
    def header(self) -> str:
        """``label (unit)``."""
        return f"{self.label} ({self.unit})" if self.unit else self.label


METRICS = (
    Metric("mAP50-95", "mAP50-95", "%", 100.0, 2, "accuracy"),
    Metric("mAP50", "mAP50", "%", 100.0, 2, "accuracy"),
    Metric("AP", "COCO AP", "%", 100.0, 2, "accuracy"),
    Metric("AP50", "COCO AP50", "%", 100.0, 2, "accuracy"),
    Metric("AP75", "COCO AP75", "%", 100.0, 2, "accuracy"),
    Metric("APs", "COCO APs", "%", 100.0, 2, "accuracy"),
    Metric("APm", "COCO APm", "%", 100.0, 2, "accuracy"),
    Metric("APl", "COCO APl", "%", 100.0, 2, "accuracy"),
    Metric("AR", "COCO AR@max_det", "%", 100.0, 2, "accuracy"),
    Metric("params", "params", "M", 1e-6, 3, "cost"),
    Metric("GFLOPs", "GFLOPs", "", 1.0, 3, "cost"),
    Metric("latency_ms", "latency b1", "ms", 1.0, 2, "cost"),
    Metric("train_img_s", "train throughput", "img/s", 1.0, 1, "cost"),
    Metric("train_s", "train time", "min", 1 / 60, 2, "cost"),
    Metric("wall_s", "run wall time", "min", 1 / 60, 2, "cost"),
    Metric("peak_mem_MB", "peak memory", "MB", 1.0, 0, "cost"),
)
BY_KEY = {m.key: m for m in METRICS}
CURVES = (("metrics/mAP50-95(B)", "mAP50-95"), ("metrics/mAP50(B)", "mAP50"))


# ----------------------------------------------------------------------------------------------------------------------
# Statistics (pure)
# ----------------------------------------------------------------------------------------------------------------------


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def stats(values: Iterable[Any]) -> dict[str, Any]:
    """Mean, sample std (``ddof=1``), min, max and count of the finite values.

    Args:
        values: Numbers; ``None`` and non-finite ones are left out.

    Returns:
        ``{"mean", "std", "min", "max", "n"}``; ``mean``/``min``/``max`` are None without values, ``std`` is None
        with fewer than two.
    """
    v = [float(x) for x in values if _finite(x)]
    n = len(v)
    if not n:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    mean = sum(v) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "min": min(v), "max": max(v), "n": n}


def _by_arm(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[int, Mapping[str, Any]]]:
    """``{arm: {seed: record}}`` in first-seen arm order."""
    out: dict[str, dict[int, Mapping[str, Any]]] = {}
    for r in records:
        out.setdefault(r["spec"]["arm"], {})[int(r["spec"]["seed"])] = r
    return out


def summarize(records: Sequence[Mapping[str, Any]], arms: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per arm and metric: :func:`stats` over seeds plus ``values`` ``{seed: value}``.

    Args:
        records: Run records.
        arms: Arm order.

    Returns:
        ``{arm: {metric key: {"mean", "std", "min", "max", "n", "values"}}}``.
    """
    runs = _by_arm(records)
    out = {}
    for arm in arms:
        seeds = sorted(runs.get(arm, {}))
        out[arm] = {}
        for m in METRICS:
            values = {s: runs[arm][s]["metrics"].get(m.key) for s in seeds}
            out[arm][m.key] = {**stats(values.values()), "values": {str(s): v for s, v in values.items()}}
    return out


def deltas(records: Sequence[Mapping[str, Any]], arms: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Paired deltas of every arm but the first (the baseline) to the baseline, per metric.

    Args:
        records: Run records.
        arms: Arm order; ``arms[0]`` is the baseline.

    Returns:
        ``{arm: {metric key: {"mean", "std", "min", "max", "n", "rel", "seeds", "values"}}}``: statistics of the
        per-seed differences ``arm - baseline`` over the seeds where both have a value; ``rel`` = mean delta / the
        baseline's mean over those seeds (None when that mean is 0 or missing).
    """
    runs = _by_arm(records)
    base = runs.get(arms[0], {})
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for arm in arms[1:]:
        out[arm] = {}
        for m in METRICS:
            pairs = {}
            for seed in sorted(set(base) & set(runs.get(arm, {}))):
                a, b = runs[arm][seed]["metrics"].get(m.key), base[seed]["metrics"].get(m.key)
                if _finite(a) and _finite(b):
                    pairs[seed] = (float(a), float(b))
            d = stats(a - b for a, b in pairs.values())
            base_mean = stats(b for _, b in pairs.values())["mean"]
            rel = d["mean"] / base_mean if d["mean"] is not None and base_mean else None
            out[arm][m.key] = {
                **d,
                "rel": rel,
                "seeds": sorted(pairs),
                "values": {str(s): a - b for s, (a, b) in pairs.items()},
            }
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Formatting (pure)
# ----------------------------------------------------------------------------------------------------------------------


def _num(x: float | None, m: Metric, sign: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x * m.scale:+.{m.digits}f}" if sign else f"{x * m.scale:.{m.digits}f}"


def fmt_mean_std(s: Mapping[str, Any], m: Metric) -> str:
    """``"12.34 ± 0.56"`` (``"12.34"`` with one value, ``"–"`` with none), in display units."""
    if s.get("mean") is None:
        return "–"
    return _num(s["mean"], m) + (f" ± {_num(s['std'], m)}" if s.get("std") is not None else "")


def fmt_delta(d: Mapping[str, Any], m: Metric) -> str:
    """``"+1.23 ± 0.45 (+3.0%)"`` in display units; the relative part for cost metrics and accuracy alike."""
    if d.get("mean") is None:
        return "–"
    text = _num(d["mean"], m, sign=True) + (f" ± {_num(d['std'], m)}" if d.get("std") is not None else "")
    return text + (f" ({d['rel'] * 100:+.1f}%)" if d.get("rel") is not None else "")


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def summary_table(summary: Mapping[str, Any], arms: Sequence[str]) -> list[str]:
    """Markdown rows: one per metric, one column per arm (mean ± std over seeds)."""
    rows = ([m.header, *(fmt_mean_std(summary[a][m.key], m) for a in arms)] for m in METRICS)
    return _table(["metric", *arms], rows)


def delta_table(summary: Mapping[str, Any], delta: Mapping[str, Any], arms: Sequence[str]) -> list[str]:
    """Markdown rows: one per metric: the baseline's mean ± std, then each arm's delta ± std of the delta."""
    rows = (
        [m.header, fmt_mean_std(summary[arms[0]][m.key], m), *(fmt_delta(delta[a][m.key], m) for a in arms[1:])]
        for m in METRICS
    )
    return _table(["metric", f"{arms[0]} (baseline)", *(f"Δ {a}" for a in arms[1:])], rows)


def per_seed_table(records: Sequence[Mapping[str, Any]], arms: Sequence[str]) -> list[str]:
    """Markdown rows: one per run (arm, seed), one column per metric."""
    runs = _by_arm(records)
    rows = []
    for arm in arms:
        for seed in sorted(runs.get(arm, {})):
            r = runs[arm][seed]
            rows.append(
                [
                    arm,
                    str(seed),
                    str(r.get("epochs_completed", "")),
                    *(_num(r["metrics"].get(m.key), m) for m in METRICS),
                ]
            )
    return _table(["arm", "seed", "epochs", *(m.header for m in METRICS)], rows)


def _settings_lines(settings: Mapping[str, Any], env: Mapping[str, Any]) -> list[str]:
    gpus = ", ".join(env.get("gpus") or []) or "none"
    return [
        "## Settings",
        "",
        f"- command: `{settings.get('command') or '(API call)'}`",
        f"- data: `{settings['data']}` ({settings['n_train']} train images, {settings['n_eval']} "
        f"{settings['split']} images, {len(settings.get('classes') or [])} classes)",
        f"- ground truth: `{settings['gt_json']}`",
        "- arms: "
        + ", ".join(f"`{a}` = `{m}`" for a, m in settings["arms"].items())
        + f"; baseline `{settings['baseline']}`",
        f"- seeds: {settings['seeds']}",
        f"- one subprocess per run: {settings['subprocess_per_run']}",
        "",
        "Ultralytics train arguments, identical for every run (plus `model`, and `seed` per seed):",
        "",
        "```json",
        json.dumps(settings["train"], indent=1, sort_keys=True),
        "```",
        "",
        "Evaluation (`drconv_yolo.evaluation.evaluate` on `best.pt`) and measurements:",
        "",
        "```json",
        json.dumps({"eval": settings["eval"], "measure": settings["measure"]}, indent=1, sort_keys=True),
        "```",
        "",
        "## Environment",
        "",
        f"- python {env['python']}, torch {env['torch']}, ultralytics {env['ultralytics']}, "
        f"drconv-yolo {env['drconv_yolo']}, numpy {env['numpy']}",
        f"- device `{env['device']}`; CPU {env['cpu']} ({env['cpu_count']} logical cores, torch threads "
        f"{env['torch_threads']}); GPUs: {gpus}" + (f"; CUDA {env['cuda']}" if env.get("cuda") else ""),
        f"- platform {env['platform']}",
    ]


NOTES = (
    "## What is measured",
    "",
    "- mAP50 / mAP50-95: Ultralytics' validator on `best.pt`; COCO AP…AR: pycocotools on the same predictions against "
    "the prepared ground-truth JSON (AP and AR at maxDets = max_det). Percent.",
    "- params: the trained (unfused) model; GFLOPs: the fused model at the training image size (Ultralytics' thop "
    "counter, DRConv's dynamic conv, guide and filter generator counted).",
    "- latency b1: median of the timed batch-1 fp32 forward passes of the fused model on the first training device, "
    "in the run's process, after untimed warm-up passes; the input is `(1, 3, imgsz, imgsz)`.",
    "- train throughput: training images per second of the training loop (per-epoch validation excluded); train "
    "time: Ultralytics' `train()` call (validation, checkpoints and final validation included); run wall time: "
    "training, evaluation and measurements.",
    "- peak memory: see `notes.memory` of each run in results.json (CUDA max_memory_allocated on a GPU; the run "
    "process's peak RSS on CPU).",
    "- mean ± sample std over seeds; Δ: mean ± std over seeds of the per-seed difference to the baseline trained "
    "with the same seed (percent: relative to the baseline's mean). Timings on a shared machine are noisy.",
)


def markdown_report(results: Mapping[str, Any]) -> str:
    """The whole ``report.md`` text from ``results.json``'s content."""
    arms, settings, env = results["arms"], results["settings"], results["environment"]
    summary, delta, records = results["summary"], results["deltas"], results["runs"]
    n_seeds = len(settings["seeds"])
    train = settings["train"]
    lines = [
        "# Baseline comparison: " + " vs ".join(f"`{a}`" for a in arms),
        "",
        f"{len(records)} runs ({len(arms)} arms x {n_seeds} seeds), {train['epochs']} epochs at {train['imgsz']} px, "
        f"batch {train['batch']}, device `{env['device']}`; written {results['written']}.",
        "",
        f"## Summary (mean ± std over {n_seeds} seeds)",
        "",
        *summary_table(summary, arms),
        "",
        f"## Δ to the baseline `{arms[0]}` (paired by seed: mean ± std of the per-seed differences)",
        "",
        *delta_table(summary, delta, arms),
        "",
        "## Per-seed values",
        "",
        *per_seed_table(records, arms),
        "",
        "## Plots",
        "",
        f"![mAP per epoch]({FILES['curves']})",
        "",
        f"![deltas to the baseline]({FILES['deltas']})",
        "",
        *_settings_lines(settings, env),
        "",
        *NOTES,
        "",
    ]
    warnings = [
        f"- {r['spec']['arm']} seed {r['spec']['seed']}: {w}"
        for r in records
        for w in (r.get("eval") or {}).get("warnings", [])
    ]
    if warnings:
        lines += ["## Evaluation warnings", "", *warnings, ""]
    return "\n".join(lines)


def console_summary(results: Mapping[str, Any]) -> str:
    """The delta table as printed at the end of a comparison."""
    arms = results["arms"]
    head = f"Comparison ({len(results['settings']['seeds'])} seeds; mean ± std, Δ paired by seed):"
    return "\n".join([head, *delta_table(results["summary"], results["deltas"], arms)])


# ----------------------------------------------------------------------------------------------------------------------
# CSV and plots
# ----------------------------------------------------------------------------------------------------------------------


def csv_text(records: Sequence[Mapping[str, Any]]) -> str:
    """``results.csv``: one row per run (arm, seed, model, epochs, run_dir, then every metric in raw units)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["arm", "seed", "model", "epochs_completed", "run_dir", *(m.key for m in METRICS)])
    for r in records:
        s = r["spec"]
        writer.writerow(
            [
                s["arm"],
                s["seed"],
                s["model"],
                r.get("epochs_completed", ""),
                s["run_dir"],
                *("" if r["metrics"].get(m.key) is None else repr(float(r["metrics"][m.key])) for m in METRICS),
            ]
        )
    return buf.getvalue()


def _curves(records: Sequence[Mapping[str, Any]], arm: str, column: str) -> list[list[float]]:
    """Per seed, the per-epoch values of ``column`` for ``arm``."""
    return [
        [row.get(column, math.nan) for row in r.get("per_epoch", [])]
        for r in records
        if r["spec"]["arm"] == arm and r.get("per_epoch")
    ]


def plot_curves(results: Mapping[str, Any], path: Path) -> None:
    """mAP50-95 and mAP50 per epoch: per arm the mean over seeds (line) and the min-max band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(CURVES), figsize=(6 * len(CURVES), 4.2), squeeze=False)
    for ax, (column, label) in zip(axes[0], CURVES):
        for i, arm in enumerate(results["arms"]):
            curves = _curves(results["runs"], arm, column)
            if not curves:
                continue
            n = max(len(c) for c in curves)
            y = np.full((len(curves), n), np.nan)
            for k, c in enumerate(curves):
                y[k, : len(c)] = c
            y *= 100
            x = np.arange(1, n + 1)
            color = f"C{i}"
            with warnings.catch_warnings():  # an epoch no seed reached is all-NaN: left as a gap
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, lo, hi = np.nanmean(y, 0), np.nanmin(y, 0), np.nanmax(y, 0)
            ax.plot(x, mean, color=color, marker="o", ms=3, label=f"{arm} (mean of {len(curves)} seeds)")
            ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)
        ax.set(xlabel="epoch", ylabel=f"{label} (%)", title=f"{label} per epoch (band: min-max over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)


def plot_deltas(results: Mapping[str, Any], path: Path) -> None:
    """Δ to the baseline per metric with error bars (std of the paired delta): accuracy in points, cost in %."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = results["arms"]
    acc = [m for m in METRICS if m.kind == "accuracy"]
    cost = [m for m in METRICS if m.kind == "cost"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * max(len(acc), len(cost)) + 1.8))
    n = max(1, len(arms) - 1)
    for ax, group, title in ((axes[0], acc, "accuracy: Δ points (%)"), (axes[1], cost, "cost: Δ relative (%)")):
        for i, arm in enumerate(arms[1:]):
            ys, xs, errs = [], [], []
            for j, m in enumerate(group):
                d = results["deltas"][arm][m.key]
                if d["mean"] is None:
                    continue
                if m.kind == "accuracy":
                    x, err = d["mean"] * 100, (d["std"] or 0.0) * 100
                else:
                    base = results["summary"][arms[0]][m.key]["mean"]
                    if not base:
                        continue
                    x, err = d["mean"] / base * 100, (d["std"] or 0.0) / abs(base) * 100
                ys.append(j + (i - (n - 1) / 2) * 0.25)
                xs.append(x)
                errs.append(err)
            ax.errorbar(xs, ys, xerr=errs, fmt="o", color=f"C{i + 1}", capsize=3, label=f"{arm} − {arms[0]}")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(range(len(group)), [m.label for m in group])
        ax.invert_yaxis()
        ax.set(title=title, xlabel="Δ (error bar: std over seeds of the paired Δ)")
        ax.grid(alpha=0.3, axis="x")
        ax.legend(fontsize=8)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    """Save a figure as PNG through a temporary name."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fig.tight_layout()
        fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------------


def _write_text(path: Path, text: str) -> None:
    from drconv_yolo.data._io import atomic_write_text

    atomic_write_text(path, text)


def build_results(
    records: Sequence[Mapping[str, Any]], settings: Mapping[str, Any], env: Mapping[str, Any]
) -> dict[str, Any]:
    """``results.json``'s content: settings, environment, metric definitions, runs, summary and deltas.

    Args:
        records: Run records (any order; arm order comes from ``settings["arms"]``).
        settings: Comparison settings (``arms`` ``{name: model}``, ``seeds``, ``train``, ...).
        env: :func:`drconv_yolo.compare.environment`.

    Returns:
        The results dict.
    """
    arms = list(settings["arms"])
    order = {a: i for i, a in enumerate(arms)}
    runs = sorted(records, key=lambda r: (order.get(r["spec"]["arm"], len(arms)), int(r["spec"]["seed"])))
    return {
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "arms": arms,
        "baseline": arms[0],
        "settings": dict(settings),
        "environment": dict(env),
        "metrics": [
            {"key": m.key, "label": m.label, "unit": m.unit, "scale": m.scale, "digits": m.digits, "kind": m.kind}
            for m in METRICS
        ],
        "summary": summarize(runs, arms),
        "deltas": deltas(runs, arms),
        "runs": runs,
    }


def write_report(
    out: str | os.PathLike, records: Sequence[Mapping[str, Any]], settings: Mapping[str, Any], env: Mapping[str, Any]
) -> dict[str, Any]:
    """Write plots, ``results.csv``, ``results.json`` and ``report.md`` (last) into ``out``, each atomically.

    Args:
        out: Output folder.
        records: Run records.
        settings: Comparison settings.
        env: Environment description.

    Returns:
        The results dict with ``"paths"`` (``{"report", "csv", "json", "curves", "deltas"}`` absolute paths).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = build_results(records, settings, env)
    paths = {k: out / v for k, v in FILES.items()}
    plot_curves(results, paths["curves"])
    plot_deltas(results, paths["deltas"])
    _write_text(paths["csv"], csv_text(results["runs"]))
    _write_text(paths["json"], json.dumps(results, indent=1, default=str) + "\n")
    _write_text(paths["report"], markdown_report(results))
    results["paths"] = {k: str(v) for k, v in paths.items()}
    return results
