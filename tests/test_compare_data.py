"""compare on a user's own dataset: the ground truth built from YOLO labels, and runs reused only on the same data."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
from _data_fixtures import make_user_dataset

from drconv_yolo import cli, experiment
from drconv_yolo.experiment import plan as planning

MODELS = ["yolov8n.yaml", "yolov8n-drconv.yaml"]


@pytest.fixture(scope="module", autouse=True)
def _registered():
    from drconv_yolo.plugin import register

    register()


@pytest.fixture
def user_data(tmp_path) -> Path:
    return make_user_dataset(tmp_path / "mydata")


def _plan(data: Path, out: Path) -> planning.Plan:
    return planning.make_plan(experiment.CompareSettings(data=str(data), models=MODELS, device="cpu", out=out))


def _finish(spec: planning.RunSpec) -> None:
    """Mark a run finished as the worker would (its record, written last), without training it."""
    Path(spec.run_dir).mkdir(parents=True, exist_ok=True)
    (Path(spec.run_dir) / planning.RUN_FILE).write_text(json.dumps({"spec": asdict(spec)}))


def _change_label(data: Path, split: str) -> Path:
    label = sorted((data.parent / "labels" / split).glob("*.txt"))[0]
    rows = label.read_text().splitlines()
    label.write_text("\n".join([rows[0].replace("0.", "0.1", 1), *rows[1:]]) + "\n")
    return label


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_run_is_not_reused_after_a_label_changed(user_data, tmp_path, split):
    out = tmp_path / "out"
    spec = _plan(user_data, out).runs[0]
    _finish(spec)
    assert planning.run_state(_plan(user_data, out).runs[0]) == "done"  # same data: reused
    _change_label(user_data, split)
    with pytest.raises(experiment.CompareError) as e:
        planning.run_state(_plan(user_data, out).runs[0])
    message = str(e.value)
    assert "other settings" in message and f"dataset {user_data}" in message and "images or labels changed" in message


def test_a_moved_output_folder_is_still_reused_with_its_built_ground_truth(user_data, tmp_path):
    out = tmp_path / "out"
    plan = _plan(user_data, out)
    assert plan.data.gt.source == "built" and Path(plan.data.gt_json).is_relative_to(out / planning.GT_CACHE)
    for spec in plan.runs:
        _finish(spec)
    shutil.copytree(out, tmp_path / "moved")
    moved = _plan(user_data, tmp_path / "moved")
    assert Path(moved.data.gt_json).is_relative_to(tmp_path / "moved")
    assert [planning.run_state(s) for s in moved.runs] == ["done", "done"]


def test_a_run_made_before_datasets_were_fingerprinted_is_not_reused(user_data, tmp_path):
    spec = _plan(user_data, tmp_path / "out").runs[0]
    old = asdict(spec)
    del old["data"]
    Path(spec.run_dir).mkdir(parents=True)
    (Path(spec.run_dir) / planning.RUN_FILE).write_text(json.dumps({"spec": old}))
    with pytest.raises(experiment.CompareError, match="images or labels changed"):
        planning.run_state(spec)


def _argv(data: Path, out: Path) -> list[str]:
    return [
        *("compare", "--data", str(data), "--models", *MODELS, "--seeds", "0", "--epochs", "1", "--imgsz", "64"),
        *("--batch", "2", "--workers", "0", "--device", "cpu", "--latency-runs", "1", "--latency-warmup", "0"),
        *("--out", str(out), "mosaic=0"),
    ]


@pytest.mark.slow
def test_compare_on_a_user_dataset_builds_and_names_its_ground_truth(user_data, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(_argv(user_data, out)) == 0, capsys.readouterr().err[-3000:]
    log = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    gt = results["settings"]["ground_truth"]
    assert gt["source"] == "built" and Path(gt["path"]).is_file()
    assert Path(gt["path"]).is_relative_to(out / planning.GT_CACHE)  # cached under OUT, not in the user's folder
    assert not (user_data.parent / "annotations").exists()
    assert results["settings"]["n_eval"] == 5 and results["settings"]["data_fingerprint"]
    assert f"Ground truth: {gt['description']}" in log
    assert gt["description"] in (out / "report.md").read_text()
    for run in results["runs"]:
        assert run["eval"]["pycocotools"]["n_images"] == 5
        assert run["spec"]["data"]["gt"]["source"] == "built"
    # the same command on a changed label: refused before any training, naming the dataset
    before = (out / "runs" / "yolov8n" / "seed0" / "run.json").stat().st_mtime_ns
    _change_label(user_data, "val")
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(_argv(user_data, out)) == 2
    err = capsys.readouterr().err
    assert f"dataset {user_data}" in err and "images or labels changed" in err
    assert (out / "runs" / "yolov8n" / "seed0" / "run.json").stat().st_mtime_ns == before
