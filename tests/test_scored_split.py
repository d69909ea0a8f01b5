"""One view of a dataset, Ultralytics': the images it skips (mixed rows, unreadable image, class beyond ``names``) are
left out of the ground truth and named with its reason; empty and missing label files are scored without boxes; a
given ground truth may lack only the skipped images. Checked against Ultralytics' own data loader, on the installed
Ultralytics (the suite runs on both supported releases)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _data_fixtures import (
    ALWAYS_SKIPPED,
    FAULT_SIZE,
    FAULTS,
    MIXED_REASON,
    USER_TRAIN,
    USER_VAL,
    add_faults,
    enclosing_box,
    make_user_dataset,
    ultralytics_mixed_boxes_v83,
    user_gt_by_hand,
)

from drconv_yolo.data.yolo import load_split, resolve_ground_truth, scored_split
from drconv_yolo.evaluation import coco_metrics, map_predictions
from drconv_yolo.io import DataError, atomic_write_json

BOX_TOL = 1e-3  # px: Ultralytics reads labels as float32
METRIC_TOL = 1e-6
SCALARS = ("AP", "AP50", "AP75", "AR@1", "AR@10", "AR@100")


def _mixed_is_skipped() -> bool:
    """Whether the installed Ultralytics rejects a label file mixing polygon and box rows (8.4 and later)."""
    import inspect

    from ultralytics.data.utils import verify_image_label

    return MIXED_REASON in inspect.getsource(verify_image_label)


SKIPPED = {**ALWAYS_SKIPPED, **({"mixed": MIXED_REASON} if _mixed_is_skipped() else {})}


@pytest.fixture(scope="module")
def faulty(tmp_path_factory) -> Path:
    return add_faults(make_user_dataset(tmp_path_factory.mktemp("faulty") / "ds"))


def _loader_view(data: Path, split: str) -> dict[str, tuple[list, list]]:
    """What Ultralytics' own data loader keeps of a split: file name -> (classes, normalized xywh boxes)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    info = check_det_dataset(str(data), autodownload=False)
    dataset = build_yolo_dataset(get_cfg(overrides={"imgsz": 64}), info[split], 2, info, mode="val")
    return {Path(lb["im_file"]).name: (lb["cls"].ravel().tolist(), lb["bboxes"].tolist()) for lb in dataset.labels}


@pytest.mark.parametrize("split", ["train", "val"])
def test_scored_split_keeps_exactly_what_ultralytics_loader_keeps(faulty, split):
    scored = scored_split(load_split(faulty, split))
    ours = {
        Path(im).name: (row[0][:, 0].tolist(), row[0][:, 1:].tolist())
        for im, row in zip(scored.split.images, scored.labels)
        if row is not None
    }
    theirs = _loader_view(faulty, split)
    assert sorted(ours) == sorted(theirs)
    for name, (cls, boxes) in theirs.items():
        assert ours[name][0] == cls, name
        assert sum(ours[name][1], []) == pytest.approx(sum(boxes, []), abs=1e-6), name


@pytest.mark.parametrize("split", ["train", "val"])
def test_scored_split_names_each_skipped_image_with_ultralytics_reason(faulty, split):
    scored = scored_split(load_split(faulty, split))
    skipped = {Path(name).stem.removeprefix(f"{split}_fault_"): reason for name, reason in scored.skipped}
    mixing = [Path(im[0]).stem for im in USER_TRAIN if {o[0] for o in im[2]} == {"box", "poly"}]  # train_2
    expected = {**SKIPPED, **({s: MIXED_REASON for s in mixing} if "mixed" in SKIPPED and split == "train" else {})}
    assert sorted(skipped) == sorted(expected)
    for stem, words in expected.items():
        assert words in skipped[stem] and "ignoring corrupt" not in skipped[stem], skipped[stem]
    n = len(USER_TRAIN if split == "train" else USER_VAL) + len(FAULTS)
    assert (len(scored.labels), scored.n_scored) == (n, n - len(expected))
    assert scored.empty_labels == 1  # "empty"; its image is scored with no boxes
    assert scored.missing_labels == (1 if split == "train" else 2)  # "background" (+ val's label-less "empty scene")


def _by_hand(root: Path) -> dict:
    """The COCO ground truth of what Ultralytics scores of the faulty val split, written from the fixture tables."""
    gt = user_gt_by_hand(root)
    width, height = FAULT_SIZE
    for stem, (objects, _, _) in FAULTS.items():
        if stem in SKIPPED:
            continue
        image_id = 500 + len(gt["images"])
        gt["images"].append(
            {"id": image_id, "file_name": f"images/more/val_fault_{stem}.jpg", "width": width, "height": height}
        )
        boxes = ultralytics_mixed_boxes_v83() if stem == "mixed" else [enclosing_box(o) for o in objects]
        for c, x1, y1, x2, y2 in boxes:
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": c + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    return gt


