"""The baseline comparison: statistics, report tables against results.json, fair recipe, resume, errors, demo."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path

import pytest

from drconv_yolo import cli, experiment
from drconv_yolo.experiment import demo_profiles
from drconv_yolo.experiment import report as rep

MODELS = ["yolov8n.yaml", "yolov8n-drconv.yaml"]
ARMS = ["yolov8n", "yolov8n-drconv"]
SEEDS = [0, 1]


# ----------------------------------------------------------------------------------------------------------------------
# Pure parts: statistics, deltas, formatting, arm names, overrides
# ----------------------------------------------------------------------------------------------------------------------


def _record(arm: str, seed: int, **metrics) -> dict:
    return {
        "spec": {"arm": arm, "seed": seed, "model": f"{arm}.yaml", "run_dir": f"/x/{arm}/{seed}"},
        "metrics": metrics,
        "per_epoch": [],
        "epochs_completed": 1,
    }


def test_stats_mean_and_sample_std():
    s = rep.stats([1.0, 2.0, 4.0, None, float("nan")])
    assert s["n"] == 3 and s["mean"] == pytest.approx(7 / 3)
    assert s["std"] == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert (s["min"], s["max"]) == (1.0, 4.0)
    assert rep.stats([3.0])["std"] is None and rep.stats([])["mean"] is None


def test_deltas_are_paired_by_seed():
    # arm - base per seed: 0.02, 0.04, -> mean 0.03, std sqrt(((0.01)^2 * 2) / 1); seed 2 has no baseline: left out
    records = [
        _record("base", 0, **{"mAP50-95": 0.10}),
        _record("base", 1, **{"mAP50-95": 0.30}),
        _record("dr", 0, **{"mAP50-95": 0.12}),
        _record("dr", 1, **{"mAP50-95": 0.34}),
        _record("dr", 2, **{"mAP50-95": 0.99}),
    ]
    d = rep.deltas(records, ["base", "dr"])["dr"]["mAP50-95"]
    assert d["seeds"] == [0, 1] and d["n"] == 2
    assert d["mean"] == pytest.approx(0.03) and d["std"] == pytest.approx(math.sqrt(2e-4))
    assert d["rel"] == pytest.approx(0.03 / 0.20)
    # unpaired std of the arms would be much larger than the paired one: the pairing matters
    s = rep.summarize(records, ["base", "dr"])
    assert s["base"]["mAP50-95"]["std"] > 5 * d["std"]
    assert d["values"] == {"0": pytest.approx(0.02), "1": pytest.approx(0.04)}


def test_formatting_uses_display_units():
    m = rep.BY_KEY["mAP50-95"]
    assert rep.fmt_mean_std({"mean": 0.12345, "std": 0.0061}, m) == "12.35 ± 0.61"
    assert rep.fmt_mean_std({"mean": 0.12345, "std": None}, m) == "12.35"
    assert rep.fmt_mean_std({"mean": None}, m) == "–"
    assert rep.fmt_delta({"mean": -0.01, "std": 0.002, "rel": -0.1}, m) == "-1.00 ± 0.20 (-10.0%)"
    assert rep.fmt_mean_std({"mean": 3_011_823, "std": 0.0}, rep.BY_KEY["params"]) == "3.012 ± 0.000"


def test_arm_names_are_stems_and_unique():
    assert experiment.arm_names(MODELS) == ARMS
    assert experiment.arm_names(["a/weights/best.pt", "b/weights/best.pt"]) == ["a-best", "b-best"]
    assert experiment.arm_names(["x/m.yaml", "x/m.yaml"]) == ["x-m", "x-m-2"]


def test_overrides_are_typed_and_checked():
    assert experiment.parse_overrides(["lr0=0.01", "mosaic=0", "optimizer=SGD", "cos_lr=True"]) == {
        "lr0": 0.01,
        "mosaic": 0,
        "optimizer": "SGD",
        "cos_lr": True,
    }
    with pytest.raises(experiment.CompareError, match="'seed' cannot be overridden"):
        experiment.parse_overrides(["seed=3"])
    with pytest.raises(experiment.CompareError, match="'not_a_key' is not an Ultralytics train argument"):
        experiment.parse_overrides(["not_a_key=1"])


# ----------------------------------------------------------------------------------------------------------------------
# End to end: 2 arms x 2 seeds, 1 epoch at 64 px on 16 synthetic images
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from drconv_yolo.data.synthetic import generate

    return generate(
        tmp_path_factory.mktemp("data") / "synthetic",
        n_train=16,
        n_val=8,
        imgsz=64,
        seed=0,
        object_scale=2.0,
        verbose=False,
    )


def _argv(data, out, *extra):
    return [
        "--data",
        str(data),
        "--models",
        *MODELS,
        "--seeds",
        *map(str, SEEDS),
        "--epochs",
        "1",
        "--imgsz",
        "64",
        "--batch",
        "8",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--latency-runs",
        "3",
        "--latency-warmup",
        "1",
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def finished(dataset, tmp_path_factory):
    """One full comparison (one subprocess per run, the default); returns (out dir, console output)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("compare") / "out"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(["compare", *_argv(dataset, out, "mosaic=0")])
    assert rc == 0, buf.getvalue()[-3000:]
    return out, buf.getvalue()


