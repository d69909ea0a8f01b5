"""The figures of a comparison: summary statistics, deltas to the baseline, and the text of report.md, CSV and JSON.

Input: the run records written by :mod:`drconv_yolo.experiment.worker` (``run.json``: ``spec`` with ``arm`` and
``seed``, ``metrics`` flat, ``per_epoch`` from Ultralytics' ``results.csv``). Everything here is pure: the plots are
:mod:`~drconv_yolo.experiment.plots`, and :func:`drconv_yolo.experiment.run.write_report` writes the files.

Statistics: per arm, the mean and sample standard deviation (``ddof=1``; none with one seed) over seeds. Delta to the
baseline (the first arm): paired by seed, ``mean_s(arm_s - baseline_s) ± std_s(arm_s - baseline_s)`` over the seeds
both arms finished; ``rel`` is the mean delta relative to the baseline's mean on those seeds; ``ci95`` the paired-t 95%
confidence interval of the mean delta (:mod:`~drconv_yolo.experiment.intervals`; none with one seed). An arm whose
mean parameters or GFLOPs differ from the baseline's by more than :data:`COST_MATCH_TOLERANCE` is flagged as not
cost-matched: its accuracy difference may come from its size, not from its design.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

from .intervals import CONFIDENCE, paired_interval
from .regions_report import region_lines, region_summary

__all__ = [
    "BY_KEY",
    "FILES",
    "METRICS",
    "Metric",
    "build_results",
    "cost_match",
    "console_summary",
    "csv_text",
    "deltas",
    "fmt_delta",
    "fmt_interval",
    "fmt_mean_std",
    "markdown_report",
    "stats",
    "summarize",
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
    Metric("latency_ms", "latency b1 (PyTorch)", "ms", 1.0, 2, "cost"),
    Metric("deployed_latency_ms", "deployed latency b1 (ONNX)", "ms", 1.0, 2, "cost"),
    Metric("train_img_s", "train throughput", "img/s", 1.0, 1, "cost"),
    Metric("train_s", "train time", "min", 1 / 60, 2, "cost"),
    Metric("wall_s", "run wall time", "min", 1 / 60, 2, "cost"),
    Metric("peak_mem_MB", "peak memory", "MB", 1.0, 0, "cost"),
)
BY_KEY = {m.key: m for m in METRICS}
COST_MATCH_TOLERANCE = 0.10  # relative difference in params or GFLOPs beyond which an arm is not cost-matched
# what the cost match compares: the model's size and arithmetic, and what it costs to run in PyTorch and deployed
COST_MATCH_KEYS = ("params", "GFLOPs", "latency_ms", "deployed_latency_ms")
NOTED_KEYS = ("GFLOPs", "deployed_latency_ms")  # metrics a run may lack with a reason in its record's notes
HEADLINE_METRIC = "mAP50-95"  # whose confidence interval the console summary prints
SETTINGS_INDENT = 1  # of the JSON blocks in report.md


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
                "ci95": paired_interval([a - b for a, b in pairs.values()], CONFIDENCE),
                "seeds": sorted(pairs),
                "values": {str(s): a - b for s, (a, b) in pairs.items()},
            }
    return out


def cost_match(summary: Mapping[str, Any], arms: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per arm but the baseline: relative difference of its mean params, GFLOPs, PyTorch latency and deployed (ONNX)
    latency to the baseline's, and a flag.

    Args:
        summary: :func:`summarize` output.
        arms: Arm order; ``arms[0]`` is the baseline.

    Returns:
        ``{arm: {key: rel | None for each of COST_MATCH_KEYS, "matched": bool | None}}``: ``matched`` is False when
        a figure is more than :data:`COST_MATCH_TOLERANCE` above or below the baseline's, None when none could be
        compared.
    """
    out = {}
    for arm in arms[1:]:
        rel = {}
        for key in COST_MATCH_KEYS:
            base, value = summary[arms[0]][key]["mean"], summary[arm][key]["mean"]
            rel[key] = (value - base) / base if base and value is not None else None
        known = [abs(r) for r in rel.values() if r is not None]
        out[arm] = {**rel, "matched": all(r <= COST_MATCH_TOLERANCE for r in known) if known else None}
    return out


