"""The layer and model benchmarks: the JSON they write (no assertion on any time; the timing: test_measure.py)."""

import json
from pathlib import Path

from _procs import needs_proc, running, wait_until

from drconv_yolo import bench


def test_run_writes_rows_and_a_summary_computed_from_them(tmp_path):
    out = tmp_path / "layer.json"
    payload = bench.run(
        shapes=[(4, 8, 12, 3, 2), (4, 4, 10, 1, 1)], batches=(2,), repeats=1, out=out, log=lambda *a, **k: None
    )
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(payload))
    assert [(r["c1"], r["c2"], r["size"], r["k"], r["s"], r["batch"]) for r in written["rows"]] == [
        (4, 8, 12, 3, 2, 2),
        (4, 4, 10, 1, 1, 2),
    ]
    rows = written["rows"]
    summary = written["summary"]["batch2"]
    infer = sorted(r["dr_infer_ms"] / r["conv_infer_ms"] for r in rows)
    assert abs(summary["dr_vs_conv_infer_median"] - (infer[0] + infer[1]) / 2) < 1e-12
    assert abs(summary["dr_vs_conv_infer_max"] - infer[1]) < 1e-12
    assert summary["dr_vs_ref_train_peak_max"] == max(r["dr_train_peak_mb"] / r["ref_train_peak_mb"] for r in rows)
    assert all(r["dr_train_peak_mb"] > 0 and r["ref_train_peak_mb"] > 0 for r in rows)
    assert not list(tmp_path.glob("*.tmp"))  # written under a temporary name, then renamed


# ----------------------------------------------------------------------------------------------------------------------
# --busy, the model benchmark and the command line (structure only: no assertion on any time)
# ----------------------------------------------------------------------------------------------------------------------

TINY_CASES = (bench.Case("infer", 1, 64), bench.Case("train", 2, 64))


def _busy_seen(n_seen: list):
    """A log sink recording how many busy-loop processes run at each progress line."""

    def log(*args, **kwargs):
        n_seen.append(len(running("drconv-yolo busy loop")))

    return log


@needs_proc
def test_layer_benchmark_records_its_busy_processes_and_stops_them(tmp_path):
    seen = []
    payload = bench.run(shapes=[(4, 4, 10, 1, 1)], batches=(1,), repeats=1, out=None, log=_busy_seen(seen), busy=2)
    assert payload["settings"]["busy"] == 2
    steal = payload["settings"]["cpu_steal"]
    assert steal is None or 0 <= steal <= 1
    assert seen[0] == 2  # running during the measurement
    assert wait_until(lambda: not running("drconv-yolo busy loop"), 10)


@needs_proc
def test_model_benchmark_writes_a_row_per_case_and_stops_its_busy_process(tmp_path):
    out = tmp_path / "model.json"
    seen = []
    pairs = [("yolov8n.yaml", "yolov8n-drconv.yaml")]
    payload = bench.run_model(pairs, TINY_CASES, repeats=2, warmup=0, busy=1, out=out, log=_busy_seen(seen))
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload))
    assert seen[0] == 1 and wait_until(lambda: not running("drconv-yolo busy loop"), 10)
    assert payload["settings"]["busy"] == 1 and payload["settings"]["pairs"] == [list(pairs[0])]
    rows = payload["rows"]
    assert [(r["model"], r["baseline"], r["mode"], r["batch"], r["imgsz"]) for r in rows] == [
        ("yolov8n-drconv", "yolov8n", "infer", 1, 64),
        ("yolov8n-drconv", "yolov8n", "train", 2, 64),
    ]
    for r in rows:
        assert len(r["model_times_ms"]) == len(r["baseline_times_ms"]) == 2
        assert r["ratio"] == r["model_ms"] / r["baseline_ms"]
        per_round = [m / b for m, b in zip(r["model_times_ms"], r["baseline_times_ms"])]
        assert (r["ratio_min"], r["ratio_max"]) == (min(per_round), max(per_round))
    assert list(payload["summary"]) == [
        "yolov8n-drconv vs yolov8n, fused, batch 1, 64 px",
        "yolov8n-drconv vs yolov8n, training step (forward + backward), batch 2, 64 px",
    ]
    models = payload["models"]
    assert models["yolov8n-drconv"]["params"] > models["yolov8n"]["params"] > 0
    assert models["yolov8n"]["GFLOPs_640"] > 0 and models["yolov8n"]["GFLOPs_note"] is None
    table = bench.format_model_table([bench.ModelRow(**r) for r in rows]).splitlines()
    assert len(table) == 2 + len(rows) and table[2].startswith("| yolov8n-drconv vs yolov8n, fused, batch 1, 64 px |")


