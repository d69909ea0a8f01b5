"""pycocotools scoring on fixtures whose answer is known by construction, prediction mapping, CLI, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from drconv_yolo import cli
from drconv_yolo.cli.eval import build_parser
from drconv_yolo.cli.options import split_key_values
from drconv_yolo.evaluation import coco_metrics, format_report, map_predictions
from drconv_yolo.io import gt_images, write_gt_json

TOL = 1e-9  # pycocotools figures are means of exact fractions

# pycocotools: 101 recall thresholds 0.00, 0.01, ..., 1.00; AP = mean over them (and over IoU thresholds and classes)
# of the interpolated precision (the best precision at any recall >= the threshold; 0 beyond the highest recall).


def _gt(tmp_path: Path, boxes: list[tuple], n_images: int = 2, size: int = 200) -> Path:
    """Write a ground truth with categories 1 'a' and 2 'b'; boxes are (image_id, category_id, bbox[, iscrowd])."""
    images = gt_images((f"images/val/{i:03d}.jpg", size, size) for i in range(1, n_images + 1))
    anns = [{"image_id": b[0], "category_id": b[1], "bbox": b[2], "iscrowd": b[3] if len(b) > 3 else 0} for b in boxes]
    path = tmp_path / "annotations/instances_val.json"
    write_gt_json(path, images, anns, [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
    return path


def _det(image_id: int, cat: int, bbox: list, score: float) -> dict:
    return {"image_id": image_id, "category_id": cat, "bbox": bbox, "score": score}


# Small (< 32^2), medium and large boxes of both categories on two 200 x 200 images.
PERFECT_GT = [
    (1, 1, [10, 10, 20, 20]),  # small, area 400
    (1, 1, [50, 50, 50, 50]),  # medium, area 2500
    (1, 2, [80, 80, 110, 110]),  # large, area 12100
    (2, 2, [5, 5, 10, 10]),  # small
    (2, 1, [20, 20, 150, 150]),  # large
]


def test_coco_metrics_perfect_predictions_give_one(tmp_path):
    gt = _gt(tmp_path, PERFECT_GT)
    dets = [_det(i, c, b, 0.9 - 0.1 * k) for k, (i, c, b) in enumerate(PERFECT_GT)]
    m = coco_metrics(gt, dets, max_det=300)
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR@10", "AR@100", "AR@300", "ARs", "ARm", "ARl"):
        assert m[key] == pytest.approx(1.0, abs=TOL), key
    # AR@1 keeps one detection per image and category: category 1 finds 1 of 2 boxes on image 1 and 1 of 1 on image 2
    # (recall 2/3), category 2 finds both (recall 1): AR@1 = (2/3 + 1) / 2 = 5/6.
    assert m["AR@1"] == pytest.approx(5 / 6, abs=TOL)
    assert m["AP_maxDets100"] == pytest.approx(1.0, abs=TOL)
    assert m["max_dets"] == [1, 10, 100, 300]
    assert (m["n_images"], m["n_gt"], m["n_predictions"]) == (2, 5, 5)
    assert [(r["category_id"], r["name"], r["class"], r["n_gt"], r["AP"]) for r in m["per_class"]] == [
        (1, "a", 0, 3, pytest.approx(1.0)),
        (2, "b", 1, 2, pytest.approx(1.0)),
    ]


def test_coco_metrics_known_miss_lowers_ap_and_recall(tmp_path):
    gt = _gt(tmp_path, [(1, 1, [10, 10, 20, 20]), (1, 1, [60, 60, 20, 20]), (1, 1, [110, 110, 20, 20])], 1)
    dets = [_det(1, 1, [10, 10, 20, 20], 0.9), _det(1, 1, [60, 60, 20, 20], 0.8)]  # third box missed
    m = coco_metrics(gt, dets)
    # recall after each detection: 1/3, 2/3, precision 1 throughout. Thresholds 0.00..0.66 (67 of 101) are reached
    # with precision 1, thresholds 0.67..1.00 never: AP = 67/101 at every IoU threshold. Category 2 has no ground
    # truth, so pycocotools leaves it out of the mean (-1 -> None in its per-class row).
    assert m["AP"] == pytest.approx(67 / 101, abs=TOL)
    assert m["AP50"] == pytest.approx(67 / 101, abs=TOL)
    assert m["AR@300"] == pytest.approx(2 / 3, abs=TOL)
    assert m["per_class"][1]["AP"] is None and m["per_class"][1]["n_gt"] == 0


def test_coco_metrics_duplicate_is_a_false_positive(tmp_path):
    a, b = [10, 10, 40, 40], [100, 100, 40, 40]
    gt = _gt(tmp_path, [(1, 1, a), (1, 1, b)], 1)
    dets = [_det(1, 1, a, 0.9), _det(1, 1, a, 0.8), _det(1, 1, b, 0.7)]  # the second one duplicates the first
    m = coco_metrics(gt, dets)
    # Sorted by score: TP, FP (its box is already matched), TP. Recall 0.5, 0.5, 1; precision 1, 0.5, 2/3;
    # interpolated precision 1, 2/3, 2/3. Thresholds 0.00..0.50 (51) -> 1, thresholds 0.51..1.00 (50) -> 2/3:
    # AP = (51 * 1 + 50 * 2/3) / 101 = 0.834983...
    assert m["AP"] == pytest.approx((51 + 50 * 2 / 3) / 101, abs=TOL)
    assert m["AR@300"] == pytest.approx(1.0, abs=TOL)


def test_coco_metrics_detection_in_crowd_region_is_ignored(tmp_path):
    box, region, inside = [10, 10, 20, 20], [50, 50, 40, 40], [55, 55, 10, 10]
    dets = [_det(1, 1, inside, 0.95), _det(1, 1, box, 0.8)]
    with_crowd = coco_metrics(_gt(tmp_path / "a", [(1, 1, box), (1, 1, region, 1)], 1), dets)
    # The top-scoring detection lies inside the iscrowd region (intersection / detection area = 1 >= every IoU
    # threshold): it is matched to the region and ignored, neither TP nor FP. The other one is a TP: AP = 1.
    assert with_crowd["AP"] == pytest.approx(1.0, abs=TOL)
    assert with_crowd["n_gt"] == 1  # crowd boxes are not counted as ground truth
    without = coco_metrics(_gt(tmp_path / "b", [(1, 1, box)], 1), dets)
    # Without the region it is a FP ranked first: FP, TP -> recall 0, 1 and precision 0, 0.5; interpolated
    # precision 0.5 at every threshold: AP = 0.5.
    assert without["AP"] == pytest.approx(0.5, abs=TOL)


def test_coco_metrics_empty_predictions_give_zero(tmp_path):
    m = coco_metrics(_gt(tmp_path, PERFECT_GT), [], max_det=100)
    assert m["AP"] == 0.0 and m["AR@100"] == 0.0 and m["max_dets"] == [1, 10, 100]


def test_coco_metrics_rejects_unknown_image_and_keeps_inputs(tmp_path):
    gt = _gt(tmp_path, PERFECT_GT)
    dets = [_det(1, 1, [10, 10, 20, 20], 0.9)]
    coco_metrics(gt, dets)
    assert dets == [_det(1, 1, [10, 10, 20, 20], 0.9)]  # not modified
    with pytest.raises(ValueError, match="not in the ground truth"):
        coco_metrics(gt, [_det(7, 1, [1, 1, 2, 2], 0.5)])


def test_coco_metrics_img_ids_restricts_evaluation(tmp_path):
    gt = _gt(tmp_path, PERFECT_GT)
    dets = [_det(i, c, b, 0.9) for i, c, b in PERFECT_GT if i == 1]  # nothing predicted on image 2
    assert coco_metrics(gt, dets, img_ids=[1])["AP"] == pytest.approx(1.0, abs=TOL)
    assert coco_metrics(gt, dets)["AP"] < 1.0


def test_format_report_prints_every_figure(tmp_path):
    m = coco_metrics(_gt(tmp_path, PERFECT_GT), [], max_det=1000)
    text = format_report({"pycocotools": m})
    for key in ("AP50", "APl", "AR@1", "AR@1000", "ARs", "n_gt"):
        assert key in text


# ----------------------------------------------------------------------------------------------------------------------
# Mapping Ultralytics predictions onto ground-truth ids
# ----------------------------------------------------------------------------------------------------------------------


def test_map_predictions_by_string_stem_and_class_plus_one():
    gt = {
        "images": [{"id": 1, "file_name": "images/val/0000001_00000_d_0000001.jpg"}],
        "categories": [{"id": i + 1, "name": str(i)} for i in range(10)],
    }
    preds = [
        {"image_id": "0000001_00000_d_0000001", "category_id": 10, "bbox": [1, 2, 3, 4], "score": 0.5},
        {"image_id": "unknown", "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5},
        {"image_id": "0000001_00000_d_0000001", "category_id": 11, "bbox": [1, 2, 3, 4], "score": 0.5},
    ]
    mapped, counts = map_predictions(preds, gt, list(range(1, 12)))  # a model with 11 classes
    assert mapped == [{"image_id": 1, "category_id": 10, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}]
    assert counts == {"mapped": 1, "unknown_image": 1, "unknown_class": 1}


def test_map_predictions_ambiguous_stem_falls_back_to_file_name():
    gt = {
        "images": [{"id": 1, "file_name": "images/val/1.jpg"}, {"id": 2, "file_name": "images/val/01.jpg"}],
        "categories": [{"id": 1, "name": "a"}],
    }
    preds = [
        {"image_id": 1, "file_name": "01.jpg", "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5},  # Ultralytics 8.4
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5},  # no file_name: 1.jpg or 01.jpg?
    ]
    mapped, counts = map_predictions(preds, gt)
    assert [p["image_id"] for p in mapped] == [2]
    assert counts == {"mapped": 1, "unknown_image": 1, "unknown_class": 0}


@pytest.mark.parametrize("coco_mode", [True, False])
def test_map_predictions_numeric_stem_to_coco_category_ids(coco_mode):
    from drconv_yolo.data.coco import COCO80_TO_COCO91, COCO_NAMES

    gt = {
        "images": [{"id": 1, "file_name": "images/val/000000000139.jpg"}, {"id": 2, "file_name": "images/val/x.jpg"}],
        "categories": [{"id": c, "name": n} for c, n in zip(COCO80_TO_COCO91, COCO_NAMES)],
    }
    class_map = list(COCO80_TO_COCO91) if coco_mode else list(range(1, 81))  # val2017.txt list vs image folder
    pred = {"image_id": 139, "category_id": class_map[79], "bbox": [0, 0, 1, 1], "score": 0.3}  # toothbrush
    named = {"image_id": "x", "file_name": "x.jpg", "category_id": class_map[0], "bbox": [0, 0, 1, 1], "score": 0.2}
    mapped, counts = map_predictions([pred, named], gt, class_map)
    assert [(p["image_id"], p["category_id"]) for p in mapped] == [(1, 90), (2, 1)]
    assert counts["mapped"] == 2


# ----------------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------------


def test_key_value_arguments_become_options():
    options, extra = split_key_values(build_parser(), ["model=a.pt", "max-det=5", "--iou", "0.6", "--max-det=7"])
    assert options == [
        "--model",
        "a.pt",
        "--max-det",
        "5",
        "--iou",
        "0.6",
        "--max-det=7",
    ]
    assert extra == []


def test_cli_help_and_usage_errors(capsys):
    assert cli.main(["eval", "--help"]) == 0
    assert "max_det" in capsys.readouterr().out
    assert cli.main(["eval", "model=a.pt"]) == 2  # data= missing
    assert cli.main(["eval", "model=a.pt", "data=d.yaml", "bogus=1"]) == 2


def _tiny_dataset(root: Path, gt: bool) -> Path:
    """Three COCO-named images with YOLO labels and (optionally) a COCO-id ground truth; returns the YAML."""
    from drconv_yolo.data.coco import COCO80_TO_COCO91, COCO_NAMES

    (root / "images/val").mkdir(parents=True)
    (root / "labels/val").mkdir(parents=True)
    entries, anns = [], []
    for k, coco_id in enumerate((139, 285, 632)):
        name = f"{coco_id:012d}.jpg"
        Image.new("RGB", (64, 48), (40 * k, 100, 160)).save(root / "images/val" / name)
        (root / "labels/val" / f"{coco_id:012d}.txt").write_text("0 0.5 0.5 0.5 0.5\n79 0.2 0.2 0.2 0.2\n")
        entries.append((f"images/val/{name}", 64, 48))
    for im in gt_images(entries):
        anns += [
            {"image_id": im["id"], "category_id": 1, "bbox": [16, 12, 32, 24]},
            {"image_id": im["id"], "category_id": 90, "bbox": [6.4, 4.8, 12.8, 9.6]},
        ]
    if gt:
        cats = [{"id": c, "name": n} for c, n in zip(COCO80_TO_COCO91, COCO_NAMES)]
        write_gt_json(root / "annotations/instances_val.json", gt_images(entries), anns, cats)
    names = "".join(f"  {i}: {json.dumps(n)}\n" for i, n in enumerate(COCO_NAMES))
    (root / "tiny.yaml").write_text(
        f"path: {json.dumps(str(root))}\ntrain: images/val\nval: images/val\nnames:\n{names}"
    )
    return root / "tiny.yaml"


def test_cli_missing_model_and_ground_truth_name_the_file(tmp_path, capsys):
    data = _tiny_dataset(tmp_path / "ds", gt=False)
    assert cli.main(["eval", f"model={tmp_path / 'none.pt'}", f"data={data}"]) == 2
    assert "none.pt" in capsys.readouterr().err
    from ultralytics import YOLO

    YOLO("yolov8n.yaml").save(tmp_path / "untrained.pt")
    missing = tmp_path / "nowhere.json"
    assert cli.main(["eval", f"model={tmp_path / 'untrained.pt'}", f"data={data}", f"gt={missing}"]) == 2
    assert str(missing) in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_end_to_end_maps_every_prediction(tmp_path, capsys):
    from ultralytics import YOLO

    from drconv_yolo.data.coco import COCO80_TO_COCO91, COCO_NAMES
    from drconv_yolo.evaluation import evaluate

    data = _tiny_dataset(tmp_path / "ds", gt=True)
    model = YOLO("yolov8n.yaml")  # untrained, built offline (no weights download)
    model.model.names = dict(enumerate(COCO_NAMES))
    model.save(tmp_path / "untrained.pt")
    # conf=0: an untrained head scores about 1e-4, so keep everything to exercise the mapping of many predictions.
    common = dict(imgsz=64, batch=4, device="cpu", conf=0.0, project=str(tmp_path / "runs"), verbose=False)
    report = evaluate(str(tmp_path / "untrained.pt"), data, name="a", **common)

    run = Path(report["run_dir"])
    ultra = json.loads((run / "predictions.json").read_text())
    ours = json.loads((run / "predictions_gt_ids.json").read_text())
    assert len(ultra) > 0 and report["predictions"] == {"mapped": len(ultra), "unknown_image": 0, "unknown_class": 0}
    gt = json.loads((tmp_path / "ds/annotations/instances_val.json").read_text())
    id_of = {Path(im["file_name"]).name: im["id"] for im in gt["images"]}
    for u, o in zip(ultra, ours):  # a folder dataset: Ultralytics writes category = class + 1
        assert o["image_id"] == id_of[u["file_name"]]
        assert o["category_id"] == COCO80_TO_COCO91[u["category_id"] - 1]
        assert o["bbox"] == u["bbox"] and o["score"] == u["score"]
    c = report["pycocotools"]
    assert (c["n_images"], c["n_gt"], c["n_predictions"], c["max_dets"]) == (3, 6, len(ultra), [1, 10, 100, 300])
    assert 0.0 <= c["AP"] <= 1.0 and 0.0 <= report["ultralytics"]["mAP50-95"] <= 1.0
    assert report["warnings"] == []
    assert json.loads(Path(report["report"]).read_text()) == json.loads(json.dumps(report))

    out = tmp_path / "report.json"
    argv = [f"model={tmp_path / 'untrained.pt'}", f"data={data}", "max_det=5", "imgsz=64", "conf=0", "device=cpu"]
    assert cli.main(["eval", *argv, f"project={tmp_path / 'runs'}", "name=b", f"out={out}", "verbose=false"]) == 0
    small = json.loads(out.read_text())
    assert small["max_det"] == 5 and small["pycocotools"]["max_dets"] == [1, 5]
    per_image = json.loads((Path(small["run_dir"]) / "predictions.json").read_text())
    assert max(sum(p["file_name"] == f for p in per_image) for f in id_of) <= 5


def _not_a_checkpoint(path: Path, kind: str) -> Path:
    import torch

    if kind == "bytes":
        path.write_bytes(b"this is not a checkpoint\n" * 10)
    else:
        torch.save({"epoch": 3, "weights": torch.zeros(64, 64)}, path)
        if kind == "truncated":
            path.write_bytes(path.read_bytes()[:1000])
    return path


@pytest.mark.parametrize("kind", ["bytes", "truncated", "dict"])
def test_eval_of_a_file_that_is_no_checkpoint_exits_2_naming_it(tmp_path, capsys, kind):
    weights = _not_a_checkpoint(tmp_path / "broken.pt", kind)
    assert cli.main(["eval", f"model={weights}", f"data={tmp_path / 'd.yaml'}"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"model weights {weights}: not a readable Ultralytics checkpoint" in err
