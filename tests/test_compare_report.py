"""compare's report on small known inputs: paired confidence intervals, the cost-match flag, GFLOPs never a bare 0."""

from __future__ import annotations

import math

import pytest
import torch

from drconv_yolo import measure
from drconv_yolo.experiment import intervals
from drconv_yolo.experiment import report as rep

# Student's t quantiles from published tables (6 decimals)
T_TABLE = {
    (0.975, 1): 12.706205,
    (0.975, 2): 4.302653,
    (0.975, 3): 3.182446,
    (0.975, 5): 2.570582,
    (0.975, 10): 2.228139,
    (0.975, 30): 2.042272,
    (0.975, 100): 1.983972,
    (0.995, 4): 4.604095,
    (0.95, 7): 1.894579,
    (0.9, 1): 3.077684,
}


@pytest.mark.parametrize("p, df", sorted(T_TABLE))
def test_t_quantile_matches_the_tables(p, df):
    assert intervals.t_quantile(p, df) == pytest.approx(T_TABLE[p, df], abs=1e-6)
    assert intervals.t_quantile(1 - p, df) == pytest.approx(-T_TABLE[p, df], abs=1e-6)


def test_t_quantile_tends_to_the_normal_and_refuses_bad_input():
    assert intervals.t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-6)
    assert intervals.t_quantile(0.5, 3) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        intervals.t_quantile(1.0, 3)


def test_paired_interval_of_a_known_sample():
    ci = intervals.paired_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t(0.975, 2) = 4.302653
    half = 4.302653 / math.sqrt(3)
    assert ci["df"] == 2 and ci["half_width"] == pytest.approx(half, abs=1e-6)
    assert (ci["low"], ci["high"]) == (pytest.approx(2 - half, abs=1e-6), pytest.approx(2 + half, abs=1e-6))
    assert ci["excludes_zero"] is False  # 2 - 2.484 < 0
    assert intervals.paired_interval([1.0, 1.1, 0.9])["excludes_zero"] is True
    assert intervals.paired_interval([5.0])["low"] is None


def _record(arm: str, seed: int, notes=None, **metrics) -> dict:
    return {"spec": {"arm": arm, "seed": seed}, "metrics": metrics, "notes": notes or {}, "epochs_completed": 1}


def test_deltas_carry_the_interval_and_the_report_says_when_it_excludes_zero():
    # per-seed deltas of mAP50-95: 0.01, 0.02, 0.03 -> mean 0.02, sd 0.01
    records = [_record("base", s, **{"mAP50-95": 0.1}) for s in range(3)]
    records += [_record("dr", s, **{"mAP50-95": 0.1 + 0.01 * (s + 1)}) for s in range(3)]
    d = rep.deltas(records, ["base", "dr"])["dr"]["mAP50-95"]
    half = 4.302653 * 0.01 / math.sqrt(3)
    assert d["ci95"]["low"] == pytest.approx(0.02 - half, abs=1e-8)
    m = rep.BY_KEY["mAP50-95"]
    assert rep.fmt_interval(d, m) == f"+2.00 [{(0.02 - half) * 100:+.2f}, {(0.02 + half) * 100:+.2f}]"
    tight = dict(d, ci95=intervals.paired_interval([0.02, 0.021, 0.019]))
    assert rep.fmt_interval(tight, m).endswith(", excludes 0")
    one = rep.deltas(records[:1] + records[3:4], ["base", "dr"])["dr"]["mAP50-95"]
    assert rep.fmt_interval(one, m) == "+1.00, CI n/a (1 seed)"


def test_arms_beyond_ten_percent_of_the_baseline_cost_are_flagged():
    records = [
        _record("base", 0, params=1000.0, GFLOPs=10.0),
        _record("near", 0, params=1090.0, GFLOPs=9.5),
        _record("big", 0, params=1000.0, GFLOPs=11.5),
        _record("unknown", 0, params=None, GFLOPs=None),
    ]
    arms = ["base", "near", "big", "unknown"]
    match = rep.cost_match(rep.summarize(records, arms), arms)
    assert match["near"] == {"params": pytest.approx(0.09), "GFLOPs": pytest.approx(-0.05), "latency_ms": None,
                             "deployed_latency_ms": None, "matched": True}  # fmt: skip
    assert match["big"]["matched"] is False and match["big"]["GFLOPs"] == pytest.approx(0.15)
    assert match["unknown"]["matched"] is None
    lines = rep.cost_lines(match)
    assert lines[0].startswith("- `near`: cost-matched (params +9.0%, GFLOPs -5.0%")
    assert lines[1].startswith("- `big`: **not cost-matched** (params +0.0%, GFLOPs +15.0%")