def test_model_benchmark_channels_last_puts_both_models_and_the_input_in_channels_last(monkeypatch):
    import torch

    seen = []  # (config's model, input) of every case function built
    real = bench._case_fn
    monkeypatch.setattr(bench, "_case_fn", lambda models, case, x: seen.append((models, x)) or real(models, case, x))
    pairs = [("yolov8n.yaml", "yolov8n-drconv.yaml")]
    payload = bench.run_model(pairs, TINY_CASES[:1], repeats=1, warmup=0, out=None, log=lambda *a, **k: None,
                              channels_last=True)  # fmt: skip
    assert payload["settings"]["memory_format"] == "channels_last" and len(seen) == 2
    cl = torch.channels_last
    for (fused, train, _), x in seen:
        assert x.is_contiguous(memory_format=cl) and x.shape[1] == 3
        weights = [p for m in (fused, train) for p in m.parameters() if p.dim() == 4 and min(p.shape[2:]) > 1]
        assert weights and all(p.is_contiguous(memory_format=cl) for p in weights)
    default = bench.run_model(pairs, TINY_CASES[:1], repeats=1, warmup=0, out=None, log=lambda *a, **k: None)
    assert default["settings"]["memory_format"] == "as Ultralytics runs it (NCHW)"
    assert seen[-1][1].is_contiguous() and not seen[-1][1].is_contiguous(memory_format=cl)


def test_the_default_model_cases_are_the_issues_rows():
    assert [(c.mode, c.batch, c.imgsz) for c in bench.MODEL_CASES] == [
        ("infer", 1, 640),
        ("infer", 1, 320),
        ("infer", 8, 640),
        ("infer", 8, 320),
        ("train", 8, 256),
    ]
    assert bench.model_pairs(["yolov8", "yolo11"], "s", ["drconv", "drconv-neck"]) == [
        ("yolov8s.yaml", "yolov8s-drconv.yaml"),
        ("yolov8s.yaml", "yolov8s-drconv-neck.yaml"),
        ("yolo11s.yaml", "yolo11s-drconv.yaml"),
        ("yolo11s.yaml", "yolo11s-drconv-neck.yaml"),
    ]