def _predictions(gt: dict) -> list[dict]:
    """Predictions in Ultralytics' form (image_id = file stem): per ground-truth box a shifted copy, an exact copy
    for every other one, and one false positive on every image Ultralytics scores."""
    preds = []
    for k, im in enumerate(sorted(gt["images"], key=lambda im: im["file_name"])):
        stem = Path(im["file_name"]).stem
        row = {"image_id": int(stem) if stem.isnumeric() else stem, "file_name": Path(im["file_name"]).name}
        for j, a in enumerate(a for a in gt["annotations"] if a["image_id"] == im["id"]):
            x, y, w, h = a["bbox"]
            preds.append(
                {**row, "category_id": a["category_id"], "bbox": [x + 2.3 + j, y, w, h], "score": 0.8 - 0.03 * k}
            )
            if (k + j) % 2 == 0:
                preds.append({**row, "category_id": a["category_id"], "bbox": [x, y, w, h], "score": 0.9 - 0.05 * k})
        preds.append({**row, "category_id": 1, "bbox": [1, 1, 6, 6], "score": 0.7 - 0.02 * k})
    return preds


def test_built_gt_scores_like_a_hand_written_json_of_what_ultralytics_scores(faulty, tmp_path):
    truth = resolve_ground_truth(faulty, "val", cache_dir=tmp_path / "cache")
    built = json.loads(truth.path.read_text())
    hand = _by_hand(faulty.parent)
    assert sorted(im["file_name"] for im in built["images"]) == sorted(im["file_name"] for im in hand["images"])
    preds = _predictions(hand)
    a = coco_metrics(built, map_predictions(preds, built)[0], max_det=100)
    b = coco_metrics(hand, map_predictions(preds, hand)[0], max_det=100)
    assert 0.0 < a["AP"] < 1.0
    for key in SCALARS:
        assert a[key] == pytest.approx(b[key], abs=METRIC_TOL), key
    assert (a["n_images"], a["n_gt"], a["n_predictions"]) == (b["n_images"], b["n_gt"], b["n_predictions"])


def test_ground_truth_counts_and_names_skipped_images_with_reasons(faulty, tmp_path):
    truth = resolve_ground_truth(faulty, "val", cache_dir=tmp_path / "cache")
    n = len(USER_VAL) + len(FAULTS)
    line = truth.skipped_line()
    assert line.startswith(f"{len(SKIPPED)} of {n} val images skipped by Ultralytics: ")
    for stem, words in SKIPPED.items():
        assert f"val_fault_{stem}.jpg" in line and words in line
    assert line in truth.describe() and truth.to_dict()["description"] == truth.describe()
    assert sorted(Path(name).name for name, _ in truth.to_dict()["skipped"]) == sorted(
        f"val_fault_{s}.jpg" for s in SKIPPED
    )
    again = resolve_ground_truth(faulty, "val", cache_dir=tmp_path / "cache")
    assert again.reused and again.skipped == truth.skipped  # named again when the cached one is reused


def test_given_gt_lacking_only_skipped_images_is_accepted(faulty, tmp_path):
    path = atomic_write_json(tmp_path / "hand.json", _by_hand(faulty.parent))
    truth = resolve_ground_truth(faulty, "val", gt=path)
    assert truth.source == "given" and len(truth.skipped) == len(SKIPPED)


def test_given_gt_lacking_a_scored_image_is_an_error(faulty, tmp_path):
    gt = _by_hand(faulty.parent)
    gone = next(im for im in gt["images"] if im["file_name"].endswith("val_fault_empty.jpg"))
    gt["images"].remove(gone)
    path = atomic_write_json(tmp_path / "hand.json", gt)
    with pytest.raises(
        DataError,
        match=r"1 image\(s\) of the split that Ultralytics scores are not in it: "
        r"val_fault_empty\.jpg",
    ) as e:
        resolve_ground_truth(faulty, "val", gt=path)
    assert str(path) in str(e.value)


def test_given_gt_may_hold_a_skipped_image(faulty, tmp_path):
    gt = _by_hand(faulty.parent)
    gt["images"].append({"id": 999, "file_name": "images/more/val_fault_broken.jpg", "width": 96, "height": 64})
    truth = resolve_ground_truth(faulty, "val", gt=atomic_write_json(tmp_path / "hand.json", gt))
    assert "val_fault_broken.jpg" in truth.skipped_line()
