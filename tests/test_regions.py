"""Guided-mask pictures: one PNG per DRConv layer + grid, maps equal to the guide conv's argmax, clear errors."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from PIL import Image

from drconv_yolo import cli
from drconv_yolo import regions as reg

N_DRCONV = 6  # yolov8n-drconv.yaml: 4 backbone + 2 neck stride-2 convs


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """An untrained YOLOv8n-DRConv saved as .pt by Ultralytics (the guide convs are random, so regions vary)."""
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("w") / "drconv.pt"
    YOLO("yolov8n-drconv.yaml").save(path)
    return path


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """A non-square 80 x 48 crop of a synthetic image (letterboxing must keep the aspect ratio)."""
    from drconv_yolo.data.synthetic import generate

    root = tmp_path_factory.mktemp("d") / "syn"
    generate(root, n_train=1, n_val=1, imgsz=80, seed=0, verbose=False)
    im = cv2.imread(str(root / "images" / "val" / "000001.jpg"))
    path = root / "crop.png"
    cv2.imwrite(str(path), im[16:64, :])  # 48 rows x 80 columns
    return path


def _guide_argmax(weights, boxed):
    """Independent check: argmax of each DRConv's guide conv output, from a hook on the guide conv itself."""
    import torch
    from ultralytics import YOLO

    from drconv_yolo.modules import DRConv

    net = YOLO(str(weights)).model.float().eval()
    maps = []
    hooks = [
        m.conv.guide.register_forward_hook(lambda mod, i, o: maps.append(o.argmax(1)[0].numpy()))
        for m in net.modules()
        if isinstance(m, DRConv)
    ]
    x = torch.from_numpy(np.ascontiguousarray(boxed[..., ::-1].transpose(2, 0, 1))).float().div(255)[None]
    with torch.inference_mode():
        net(x)
    for h in hooks:
        h.remove()
    return maps


def test_regions_draw_one_png_per_layer_and_a_grid(weights, image, tmp_path, capsys):
    out = tmp_path / "regions"
    assert cli.main(["regions", f"model={weights}", f"source={image}", f"out={out}", "imgsz=96"]) == 0
    log = capsys.readouterr().out
    assert f"{N_DRCONV} DRConv layer(s), input 64x96" in log  # 48x80 scaled to 96 wide, padded to stride 32
    summary = json.loads((out / "regions.json").read_text())
    layers = summary["layers"]
    assert len(layers) == N_DRCONV and summary["input_shape"] == [64, 96]
    assert [layer["layer"] for layer in layers] == [1, 3, 5, 7, 16, 19]
    scale = math.ceil(reg.MIN_SIDE / 96)
    for layer in layers:
        with Image.open(layer["png"]) as im:
            im.verify()
        with Image.open(layer["png"]) as im:
            assert im.size == (96 * scale, 64 * scale + reg.LEGEND_PX) and im.mode in ("RGB", "RGBA")
        assert sum(layer["share"]) == pytest.approx(1.0)
    with Image.open(out / "regions_grid.png") as im:
        assert im.size[0] > 300 and im.size[1] > 200
    pngs = sorted(p.name for p in out.glob("regions_*.png"))
    assert len(pngs) == N_DRCONV + 1 and "regions_grid.png" in pngs
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_region_maps_are_the_guide_argmax(weights, image, tmp_path):
    result = reg.draw_regions(weights, image, tmp_path / "r", imgsz=96)
    boxed = reg.letterbox(cv2.imread(str(image)), 96, 32)
    assert boxed.shape == (64, 96, 3)
    expected = _guide_argmax(weights, boxed)
    saved = np.load(result["npz"])
    strides = [4, 8, 16, 32, 16, 32]  # stride of each DRConv layer's output
    for k, layer in enumerate(result["layers"]):
        rmap = result["maps"][k]
        assert rmap.shape == (64 // strides[k], 96 // strides[k]) == tuple(layer["out_shape"][1:])
        assert rmap.min() >= 0 and rmap.max() < layer["regions"] == 8
        np.testing.assert_array_equal(rmap, expected[k])
        np.testing.assert_array_equal(saved[f"layer{k}"], rmap)
        counts = np.bincount(rmap.ravel(), minlength=8)
        assert layer["share"] == pytest.approx((counts / counts.sum()).tolist())
        assert layer["used"] == [j for j in range(8) if counts[j]]


def test_overlay_upsamples_the_map_with_nearest_neighbour():
    image = np.zeros((8, 8, 3), np.uint8)
    rmap = np.array([[0, 1], [2, 3]])
    out = reg.overlay(image, rmap, 4, alpha=1.0, scale=2)
    assert out.shape == (16, 16, 3)
    colors = (reg.palette(4) * 255).astype(np.float32).clip(0, 255).astype(np.uint8)
    for (r, c), j in {(0, 0): 0, (0, 15): 1, (15, 0): 2, (15, 15): 3, (7, 7): 0, (8, 8): 3}.items():
        np.testing.assert_array_equal(out[r, c], colors[j])


def test_clear_errors(weights, image, tmp_path, capsys):
    from ultralytics import YOLO

    missing = tmp_path / "missing.pt"
    assert cli.main(["regions", f"model={missing}", f"source={image}", f"out={tmp_path / 'o'}"]) == 2
    assert "model file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert cli.main(["regions", f"model={weights}", f"source={bad}", f"out={tmp_path / 'o'}"]) == 2
    err = capsys.readouterr().err
    assert "cannot read image" in err and "bad.jpg" in err
    assert cli.main(["regions", f"model={weights}", f"source={tmp_path / 'nothere.jpg'}", f"out={tmp_path / 'o'}"]) == 2
    assert "image not found" in capsys.readouterr().err
    plain = tmp_path / "plain.pt"
    YOLO("yolov8n.yaml").save(plain)
    assert cli.main(["regions", f"model={plain}", f"source={image}", f"out={tmp_path / 'o'}"]) == 2
    assert "has no DRConv layer" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