def not_measured(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """``{arm: {metric key: why it has no value}}`` from the runs' notes (a GFLOPs count that was not possible)."""
    out: dict[str, dict[str, str]] = {}
    for r in records:
        for key in NOTED_KEYS:
            why = (r.get("notes") or {}).get(key)
            if why and r["metrics"].get(key) is None:
                out.setdefault(r["spec"]["arm"], {})[key] = why
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


def fmt_interval(d: Mapping[str, Any], m: Metric) -> str:
    """``"+1.23 [+0.40, +2.06], excludes 0"``, ``"+1.23 [-0.40, +2.86]"``, or ``"+1.23, CI n/a (1 seed)"``."""
    if d.get("mean") is None:
        return "–"
    ci = d.get("ci95") or {}
    if ci.get("low") is None:
        return f"{_num(d['mean'], m, sign=True)}, CI n/a ({d.get('n', 0)} seed)"
    text = f"{_num(d['mean'], m, sign=True)} [{_num(ci['low'], m, sign=True)}, {_num(ci['high'], m, sign=True)}]"
    return text + (", excludes 0" if ci["excludes_zero"] else "")


def _or_reason(text: str, why: str | None) -> str:
    """A missing figure (``"–"``) with the reason it is missing, when there is one."""
    return f"n/a ({why})" if text == "–" and why else text


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def summary_table(
    summary: Mapping[str, Any], arms: Sequence[str], missing: Mapping[str, Mapping[str, str]] | None = None
) -> list[str]:
    """Markdown rows: one per metric, one column per arm (mean ± std over seeds; a missing figure with its reason)."""
    missing = missing or {}
    rows = (
        [m.header, *(_or_reason(fmt_mean_std(summary[a][m.key], m), missing.get(a, {}).get(m.key)) for a in arms)]
        for m in METRICS
    )
    return _table(["metric", *arms], rows)


def delta_table(
    summary: Mapping[str, Any],
    delta: Mapping[str, Any],
    arms: Sequence[str],
    missing: Mapping[str, Mapping[str, str]] | None = None,
    fmt=None,
) -> list[str]:
    """Markdown rows: one per metric: the baseline's mean ± std, then each arm's delta (``fmt``, default
    :func:`fmt_delta`: ± std of the delta); a missing figure with its reason."""
    missing, fmt = missing or {}, fmt or fmt_delta

    def why(arm: str, key: str) -> str | None:
        return missing.get(arm, {}).get(key) or missing.get(arms[0], {}).get(key)

    rows = (
        [
            m.header,
            _or_reason(fmt_mean_std(summary[arms[0]][m.key], m), why(arms[0], m.key)),
            *(_or_reason(fmt(delta[a][m.key], m), why(a, m.key)) for a in arms[1:]),
        ]
        for m in METRICS
    )
    return _table(["metric", f"{arms[0]} (baseline)", *(f"Δ {a}" for a in arms[1:])], rows)


def cost_lines(match: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per arm: cost-matched or not, with its relative params and GFLOPs."""
    lines = []
    for arm, c in match.items():
        parts = ", ".join(
            f"{BY_KEY[key].label} {c[key] * 100:+.1f}%" if c[key] is not None else f"{BY_KEY[key].label} n/a"
            for key in COST_MATCH_KEYS
        )
        verdict = {True: "cost-matched", False: "**not cost-matched**", None: "cost match unknown"}[c["matched"]]
        lines.append(f"- `{arm}`: {verdict} ({parts} vs the baseline; tolerance ±{COST_MATCH_TOLERANCE:.0%})")
    return lines


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
                    *(_or_reason(_num(r["metrics"].get(m.key), m), (r.get("notes") or {}).get(m.key)) for m in METRICS),
                ]
            )
    return _table(["arm", "seed", "epochs", *(m.header for m in METRICS)], rows)


def placement_lines(records: Sequence[Mapping[str, Any]], arms: Sequence[str]) -> list[str]:
    """Where each run ran (its backend's placement: host, node, GPUs, CPUs, attempt, start and end), and which runs
    were run again after their node or worker was lost; runs recorded before placements were, as unknown."""
    runs = _by_arm(records)
    rows, retried = [], []
    for arm in arms:
        for seed in sorted(runs.get(arm, {})):
            p = runs[arm][seed].get("placement") or {}
            attempt = int(p.get("attempt") or 1)
            if attempt > 1:
                retried.append(f"{arm} seed {seed} (attempt {attempt})")
            gpus = ",".join(map(str, p.get("gpus") or [])) or "-"
            node = str(p.get("node") or "-")
            node = node[:12] if p.get("backend") == "ray" else node  # a Ray node id is 56 hex digits; names stay whole
            node += f" (job {p['slurm_job']})" if p.get("slurm_job") else ""  # SLURM: array job id _ task id
            cells = (p.get("backend", "?"), p.get("host", "?"), node, p.get("device", "?"), gpus, p.get("cpus", "-"))
            rows.append([arm, str(seed), *map(str, cells), str(attempt), p.get("started", "?"), p.get("finished", "?")])
    header = ["arm", "seed", "backend", "host", "node", "device", "GPUs", "CPUs", "attempt", "started", "finished"]
    note = f"Run again after their node or worker was lost: {', '.join(retried)}." if retried else "No run was retried."
    return [*_table(header, rows), "", note]


def _ground_truth(settings: Mapping[str, Any]) -> str:
    """Where the ground truth came from (:meth:`~drconv_yolo.data.yolo.GroundTruth.describe`)."""
    gt = settings.get("ground_truth") or {}
    return gt.get("description") or f"`{settings['gt_json']}`"


def _settings_lines(settings: Mapping[str, Any], env: Mapping[str, Any]) -> list[str]:
    gpus = ", ".join(env.get("gpus") or []) or "none"
    return [
        "## Settings",
        "",
        f"- command: `{settings.get('command') or '(API call)'}`",
        f"- data: `{settings['data']}` ({settings['n_train']} train images, {settings['n_eval']} "
        f"{settings['split']} images, {len(settings.get('classes') or [])} classes)",
        f"- ground truth: {_ground_truth(settings)}",
        f"- dataset fingerprint (train and evaluated split): `{settings.get('data_fingerprint', 'not recorded')}`",
        "- arms: "
        + ", ".join(f"`{a}` = `{m}`" for a, m in settings["arms"].items())
        + f"; baseline `{settings['baseline']}`",
        f"- seeds: {settings['seeds']}",
        f"- one subprocess per run: {settings['subprocess_per_run']}; backend: {settings.get('backend', 'local')}",
        "",
        "Ultralytics train arguments, identical for every run (plus `model`, and `seed` per seed):",
        "",
        "```json",
        json.dumps(settings["train"], indent=SETTINGS_INDENT, sort_keys=True),
        "```",
        "",
        "Evaluation (`drconv_yolo.evaluation.evaluate` on `best.pt`) and measurements:",
        "",
        "```json",
        json.dumps({"eval": settings["eval"], "measure": settings["measure"]}, indent=SETTINGS_INDENT, sort_keys=True),
        "```",
        "",
        "## Environment",
        "",
        f"- python {env['python']}, torch {env['torch']}, ultralytics {env['ultralytics']}, "
        f"drconv-yolo {env['drconv_yolo']}, numpy {env['numpy']}",
        f"- device `{env['device']}`; CPU {env['cpu']} ({env.get('cpu_simd') or 'SIMD unknown'}, {env['cpu_count']} "
        f"logical cores, torch threads {env['torch_threads']}); GPUs: {gpus}"
        + (f"; CUDA {env['cuda']}" if env.get("cuda") else "")
        + (f"; OpenCV {env['opencv']}" if env.get("opencv") else ""),
        f"- platform {env['platform']}",
    ]


NOTES = (
    "## What is measured",
    "",
    "- mAP50 / mAP50-95: Ultralytics' validator on `best.pt`; COCO AP…AR: pycocotools on the same predictions against "
    "the ground-truth JSON named under Settings (given, prepared with the dataset, or built from its YOLO labels; AP "
    "and AR at maxDets = max_det). Percent.",
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
    '- 95% CI: paired t interval of the mean per-seed Δ (t quantile with seeds − 1 degrees of freedom); "excludes 0" '
    "marks a difference the seeds resolve. With one seed there is no spread to build an interval from.",
    f"- cost-matched: mean params and GFLOPs within ±{COST_MATCH_TOLERANCE:.0%} of the baseline's.",
)


def markdown_report(results: Mapping[str, Any]) -> str:
    """The whole ``report.md`` text from ``results.json``'s content."""
    arms, settings, env = results["arms"], results["settings"], results["environment"]
    summary, delta, records = results["summary"], results["deltas"], results["runs"]
    missing = results.get("not_measured", {})
    n_seeds = len(settings["seeds"])
    train = settings["train"]
    lines = [
        "# Baseline comparison: " + " vs ".join(f"`{a}`" for a in arms),
        "",
        f"{len(records)} runs ({len(arms)} arms x {n_seeds} seeds), {train['epochs']} epochs at {train['imgsz']} px, "
        f"batch {train['batch']}, device `{env['device']}`; written {results['written']}.",
        "",
        f"Ground truth: {_ground_truth(settings)}.",
        "",
        f"## Summary (mean ± std over {n_seeds} seeds)",
        "",
        *summary_table(summary, arms, missing),
        "",
        f"## Δ to the baseline `{arms[0]}` (paired by seed: mean ± std of the per-seed differences)",
        "",
        *delta_table(summary, delta, arms, missing),
        "",
        f"## Δ with its {CONFIDENCE:.0%} confidence interval (paired t over {n_seeds} seeds)",
        "",
        *delta_table(summary, delta, arms, missing, fmt=fmt_interval),
        "",
        "## Cost match",
        "",
        *cost_lines(results.get("cost_match", {})),
        "",
        "## Regions used (DRConv layers and blocks)",
        "",
        *region_lines(results.get("regions", {})),
        "",
        "## Per-seed values",
        "",
        *per_seed_table(records, arms),
        "",
        "## Where the runs ran",
        "",
        *placement_lines(records, arms),
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
    """What is printed at the end of a comparison: the ground truth, the delta table, intervals and cost match."""
    arms, missing, key = results["arms"], results.get("not_measured", {}), HEADLINE_METRIC
    head = f"Comparison ({len(results['settings']['seeds'])} seeds; mean ± std, Δ paired by seed):"
    intervals = [
        f"{key} Δ {a} with its {CONFIDENCE:.0%} CI: {fmt_interval(results['deltas'][a][key], BY_KEY[key])}"
        for a in arms[1:]
    ]
    return "\n".join(
        [
            f"Ground truth: {_ground_truth(results['settings'])}",
            head,
            *delta_table(results["summary"], results["deltas"], arms, missing),
            *intervals,
            *(line.replace("**", "") for line in cost_lines(results.get("cost_match", {}))),
        ]
    )


# ----------------------------------------------------------------------------------------------------------------------
# CSV and JSON
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


def build_results(
    records: Sequence[Mapping[str, Any]], settings: Mapping[str, Any], env: Mapping[str, Any]
) -> dict[str, Any]:
    """``results.json``'s content: settings, environment, metric definitions, runs, summary and deltas.

    Args:
        records: Run records (any order; arm order comes from ``settings["arms"]``).
        settings: Comparison settings (``arms`` ``{name: model}``, ``seeds``, ``train``, ...).
        env: :func:`drconv_yolo.measure.environment`.

    Returns:
        The results dict: ``written``, ``arms``, ``baseline``, ``settings``, ``environment``, ``metrics``, ``summary``,
        ``deltas``, ``cost_match``, ``not_measured`` (``{arm: {metric: reason}}``), ``runs``.
    """
    arms = list(settings["arms"])
    order = {a: i for i, a in enumerate(arms)}
    runs = sorted(records, key=lambda r: (order.get(r["spec"]["arm"], len(arms)), int(r["spec"]["seed"])))
    summary = summarize(runs, arms)
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
        "summary": summary,
        "deltas": deltas(runs, arms),
        "cost_match": cost_match(summary, arms),
        "not_measured": not_measured(runs),
        "regions": region_summary(runs, arms),
        "runs": runs,
    }