def test_bench_command_line_passes_the_model_options_and_refuses_bad_ones(monkeypatch, tmp_path, capsys):
    import torch

    from drconv_yolo import cli

    seen = {}
    monkeypatch.setattr(bench, "run_model", lambda pairs, **kw: seen.update(pairs=pairs, **kw))
    argv = ["bench", "--model", "--family", "yolov8", "yolo11", "--busy", "1", "--quick", "--out", str(tmp_path / "m")]
    assert cli.main(argv) == 0
    assert seen["pairs"] == [("yolov8n.yaml", "yolov8n-drconv.yaml")]  # --quick: the first pair
    assert (seen["busy"], seen["device"], seen["out"], seen["channels_last"]) == (1, "cpu", tmp_path / "m", False)
    assert cli.main(argv + ["--channels-last"]) == 0 and seen["channels_last"] is True
    assert cli.main(["bench", "--busy", "-1"]) == 2
    assert "--busy must be >= 0" in capsys.readouterr().err
    assert cli.main(["bench", "--threads", "0"]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli.main(["bench", "--model", "--device", "cuda"]) == 2
        assert "no CUDA device" in capsys.readouterr().err


def test_steal_note_flags_a_run_with_much_stolen_cpu_time():
    assert bench.steal_note(None) == "CPU steal: not measured (no /proc/stat)"
    assert bench.steal_note(0.01) == "CPU steal during the measurement: 1.0% of CPU time"
    assert bench.steal_note(0.5).startswith("CPU steal during the measurement: 50.0% of CPU time (a neighbour")


def test_readme_quotes_the_committed_benchmark_results():
    # the README's speed table and one-thread line are the figures of the JSON files committed next to them
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    results = root / "bench_results"
    layer = json.loads((results / "drconv_layer.json").read_text())["summary"]
    busy = json.loads((results / "drconv_layer_busy1.json").read_text())["summary"]["batch8"]

    def pair(summary, a, b):
        return f"{summary[a]:.2f}x / {summary[b]:.2f}x"

    def ratios(name, model):
        rows = json.loads((results / name).read_text())["rows"]
        return {(r["mode"], r["batch"], r["imgsz"]): f"{r['ratio']:.2f}x" for r in rows if r["model"] == model}

    quoted = [  # each followed by " |" or by earlier runs in brackets
        f"| {pair(layer['batch8'], 'dr_vs_conv_infer_median', 'dr_vs_conv_infer_max')} ",
        f"| {pair(layer['batch1'], 'dr_vs_conv_infer_median', 'dr_vs_conv_infer_max')} ",
        f"| {pair(layer['batch8'], 'dr_vs_conv_train_median', 'dr_vs_conv_train_max')} ",
        f"| {busy['dr_vs_conv_infer_median'] / layer['batch8']['dr_vs_conv_infer_median']:.2f}x / "
        f"{busy['dr_vs_conv_train_median'] / layer['batch8']['dr_vs_conv_train_median']:.2f}x ",
    ]
    model = ratios("drconv_model.json", "yolov8n-drconv")
    lite = ratios("drconv_model.json", "yolov8n-drconv-blocks-lite")
    quoted += [f"640 px | {model['infer', 1, 640]} ", f"320 px | {model['infer', 1, 320]} ",
               f"256 px | {model['train', 8, 256]} ", f"| {lite['infer', 1, 640]} / {lite['infer', 1, 320]} ",
               f"| {lite['train', 8, 256]} "]  # fmt: skip
    cl = ratios("drconv_model_channels_last.json", "yolov8n-drconv")
    cl_lite = ratios("drconv_model_channels_last.json", "yolov8n-drconv-blocks-lite")
    quoted += [f"YOLOv8n-DRConv costs {cl['infer', 1, 640]} [", f"{cl['infer', 1, 320]} [", f"{cl['train', 8, 256]} ["]
    quoted.append(f"`-drconv-blocks-lite` {cl_lite['infer', 1, 640]} [")
    one = ratios("drconv_model_1thread.json", "yolov8n-drconv")
    quoted.append(f"YOLOv8n-DRConv {one['infer', 1, 640]} / {one['infer', 1, 320]} YOLOv8n at batch 1")
    missing = [q for q in quoted if q not in readme]
    assert not missing, f"README.md does not quote these figures of bench_results/: {missing}"


def test_gpu_check_script_runs_every_step_and_counts_the_failed_ones(tmp_path):
    import os
    import subprocess

    fake = tmp_path / "python3"  # a Python that fails every command: each step must be run, reported and counted
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": str(fake), "OUT": str(out), "DEVICE": "cuda", "WHEELS": str(tmp_path / "none")}
    done = subprocess.run(["bash", str(script), "run"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stdout + done.stderr
    assert [line.split(":")[0] for line in done.stdout.splitlines() if "FAILED" in line] == ["== tests", "== layer",
                                                                                             "== model"]  # fmt: skip
    assert sorted(p.name for p in out.glob("*.log")) == ["layer.log", "model.log", "tests.log"]
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "x-1-py3-none-any.whl").write_bytes(b"")  # wheels to install, and a pip that fails
    env["WHEELS"] = str(tmp_path / "wheels")
    broken = subprocess.run(["bash", str(script), "run"], env=env, capture_output=True, text=True, timeout=60)
    assert broken.returncode == 1 and "installing" in broken.stderr and "FAILED" in broken.stderr
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage: bash scripts/gpu_check.sh fetch|run" in usage.stderr
