"""DRConv inside YOLO's blocks (C2f_DRConv, C3k2_DRConv): built from YAML like C2f/C3k2, one guided mask per block,
fuse, GFLOPs, ONNX, safe loading, warm start from the pretrained block, region pictures, the plain `yolo` CLI."""

import copy
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

pytest.importorskip("ultralytics")

import ultralytics.nn.tasks as tasks  # noqa: E402
from _model_helpers import randomize_bn, tensors  # noqa: E402
from ultralytics.nn.modules import C2f, C3k2  # noqa: E402

from drconv_yolo import plugin  # noqa: E402
from drconv_yolo.blocks import C2f_DRConv, C3k2_DRConv, guided_layers  # noqa: E402
from drconv_yolo.modules import DRConv  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "cfg" / "models"
FAMILIES = {"yolov8": (C2f, C2f_DRConv), "yolo11": (C3k2, C3k2_DRConv), "yolo26": (C3k2, C3k2_DRConv)}
VARIANTS = ("-drconv-blocks", "-drconv-blocks-neck", "-drconv-blocks-lite")


@pytest.fixture(autouse=True)
def registered():
    plugin.register()
    yield


def build(cfg):
    return tasks.DetectionModel(cfg, verbose=False)


def has_family(family: str) -> bool:
    try:
        tasks.yaml_model_load(f"{family}n.yaml")
        return True
    except FileNotFoundError:
        return False


def outputs(model, x):
    with torch.no_grad():
        return model(x)[0]


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("variant", VARIANTS)
def test_bundled_block_config_matches_its_twin_block_for_block(family, variant):
    if not has_family(family):
        pytest.skip(f"this Ultralytics has no {family}")
    static, dynamic = FAMILIES[family]
    twin, ours = build(f"{family}n.yaml"), build(f"{family}n{variant}.yaml")
    n_backbone = len(tasks.yaml_model_load(f"{family}n.yaml")["backbone"])
    swapped = 0
    for i, (a, b) in enumerate(zip(twin.model, ours.model)):
        replaced = variant != "-drconv-blocks-neck" or i >= n_backbone
        if isinstance(a, static) and replaced:
            assert isinstance(b, dynamic), i
            swapped += 1
            assert (b.cv1.conv.c1, b.cv2.conv.c2, b.c) == (a.cv1.conv.in_channels, a.cv2.conv.out_channels, a.c)
            assert [type(m) for m in b.m] == [type(m) for m in a.m]  # the inner modules stay Ultralytics' own
            assert sum(p.numel() for p in b.m.parameters()) == sum(p.numel() for p in a.m.parameters())
            assert b.cv1.conv.guide is None and b.cv2.conv.guide is None  # one shared guide conv per block
            assert b.cv1.conv.generator.n == (1 if variant.endswith("lite") else 8)
        else:
            assert type(a) is type(b), i
    assert swapped == (4 if variant == "-drconv-blocks-neck" else 8)


def test_cost_matched_config_is_within_ten_percent_of_the_baseline():
    for family in ("yolov8", "yolo11"):
        base, lite = build(f"{family}n.yaml"), build(f"{family}n-drconv-blocks-lite.yaml")
        ratio = sum(p.numel() for p in lite.parameters()) / sum(p.numel() for p in base.parameters())
        assert 1.0 < ratio <= 1.10, (family, ratio)


def test_block_computes_one_mask_and_both_convs_use_it():
    model = build("yolov8n-drconv-blocks.yaml").eval()
    block = model.model[2]
    guides, seen = [], []
    block.guide.register_forward_hook(lambda m, i, o: guides.append(o))
    for conv in (block.cv1.conv, block.cv2.conv):
        conv.op.register_forward_pre_hook(lambda m, args: seen.append(args[2]))
    outputs(model, torch.rand(1, 3, 64, 64))
    assert len(guides) == 1 and len(seen) == 2
    assert seen[0] is guides[0] and seen[1] is guides[0]


