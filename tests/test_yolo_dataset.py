"""A user's own Ultralytics dataset: listing its split like Ultralytics, the fingerprint, the built ground truth, the
checks of a given one, ``prepare yolo`` and ``eval`` end to end on it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from _data_fixtures import USER_NAMES, USER_VAL, enclosing_box, make_user_dataset, user_gt_by_hand

from drconv_yolo import cli
from drconv_yolo.data.yolo import (
    GroundTruth,
    build_ground_truth,
    dataset_fingerprint,
    load_split,
    resolve_ground_truth,
)
from drconv_yolo.evaluation import EvaluationError, check_categories, coco_metrics, map_predictions
from drconv_yolo.io import DataError, atomic_write_json

BOX_TOL = 1e-4  # Ultralytics reads labels as float32: a 120 px box is exact to about 1e-5 px
METRIC_TOL = 1e-6
SCALARS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR@1", "AR@10", "AR@100", "ARs", "ARm", "ARl")


@pytest.fixture(scope="module")
def user_data(tmp_path_factory) -> Path:
    return make_user_dataset(tmp_path_factory.mktemp("user") / "ds")


def _copy(data: Path, dst: Path) -> Path:
    """A copy of the user dataset at ``dst`` (its YAML's path rewritten, its list file's absolute line too)."""
    shutil.copytree(data.parent, dst)
    for f in ("mydata.yaml", "val.txt"):
        (dst / f).write_text((dst / f).read_text().replace(str(data.parent.resolve()), str(dst.resolve())))
    return dst / "mydata.yaml"


def _built(data: Path, tmp_path: Path) -> dict:
    return json.loads(build_ground_truth(data, "val", tmp_path / "gt.json").read_text())


# ----------------------------------------------------------------------------------------------------------------------
# The split, as Ultralytics lists it
# ----------------------------------------------------------------------------------------------------------------------


def test_split_lists_the_images_ultralytics_lists(user_data):
    from ultralytics.data.base import BaseDataset
    from ultralytics.data.utils import check_det_dataset

    info = check_det_dataset(str(user_data), autodownload=False)
    theirs = BaseDataset.get_img_files(SimpleNamespace(prefix="", fraction=1.0), info["val"])
    ds = load_split(user_data, "val")
    assert ds.images == theirs and len(theirs) == len(USER_VAL)
    assert ds.names == list(USER_NAMES)


def test_exif_rotated_size_is_the_size_ultralytics_loads(user_data, tmp_path):
    from ultralytics.utils.patches import imread

    gt = _built(user_data, tmp_path)
    portrait = next(im for im in gt["images"] if im["file_name"].endswith("portrait.jpg"))
    h, w = imread(str(user_data.parent / portrait["file_name"])).shape[:2]
    assert (portrait["width"], portrait["height"]) == (w, h) == (48, 80)  # stored 80 x 48, EXIF orientation 6


# ----------------------------------------------------------------------------------------------------------------------
# The built ground truth
# ----------------------------------------------------------------------------------------------------------------------


def test_built_gt_has_every_image_size_box_and_category(user_data, tmp_path):
    gt = _built(user_data, tmp_path)
    assert gt["categories"] == [{"id": i + 1, "name": n} for i, n in enumerate(USER_NAMES)]
    expected = {f"images/{folder}/{name}": (size, objects) for folder, name, size, _, objects in USER_VAL}
    assert [im["file_name"] for im in gt["images"]] == sorted(expected)  # ids 1..N in file-name order
    assert [im["id"] for im in gt["images"]] == list(range(1, len(expected) + 1))
    for im in gt["images"]:
        size, objects = expected[im["file_name"]]
        assert (im["width"], im["height"]) == size
        anns = [a for a in gt["annotations"] if a["image_id"] == im["id"]]
        want = sorted((c + 1, [x1, y1, x2 - x1, y2 - y1]) for c, x1, y1, x2, y2 in map(enclosing_box, objects))
        got = sorted((a["category_id"], a["bbox"]) for a in anns)
        assert [c for c, _ in got] == [c for c, _ in want], im["file_name"]
        for (_, g), (_, w) in zip(got, want):
            assert g == pytest.approx(w, abs=BOX_TOL), im["file_name"]
        assert all(a["iscrowd"] == 0 and a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3]) for a in anns)


def _ultralytics_predictions() -> list[dict]:
    """Predictions as Ultralytics writes them (image_id = stem, or int(stem) when numeric; file_name; class + 1):
    per object a shifted box and, for every other one, the exact box; one false positive per image; scores that
    interleave across images."""
    preds = []
    for k, (_, name, _, _, objects) in enumerate(USER_VAL):
        stem = Path(name).stem
        row = {"image_id": int(stem) if stem.isnumeric() else stem, "file_name": name}
        for j, obj in enumerate(objects):
            c, x1, y1, x2, y2 = enclosing_box(obj)
            shift, w, h = 2.3 + 3.1 * j, x2 - x1, y2 - y1  # IoUs away from the 0.05 thresholds
            preds.append({**row, "category_id": c + 1, "bbox": [x1 + shift, y1, w, h], "score": 0.8 - 0.07 * k})
            if (k + j) % 2 == 0:
                preds.append({**row, "category_id": c + 1, "bbox": [x1, y1, w, h], "score": 0.95 - 0.2 * k})
        preds.append({**row, "category_id": 1, "bbox": [1, 1, 6, 6], "score": 0.7 - 0.1 * k})
    return preds


def test_built_gt_scores_exactly_like_a_hand_written_coco_json(user_data, tmp_path):
    built = _built(user_data, tmp_path)
    by_hand = user_gt_by_hand(user_data.parent)
    atomic_write_json(tmp_path / "hand.json", by_hand)  # and through a file, as eval reads it
    preds = _ultralytics_predictions()
    mapped_built, counts_built = map_predictions(preds, built)
    mapped_hand, counts_hand = map_predictions(preds, by_hand)
    assert counts_built == counts_hand == {"mapped": len(preds), "unknown_image": 0, "unknown_class": 0}
    a = coco_metrics(built, mapped_built, max_det=100)
    b = coco_metrics(tmp_path / "hand.json", mapped_hand, max_det=100)
    assert 0.0 < a["AP"] < 1.0  # a figure that depends on every box, not a degenerate 0 or 1
    for key in SCALARS:
        assert (a[key] is None and b[key] is None) or a[key] == pytest.approx(b[key], abs=METRIC_TOL), key
    assert [r["AP"] for r in a["per_class"]] == pytest.approx([r["AP"] for r in b["per_class"]], abs=METRIC_TOL)
    assert (a["n_images"], a["n_gt"], a["n_predictions"]) == (b["n_images"], b["n_gt"], b["n_predictions"])


def test_an_image_that_is_a_link_keeps_its_own_name(user_data, tmp_path):
    data = _copy(user_data, tmp_path / "ds")
    store = tmp_path / "store"
    store.mkdir()
    image = data.parent / "images/more/empty scene.png"
    image.rename(store / "x123.png")
    image.symlink_to(store / "x123.png")  # as Ultralytics lists it, and names it in predictions.json
    names = [Path(im["file_name"]).name for im in _built(data, tmp_path)["images"]]
    assert "empty scene.png" in names and "x123.png" not in names


def test_two_images_with_one_stem_are_refused(user_data, tmp_path):
    data = _copy(user_data, tmp_path / "ds")
    shutil.copy(data.parent / "images/val/street_a.jpg", data.parent / "images/more/street_a.png")
    with pytest.raises(DataError, match=r"two images named 'street_a'.*street_a\.(jpg|png) and .*street_a\.(png|jpg)"):
        build_ground_truth(data, "val", tmp_path / "gt.json")


def test_corrupt_image_is_skipped_and_named(user_data, tmp_path):
    data = _copy(user_data, tmp_path / "ds")
    (data.parent / "images/more/broken.jpg").write_bytes(b"not an image")
    truth = resolve_ground_truth(data, "val", cache_dir=tmp_path / "cache")
    assert len(truth.warnings) == 1 and "broken.jpg" in truth.warnings[0]
    assert "1 of 6 val images skipped by Ultralytics" in truth.describe() and "(broken.jpg)" in truth.describe()
    gt = json.loads(truth.path.read_text())
    assert len(gt["images"]) == len(USER_VAL)


# ----------------------------------------------------------------------------------------------------------------------
# Fingerprint, sources and the cache
# ----------------------------------------------------------------------------------------------------------------------


def test_fingerprint_follows_labels_not_location(user_data, tmp_path):
    data = _copy(user_data, tmp_path / "a")
    moved = _copy(user_data, tmp_path / "b")
    first = dataset_fingerprint(data)
    assert len(first) == 64 and dataset_fingerprint(moved) == first  # a moved copy is the same data
    assert dataset_fingerprint(data, ["val"]) != first
    label = data.parent / "labels/val/street_a.txt"
    label.write_text(label.read_text().replace("0 ", "1 ", 1))
    assert dataset_fingerprint(data) != first
    names = data.read_text().replace("ring", "torus")
    (data.parent / "mydata.yaml").write_text(names)
    assert dataset_fingerprint(moved) == first != dataset_fingerprint(data)


def test_resolve_builds_caches_then_reuses_and_rebuilds_on_change(user_data, tmp_path, capsys):
    data = _copy(user_data, tmp_path / "ds")
    cache = tmp_path / "cache"
    first = resolve_ground_truth(data, "val", cache_dir=cache)
    assert (first.source, first.split, first.reused, first.n_images) == ("built", "val", False, len(USER_VAL))
    assert first.path.parent.parent == cache.resolve() and first.path.parent.name.startswith(first.fingerprint[:16])
    assert not (data.parent / "annotations").exists()  # nothing written into the user's dataset
    assert f"cached at {first.path}" in first.describe() and "(5 images)" in first.describe()
    again = resolve_ground_truth(data, "val", cache_dir=cache)
    assert again.reused and again.path == first.path and "reused" in again.describe()
    label = data.parent / "labels/val/street_a.txt"
    label.write_text(label.read_text() + "1 0.5 0.5 0.2 0.2\n")
    changed = resolve_ground_truth(data, "val", cache_dir=cache)
    assert not changed.reused and changed.path != first.path and changed.fingerprint != first.fingerprint
    n_boxes = [len(json.loads(t.path.read_text())["annotations"]) for t in (first, changed)]
    assert n_boxes[1] == n_boxes[0] + 1
    assert changed.to_dict().keys() >= {"path", "source", "split", "fingerprint"}


def test_resolve_prefers_given_then_prepared(user_data, tmp_path):
    data = _copy(user_data, tmp_path / "ds")
    hand = atomic_write_json(tmp_path / "hand.json", user_gt_by_hand(data.parent))
    given = resolve_ground_truth(data, "val", gt=hand, cache_dir=tmp_path / "cache")
    assert (given.source, given.path) == ("given", hand) and str(hand) in given.describe()
    prepared = build_ground_truth(data, "val", data.parent / "annotations/instances_val.json")
    found = resolve_ground_truth(data, "val", cache_dir=tmp_path / "cache")
    assert (found.source, found.path) == ("prepared", prepared) and not (tmp_path / "cache").exists()
    assert isinstance(found, GroundTruth) and found.fingerprint == given.fingerprint


# ----------------------------------------------------------------------------------------------------------------------
# A ground truth that does not match: an error naming the file and the mismatch
# ----------------------------------------------------------------------------------------------------------------------


def _edit(gt: dict, what: str) -> dict:
    if what == "missing image":  # the last image of the hand-written JSON is street_a.jpg
        gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] != gt["images"][-1]["id"]]
        gt["images"] = gt["images"][:-1]
    elif what == "extra image":
        gt["images"].append({"id": 999, "file_name": "images/val/ghost.jpg", "width": 10, "height": 10})
    elif what == "size":
        gt["images"][-1]["width"] += 1
    elif what == "unknown category":
        gt["annotations"][0]["category_id"] = 42
    return gt


@pytest.mark.parametrize(
    "what, message",
    [
        ("missing image", r"1 image\(s\) of the split that Ultralytics scores are not in it: street_a\.jpg"),
        ("extra image", r"1 of its image\(s\) are not in the split: ghost\.jpg"),
        ("size", r"image street_a\.jpg is 97x64 in the ground truth but 96x64 on disk"),
        ("unknown category", r"unknown category id 42"),
    ],
)
def test_mismatched_ground_truth_is_an_error_naming_file_and_mismatch(user_data, tmp_path, what, message):
    gt = _edit(user_gt_by_hand(user_data.parent), what)
    path = atomic_write_json(tmp_path / "bad.json", gt)
    with pytest.raises(DataError, match=message) as e:
        resolve_ground_truth(user_data, "val", gt=path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("text", ["{not json", '{"images": 3}', "[]"])
def test_invalid_json_is_an_error_naming_the_file(user_data, tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DataError, match="not valid JSON|not a COCO ground truth") as e:
        resolve_ground_truth(user_data, "val", gt=path)
    assert str(path) in str(e.value)


def test_missing_given_json_and_split_are_named(user_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        resolve_ground_truth(user_data, "val", gt=tmp_path / "nowhere.json")
    with pytest.raises(DataError, match="no 'test:' split"):
        resolve_ground_truth(user_data, "test")


def test_categories_beyond_the_model_are_an_error():
    gt = {"categories": [{"id": i, "name": str(i)} for i in (1, 2, 3, 4)]}
    check_categories(gt, "gt.json", {0: "a", 1: "b", 2: "c", 3: "d", 4: "e"}, "m.pt")  # fewer is fine
    with pytest.raises(EvaluationError, match=r"gt\.json has 4 categories but the model m\.pt only 2 .* \[3, 4\]"):
        check_categories(gt, "gt.json", ["a", "b"], "m.pt")


# ----------------------------------------------------------------------------------------------------------------------
# prepare yolo
# ----------------------------------------------------------------------------------------------------------------------


def test_prepare_yolo_writes_the_json_and_a_summary(user_data, tmp_path, capsys):
    dst = tmp_path / "out"
    assert cli.main(["prepare", "yolo", str(user_data), str(dst), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "ground truth" in out and "boxes per class" in out
    written = json.loads((dst / "annotations/instances_val.json").read_text())
    assert {k: v for k, v in written.items() if k != "info"} == {
        k: v for k, v in _built(user_data, tmp_path).items() if k != "info"
    }
    summary = json.loads((dst / "prepare_summary.json").read_text())
    assert summary["splits"]["val"]["images"] == len(USER_VAL) and summary["yaml"] == str(user_data.resolve())
    assert sorted(p.name for p in dst.iterdir()) == ["annotations", "prepare_summary.json"]
    assert cli.main(["prepare", "yolo", "--help"]) == 0
    assert "polygon" in capsys.readouterr().out
    assert cli.main(["prepare", "yolo", str(tmp_path / "none.yaml"), str(dst)]) == 2
    assert "none.yaml" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------------
# eval end to end
# ----------------------------------------------------------------------------------------------------------------------

TRAIN_IMGSZ = 64  # not Ultralytics' 640: eval must pick it up from the checkpoint


@pytest.fixture(scope="module")
def trained(user_data, tmp_path_factory) -> Path:
    """A YOLOv8n trained for one epoch at 64 px on the user dataset (CPU, a few seconds)."""
    from ultralytics import YOLO

    runs = tmp_path_factory.mktemp("train")
    YOLO("yolov8n.yaml").train(
        data=str(user_data), epochs=1, imgsz=TRAIN_IMGSZ, batch=2, workers=0, device="cpu", plots=False,
        val=False, amp=False, project=str(runs), name="t", verbose=False,
    )  # fmt: skip
    return runs / "t/weights/last.pt"


@pytest.mark.slow
def test_eval_on_user_dataset_builds_gt_and_uses_train_imgsz(user_data, trained, tmp_path, capsys):
    out = tmp_path / "eval/report.json"
    argv = [f"model={trained}", f"data={user_data}", "device=cpu", "conf=0", f"out={out}", f"project={tmp_path}"]
    assert cli.main(["eval", *argv, "verbose=true"]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["imgsz"] == TRAIN_IMGSZ and report["imgsz_source"] == "checkpoint"
    assert f"imgsz {TRAIN_IMGSZ} (the checkpoint's training size)" in printed
    truth = report["ground_truth"]
    assert truth["source"] == "built" and Path(truth["path"]).parent.parent == out.parent / "ground_truth"
    assert truth["fingerprint"] == resolve_ground_truth(user_data, "val", cache_dir=out.parent / "x").fingerprint
    assert "built from the YOLO labels of split 'val'" in printed and truth["description"] in printed
    assert report["predictions"]["unknown_image"] == 0 and report["predictions"]["unknown_class"] == 0
    assert report["pycocotools"]["n_images"] == len(USER_VAL) and report["warnings"] == []
    ultra = json.loads((Path(report["run_dir"]) / "predictions.json").read_text())
    assert len(ultra) == report["predictions"]["mapped"] > 0  # every prediction found its image


@pytest.mark.parametrize("what", ["size", "categories"])
def test_eval_refuses_mismatched_gt_before_validating(user_data, trained, tmp_path, monkeypatch, capsys, what):
    from ultralytics import YOLO

    def never(*args, **kwargs):
        raise AssertionError("validation ran")

    monkeypatch.setattr(YOLO, "val", never)
    gt = user_gt_by_hand(user_data.parent)
    if what == "size":
        gt = _edit(gt, "size")
    else:
        gt["categories"].append({"id": 9, "name": "extra"})
    path = atomic_write_json(tmp_path / "bad.json", gt)
    assert cli.main(["eval", f"model={trained}", f"data={user_data}", f"gt={path}", f"project={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and ("97x64" in err if what == "size" else "outside the model's classes" in err)
