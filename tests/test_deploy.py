"""The deployed cost: Ultralytics' ONNX export of a checkpoint or a module, its runtimes, the deployment benchmark's
table and JSON, the comparison's deployed latency and its reasons when there is none, and the CLI's refusals."""

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("ultralytics")
from ultralytics.nn.tasks import DetectionModel  # noqa: E402

from drconv_yolo import deploy  # noqa: E402
from drconv_yolo.cli import main  # noqa: E402
from drconv_yolo.experiment import worker  # noqa: E402
from drconv_yolo.experiment.plan import RunSpec  # noqa: E402

IMGSZ = 64


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("deploy") / "yolov8n-drconv-blocks-lite.pt"
    torch.save({"model": DetectionModel("yolov8n-drconv-blocks-lite.yaml", verbose=False)}, path)
    return path


def test_export_onnx_of_a_checkpoint_runs_in_onnxruntime_at_its_static_batch(checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    path = deploy.export_onnx(checkpoint, tmp_path, IMGSZ, batch=2)
    assert path.suffix == ".onnx" and path.parent == tmp_path
    out = deploy.load_session(path, "onnxruntime", threads=1)(torch.rand(2, 3, IMGSZ, IMGSZ).numpy())
    assert out.shape[0] == 2 and out.shape[1] == 84  # 4 box coordinates + 80 class scores


def test_deployed_latency_reports_the_median_of_its_runs(checkpoint):
    pytest.importorskip("onnxruntime")
    result = deploy.deployed_latency(checkpoint, IMGSZ, runs=3, warmup=1, threads=1)
    assert result["runtime"] == "onnxruntime" and result["runs"] == 3
    assert 0 < result["min_ms"] <= result["median_ms"]


def test_load_session_refuses_an_unknown_runtime(tmp_path):
    with pytest.raises(ValueError, match=r"runtime must be one of \['onnxruntime', 'openvino'\], got 'tensorrt'"):
        deploy.load_session(tmp_path / "m.onnx", "tensorrt")


def test_deployment_benchmark_writes_one_row_per_variant_runtime_and_case(tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "deploy.json"
    payload = deploy.run_deploy(variants=["drconv-blocks-lite"], batches=[1], sizes=[IMGSZ], threads=[1], repeats=2,
                                warmup=0, out=out, log=lambda *a, **k: None)  # fmt: skip
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload))
    (row,) = payload["rows"]
    assert (row["model"], row["baseline"], row["runtime"], row["batch"], row["imgsz"]) == (
        "yolov8n-drconv-blocks-lite", "yolov8n", "onnxruntime", 1, IMGSZ)  # fmt: skip
    assert row["ratio"] == pytest.approx(row["model_ms"] / row["baseline_ms"])
    assert row["ratio_min"] <= row["ratio_max"] and payload["settings"]["runtime_versions"]["onnxruntime"]


