"""COCO 2017 preparation on a tiny fixture in the official instances_*.json format."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from _data_fixtures import assert_rows, read_labels, walk_files
from PIL import Image

from drconv_yolo import cli
from drconv_yolo.data.coco import COCO80_TO_COCO91, COCO_NAMES, convert_coco_instances, prepare_coco

SIZES = {139: (64, 48), 285: (80, 60), 632: (50, 50)}  # COCO image id -> (width, height)


def _image(coco_id: int, w: int, h: int) -> dict:
    return {
        "license": 1,
        "file_name": f"{coco_id:012d}.jpg",
        "coco_url": f"http://images.cocodataset.org/val2017/{coco_id:012d}.jpg",
        "height": h,
        "width": w,
        "date_captured": "2013-11-14 17:02:52",
        "flickr_url": "http://farm7.staticflickr.com/x.jpg",
        "id": coco_id,
    }


def _ann(aid: int, image_id: int, cat: int, bbox: list, crowd: int = 0, area: float | None = None) -> dict:
    seg = {"counts": [0, 1], "size": [1, 1]} if crowd else [[bbox[0], bbox[1], bbox[0] + 1, bbox[1], bbox[0], bbox[1]]]
    return {
        "segmentation": seg,
        "area": area if area is not None else 0.9 * bbox[2] * bbox[3],  # like COCO: the mask area, not w * h
        "iscrowd": crowd,
        "image_id": image_id,
        "bbox": bbox,
        "category_id": cat,
        "id": aid,
    }


def _categories() -> list[dict]:
    return [{"supercategory": "x", "id": cid, "name": n} for cid, n in zip(COCO80_TO_COCO91, COCO_NAMES)]


ANNOTATIONS = [
    _ann(101, 139, 1, [4.5, 6.25, 20, 10]),  # person -> class 0
    _ann(102, 139, 67, [50, 40, 20, 10]),  # dining table (id 67 -> class 60), crosses the border -> clipped
    _ann(103, 285, 1, [0, 0, 40, 30], crowd=1, area=1000.0),  # crowd -> ground truth only
    _ann(104, 285, 90, [10, 10, 5, 5]),  # toothbrush (id 90 -> class 79)
    _ann(105, 285, 1, [1, 1, 0, 5]),  # zero-area -> warning
    _ann(106, 999, 1, [1, 1, 5, 5]),  # unknown image -> warning
    _ann(107, 285, 12, [1, 1, 5, 5]),  # id 12 is not a COCO 2017 category -> warning
]


@pytest.fixture()
def src(tmp_path: Path) -> Path:
    s = tmp_path / "coco"
    (s / "annotations").mkdir(parents=True)
    for split, ids in (("val2017", [632, 139, 285]), ("train2017", [1])):  # JSON order is not file-name order
        (s / split).mkdir()
        images = [_image(i, *SIZES.get(i, (32, 32))) for i in ids]
        for im in images:
            Image.new("RGB", (im["width"], im["height"]), (10, 20, 30)).save(s / split / im["file_name"])
        anns = ANNOTATIONS if split == "val2017" else [_ann(1, 1, 3, [0, 0, 16, 16])]
        instances = {
            "info": {"description": "COCO 2017 Dataset", "version": "1.0", "year": 2017},
            "licenses": [{"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "id": 1, "name": "x"}],
            "images": images,
            "annotations": anns,
            "categories": _categories(),
        }
        (s / "annotations" / f"instances_{split}.json").write_text(json.dumps(instances))
    return s


def test_names_and_id_map_match_installed_ultralytics():
    import ultralytics
    import yaml
    from ultralytics.data.converter import coco80_to_coco91_class

    stock = yaml.safe_load((Path(ultralytics.__file__).parent / "cfg/datasets/coco.yaml").read_text())
    assert list(stock["names"].values()) == list(COCO_NAMES)
    assert list(COCO80_TO_COCO91) == coco80_to_coco91_class()
    ours = yaml.safe_load((Path(__file__).parents[1] / "cfg/datasets/coco.yaml").read_text())
    assert ours["names"] == stock["names"] and "download" not in ours


def test_convert_instances_warns_with_annotation_ids():
    instances = {"images": [_image(i, *SIZES[i]) for i in SIZES], "annotations": ANNOTATIONS}
    instances["categories"] = _categories()
    images, stats, warnings = convert_coco_instances(instances, "instances_val2017.json")
    assert [im.file_name for im in images] == ["000000000139.jpg", "000000000285.jpg", "000000000632.jpg"]
    assert [w.split(": ")[1] for w in warnings] == ["annotation id 105", "annotation id 106", "annotation id 107"]
    assert "zero-area" in warnings[0] and "unknown image_id 999" in warnings[1] and "category_id 12" in warnings[2]
    assert (stats.dropped, stats.ignored, stats.clipped, sum(stats.boxes)) == (3, 1, 1, 3)


def test_prepare_writes_labels_box_by_box(src, tmp_path):
    dst = tmp_path / "dst"
    prepare_coco(src, dst, verbose=False)
    assert_rows(
        read_labels(dst / "labels/val/000000000139.txt"),
        [
            [0, 14.5 / 64, 11.25 / 48, 20 / 64, 10 / 48],  # (4.5, 6.25, 24.5, 16.25) in a 64 x 48 image
            [60, 57 / 64, 44 / 48, 14 / 64, 8 / 48],  # (50, 40, 70, 50) clipped to (50, 40, 64, 48)
        ],
    )
    assert_rows(read_labels(dst / "labels/val/000000000285.txt"), [[79, 12.5 / 80, 12.5 / 60, 5 / 80, 5 / 60]])
    assert (dst / "labels/val/000000000632.txt").read_text() == ""  # image without boxes
    assert_rows(read_labels(dst / "labels/train/000000000001.txt"), [[2, 0.25, 0.25, 0.5, 0.5]])


def test_prepare_writes_gt_json_with_original_ids_crowd_and_areas(src, tmp_path):
    dst = tmp_path / "dst"
    prepare_coco(src, dst, verbose=False)
    gt = json.loads((dst / "annotations/instances_val.json").read_text())
    assert [(im["id"], im["file_name"], im["width"], im["height"], im["coco_id"]) for im in gt["images"]] == [
        (1, "images/val/000000000139.jpg", 64, 48, 139),
        (2, "images/val/000000000285.jpg", 80, 60, 285),
        (3, "images/val/000000000632.jpg", 50, 50, 632),
    ]
    rows = [(a["id"], a["image_id"], a["category_id"], a["bbox"], a["area"], a["iscrowd"]) for a in gt["annotations"]]
    assert rows == [
        (1, 1, 1, [4.5, 6.25, 20, 10], pytest.approx(0.9 * 200), 0),
        (2, 1, 67, [50, 40, 20, 10], pytest.approx(0.9 * 200), 0),  # original box and area, not clipped
        (3, 2, 1, [0, 0, 40, 30], 1000.0, 1),
        (4, 2, 90, [10, 10, 5, 5], pytest.approx(0.9 * 25), 0),
    ]
    assert gt["categories"] == [{"id": c, "name": n} for c, n in zip(COCO80_TO_COCO91, COCO_NAMES)]
    assert not (dst / "annotations/instances_train.json").exists()


def test_prepare_hardlinks_images_by_default_and_copies_on_request(src, tmp_path):
    dst = tmp_path / "dst"
    summary = prepare_coco(src, dst, splits=["val"], verbose=False)
    placed, original = dst / "images/val/000000000139.jpg", src / "val2017/000000000139.jpg"
    if summary.splits["val"].placement == {"hardlink": 3}:
        assert os.path.samefile(placed, original)
    else:  # file system without hard links: copied
        assert summary.splits["val"].placement == {"copy": 3}
    prepare_coco(src, dst, splits=["val"], images="copy", verbose=False)
    assert not os.path.samefile(placed, original) and placed.read_bytes() == original.read_bytes()


def test_prepare_yaml_is_read_by_ultralytics_as_non_coco_folder(src, tmp_path):
    from ultralytics.data.utils import check_det_dataset

    summary = prepare_coco(src, tmp_path / "dst", verbose=False)
    data = check_det_dataset(str(summary.yaml), autodownload=False)
    assert Path(data["val"]) == (tmp_path / "dst/images/val").resolve()
    assert data["nc"] == 80 and "test" not in data
    # Ultralytics' COCO mode (91-id class_map) needs a '.../val2017.txt' val list: a folder keeps category = class + 1.
    assert not data["val"].endswith("val2017.txt")


def test_prepare_twice_is_identical(src, tmp_path):
    dst = tmp_path / "dst"
    prepare_coco(src, dst, verbose=False)
    first = {str(p.relative_to(dst)): p.read_bytes() for p in walk_files(dst / "labels")}
    prepare_coco(src, dst, verbose=False)
    assert {str(p.relative_to(dst)): p.read_bytes() for p in walk_files(dst / "labels")} == first
    assert not list(dst.glob(".partial-*"))


def test_prepare_missing_files_error_names_them(src, tmp_path, capsys):
    (src / "annotations/instances_val2017.json").unlink()
    with pytest.raises(FileNotFoundError, match="instances_val2017.json"):
        prepare_coco(src, tmp_path / "dst", splits=["val"], verbose=False)
    assert cli.main(["prepare", "coco", str(tmp_path / "missing"), str(tmp_path / "dst")]) == 2
    assert "missing" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="train2017"):
        prepare_coco(empty, tmp_path / "dst", verbose=False)


def test_cli_prepares_val_only(src, tmp_path):
    dst = tmp_path / "dst"
    assert cli.main(["prepare", "coco", str(src), str(dst), "--splits", "val2017", "--copy", "-q", "--name", "c"]) == 0
    assert (dst / "c.yaml").is_file() and (dst / "images/val").is_dir() and not (dst / "images/train").exists()
