"""compare's pre-flight: a bad arm, a failing training step, a dataset Ultralytics partly skips and a full disk are
found before the first epoch (exit 2, naming the arm, file or setting, no weights written); --dry-run trains nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _data_fixtures import add_faults, make_user_dataset

from drconv_yolo import cli
from drconv_yolo.experiment import preflight as pf

MODELS = ["yolov8n.yaml", "yolov8n-drconv.yaml"]


@pytest.fixture(scope="module", autouse=True)
def _registered():
    from drconv_yolo.plugin import register

    register()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from drconv_yolo.data.synthetic import generate

    root = tmp_path_factory.mktemp("data") / "synthetic"
    return generate(root, n_train=8, n_val=4, imgsz=64, seed=0, object_scale=2.0, verbose=False)


def _argv(data, out, models=MODELS, *extra):
    return [
        *("compare", "--data", str(data), "--models", *map(str, models), "--seeds", "0", "--epochs", "1"),
        *("--imgsz", "64", "--batch", "4", "--workers", "0", "--device", "cpu", "--latency-runs", "2"),
        *("--latency-warmup", "1", "--deploy-runtime", "none", "--out", str(out), *extra),
    ]


def _bad_option_yaml(tmp_path: Path) -> Path:
    """yolov8n-drconv with ``{bases: 0}`` on its first DRConv: a YAML that cannot build."""
    from drconv_yolo.plugin import bundled_cfg_dir

    text = next(bundled_cfg_dir().rglob("yolov8-drconv.yaml")).read_text()
    bad = text.replace("[-1, 1, DRConv, [128, 3, 2, 8]]", "[-1, 1, DRConv, [128, 3, 2, 8, {bases: 0}]]", 1)
    assert bad != text
    path = tmp_path / "yolov8n-badopt.yaml"
    path.write_text(bad)
    return path


def _weights(out: Path) -> list[Path]:
    return list(out.glob("runs/**/*.pt"))


def test_an_arm_that_cannot_build_fails_the_preflight_before_any_training(dataset, tmp_path, capfd):
    out = tmp_path / "out"
    bad = _bad_option_yaml(tmp_path)
    assert cli.main(_argv(dataset, out, [MODELS[0], bad])) == 2
    captured = capfd.readouterr()  # the arms are stepped in a child process: its output is on the file descriptors
    err = [line for line in captured.err.strip().splitlines() if "error" in line]
    assert len(err) == 1 and "Traceback" not in captured.err, captured.err
    assert f"pre-flight: arm yolov8n-badopt ({bad})" in err[0]
    assert "layer 1 (DRConv): option 'bases' must be an int >= 1, got 0" in err[0]
    assert "pre-flight: arm yolov8n: 3.012 M params" in captured.out  # the baseline was checked first
    assert not _weights(out) and not (out / "runs").exists() and not (out / ".preflight").exists()


def test_an_arm_whose_training_step_fails_fails_the_preflight(dataset, tmp_path, capsys, monkeypatch):
    from drconv_yolo.modules import DRConv

    forward = DRConv.forward

    def fails_in_training(self, x):  # builds (Ultralytics builds in eval mode), fails in a training step
        if self.training:
            raise RuntimeError("no kernel image is available for execution on the device")
        return forward(self, x)

    monkeypatch.setattr(DRConv, "forward", fails_in_training)
    out = tmp_path / "out"
    assert cli.main(_argv(dataset, out, MODELS, "--in-process")) == 2  # in this process: the patch applies
    err = capsys.readouterr().err
    assert "pre-flight: arm yolov8n-drconv (" in err
    assert "one training step at batch 4, 64 px on device cpu failed: RuntimeError: no kernel image" in err
    assert not _weights(out) and not (out / "runs").exists()


def test_a_full_output_folder_fails_the_preflight(dataset, tmp_path, capsys, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(pf.shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 2**20, 2**20))
    assert shutil is pf.shutil
    out = tmp_path / "out"
    assert cli.main(_argv(dataset, out, MODELS, "--in-process")) == 2
    err = capsys.readouterr().err
    assert f"output folder {out} has 1 MiB free but the 2 run(s) to train need about" in err
    assert not (out / "runs").exists()


def test_dry_run_checks_prints_the_plan_and_trains_nothing(dataset, tmp_path, capfd):
    out = tmp_path / "out"
    assert cli.main(_argv(dataset, out, MODELS, "--dry-run")) == 0
    log = capfd.readouterr().out
    for line in (
        "pre-flight: data: train 8 of 8 images scored",
        "pre-flight: ground truth: 4 images",
        "pre-flight: arm yolov8n: 3.012 M params",
        "pre-flight: arm yolov8n-drconv: ",
        "pre-flight: output folder: ",
        "[run 1/2] yolov8n seed 0: trains",
        "[run 2/2] yolov8n-drconv seed 0: trains",
        "compare --dry-run: 2 run(s) to train, 0 reused; estimate at least",
    ):
        assert line in log, line
    assert not (out / "runs").exists() and not (out / "report.md").exists()


def test_estimate_counts_steps_and_evaluations_of_the_runs_to_train(dataset, tmp_path):
    from drconv_yolo.experiment import CompareSettings
    from drconv_yolo.experiment.plan import make_plan

    plan = make_plan(CompareSettings(data=str(dataset), models=MODELS, epochs=3, batch=4, device="cpu", out=tmp_path))
    checked = pf.Preflight({a: pf.ArmCheck(a, 1, None, step_s=2.0, infer_s=0.5) for a in plan.names}, 0.0)
    # per run: 3 epochs x ceil(8 / 4) steps x 2 s + (3 + 1) x ceil(4 / 4) inferences x 0.5 s = 12 + 2 = 14 s
    assert pf.estimate_minutes(plan, plan.runs, checked) == pytest.approx(2 * 14 / 60)
    assert pf.estimate_minutes(plan, plan.runs[:1], checked) == pytest.approx(14 / 60)


@pytest.mark.slow
def test_compare_on_a_dataset_ultralytics_partly_skips_names_the_skipped_images(tmp_path, capfd):
    data = add_faults(make_user_dataset(tmp_path / "faulty"))
    out = tmp_path / "out"
    assert cli.main(_argv(data, out)) == 0, capfd.readouterr().err[-3000:]
    log = capfd.readouterr().out
    report = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    skipped = results["settings"]["ground_truth"]["skipped"]
    assert {Path(name).name for name, _ in skipped} >= {"val_fault_broken.jpg", "val_fault_badclass.jpg"}
    line = f"{len(skipped)} of 10 val images skipped by Ultralytics: "
    assert line in report and line in log and "val_fault_broken.jpg" in report
    assert "exceeds dataset class count" in report
    assert "pre-flight: data: train " in log
    for run in results["runs"]:
        assert run["eval"]["pycocotools"]["n_images"] == 10 - len(skipped)