def test_deployment_benchmark_refuses_a_missing_runtime_before_exporting(monkeypatch, tmp_path):
    monkeypatch.setattr(deploy, "versions", lambda: {"onnxruntime": "1", "openvino": None})
    missing = r'openvino is not installed: pip install "drconv-yolo\[openvino\]"'
    with pytest.raises(deploy.RuntimeMissing, match=missing):
        deploy.run_deploy(runtimes=["openvino"], out=tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def spec(tmp_path, runtime):
    return RunSpec(1, 1, "arm", 0, "m.yaml", str(tmp_path), {"imgsz": IMGSZ}, {},
                   {"latency_runs": 1, "latency_warmup": 0, "device": "cpu", "deploy_runtime": runtime})  # fmt: skip


def test_run_without_deployed_latency_says_why(tmp_path, monkeypatch):
    assert worker._deployed(spec(tmp_path, "none"), tmp_path / "best.pt") == {
        "note": "not measured (--deploy-runtime none)"}  # fmt: skip

    def missing(*args, **kwargs):
        raise deploy.RuntimeMissing("OpenVINO is not installed")

    monkeypatch.setattr(worker, "deployed_latency", missing)
    assert worker._deployed(spec(tmp_path, "openvino"), tmp_path / "best.pt") == {
        "note": "not measured (OpenVINO is not installed)"}  # fmt: skip
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    monkeypatch.undo()
    note = worker._deployed(spec(tmp_path, "onnxruntime"), broken)["note"]
    assert note.startswith("not measured (export to ONNX or onnxruntime failed: ")


@pytest.mark.parametrize(
    "args, message",
    [(["--deploy-threads", "0"], "--deploy-threads must be >= 1, got [0]"),
     (["--sizes", "100"], "--sizes must be multiples of 32 (the model's largest stride), got [100]")],
)  # fmt: skip
def test_bench_deploy_refuses_bad_counts(args, message, capsys):
    assert main(["bench", "--deploy", *args]) == 2
    assert message in capsys.readouterr().err


def deploy_ratios(name):
    rows = json.loads((Path(__file__).resolve().parents[1] / "bench_results" / name).read_text())["rows"]
    return {(r["model"], r["runtime"], r["threads"], r["batch"], r["imgsz"]): f"{r['ratio']:.2f}x" for r in rows}


def deployment_page() -> str:
    return (Path(__file__).resolve().parents[1] / "docs" / "deployment.md").read_text()


def batch1_row(ratios, model):
    """The page's batch-1, 640 px table row of ``model``: onnxruntime 2 / 1 threads, OpenVINO 2 / 1 threads."""
    return f"| {model} | " + " | ".join(ratios[model, rt, t, 1, 640] for rt in deploy.RUNTIMES for t in (2, 1)) + " |"


def test_deployment_page_quotes_the_committed_deployment_benchmark():
    page = deployment_page()
    now, before = deploy_ratios("drconv_deploy.json"), deploy_ratios("drconv_deploy_by_responses.json")
    lite_by_gather = deploy_ratios("drconv_deploy_lite_by_gather.json")
    missing = []
    for model in [f"yolov8n-{v}" for v in deploy.DEPLOY_VARIANTS]:
        row = batch1_row(now, model)
        if (model, "onnxruntime", 2, 1, 640) in before:
            row += " " + " / ".join(before[model, rt, t, 1, 640] for rt in deploy.RUNTIMES for t in (2, 1)) + " |"
        if row not in page:
            missing.append(row)
    lite = "yolov8n-drconv-blocks-lite"
    gather_row = " / ".join(lite_by_gather[lite, rt, t, 1, 640] for rt in deploy.RUNTIMES for t in (2, 1))
    if gather_row not in page:
        missing.append(gather_row)
    assert not missing, f"docs/deployment.md does not quote these rows of bench_results/: {missing}"


@pytest.mark.parametrize(
    "name, variants",
    [
        ("drconv_deploy_xeon.json", deploy.DEPLOY_VARIANTS),  # the second machine, every config
        ("drconv_deploy_b1_640.json", ("drconv", "drconv-blocks", "drconv-blocks-lite")),  # after the pointwise change
        ("drconv_deploy_b1_640_repeat.json", ("drconv", "drconv-blocks", "drconv-blocks-lite")),  # its repeat
    ],
)
def test_deployment_page_quotes_the_batch1_tables_of_further_runs(name, variants):
    page = deployment_page()
    ratios = deploy_ratios(name)
    rows = [batch1_row(ratios, f"yolov8n-{v}") for v in variants]
    missing = [row for row in rows if row not in page]
    assert not missing, f"docs/deployment.md does not quote these rows of {name}: {missing}"


def test_deployment_page_quotes_the_static_batch8_table():
    page = deployment_page()
    ratios = deploy_ratios("drconv_deploy_b8_static.json")

    def cell(model, runtime, px):
        return f"{ratios[model, runtime, 2, 8, px]} / {ratios[model, runtime, 1, 8, px]}"

    models = [f"yolov8n-{v}" for v in ("drconv", "drconv-blocks", "drconv-blocks-lite")]
    cells = {m: [cell(m, rt, px) for rt in deploy.RUNTIMES for px in (640, 320)] for m in models}
    rows = [f"| {m} | " + " | ".join(c) + " |" for m, c in cells.items()]
    missing = [row for row in rows if row not in page]
    assert not missing, f"docs/deployment.md does not quote these rows of drconv_deploy_b8_static.json: {missing}"


def test_deployment_page_quotes_the_onnxruntime_repeat():
    page = deployment_page()
    repeat = deploy_ratios("drconv_deploy_ort_repeat.json")
    names = {"drconv": "yolov8n-drconv", "drconv-blocks": "yolov8n-drconv-blocks", "drconv-blocks-lite": "`-lite`"}
    quoted = [f"{label} {repeat[f'yolov8n-{v}', 'onnxruntime', 2, 1, 640]} / "
              f"{repeat[f'yolov8n-{v}', 'onnxruntime', 1, 1, 640]}" for v, label in names.items()]  # fmt: skip
    text = " ".join(page.split())  # the page wraps its lines
    missing = [q for q in quoted if q not in text]
    assert not missing, f"docs/deployment.md does not quote these rows of drconv_deploy_ort_repeat.json: {missing}"
