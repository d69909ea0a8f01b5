"""End to end, in fresh processes whose own code never imports the plugin: the plain ``yolo`` CLI trains, validates,
predicts, exports and resumes a DRConv model; ONNX matches PyTorch; 2-process DDP (gloo) stays in sync; the built
wheel works from a fresh virtualenv. Registration comes from the installed start-up hook only."""

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("ultralytics")
from ultralytics.utils import ASSETS  # noqa: E402

from drconv_yolo.data.synthetic import generate  # noqa: E402
from drconv_yolo.modules import DRConv  # noqa: E402

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BUS = ASSETS / "bus.jpg"
MODEL = "yolov8n-drconv.yaml"  # bundled; resolves by bare name only when the plugin is registered
TRAIN_ARGS = ["imgsz=64", "device=cpu", "batch=8", "workers=0", "amp=False", "plots=False", "exist_ok=True"]


def hook_installed() -> bool:
    import site

    return any((Path(d) / "drconv_yolo_startup.pth").exists() for d in [*site.getsitepackages()])


if not hook_installed():  # pragma: no cover - CI installs the package
    pytest.skip("the package's start-up hook is not installed (pip install -e .)", allow_module_level=True)


def offline_env(root: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRCONV_YOLO")}
    env.update(YOLO_OFFLINE="1", YOLO_AUTOINSTALL="false", YOLO_CONFIG_DIR=str(root / "config"), MPLBACKEND="Agg")
    env["YOLO_VERBOSE"] = "true"
    env.update(extra)
    return env


def run(cmd, root: Path, timeout=600, check=True, **extra) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(c) for c in cmd], cwd=root, env=offline_env(root, **extra), capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def yolo(*args, root: Path, **kw) -> subprocess.CompletedProcess:
    return run([BIN / "yolo", *args], root, **kw)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny synthetic dataset and one DRConv model trained by the plain `yolo train` CLI."""
    root = tmp_path_factory.mktemp("e2e")
    data = generate(root / "data", n_train=16, n_val=8, imgsz=64, seed=0)
    yolo("train", f"model={MODEL}", f"data={data}", "epochs=1", f"project={root / 'runs'}", "name=cli", *TRAIN_ARGS,
         root=root)  # fmt: skip
    best = root / "runs" / "cli" / "weights" / "best.pt"
    assert best.exists()
    return root, data, best


def test_cli_train_writes_drconv_checkpoint(work):
    _, _, best = work
    model = torch.load(best, weights_only=False)["model"]
    assert sum(isinstance(m, DRConv) for m in model.modules()) == 6


def test_cli_val_reports_metrics(work):
    root, data, best = work
    out = yolo("val", f"model={best}", f"data={data}", "imgsz=64", "batch=8", "workers=0", f"project={root / 'runs'}",
               "name=val", root=root)  # fmt: skip
    text = out.stdout + out.stderr
    assert "mAP50-95" in text and "YOLOv8n-drconv summary (fused)" in text
    metrics = next(line.split() for line in text.splitlines() if line.strip().startswith("all "))
    assert metrics[1:3] == [
        "8",
        str(sum(len(p.read_text().splitlines()) for p in (data.parent / "labels/val").iterdir())),
    ]


def test_cli_val_under_ultralytics_safe_load(work):
    root, data, best = work
    out = yolo("val", f"model={best}", f"data={data}", "imgsz=64", "batch=8", "workers=0", f"project={root / 'runs'}",
               "name=safe", root=root, ULTRALYTICS_SAFE_LOAD="1")  # fmt: skip
    assert "mAP50-95" in out.stdout + out.stderr


def test_cli_predict_on_bus_image(work):
    root, _, best = work
    yolo("predict", f"model={best}", f"source={BUS}", "imgsz=64", f"project={root / 'runs'}", "name=pred",
         "exist_ok=True", root=root)  # fmt: skip
    saved = root / "runs" / "pred" / "bus.jpg"
    assert saved.exists() and saved.stat().st_size > 1000


def test_resume_from_last_continues_training(work):
    root, data, _ = work
    # first run: 2 epochs, interrupted by a crash after epoch 1 was saved (the script imports only Ultralytics)
    script = textwrap.dedent(f"""
        from ultralytics import YOLO
        def crash(trainer):
            if trainer.epoch == 0:
                raise SystemExit(3)
        model = YOLO({MODEL!r})
        model.add_callback("on_fit_epoch_end", crash)
        model.train(data={str(data)!r}, epochs=2, project={str(root / "runs")!r}, name="resume", imgsz=64,
                    device="cpu", batch=8, workers=0, amp=False, plots=False, exist_ok=True)
    """)
    first = run([sys.executable, "-c", script], root, check=False)
    assert first.returncode == 3, first.stderr[-2000:]
    last = root / "runs" / "resume" / "weights" / "last.pt"
    assert torch.load(last, weights_only=False)["epoch"] == 0
    out = yolo("train", "resume", f"model={last}", root=root)
    assert "Resuming training" in out.stdout + out.stderr
    rows = (root / "runs" / "resume" / "results.csv").read_text().strip().splitlines()
    assert [r.split(",")[0].strip() for r in rows[1:]] == ["1", "2"]


def letterboxed(path: Path, size: int) -> torch.Tensor:
    """bus.jpg preprocessed as Ultralytics does for a square export: letterbox, BGR->RGB, /255, NCHW."""
    import cv2
    from ultralytics.data.augment import LetterBox

    image = LetterBox((size, size), auto=False)(image=cv2.imread(str(path)))
    return torch.from_numpy(np.ascontiguousarray(image[..., ::-1].transpose(2, 0, 1))).float()[None] / 255


@pytest.mark.parametrize("dynamic", [False, True])
def test_onnx_export_runs_in_onnxruntime_and_matches_pytorch(work, dynamic):
    ort = pytest.importorskip("onnxruntime")
    root, _, best = work
    weights = root / f"export_dynamic_{dynamic}.pt"
    shutil.copy(best, weights)
    yolo("export", f"model={weights}", "format=onnx", "imgsz=64", f"dynamic={dynamic}", root=root)
    session = ort.InferenceSession(str(weights.with_suffix(".onnx")), providers=["CPUExecutionProvider"])
    model = torch.load(best, weights_only=False)["model"].float().fuse().eval()
    image = letterboxed(BUS, 64)
    batches = [image, torch.cat([image, image.flip(-1), image.flip(-2), 1 - image])] if dynamic else [image]
    for x in batches:
        with torch.no_grad():
            expected = model(x)[0].numpy()
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert got.shape == expected.shape
        # boxes are in pixels (up to 64), scores in [0, 1]: 1e-3 absolute leaves room for float reordering only
        assert np.abs(got - expected).max() < 1e-3


DDP_SCRIPT = """
import json, os, sys
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from ultralytics.nn.tasks import DetectionModel