def _mtimes(out: Path) -> dict[str, int]:
    """Modification times of every run file (run.json, weights, results.csv)."""
    files = [*out.glob("runs/*/*/run.json"), *out.glob("runs/*/*/weights/*.pt"), *out.glob("runs/*/*/results.csv")]
    return {str(f): f.stat().st_mtime_ns for f in files}


def _md_table(text: str, heading: str) -> list[list[str]]:
    """The rows (cells, header included) of the first markdown table after the heading starting with ``heading``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("## " + heading))
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            if not set(line) <= set("|-"):
                rows.append([c.strip() for c in line.strip("|").split("|")])
        elif rows:
            break
    return rows


NUM = r"([+-]?\d+(?:\.\d+)?)"


def _parse_cell(cell: str) -> tuple[float | None, float | None, float | None]:
    """``"12.34 ± 0.56 (+3.0%)"`` -> (12.34, 0.56, 3.0); missing parts None."""
    m = re.fullmatch(NUM + r"(?: ± " + NUM + r")?(?: \(" + NUM + r"%\))?", cell)
    assert m, f"unparseable cell {cell!r}"
    return tuple(None if g is None else float(g) for g in m.groups())


def _close(shown: float, value: float | None, metric: rep.Metric, scale: float | None = None):
    assert value is not None
    tol = 0.5 * 10**-metric.digits + 1e-9
    assert shown == pytest.approx(value * (metric.scale if scale is None else scale), abs=tol), metric.key


@pytest.mark.slow
def test_compare_writes_every_output(finished):
    out, log = finished
    for name in ("report.md", "results.csv", "results.json", "map_per_epoch.png", "deltas.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not [p for p in out.iterdir() if ".tmp" in p.name], "temporary files left behind"
    from PIL import Image

    for name in ("map_per_epoch.png", "deltas.png"):
        with Image.open(out / name) as im:
            im.verify()
    for arm in ARMS:
        for seed in SEEDS:
            run = out / "runs" / arm / f"seed{seed}"
            assert (run / "run.json").is_file() and (run / "weights" / "best.pt").is_file()
            assert (run / "eval" / "coco_eval.json").is_file()
    for k in range(1, 5):  # progress lines for every run, in seed-major order
        assert f"[run {k}/4]" in log
    assert "[run 2/4] yolov8n-drconv seed 0: training" in log


@pytest.mark.slow
def test_compare_records_sensible_measurements(finished):
    out, _ = finished
    results = json.loads((out / "results.json").read_text())
    assert results["arms"] == ARMS and results["baseline"] == "yolov8n"
    assert results["settings"]["n_train"] == 16 and results["settings"]["n_eval"] == 8
    env = results["environment"]
    for key in ("python", "torch", "ultralytics", "drconv_yolo", "device", "cpu"):
        assert env[key], key
    runs = {(r["spec"]["arm"], r["spec"]["seed"]): r for r in results["runs"]}
    assert sorted(runs) == [(a, s) for a in ARMS for s in SEEDS]
    for (arm, _), r in runs.items():
        m = r["metrics"]
        for key in ("mAP50", "mAP50-95", "AP", "AP50"):
            assert 0.0 <= m[key] <= 1.0, key
        assert m["latency_ms"] > 0 and m["train_img_s"] > 0 and m["peak_mem_MB"] > 100
        assert m["wall_s"] >= m["train_s"] > 0
        assert len(r["per_epoch"]) == r["epochs_completed"] == 1
        assert "metrics/mAP50-95(B)" in r["per_epoch"][0]
        assert r["eval"]["pycocotools"]["n_images"] == 8
        assert r["latency"]["runs"] == 3
        assert m["deployed_latency_ms"] > 0 and r["deployed_latency"]["runtime"] == "onnxruntime"  # best.pt as ONNX
        assert r["deployed_latency"]["runs"] == 3 and r["notes"]["deployed_latency_ms"] is None
        assert r["stats"]["drconv_layers"] == (6 if arm == "yolov8n-drconv" else 0)
        assert "own process" in r["notes"]["memory"]  # one subprocess per run
    base, dr = runs[("yolov8n", 0)]["metrics"], runs[("yolov8n-drconv", 0)]["metrics"]
    assert dr["params"] > base["params"] and dr["GFLOPs"] > base["GFLOPs"] > 0
    assert runs[("yolov8n", 1)]["metrics"]["params"] == base["params"]  # architecture does not depend on the seed


@pytest.mark.slow
def test_compare_trains_every_run_with_the_same_recipe(finished):
    """Ultralytics' own args.yaml of every run: equal except model, seed and the run folder."""
    import yaml

    out, _ = finished
    args = {}
    for arm, model in zip(ARMS, MODELS):
        for seed in SEEDS:
            a = yaml.safe_load((out / "runs" / arm / f"seed{seed}" / "args.yaml").read_text())
            assert a["seed"] == seed and Path(a["model"]).name == model
            assert (a["epochs"], a["imgsz"], a["batch"], a["mosaic"]) == (1, 64, 8, 0)
            args[arm, seed] = {k: v for k, v in a.items() if k not in ("model", "seed", "name", "save_dir", "project")}
    first = args["yolov8n", 0]
    for key, a in args.items():
        assert a == first, key


