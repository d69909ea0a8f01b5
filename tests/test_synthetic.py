"""Tests for the built-in synthetic dataset generator (``drconv_yolo.data.synthetic``)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from drconv_yolo import cli
from drconv_yolo.data import synthetic
from drconv_yolo.data.scene import draw_scene
from drconv_yolo.data.synthetic import (
    CLASS_NAMES,
    SyntheticConfig,
    SyntheticDatasetExistsError,
    generate,
    render_image,
)

SMALL = {"n_train": 8, "n_val": 4, "imgsz": 128, "seed": 0, "n_classes": 5, "objects_per_image": (6, 20)}
BOX_TOL_PX = 1e-3  # COCO pixel boxes vs. YOLO labels (6 decimals => rounding error <= 0.5e-6 * imgsz px)
REPO = Path(__file__).resolve().parents[1]
# sha256 of render_image(SyntheticConfig(imgsz=96, seed=0), split, i) for i < 3 in both splits, recorded before the
# appearance option existed: the default appearance must keep drawing exactly these pixels and boxes. The pixel digest
# pins this OpenCV/numpy build too (float blurs and resizes); re-record it only on a deliberate VERSION bump.
GOLDEN_PIXELS = "17c641a88a96ec9b8921058628b9c1cd3f25c7a69a6063088f199d62fce9ee48"
GOLDEN_BOXES = "2a08787ace1fbe0e1c90809e04ff0644307329d12d38f764c70f39c66e7e789d"
GOLDEN_BUILD = ("5.0.0", "2.4.6")  # the cv2 and numpy versions GOLDEN_PIXELS was recorded with
CAMERA_BLUR_RADIUS = 2  # px: cv2.GaussianBlur's kernel radius for sigma 0.5 on float images (scene.CAMERA_BLUR_SIGMA)
STAT_IMAGES = 50  # scenes in the appearance statistics (about 570 objects at 128 px; about 2 s for both modes)
DEPENDENT_CORR = 0.3  # "region": observed 0.44; the standard error of a correlation over ~570 objects is ~0.04
INDEPENDENT_CORR = 0.12  # "uniform": observed -0.02; about three standard errors of a zero correlation
MEAN_LOOK_TOL = 0.05  # relative difference allowed between the modes' mean object brightness (same marginal)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small dataset shared by the read-only tests; returns its root."""
    return generate(tmp_path_factory.mktemp("syn") / "ds", verbose=False, **SMALL).parent


def _files(root: Path, split: str, kind: str) -> list[Path]:
    folder, ext = ("labels", "txt") if kind == "labels" else ("images", "jpg")
    return sorted((root / folder / split).glob(f"*.{ext}"))


def _yolo(path: Path) -> np.ndarray:
    rows = [line.split() for line in path.read_text().splitlines()]
    return np.array([[float(v) for v in r] for r in rows], np.float64).reshape(-1, 5)


def _all_boxes(root: Path) -> np.ndarray:
    return np.concatenate([_yolo(p) for s in ("train", "val") for p in _files(root, s, "labels")])


def _pixels(root: Path, split: str) -> list[np.ndarray]:
    return [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in _files(root, split, "images")]


def test_generate_identical_outputs_same_seed(dataset: Path, tmp_path: Path) -> None:
    other = generate(tmp_path / "again", verbose=False, **SMALL).parent
    for split in ("train", "val"):
        a, b = _files(dataset, split, "labels"), _files(other, split, "labels")
        assert [p.name for p in a] == [p.name for p in b]
        assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
        pa, pb = _pixels(dataset, split), _pixels(other, split)
        assert len(pa) == len(pb) and all(np.array_equal(x, y) for x, y in zip(pa, pb))
        # same OpenCV/libjpeg build and fixed quality: the JPEG files themselves are byte-identical too
        ia, ib = _files(dataset, split, "images"), _files(other, split, "images")
        assert all(x.read_bytes() == y.read_bytes() for x, y in zip(ia, ib))
        ja = (dataset / "annotations" / f"instances_{split}.json").read_bytes()
        assert ja == (other / "annotations" / f"instances_{split}.json").read_bytes()