def test_an_arm_that_costs_more_once_deployed_is_not_cost_matched():
    # the same size and arithmetic, but twice the baseline's ONNX latency (the old export's m responses)
    records = [
        _record("base", 0, params=1000.0, GFLOPs=10.0, latency_ms=10.0, deployed_latency_ms=20.0),
        _record("lite", 0, params=1010.0, GFLOPs=10.1, latency_ms=10.5, deployed_latency_ms=40.0),
        _record("ok", 0, params=1010.0, GFLOPs=10.1, latency_ms=10.5, deployed_latency_ms=21.0),
    ]
    arms = ["base", "lite", "ok"]
    match = rep.cost_match(rep.summarize(records, arms), arms)
    assert match["lite"]["matched"] is False and match["lite"]["deployed_latency_ms"] == pytest.approx(1.0)
    assert match["ok"]["matched"] is True and match["ok"]["deployed_latency_ms"] == pytest.approx(0.05)
    assert "deployed latency b1 (ONNX) +100.0%" in rep.cost_lines(match)[0]


def test_missing_gflops_are_shown_with_their_reason_never_as_zero():
    why = "thop is not installed (pip install ultralytics-thop)"
    records = [_record(a, 0, notes={"GFLOPs": why}, params=1.0, GFLOPs=None) for a in ("base", "dr")]
    arms = ["base", "dr"]
    missing = rep.not_measured(records)
    assert missing == {"base": {"GFLOPs": why}, "dr": {"GFLOPs": why}}
    summary, delta = rep.summarize(records, arms), rep.deltas(records, arms)
    row = next(r for r in rep.summary_table(summary, arms, missing) if r.startswith("| GFLOPs"))
    assert row == f"| GFLOPs | n/a ({why}) | n/a ({why}) |"
    row = next(r for r in rep.delta_table(summary, delta, arms, missing) if r.startswith("| GFLOPs"))
    assert row == f"| GFLOPs | n/a ({why}) | n/a ({why}) |"
    header, _, first = rep.per_seed_table(records, arms)[:3]
    cells = dict(zip(header.strip("|").split(" | "), first.strip("|").split(" | ")))
    assert cells["GFLOPs"].strip() == f"n/a ({why})"


def test_gflops_says_why_there_is_no_figure(monkeypatch):
    import importlib.util

    import ultralytics.utils.torch_utils as tu

    model = torch.nn.Conv2d(3, 4, 3)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "thop" else real(name, *a))
    assert measure.gflops(model, 64) == (None, "thop is not installed (pip install ultralytics-thop)")
    monkeypatch.setattr(importlib.util, "find_spec", real)
    monkeypatch.setattr(tu, "get_flops", lambda model, imgsz: 0.0)
    value, why = measure.gflops(model, 64)
    assert value is None and "returned 0" in why
    monkeypatch.setattr(tu, "get_flops", lambda model, imgsz: 1.5)
    assert measure.gflops(model, 64) == (1.5, None)


def _run(arm, seed, layers_by_epoch):
    return {"spec": {"arm": arm, "seed": seed}, "regions": [{"epoch": e + 1, "layers": layers}
                                                           for e, layers in enumerate(layers_by_epoch)]}  # fmt: skip


def _layer(used, entropy, per_image, regions=8):
    return {"regions": regions, "used": used, "entropy": entropy, "per_image": per_image, "collapsed": used == 1}


def test_region_summary_means_the_last_epoch_over_seeds_and_counts_collapses(tmp_path):
    from drconv_yolo.experiment import regions_report as rr

    records = [
        {"spec": {"arm": "base", "seed": 0}, "regions": []},  # no DRConv: left out
        _run("dr", 0, [{"model.1": _layer(8, 3.0, 6.0)}, {"model.1": _layer(6, 2.0, 4.0), "model.7": _layer(1, 0, 1)}]),
        _run("dr", 1, [{"model.1": _layer(4, 1.0, 2.0), "model.7": _layer(3, 1.5, 2.0)}]),
    ]
    summary = rr.region_summary(records, ["base", "dr"])
    assert list(summary) == ["dr"]
    assert summary["dr"]["model.1"] == {"regions": 8, "used": 5.0, "entropy": 1.5, "per_image": 3.0, "collapsed": 0,
                                        "seeds": 2}  # fmt: skip
    assert summary["dr"]["model.7"]["used"] == 2.0 and summary["dr"]["model.7"]["collapsed"] == 1
    text = "\n".join(rr.region_lines(summary))
    assert "| model.7 | 2.0/8 | 0.75 | 1.5 | **1/2** |" in text
    assert "Collapsed to one region in at least one seed: model.7." in text
    from drconv_yolo.experiment import plots

    paths = plots.plot_region_usage(records, ["base", "dr"], tmp_path)
    assert [p.name for p in paths] == ["regions_dr.png"] and paths[0].stat().st_size > 1000