dist.init_process_group("gloo")
rank = dist.get_rank()
out = sys.argv[1]
torch.manual_seed(0)
model = DetectionModel("yolov8n-drconv.yaml", verbose=False)  # needs the start-up hook in this fresh worker
plain = DetectionModel("yolov8n-drconv.yaml", verbose=False)
plain.load_state_dict(model.state_dict())
ddp = DistributedDataParallel(model)
opt = torch.optim.SGD(ddp.parameters(), lr=0.01)

def tensors(o):
    if torch.is_tensor(o):
        return [o]
    return [t for v in (o.values() if isinstance(o, dict) else o) for t in tensors(v)]

def grads(m):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in m.parameters() if p.requires_grad]

def loss_of(m, x):
    return sum(t.float().square().mean() for t in tensors(m(x)))

local = []
for step in range(3):
    torch.manual_seed(100 * step + rank)  # each rank sees its own batch
    x = torch.rand(2, 3, 64, 64)
    if step == 0:  # this rank's own gradient, before any all-reduce
        plain.zero_grad()
        loss_of(plain, x).backward()
        local = grads(plain)
    opt.zero_grad()
    loss_of(ddp, x).backward()
    if step == 0:
        first = grads(model)
    opt.step()
names = [n for n, p in model.named_parameters() if p.requires_grad]
params = [p.detach() for p in model.parameters() if p.requires_grad]
torch.save({"names": names, "params": params, "ddp_grad": first, "local_grad": local},
           os.path.join(out, f"rank{rank}.pt"))