def test_generate_different_outputs_different_seed(dataset: Path, tmp_path: Path) -> None:
    other = generate(tmp_path / "seed1", verbose=False, **{**SMALL, "seed": 1}).parent
    labels_a = [p.read_bytes() for p in _files(dataset, "train", "labels")]
    labels_b = [p.read_bytes() for p in _files(other, "train", "labels")]
    assert labels_a != labels_b
    assert not any(np.array_equal(x, y) for x, y in zip(_pixels(dataset, "train"), _pixels(other, "train")))


def test_render_image_independent_of_split_sizes() -> None:
    img_a, boxes_a = render_image(SyntheticConfig(**SMALL), "val", 2)
    img_b, boxes_b = render_image(SyntheticConfig(**{**SMALL, "n_train": 500, "n_val": 9}), "val", 2)
    assert img_a.shape == (128, 128, 3) and img_a.dtype == np.uint8
    assert np.array_equal(img_a, img_b) and np.array_equal(boxes_a, boxes_b)


def test_written_jpeg_matches_rendered_image_within_compression_error(dataset: Path) -> None:
    rendered, boxes = render_image(SyntheticConfig(**SMALL), "train", 3)
    written = cv2.imread(str(dataset / "images" / "train" / "000004.jpg"), cv2.IMREAD_COLOR)
    assert np.abs(written.astype(np.int16) - rendered.astype(np.int16)).mean() < 3.0
    assert len(_yolo(dataset / "labels" / "train" / "000004.txt")) == len(boxes)


def test_layout_numeric_stems_one_label_per_image(dataset: Path) -> None:
    for split, n in (("train", SMALL["n_train"]), ("val", SMALL["n_val"])):
        images, labels = _files(dataset, split, "images"), _files(dataset, split, "labels")
        assert [p.stem for p in images] == [f"{i:06d}" for i in range(1, n + 1)]
        assert [p.stem for p in labels] == [p.stem for p in images]
    meta = json.loads((dataset / "synthetic.json").read_text())
    assert meta["version"] == synthetic.VERSION and meta["params"]["seed"] == SMALL["seed"]
    assert not [p for p in dataset.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_labels_valid_default_classes(dataset: Path) -> None:
    lo, hi = SMALL["objects_per_image"]
    counts = []
    for split in ("train", "val"):
        for path in _files(dataset, split, "labels"):
            fields = [line.split() for line in path.read_text().splitlines()]
            assert all(len(f) == 5 and all(len(v.split(".")[1]) == 6 for v in f[1:]) for f in fields)  # 6 decimals
            b = _yolo(path)
            counts.append(len(b))
            assert np.all(b[:, 0] == np.round(b[:, 0])) and np.all((b[:, 0] >= 0) & (b[:, 0] < SMALL["n_classes"]))
            assert np.all((b[:, 1:] > 0) & (b[:, 1:] <= 1))
            assert np.all(b[:, 3:] * SMALL["imgsz"] >= 2 - 1e-6)  # non-degenerate: at least 2 px each side
            assert np.all(b[:, 1] - b[:, 3] / 2 >= -1e-6) and np.all(b[:, 1] + b[:, 3] / 2 <= 1 + 1e-6)
            assert np.all(b[:, 2] - b[:, 4] / 2 >= -1e-6) and np.all(b[:, 2] + b[:, 4] / 2 <= 1 + 1e-6)
    assert max(counts) <= hi and np.mean(counts) >= lo


def test_labels_every_class_present_default_classes(dataset: Path) -> None:
    classes = set(_all_boxes(dataset)[:, 0].astype(int).tolist())
    assert classes == set(range(SMALL["n_classes"]))


def test_objects_small_median_side_below_tenth_of_image() -> None:
    cfg = SyntheticConfig(imgsz=256)  # default object sizes, judged on 40 images at the reference size
    b = np.concatenate([render_image(cfg, "train", i)[1] for i in range(40)]).astype(np.float64)
    sides = np.maximum(b[:, 3] - b[:, 1], b[:, 4] - b[:, 2]) / cfg.imgsz  # longer box side, fraction of the image
    assert np.median(sides) < 0.10 and sides.max() < 0.2 and sides.min() > 0


def test_coco_matches_yolo_labels_box_by_box(dataset: Path) -> None:
    size = SMALL["imgsz"]
    for split in ("train", "val"):
        coco = json.loads((dataset / "annotations" / f"instances_{split}.json").read_text())
        assert coco["categories"] == [
            {"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(CLASS_NAMES[: SMALL["n_classes"]])
        ]
        labels = _files(dataset, split, "labels")
        images = coco["images"]
        assert [im["id"] for im in images] == list(range(1, len(labels) + 1))
        assert [im["file_name"] for im in images] == [f"images/{split}/{p.stem}.jpg" for p in labels]
        assert all((dataset / im["file_name"]).is_file() and im["width"] == im["height"] == size for im in images)
        anns = coco["annotations"]
        assert [a["id"] for a in anns] == list(range(1, len(anns) + 1))
        for im, path in zip(images, labels):
            mine = [a for a in anns if a["image_id"] == im["id"]]
            yolo = _yolo(path)
            assert len(mine) == len(yolo)
            for a, (cls, cx, cy, w, h) in zip(mine, yolo):
                expect = np.array([cx - w / 2, cy - h / 2, w, h]) * size
                assert a["category_id"] == int(cls) + 1 and a["iscrowd"] == 0
                np.testing.assert_allclose(a["bbox"], expect, atol=BOX_TOL_PX)
                assert a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3])