def test_block_output_follows_the_region_of_each_pixel():
    # with every region given its own constant filter, each output pixel equals the filter of its region
    torch.manual_seed(0)
    block = C2f_DRConv(4, 6, 2, nn.ModuleList([nn.Identity()]), act=False, regions=3).eval()
    for conv in (block.cv1, block.cv2):
        gen = conv.conv.generator
        with torch.no_grad():
            gen.fc.weight.zero_()
            gen.fc.bias.copy_(torch.randn_like(gen.fc.bias))
        conv.bn.eval()
    x = torch.randn(2, 4, 5, 7)
    with torch.no_grad():
        region = block.regions_map(x)  # (B, H, W)
        g = block.guide(x)
        w1 = block.cv1.conv.generator(x)  # (B, m, 4, 4, 1, 1)
        y1 = torch.einsum("bjoc,bchw->bjohw", w1[..., 0, 0], x)
        y1 = torch.gather(y1, 1, region[:, None, None].expand(-1, 1, y1.shape[2], -1, -1))[:, 0]
        y1 = block.cv1.bn(y1)
        torch.testing.assert_close(block.cv1(x, g), y1, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"bases": 0}, "option 'bases' must be an int >= 1, got 0"),
        ({"groups": 2}, "unknown option(s) ['groups']"),
        ({"regions": 0}, "option 'regions' must be an int >= 1, got 0"),
        ({"generator": "paper", "bases": 2}, "option 'bases' belongs to generator 'official'"),
        ("not a list", "args must be a list, got 'not a list'"),
        ({"centre_guide": "yes"}, "option 'centre_guide' must be true or false, got 'yes'"),
    ],
)
def test_wrong_block_options_raise_error_naming_layer_and_option(options, message):
    import re

    args = [32, True, options] if isinstance(options, dict) else options
    d = {"nc": 3, "backbone": [[-1, 1, "Conv", [32, 3, 2]], [-1, 1, "C2f_DRConv", args]],
         "head": [[[-1], 1, "Detect", ["nc"]]]}  # fmt: skip
    with pytest.raises(plugin.DRConvYAMLError, match=r"model YAML layer 1 \(C2f_DRConv\): " + re.escape(message)):
        tasks.parse_model(d, ch=3, verbose=False)


def test_centre_guide_option_reaches_the_block_mask_from_yaml():
    d = {"nc": 3, "backbone": [[-1, 1, "Conv", [32, 3, 2]], [-1, 1, "C2f_DRConv", [32, True, {"centre_guide": True}]]],
         "head": [[[-1], 1, "Detect", ["nc"]]]}  # fmt: skip
    model, _ = tasks.parse_model(d, ch=3, verbose=False)
    block = model[1].eval()
    assert block.centre_guide and not block.cv1.conv.centre_guide  # the block centres its one shared mask
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        block.guide.bias[0] += 50.0  # would collapse the paper's mask to region 0
        assert torch.equal(block.regions_map(x), (block.guide(x) - block.guide(x).mean((2, 3), keepdim=True)).argmax(1))
        assert block.regions_map(x).unique().numel() > 1


@pytest.mark.parametrize("cfg", ["yolov8n-drconv-blocks.yaml", "yolo11n-drconv-blocks.yaml"])
def test_fuse_keeps_block_outputs(cfg):
    model = build(cfg).eval()
    randomize_bn(model)
    x = torch.rand(2, 3, 64, 96)
    expected = outputs(model, x)
    model.fuse(verbose=False)
    assert not any(hasattr(m, "bn") for m in model.modules() if isinstance(m, DRConv))
    torch.testing.assert_close(outputs(model, x), expected, rtol=1e-3, atol=1e-3)


def test_gflops_count_every_block_drconv_exactly():
    thop = pytest.importorskip("thop")
    model = build("yolov8n-drconv-blocks.yaml").eval()
    image = torch.empty(1, 3, 64, 64)
    shapes = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: shapes.__setitem__(n, o.shape))
             for n, m in model.named_modules() if isinstance(m, DRConv)]  # fmt: skip
    outputs(model, image)
    for h in hooks:
        h.remove()
    counted = thop.profile(copy.deepcopy(model), inputs=[image], verbose=False)[0]
    plugin.unregister()
    try:
        uncounted = thop.profile(copy.deepcopy(model), inputs=[image], verbose=False)[0]
    finally:
        plugin.register()
    expected = 0
    for name, m in model.named_modules():
        if isinstance(m, DRConv):
            c, (_, _, h, w) = m.conv, shapes[name]
            expected += h * w * c.c2 * c.c1 + c.regions * c.generator.n * c.c2 * c.c1  # selected filter + mixing
    assert len(shapes) == 16 and counted - uncounted == expected


