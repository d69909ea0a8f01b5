"""Contrast two comparisons on two datasets: is an arm's paired gain on one set different from its gain on the other?

The study's question. DRConv claims region-dependent appearance; the control set (``prepare synthetic --appearance
uniform``) has the same scenes with every object lit independently of its region. If an arm gains as much on the
control as on the main set, its gain does not come from regions. For every arm that both comparisons hold (with the
same baseline), per seed s both comparisons have ``delta_s = arm_s - baseline_s``; the contrast is
``delta_main,s - delta_control,s``, with a paired-t 95% interval over the seeds both hold (the same seed gives the
same initial weights and the same data order on both sets: pairing by seed removes that shared noise).

:func:`contrast` reads two ``compare`` output folders (their ``results.json``); :func:`contrast_markdown` renders the
result; ``drconv-yolo contrast`` writes both.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Mapping

from .intervals import paired_interval
from .report import FILES
from .settings import CompareError

__all__ = ["contrast", "contrast_markdown", "load_results"]


def load_results(folder: str | Path) -> Dict[str, Any]:
    """A ``compare`` output folder's ``results.json``.

    Raises:
        CompareError: The file is missing or not a comparison's results.
    """
    path = Path(folder) / FILES["json"]
    if not path.is_file():
        raise CompareError(f"{path}: no such file (is {folder} a finished drconv-yolo compare --out folder?)")
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CompareError(f"{path}: not readable as JSON ({e})") from None
    if not isinstance(results, dict) or not {"baseline", "arms", "deltas", "summary"} <= set(results):
        raise CompareError(f"{path}: not the results of drconv-yolo compare (needs baseline, arms, deltas, summary)")
    return results


def _seed_values(results: Mapping[str, Any], arm: str, metric: str) -> Dict[int, float]:
    """``{seed: arm's paired delta}`` of one comparison (empty when the metric was not measured)."""
    values = results["deltas"].get(arm, {}).get(metric, {}).get("values") or {}
    return {int(s): float(v) for s, v in values.items() if v is not None and math.isfinite(float(v))}


def _baseline_spread(results: Mapping[str, Any], metric: str) -> Dict[str, Any]:
    s = results["summary"].get(results["baseline"], {}).get(metric, {})
    return {"mean": s.get("mean"), "std": s.get("std"), "n": s.get("n")}


def contrast(main: str | Path, control: str | Path, metric: str = "mAP50-95") -> Dict[str, Any]:
    """Every shared arm's paired delta on ``main``, on ``control``, and their difference, each with its interval.

    Args:
        main: ``compare --out`` folder on the main dataset.
        control: ``compare --out`` folder on the control dataset.
        metric: A metric key of ``results.json`` (``mAP50-95``, ``mAP50``, ``AP``, ...).

    Returns:
        ``{"metric", "baseline", "main", "control", "baseline_spread": {"main", "control"}, "arms": {arm: {"seeds",
        "main", "control", "difference"}}}``; each of the three is ``{"mean", "values", **paired_interval}``.

    Raises:
        CompareError: A folder without results, different baselines, no shared arm, or no shared seed.
    """
    a, b = load_results(main), load_results(control)
    if a["baseline"] != b["baseline"]:
        raise CompareError(f"the baselines differ: {a['baseline']!r} in {main}, {b['baseline']!r} in {control}")
    shared = [arm for arm in a["arms"] if arm in b["arms"] and arm != a["baseline"]]
    if not shared:
        raise CompareError(f"{main} and {control} share no arm besides the baseline {a['baseline']!r}")
    arms = {}
    for arm in shared:
        da, db = _seed_values(a, arm, metric), _seed_values(b, arm, metric)
        seeds = sorted(set(da) & set(db))
        if not seeds:
            raise CompareError(f"arm {arm!r}: no seed with {metric} in both {main} and {control}")
        parts = {
            "main": [da[s] for s in seeds],
            "control": [db[s] for s in seeds],
            "difference": [da[s] - db[s] for s in seeds],
        }
        arms[arm] = {"seeds": seeds}
        for name, values in parts.items():
            arms[arm][name] = {"mean": sum(values) / len(values), "values": values, **paired_interval(values)}
    return {
        "metric": metric,
        "baseline": a["baseline"],
        "main": str(main),
        "control": str(control),
        "baseline_spread": {"main": _baseline_spread(a, metric), "control": _baseline_spread(b, metric)},
        "arms": arms,
    }


def _cell(part: Mapping[str, Any], scale: float) -> str:
    text = f"{part['mean'] * scale:+.2f}"
    if part["low"] is None:
        return f"{text} (CI n/a: 1 seed)"
    text += f" [{part['low'] * scale:+.2f}, {part['high'] * scale:+.2f}]"
    return text + (", excludes 0" if part["excludes_zero"] else "")


def contrast_markdown(result: Mapping[str, Any], scale: float = 100.0) -> str:
    """The contrast as a Markdown section (values x ``scale``: points for the mAP metrics)."""
    metric, base = result["metric"], result["baseline"]
    spread = result["baseline_spread"]

    def spread_text(s):
        if s["mean"] is None:
            return "n/a"
        return f"{s['mean'] * scale:.2f} ± {(s['std'] or 0.0) * scale:.2f} ({s['n']} seeds)"

    lines = [
        f"# Contrast of two comparisons: {metric}, points, Δ to `{base}` paired by seed (95% CI, paired t)",
        "",
        f"- main: `{result['main']}`; baseline {spread_text(spread['main'])}",
        f"- control: `{result['control']}`; baseline {spread_text(spread['control'])}",
        "- difference: Δ on main − Δ on control, per seed; an interval that excludes 0 says the arm's effect depends",
        "  on the dataset (on the study's sets: on whether objects look different in different regions).",
        "",
        "| arm | seeds | Δ main | Δ control | difference |",
        "|---|---|---|---|---|",
    ]
    for arm, r in result["arms"].items():
        seeds = " ".join(str(s) for s in r["seeds"])
        lines.append(
            f"| {arm} | {seeds} | {_cell(r['main'], scale)} | {_cell(r['control'], scale)} | "
            f"{_cell(r['difference'], scale)} |"
        )
    return "\n".join(lines) + "\n"