def test_coco_json_loads_with_pycocotools(dataset: Path) -> None:
    from pycocotools.coco import COCO

    gt = COCO(str(dataset / "annotations" / "instances_val.json"))
    assert sorted(gt.getImgIds()) == list(range(1, SMALL["n_val"] + 1))
    assert len(gt.getAnnIds()) == sum(len(_yolo(p)) for p in _files(dataset, "val", "labels"))


def test_yaml_loads_with_check_det_dataset_offline(dataset: Path) -> None:
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(dataset / "synthetic.yaml"))
    assert data["names"] == dict(enumerate(CLASS_NAMES[: SMALL["n_classes"]]))
    assert data["nc"] == SMALL["n_classes"]
    assert Path(data["path"]) == dataset
    assert Path(data["train"]) == dataset / "images" / "train" and Path(data["val"]) == dataset / "images" / "val"


def test_generate_returns_cache_without_regenerating_same_parameters(
    dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("cache miss: render_image called")

    monkeypatch.setattr(synthetic, "render_image", boom)
    before = (dataset / "synthetic.json").stat().st_mtime_ns
    assert generate(dataset, verbose=False, **SMALL) == dataset / "synthetic.yaml"
    assert (dataset / "synthetic.json").stat().st_mtime_ns == before


def test_generate_raises_clear_error_different_parameters(dataset: Path) -> None:
    with pytest.raises(SyntheticDatasetExistsError, match=r"different parameters \(seed: 0 -> 1\).*overwrite"):
        generate(dataset, verbose=False, **{**SMALL, "seed": 1})
    assert json.loads((dataset / "synthetic.json").read_text())["params"]["seed"] == 0


def test_generate_overwrite_replaces_different_parameters(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    generate(root, n_train=2, n_val=1, imgsz=96, verbose=False)
    generate(root, n_train=3, n_val=1, imgsz=96, overwrite=True, verbose=False)
    assert len(_files(root, "train", "images")) == 3
    assert json.loads((root / "synthetic.json").read_text())["params"]["n_train"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # old copy and temporary folder removed


def test_generate_leaves_nothing_when_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = synthetic.render_image

    def flaky(*args: object, **kwargs: object):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render_image", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path / "ds", n_train=4, n_val=1, imgsz=96, verbose=False)
    assert list(tmp_path.iterdir()) == []


def test_generate_refuses_foreign_folder_even_with_overwrite(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(SyntheticDatasetExistsError, match="not a synthetic dataset"):
        generate(tmp_path, n_train=1, n_val=1, imgsz=96, overwrite=True, verbose=False)
    assert (tmp_path / "keep.txt").read_text() == "user data"


def test_generate_rewrites_yaml_path_after_move(tmp_path: Path) -> None:
    generate(tmp_path / "a", n_train=1, n_val=1, imgsz=96, verbose=False)
    os.rename(tmp_path / "a", tmp_path / "b")
    yaml_path = generate(tmp_path / "b", n_train=1, n_val=1, imgsz=96, verbose=False)
    assert f"path: {tmp_path / 'b'}\n" in yaml_path.read_text()


def test_config_rejects_invalid_parameters() -> None:
    for bad in ({"n_classes": 0}, {"n_classes": 9}, {"objects_per_image": (5, 2)}, {"imgsz": 16}, {"n_val": 0}):
        with pytest.raises(ValueError):
            SyntheticConfig(**bad)


def test_cli_run_writes_dataset_with_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["prepare", "synthetic", str(tmp_path / "cli"), "--n-train", "2", "--n-val", "1", "--imgsz", "96"]
    assert cli.main([*argv, "--seed", "3", "--n-classes", "3", "--objects-per-image", "2", "4", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli" / "synthetic.yaml")
    params = json.loads((tmp_path / "cli" / "synthetic.json").read_text())["params"]
    assert params == {
        "n_train": 2,
        "n_val": 1,
        "imgsz": 96,
        "seed": 3,
        "n_classes": 3,
        "objects_per_image": [2, 4],
        "object_scale": 1.0,
    }
    b = _all_boxes(tmp_path / "cli")
    assert np.all(b[:, 0] < 3)


def test_cli_run_returns_error_status_conflicting_parameters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepare = ["prepare", "synthetic", str(tmp_path / "d")]
    assert cli.main([*prepare, "--n-train", "1", "--n-val", "1", "--imgsz", "96"]) == 0
    assert cli.main([*prepare, "--n-train", "2", "--n-val", "1", "--imgsz", "96"]) == 2
    assert "different parameters" in capsys.readouterr().err


def test_make_synthetic_script_generates_dataset(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_synthetic", REPO / "scripts" / "make_synthetic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([str(tmp_path / "s"), "--n-train", "1", "--n-val", "1", "--imgsz", "64", "--quiet"]) == 0
    assert (tmp_path / "s" / "images" / "val" / "000001.jpg").is_file()


def _scene(appearance: str, index: int, size: int = 128):
    rng = np.random.default_rng(np.random.SeedSequence([123, index]))
    return draw_scene(rng, size, SMALL["n_classes"], SMALL["objects_per_image"], 1.0, appearance)


def test_default_appearance_draws_same_pixels_and_boxes_as_before_option() -> None:
    cfg = SyntheticConfig(imgsz=96, seed=0)
    assert cfg.appearance == "region" and "appearance" not in cfg.to_dict()  # metadata of old sets still matches
    pixels, boxes = hashlib.sha256(), hashlib.sha256()
    for split in ("train", "val"):
        for i in range(3):
            img, b = render_image(cfg, split, i)
            pixels.update(img.tobytes())
            boxes.update(b.astype("<i8").tobytes())
    assert boxes.hexdigest() == GOLDEN_BOXES
    if (cv2.__version__, np.__version__) == GOLDEN_BUILD:  # float blurs and resizes may round otherwise elsewhere
        assert pixels.hexdigest() == GOLDEN_PIXELS


def test_uniform_appearance_deterministic_and_differs_from_region() -> None:
    cfg = SyntheticConfig(**SMALL, appearance="uniform")
    img_a, boxes_a = render_image(cfg, "train", 1)
    img_b, boxes_b = render_image(cfg, "train", 1)
    assert np.array_equal(img_a, img_b) and np.array_equal(boxes_a, boxes_b)
    region, region_boxes = render_image(SyntheticConfig(**SMALL), "train", 1)
    assert np.array_equal(boxes_a, region_boxes) and not np.array_equal(img_a, region)


def test_uniform_appearance_changes_only_object_pixels() -> None:
    kernel = np.ones((2 * CAMERA_BLUR_RADIUS + 1,) * 2, np.uint8)
    for index in range(6):
        region, uniform = _scene("region", index), _scene("uniform", index)
        assert np.array_equal(region.boxes, uniform.boxes) and np.array_equal(region.owner, uniform.owner)
        assert np.array_equal(region.label, uniform.label)
        drawn = region.owner >= 0
        near = cv2.dilate(drawn.astype(np.uint8), kernel) > 0  # what the camera blur mixes object pixels into
        assert np.array_equal(region.image[~near], uniform.image[~near])  # background, clutter and shadows
        changed = np.any(region.image != uniform.image, axis=2)
        assert changed[drawn].mean() > 0.5  # most object pixels are lit differently


def _object_looks(appearance: str) -> tuple[np.ndarray, np.ndarray]:
    """Per object: log of its own region's light (mean over channels) and log of its mean interior brightness."""
    lights, looks = [], []
    for index in range(STAT_IMAGES):
        scene = _scene(appearance, index)
        rgb = scene.image[..., ::-1].astype(np.float64)
        for k in range(len(scene.boxes)):
            # interior only: the camera blur mixes the object's edge with the region's (lit) background
            inside = cv2.erode((scene.owner == k).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
            if inside.any():
                region = np.bincount(scene.label[inside]).argmax()
                lights.append(np.log(scene.region_lights[region].mean()))
                looks.append(np.log(rgb[inside].mean() + 1))
    return np.asarray(lights), np.asarray(looks)


def test_object_look_depends_on_region_light_only_with_region_appearance() -> None:
    region_lights, region_looks = _object_looks("region")
    uniform_lights, uniform_looks = _object_looks("uniform")
    assert np.array_equal(region_lights, uniform_lights)  # same objects in the same regions
    assert np.corrcoef(region_lights, region_looks)[0, 1] > DEPENDENT_CORR
    assert abs(np.corrcoef(uniform_lights, uniform_looks)[0, 1]) < INDEPENDENT_CORR
    mean_region, mean_uniform = np.exp(region_looks).mean(), np.exp(uniform_looks).mean()
    assert abs(mean_region - mean_uniform) < MEAN_LOOK_TOL * mean_region  # same distribution of looks overall


def test_uniform_dataset_recorded_and_not_reused_for_region(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    small = {"n_train": 1, "n_val": 1, "imgsz": 64, "verbose": False}
    yaml_path = generate(root, appearance="uniform", **small)
    assert json.loads((root / "synthetic.json").read_text())["params"]["appearance"] == "uniform"
    assert "# appearance: uniform" in yaml_path.read_text()
    with pytest.raises(SyntheticDatasetExistsError, match=r"\(appearance: 'uniform' -> 'region'\)"):
        generate(root, **small)
    generate(root, overwrite=True, **small)
    assert "appearance" not in json.loads((root / "synthetic.json").read_text())["params"]
    assert "appearance" not in yaml_path.read_text()


def test_config_rejects_unknown_appearance() -> None:
    with pytest.raises(ValueError, match="appearance must be one of region, uniform"):
        SyntheticConfig(appearance="flat")


def test_cli_appearance_option_writes_control_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["prepare", "synthetic", str(tmp_path / "u"), "--n-train", "1", "--n-val", "1", "--imgsz", "64"]
    assert cli.main([*argv, "--appearance", "uniform", "--quiet"]) == 0
    assert json.loads((tmp_path / "u" / "synthetic.json").read_text())["params"]["appearance"] == "uniform"
    assert cli.main([*argv, "--appearance", "flat"]) == 2
    assert "invalid choice" in capsys.readouterr().err