def test_onnx_export_of_a_block_matches_pytorch_at_batch_1_and_4():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = build("yolov8n-drconv-blocks.yaml").eval()
    block = model.model[4]  # C2f_DRConv with two Bottlenecks
    randomize_bn(block)
    buffer = io.BytesIO()
    axes = {"x": {0: "b", 2: "h", 3: "w"}, "y": {0: "b", 2: "h", 3: "w"}}
    torch.onnx.export(block, torch.randn(1, 64, 16, 12), buffer, opset_version=17, dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes=axes)  # fmt: skip
    graph = onnx.load_from_string(buffer.getvalue()).graph
    assert "ArgMax" in {n.op_type for n in graph.node}  # standard ops; the shared mask may be traced once
    session = ort.InferenceSession(buffer.getvalue())
    for shape in [(1, 64, 16, 12), (4, 64, 16, 12)]:
        x = torch.randn(shape)
        got = session.run(None, {"x": x.numpy()})[0]
        with torch.no_grad():
            expected = block(x).numpy()
        assert got.shape == expected.shape and abs(got - expected).max() < 1e-4, shape


@pytest.mark.skipif(not hasattr(tasks, "_SafeLoad"), reason="ULTRALYTICS_SAFE_LOAD arrived in Ultralytics 8.4")
def test_restricted_load_accepts_block_checkpoint(tmp_path):
    path = tmp_path / "blocks.pt"
    torch.save({"model": build("yolo11n-drconv-blocks.yaml").half()}, path)
    ckpt, _ = tasks.torch_safe_load(str(path), safe_only=True)
    assert sum(isinstance(m, C3k2_DRConv) for m in ckpt["model"].modules()) == 8


@pytest.mark.parametrize("family", ["yolov8", "yolo11"])
def test_block_twin_of_trained_baseline_starts_with_identical_outputs(family):
    torch.manual_seed(0)
    base = build(f"{family}n.yaml").train()
    optimizer = torch.optim.SGD(base.parameters(), lr=0.01)
    for _ in range(2):  # weights and BatchNorm statistics move away from their init
        loss = sum(t.float().square().mean() for t in tensors(base(torch.rand(2, 3, 64, 64))))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    base.eval()
    twin = build(f"{family}n-drconv-blocks.yaml")
    twin.load(base, verbose=False)
    twin.eval()
    x = torch.rand(2, 3, 64, 96)
    torch.testing.assert_close(outputs(twin, x), outputs(base, x), rtol=1e-4, atol=1e-4)


def test_regions_draw_one_map_per_block(tmp_path):
    import numpy as np

    from drconv_yolo.regions import capture_regions

    model = build("yolov8n-drconv-blocks-neck.yaml").eval()
    image = (np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)
    layers = capture_regions(model, image)
    blocks = [(n, m) for n, m in guided_layers(model)]
    assert [lr.name for lr in layers] == [n for n, _ in blocks] and len(layers) == 4
    for lr, (_, m) in zip(layers, blocks):
        assert lr.regions == 8 and abs(sum(lr.share) - 1) < 1e-9
        assert lr.out_shape[0] == m.cv2.conv.c2


@pytest.mark.slow
def test_plain_yolo_cli_trains_a_block_model_in_a_fresh_process(tmp_path):
    from drconv_yolo.data.synthetic import generate

    data = generate(tmp_path / "data", n_train=8, n_val=4, imgsz=64, seed=0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRCONV_YOLO")}
    env.update(YOLO_OFFLINE="1", YOLO_AUTOINSTALL="false", YOLO_CONFIG_DIR=str(tmp_path / "cfg"))
    yolo = Path(sys.executable).parent / "yolo"
    args = ["train", "model=yolo11n-drconv-blocks.yaml", f"data={data}", "epochs=1", "imgsz=32", "batch=4",
            "workers=0", "device=cpu", "amp=False", "plots=False", f"project={tmp_path}", "name=b"]  # fmt: skip
    result = subprocess.run([str(yolo), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    best = tmp_path / "b" / "weights" / "best.pt"
    model = torch.load(best, weights_only=False)["model"]
    assert sum(isinstance(m, C3k2_DRConv) for m in model.modules()) == 8