dist.destroy_process_group()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_process_gloo_allreduces_and_keeps_ranks_in_sync(tmp_path):
    script = tmp_path / "ddp_worker.py"
    script.write_text(DDP_SCRIPT)
    run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
         "--master_addr=127.0.0.1", script, tmp_path], tmp_path, OMP_NUM_THREADS="1")  # fmt: skip
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    drconv = [i for i, n in enumerate(r0["names"]) if ".conv.generator." in n or ".conv.guide." in n]
    assert drconv, "the model has DRConv parameters"
    for i, (a, b) in enumerate(zip(r0["params"], r1["params"])):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{r0['names'][i]} differs between ranks")
    for i in range(len(r0["names"])):
        mean = (r0["local_grad"][i] + r1["local_grad"][i]) / 2  # DDP averages the ranks' gradients
        torch.testing.assert_close(r0["ddp_grad"][i], mean, rtol=1e-4, atol=1e-6, msg=r0["names"][i])
    assert any(not torch.equal(r0["local_grad"][i], r1["local_grad"][i]) for i in drconv)  # ranks saw different data


def test_built_wheel_works_from_fresh_venv_without_explicit_import(tmp_path, work):
    _, data, _ = work
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, REPO], tmp_path)
    (wheel,) = wheels.glob("drconv_yolo-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert {"drconv_yolo_startup.pth", "drconv_yolo_startup.start", "drconv_yolo/cfg/models/yolov8-drconv.yaml"} <= set(
        names
    )
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], tmp_path)
    py = venv / "bin" / "python"
    purelib = run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).stdout.strip()
    # reuse the system's torch and Ultralytics (a path line: the system's own .pth files, ours included, stay unread)
    system = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "_system_site.pth").write_text("\n".join(sorted(system)) + "\n")
    run([py, "-m", "pip", "install", "--no-deps", "--no-index", wheel], tmp_path)
    where = run([py, "-c", "import drconv_yolo; print(drconv_yolo.__file__)"], tmp_path).stdout
    assert str(venv) in where
    args = [f"model={MODEL}", f"data={data}", "epochs=1", "imgsz=32", "device=cpu", "batch=8", "workers=0", "amp=False",
            "plots=False", "exist_ok=True", "val=False"]  # fmt: skip
    yolo_cli = "import sys; sys.argv = ['yolo', *sys.argv[1:]]; from ultralytics.cfg import entrypoint; entrypoint()"
    out = run([py, "-c", yolo_cli, "train", *args, f"project={tmp_path / 'runs'}", "name=hook"], tmp_path)
    assert "drconv_yolo.modules.DRConv" in out.stdout + out.stderr
    cli = venv / "bin" / "drconv-yolo"
    out = run([cli, "train", *args, f"project={tmp_path / 'runs'}", "name=cli"], tmp_path, DRCONV_YOLO_AUTOLOAD="0")
    assert "drconv_yolo.modules.DRConv" in out.stdout + out.stderr
    off = run([py, "-c", yolo_cli, "train", *args, f"project={tmp_path / 'runs'}", "name=off"], tmp_path, check=False,
              DRCONV_YOLO_AUTOLOAD="0")  # fmt: skip
    assert off.returncode != 0  # with the hook off, plain yolo knows no DRConv: the hook is what made it work
