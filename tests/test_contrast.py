"""Contrast of two comparisons: known paired deltas give a known difference and interval; bad folders are named."""

import json
import math

import pytest

from drconv_yolo import cli
from drconv_yolo.experiment.contrast import contrast, contrast_markdown

T_975_DF2 = 4.302652729911275  # Student's t, 97.5% quantile, 2 degrees of freedom


def write_results(folder, deltas, baseline="yolov8n", base_values=(0.40, 0.42, 0.44)):
    """A minimal compare results.json: ``deltas`` {arm: {seed: delta of mAP50-95}}."""
    folder.mkdir(parents=True, exist_ok=True)
    mean = sum(base_values) / len(base_values)
    std = math.sqrt(sum((v - mean) ** 2 for v in base_values) / (len(base_values) - 1))
    results = {
        "baseline": baseline,
        "arms": [baseline, *deltas],
        "summary": {baseline: {"mAP50-95": {"mean": mean, "std": std, "n": len(base_values)}}},
        "deltas": {arm: {"mAP50-95": {"values": {str(s): v for s, v in d.items()}}} for arm, d in deltas.items()},
    }
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def write_text(folder, text):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(text)
    return folder


def test_contrast_of_known_deltas_has_known_mean_and_interval(tmp_path):
    main = write_results(tmp_path / "main", {"a": {0: 0.01, 1: 0.02, 2: 0.03}, "only_main": {0: 0.1}})
    control = write_results(tmp_path / "control", {"a": {0: 0.0, 1: 0.0, 2: 0.03}})
    r = contrast(main, control)
    assert list(r["arms"]) == ["a"] and r["arms"]["a"]["seeds"] == [0, 1, 2]
    diff = r["arms"]["a"]["difference"]
    assert diff["values"] == pytest.approx([0.01, 0.02, 0.0], abs=1e-15)
    half = T_975_DF2 * 0.01 / math.sqrt(3)  # mean 0.01, sd 0.01
    assert diff["mean"] == pytest.approx(0.01, abs=1e-15)
    assert (diff["low"], diff["high"]) == pytest.approx((0.01 - half, 0.01 + half), abs=1e-9)
    assert diff["excludes_zero"] is False
    assert r["arms"]["a"]["main"]["mean"] == pytest.approx(0.02) and r["arms"]["a"]["main"]["excludes_zero"] is False
    assert r["baseline_spread"]["main"]["std"] == pytest.approx(0.02)


def test_contrast_pairs_only_the_seeds_both_comparisons_hold(tmp_path):
    main = write_results(tmp_path / "main", {"a": {0: 0.01, 1: 0.02, 2: 0.03}})
    control = write_results(tmp_path / "control", {"a": {1: 0.0, 2: 0.01, 5: 0.3}})
    r = contrast(main, control)["arms"]["a"]
    assert r["seeds"] == [1, 2] and r["difference"]["values"] == pytest.approx([0.02, 0.02])


def test_markdown_shows_points_and_says_when_an_interval_excludes_zero(tmp_path):
    main = write_results(tmp_path / "main", {"a": {0: 0.02, 1: 0.03, 2: 0.025}})  # mean 2.5 points, sd 0.5
    control = write_results(tmp_path / "control", {"a": {0: 0.0, 1: 0.0, 2: 0.03}})
    text = contrast_markdown(contrast(main, control))
    half = T_975_DF2 * 0.5 / math.sqrt(3)
    row = text.splitlines()[-1].split(" | ")
    assert row[:3] == ["| a", "0 1 2", f"+2.50 [{2.5 - half:+.2f}, {2.5 + half:+.2f}], excludes 0"]
    assert "excludes 0" not in row[3] and "excludes 0" not in row[4]
    assert "42.00 ± 2.00 (3 seeds)" in text


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such file"),
        ("baseline", "the baselines differ: 'yolov8n' in"),
        ("no_arm", "share no arm besides the baseline 'yolov8n'"),
        ("no_seed", "arm 'a': no seed with mAP50-95 in both"),
        ("bad_json", "results.json: not readable as JSON"),
        ("not_results", "results.json: not the results of drconv-yolo compare"),
    ],
)
def test_contrast_errors_name_the_problem(tmp_path, case, message):
    main = write_results(tmp_path / "main", {"a": {0: 0.01, 1: 0.02}})
    control = {
        "missing": lambda: tmp_path / "nothing",
        "baseline": lambda: write_results(tmp_path / "c", {"a": {0: 0.0}}, baseline="yolo11n"),
        "no_arm": lambda: write_results(tmp_path / "c", {"b": {0: 0.0}}),
        "no_seed": lambda: write_results(tmp_path / "c", {"a": {7: 0.0}}),
        "bad_json": lambda: write_text(tmp_path / "c", "{truncated"),
        "not_results": lambda: write_text(tmp_path / "c", json.dumps({"runs": []})),
    }[case]()
    with pytest.raises(cli.UserError, match=message):
        contrast(main, control)


def test_cli_writes_markdown_and_json_and_exits_2_on_a_missing_folder(tmp_path, capsys):
    main = write_results(tmp_path / "main", {"a": {0: 0.01, 1: 0.02, 2: 0.03}})
    control = write_results(tmp_path / "control", {"a": {0: 0.0, 1: 0.0, 2: 0.03}})
    out = tmp_path / "report" / "contrast.md"
    out.parent.mkdir()
    assert cli.main(["contrast", "--main", str(main), "--control", str(control), "--out", str(out)]) == 0
    assert out.read_text() in capsys.readouterr().out
    assert json.loads(out.with_suffix(".json").read_text())["arms"]["a"]["seeds"] == [0, 1, 2]
    assert sorted(p.name for p in out.parent.iterdir()) == ["contrast.json", "contrast.md"]  # no temporary left
    assert cli.main(["contrast", "--main", str(main), "--control", str(tmp_path / "x")]) == 2
    assert "drconv-yolo contrast: error:" in capsys.readouterr().err