@pytest.mark.slow
def test_report_tables_match_results_json(finished):
    out, _ = finished
    results = json.loads((out / "results.json").read_text())
    text = (out / "report.md").read_text()
    metrics = {m.header: m for m in rep.METRICS}
    # summary: one row per metric, one column per arm
    table = _md_table(text, "Summary")
    assert table[0] == ["metric", *ARMS]
    assert [row[0] for row in table[1:]] == [m.header for m in rep.METRICS]
    for row in table[1:]:
        m = metrics[row[0]]
        for arm, cell in zip(ARMS, row[1:]):
            s = results["summary"][arm][m.key]
            if cell == "–":
                assert s["mean"] is None
                continue
            mean, std, _ = _parse_cell(cell)
            _close(mean, s["mean"], m)
            _close(std, s["std"], m)
    # deltas: baseline column, then delta ± std of the paired delta (relative %)
    table = _md_table(text, "Δ to the baseline")
    assert table[0] == ["metric", "yolov8n (baseline)", "Δ yolov8n-drconv"]
    checked = 0
    for row in table[1:]:
        m = metrics[row[0]]
        d = results["deltas"]["yolov8n-drconv"][m.key]
        if row[2] == "–":
            assert d["mean"] is None
            continue
        mean, std, rel = _parse_cell(row[2])
        _close(mean, d["mean"], m)
        _close(std, d["std"], m)
        values = [results["summary"][a][m.key]["values"][str(s)] for a in ARMS for s in SEEDS]
        per_seed = [values[2 + i] - values[i] for i in range(2)]  # drconv - baseline, seed by seed
        assert d["mean"] == pytest.approx(sum(per_seed) / 2, abs=1e-12)
        assert d["std"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / math.sqrt(2), abs=1e-12)
        if rel is not None:
            assert rel == pytest.approx(d["rel"] * 100, abs=0.05 + 1e-9)
        checked += 1
    assert checked >= 10
    # per-seed values: one row per run
    table = _md_table(text, "Per-seed values")
    header = table[0]
    assert header[:3] == ["arm", "seed", "epochs"] and header[3:] == [m.header for m in rep.METRICS]
    runs = {(r["spec"]["arm"], r["spec"]["seed"]): r for r in results["runs"]}
    assert [(row[0], int(row[1])) for row in table[1:]] == [(a, s) for a in ARMS for s in SEEDS]
    for row in table[1:]:
        r = runs[row[0], int(row[1])]
        for h, cell in zip(header[3:], row[3:]):
            m = metrics[h]
            if cell == "–":
                assert r["metrics"][m.key] is None
            else:
                _close(float(cell), r["metrics"][m.key], m)
    # settings and versions
    env = results["environment"]
    for value in (env["python"], env["torch"], env["ultralytics"], env["drconv_yolo"]):
        assert value in text
    assert '"epochs": 1' in text and '"mosaic": 0' in text


