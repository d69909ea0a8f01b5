"""The comparison's region diagnostics: per arm, how many regions each DRConv layer or block used in the last epoch
(mean over seeds) and which collapsed to one region; :mod:`.plots` draws the regions used epoch by epoch.

Each run's ``region_stats.json`` (written during training by :mod:`drconv_yolo.diagnostics`) is copied into its
record under ``"regions"``; arms without DRConv have none and are left out.
"""

from __future__ import annotations

import statistics
from typing import Any, Dict, List, Mapping, Sequence

__all__ = ["region_summary", "region_lines", "plot_file"]


def _last_epoch(record: Mapping[str, Any]) -> Mapping[str, Any]:
    history = record.get("regions") or []
    return history[-1]["layers"] if history else {}


def region_summary(records: Sequence[Mapping[str, Any]], arms: Sequence[str]) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """``{arm: {layer: {"regions", "used", "entropy", "per_image", "collapsed", "seeds"}}}`` for the last epoch,
    means over the arm's seeds; ``collapsed`` counts the seeds in which the layer used one region only."""
    out: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for arm in arms:
        layers: Dict[str, List[Mapping[str, Any]]] = {}
        for r in records:
            if r["spec"]["arm"] == arm:
                for name, s in _last_epoch(r).items():
                    layers.setdefault(name, []).append(s)
        if layers:
            out[arm] = {
                name: {
                    "regions": seen[0]["regions"],
                    "used": statistics.fmean(s["used"] for s in seen),
                    "entropy": statistics.fmean(s["entropy"] for s in seen),
                    "per_image": statistics.fmean(s["per_image"] or 0.0 for s in seen),
                    "collapsed": sum(bool(s["collapsed"]) for s in seen),
                    "seeds": len(seen),
                }
                for name, seen in layers.items()
            }
    return out


def plot_file(arm: str) -> str:
    """File name of an arm's region-usage plot."""
    return f"regions_{''.join(c if c.isalnum() or c in '-_' else '-' for c in arm)}.png"


def region_lines(summary: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> List[str]:
    """Markdown: one table per arm, a line naming the collapsed layers, and the arm's plot."""
    if not summary:
        return ["No arm has DRConv layers with region statistics (or training ran without validation)."]
    lines: List[str] = []
    for arm, layers in summary.items():
        lines += [f"**{arm}** (last epoch, mean over seeds)", "",
                  "| layer | regions used (>= 1% of pixels) | entropy (bits) | regions per image | collapsed (seeds) |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for name, s in layers.items():
            flag = f"**{s['collapsed']}/{s['seeds']}**" if s["collapsed"] else f"0/{s['seeds']}"
            lines.append(
                f"| {name} | {s['used']:.1f}/{s['regions']} | {s['entropy']:.2f} | {s['per_image']:.1f} | {flag} |"
            )
        collapsed = [n for n, s in layers.items() if s["collapsed"]]
        if collapsed:
            lines += ["", f"Collapsed to one region in at least one seed: {', '.join(collapsed)}."]
        lines += ["", f"![regions used per epoch, {arm}]({plot_file(arm)})", ""]
    return lines
