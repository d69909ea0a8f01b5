"""Every deployment format a CPU machine can check, end to end through Ultralytics' own exporter and loader: a DRConv
model (stride-2 DRConvs, 8 bases: the gather formulation), a block model (the same) and the cost-matched block model
(one base: the mix formulation) exported, loaded, run on Ultralytics' bus.jpg, and compared with PyTorch: the raw
head output, and the detections Ultralytics' predict makes from it."""

import shutil

import numpy as np
import pytest
import torch
from test_ops_export import region_products

pytest.importorskip("ultralytics")
from ultralytics import YOLO  # noqa: E402
from ultralytics.nn.tasks import DetectionModel  # noqa: E402
from ultralytics.utils import ASSETS  # noqa: E402

pytestmark = pytest.mark.slow
BUS = ASSETS / "bus.jpg"
IMGSZ = 64
MODELS = ["yolov8n-drconv", "yolov8n-drconv-blocks", "yolov8n-drconv-blocks-lite"]
# boxes are in pixels (up to 64), scores in [0, 1]: float reordering only (OpenVINO compiled in f32 here)
OUTPUT_ATOL = 1e-3
BOX_ATOL = 0.05  # pixels, between the detections of the PyTorch model and of the exported one
PREDICT_CONF = 0.5  # with the class bias at 0, an untrained head scores about 0.5: boxes to compare


@pytest.fixture(scope="module", params=MODELS)
def checkpoint(request, tmp_path_factory):
    """An Ultralytics checkpoint of the model with non-trivial BatchNorm statistics and region coefficients."""
    torch.manual_seed(0)
    model = DetectionModel(f"{request.param}.yaml", verbose=False)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2)
            if m.__class__.__name__ == "OfficialFilterGenerator":
                m.fc.weight.normal_(0, 0.5)  # regions and samples get different filters
        for branch in model.model[-1].cv3:  # class scores near 0.5 rather than the prior's 1e-4: detections to match
            branch[-1].bias.zero_()
    path = tmp_path_factory.mktemp("formats") / f"{request.param}.pt"
    torch.save({"model": model.half(), "train_args": {"imgsz": IMGSZ}}, path)
    return path


def letterboxed(size: int) -> torch.Tensor:
    import cv2
    from ultralytics.data.augment import LetterBox

    image = LetterBox((size, size), auto=False)(image=cv2.imread(str(BUS)))
    return torch.from_numpy(np.ascontiguousarray(image[..., ::-1].transpose(2, 0, 1))).float()[None] / 255


def pytorch_output(checkpoint, x):
    model = torch.load(checkpoint, weights_only=False)["model"].float().fuse().eval()
    with torch.no_grad():
        return model(x)[0].numpy()


def detections(model_path):
    boxes = YOLO(str(model_path), task="detect").predict(BUS, imgsz=IMGSZ, conf=PREDICT_CONF, verbose=False)[0].boxes
    order = np.lexsort((boxes.xyxy[:, 0].numpy(), -boxes.conf.numpy()))
    return boxes.xyxy.numpy()[order], boxes.cls.numpy()[order]


def export(checkpoint, fmt, **kw):
    copy = checkpoint.parent / f"{checkpoint.stem}_{fmt}_{'_'.join(f'{k}{v}' for k, v in kw.items())}.pt"
    shutil.copy(checkpoint, copy)
    return YOLO(str(copy)).export(format=fmt, imgsz=IMGSZ, verbose=False, **kw)


def assert_same_detections(checkpoint, exported):
    want_boxes, want_cls = detections(checkpoint)
    got_boxes, got_cls = detections(exported)
    assert len(want_boxes) > 0 and len(got_boxes) == len(want_boxes)
    assert (got_cls == want_cls).all() and np.abs(got_boxes - want_boxes).max() < BOX_ATOL


@pytest.mark.parametrize("dynamic", [False, True])
def test_onnx_in_onnxruntime_matches_pytorch_at_batch_1_and_dynamic_batch(checkpoint, dynamic):
    ort = pytest.importorskip("onnxruntime")
    path = export(checkpoint, "onnx", dynamic=dynamic, simplify=True)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    image = letterboxed(IMGSZ)
    for x in [image, torch.cat([image, image.flip(-1), 1 - image])] if dynamic else [image]:
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert np.abs(got - pytorch_output(checkpoint, x)).max() < OUTPUT_ATOL
    if not dynamic:
        assert_same_detections(checkpoint, path)


def test_onnx_export_of_a_static_batch_multiplies_each_sample_by_its_own_filters(checkpoint):
    # Ultralytics' default (dynamic=False) fixes the batch: the plugin traces DRConv per (region, sample), one conv's
    # work at any batch; dynamic=True keeps one product per region (every sample's filters) and the batch free
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    static = export(checkpoint, "onnx", batch=2, simplify=True)
    free = len(region_products(onnx.load(export(checkpoint, "onnx", dynamic=True, simplify=True)).graph))
    assert len(region_products(onnx.load(static).graph)) == 2 * free
    assert (free > 0) == ("lite" not in checkpoint.stem)  # the lite model exports by mix: no region products
    image = letterboxed(IMGSZ)
    x = torch.cat([image, image.flip(-1)])
    session = ort.InferenceSession(static, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(got - pytorch_output(checkpoint, x)).max() < OUTPUT_ATOL


def test_openvino_export_matches_pytorch_and_detects_the_same(checkpoint, monkeypatch):
    ov = pytest.importorskip("openvino", reason="OpenVINO is the 'openvino' extra")
    folder = export(checkpoint, "openvino")
    xml = next(p for p in __import__("pathlib").Path(folder).glob("*.xml"))
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = letterboxed(IMGSZ)
    assert np.abs(compiled(x.numpy())[0] - pytorch_output(checkpoint, x)).max() < OUTPUT_ATOL
    # Ultralytics compiles at the CPU's default precision (bf16 where the CPU has it), which moves the untrained
    # head's scores of about 0.5 across PREDICT_CONF: its predict runs in f32 here, as the comparison above does
    compile_model = ov.Core.compile_model

    def in_f32(self, model, device_name="CPU", config=None):
        return compile_model(self, model, device_name, {**(config or {}), "INFERENCE_PRECISION_HINT": "f32"})

    monkeypatch.setattr(ov.Core, "compile_model", in_f32)
    assert_same_detections(checkpoint, folder)


def test_torchscript_export_matches_pytorch_and_detects_the_same(checkpoint):
    path = export(checkpoint, "torchscript")
    module = torch.jit.load(path)
    image = letterboxed(IMGSZ)
    for x in (image, torch.cat([image, 1 - image])):  # a traced model keeps the batch free
        with torch.no_grad():
            got = module(x)
        got = (got[0] if isinstance(got, (tuple, list)) else got).numpy()
        assert np.abs(got - pytorch_output(checkpoint, x)).max() < OUTPUT_ATOL
    assert_same_detections(checkpoint, path)