@pytest.mark.slow
def test_results_csv_matches_results_json(finished):
    out, _ = finished
    results = json.loads((out / "results.json").read_text())
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["arm"], int(r["seed"])) for r in rows] == [(a, s) for a in ARMS for s in SEEDS]
    for row, r in zip(rows, results["runs"]):
        for m in rep.METRICS:
            value = r["metrics"][m.key]
            assert (row[m.key] == "") if value is None else float(row[m.key]) == pytest.approx(value), m.key


@pytest.mark.slow
def test_second_invocation_trains_nothing(finished, capsys):
    out, _ = finished
    before = _mtimes(out)
    assert len(before) == 4 * 4  # run.json, best.pt, last.pt, results.csv per run
    data = Path(json.loads((out / "results.json").read_text())["settings"]["data"])
    assert cli.main(["compare", *_argv(data, out, "mosaic=0")]) == 0
    log = capsys.readouterr().out
    assert log.count("finished earlier") == 4 and "training" not in log.replace("training loop", "")
    assert "0 run(s) trained now, 4 reused" in log
    assert _mtimes(out) == before


@pytest.mark.slow
def test_other_settings_in_the_same_folder_are_refused(finished, dataset, capsys):
    out, _ = finished
    before = _mtimes(out)
    assert cli.main(["compare", *_argv(dataset, out, "mosaic=0", "lr0=0.02")]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "lr0" in err and "another --out" in err
    assert _mtimes(out) == before


@pytest.mark.slow
def test_interrupted_run_is_deleted_and_trained_again(finished, dataset, tmp_path, capsys):
    src, _ = finished
    out = tmp_path / "moved"
    shutil.copytree(src, out)  # a moved output folder is reused too
    victim = out / "runs" / "yolov8n" / "seed1"
    (victim / "run.json").unlink()  # as if killed before the end
    (victim / "stray.txt").write_text("partial")
    before = {k: v for k, v in _mtimes(out).items() if "/seed1/" not in k or "/yolov8n/" not in k}
    assert cli.main(["compare", *_argv(dataset, out, "mosaic=0", "--in-process")]) == 0
    log = capsys.readouterr().out
    assert "[run 3/4] yolov8n seed 1:" in log and "interrupted; deleting it and training again" in log
    assert "1 run(s) trained now, 3 reused" in log
    assert not (victim / "stray.txt").exists() and (victim / "run.json").is_file()
    after = _mtimes(out)
    assert {k: after[k] for k in before} == before  # the other runs were not touched
    record = json.loads((victim / "run.json").read_text())
    assert "whole compare process" in record["notes"]["memory"]  # trained in-process
    results = json.loads((out / "results.json").read_text())
    assert all(r["spec"]["run_dir"].startswith(str(out)) for r in results["runs"])


# ----------------------------------------------------------------------------------------------------------------------
# Errors before any training
# ----------------------------------------------------------------------------------------------------------------------


def test_missing_model_is_named_before_training(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    argv = _argv(dataset, out)
    argv[argv.index("yolov8n-drconv.yaml")] = str(tmp_path / "nope-drconv.yaml")
    assert cli.main(["compare", *argv]) == 2
    err = capsys.readouterr().err
    assert "model YAML not found" in err and "nope-drconv.yaml" in err
    argv[argv.index(str(tmp_path / "nope-drconv.yaml"))] = str(tmp_path / "missing.pt")
    assert cli.main(["compare", *argv]) == 2
    assert "model weights not found" in capsys.readouterr().err
    assert not out.exists()


def test_missing_dataset_or_ground_truth_is_named_before_training(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["compare", *_argv(tmp_path / "nothere.yaml", out)]) == 2
    err = capsys.readouterr().err
    assert "dataset YAML not found" in err and "nothere.yaml" in err
    # a dataset without a prepared ground truth is fine now (it is built, see test_compare_data.py); a --gt is checked
    assert cli.main(["compare", *_argv(dataset, out, "--gt", str(tmp_path / "nope.json"))]) == 2
    err = capsys.readouterr().err
    assert "ground-truth JSON not found" in err and "nope.json" in err
    assert not out.exists()


def test_one_model_or_reserved_key_is_refused(dataset, tmp_path, capsys):
    argv = _argv(dataset, tmp_path / "out")
    argv.remove("yolov8n-drconv.yaml")
    assert cli.main(["compare", *argv]) == 2
    assert "at least one other model" in capsys.readouterr().err
    assert cli.main(["compare", *_argv(dataset, tmp_path / "out", "project=/tmp/x")]) == 2
    assert "'project' cannot be overridden" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------------
# The demo: profile, dataset, then compare with the two YOLOv8n arms
# ----------------------------------------------------------------------------------------------------------------------


def test_demo_prepares_the_dataset_and_compares_yolov8n_arms(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_compare(settings):
        seen.update(vars(settings))
        return {}

    monkeypatch.setattr(demo_profiles, "compare", fake_compare)
    argv = [
        "--quick",
        "--data-dir",
        str(tmp_path / "syn"),
        "--out",
        str(tmp_path / "demo"),
        "--device",
        "cpu",
        "epochs=2",
        "lr0=0.02",
    ]
    assert cli.main(["demo", *argv]) == 0
    log = capsys.readouterr().out
    assert "estimate ~" in log and "min" in log
    q = experiment.DEMO_PROFILES["quick"]
    assert seen["models"] == list(experiment.DEMO_MODELS) == ["yolov8n.yaml", "yolov8n-drconv.yaml"]
    assert (seen["seeds"], seen["epochs"], seen["imgsz"], seen["batch"]) == (q["seeds"], 2, q["imgsz"], q["batch"])
    assert (
        seen["overrides"] == {**experiment.DEMO_TRAIN, "nbs": q["batch"], "lr0": 0.02}  # a step every batch
        and seen["device"] == "cpu"
        and seen["out"] == str(tmp_path / "demo")
    )
    assert Path(seen["data"]).is_file() and Path(seen["data"]).parent == tmp_path / "syn"
    assert len(list((tmp_path / "syn" / "images" / "train").iterdir())) == q["n_train"]
    assert len(list((tmp_path / "syn" / "images" / "val").iterdir())) == q["n_val"]
    assert (tmp_path / "syn" / "annotations" / "instances_val.json").is_file()


def test_demo_default_profile_fits_the_time_budget(monkeypatch):
    monkeypatch.setattr(demo_profiles.os, "cpu_count", lambda: 2)  # the estimate is calibrated on 2 CPU cores
    p = experiment.DEMO_PROFILES["default"]
    assert len(p["seeds"]) >= 2  # a spread needs several seeds
    assert experiment.estimate_seconds(p, "cpu") <= 15 * 60
    assert experiment.estimate_seconds(experiment.DEMO_PROFILES["quick"], "cpu") <= 2 * 60
    assert experiment.estimate_seconds(p, "0") is None


def test_demo_refuses_a_bad_option_before_generating_the_dataset(tmp_path, capsys):
    argv = ["--quick", "--data-dir", str(tmp_path / "syn"), "--out", str(tmp_path / "demo"), "--epochs", "-3"]
    assert cli.main(["demo", *argv]) == 2
    assert "--epochs must be >= 1, got -3" in capsys.readouterr().err
    assert not (tmp_path / "syn").exists() and not (tmp_path / "demo").exists()
