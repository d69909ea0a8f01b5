"""VisDrone2019-DET preparation on tiny fixtures in the official zip / folder formats."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from _data_fixtures import assert_rows, read_labels, walk_files
from PIL import Image

from drconv_yolo import cli
from drconv_yolo.data import visdrone
from drconv_yolo.data.splits import GENERATIONS
from drconv_yolo.data.visdrone import (
    VISDRONE_NAMES,
    convert_visdrone_annotation,
    parse_visdrone_line,
    prepare_visdrone,
)

IMG_A = "0000001_00000_d_0000001"  # 100 x 80
IMG_B = "0000002_00000_d_0000002"  # 60 x 40
# Every edge case of the format, one per line (line numbers matter: warnings must name them).
ANN_A = (
    "10,20,30,40,1,1,0,0\n"  # 1: pedestrian -> class 0
    "50,10,20,10,1,4,0,0,\n"  # 2: car with a trailing comma -> class 3
    "0,0,25,25,0,0,0,0\n"  # 3: ignored region -> iscrowd=1 x 10 categories
    "60,50,10,10,0,5,0,0\n"  # 4: score-0 van -> iscrowd=1 x 10 categories
    "70,60,10,10,1,11,0,0\n"  # 5: others -> left out
    "90,70,20,20,1,10,1,0\n"  # 6: motor crossing the border -> clipped to (90, 70, 100, 80)
    "30,30,0,10,1,2,0,0\n"  # 7: zero-area -> warning
    "1,2,3\n"  # 8: malformed -> warning
    "\n"  # 9: blank -> skipped
    "5,5,abc,5,1,1,0,0\n"  # 10: non-numeric -> warning
)
ANN_B = "0,0,60,40,1,9,0,0\n100,100,5,5,1,1,0,0\n"  # 1: bus = whole image; 2: outside the image -> warning


def _jpg(w: int, h: int, color=(90, 120, 150)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format="JPEG")
    return buf.getvalue()


def _write_zip(path: Path, top: str, images: dict[str, tuple[int, int]], anns: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{top}/", "")
        for stem, (w, h) in images.items():
            zf.writestr(f"{top}/images/{stem}.jpg", _jpg(w, h))
        for stem, text in anns.items():
            zf.writestr(f"{top}/annotations/{stem}.txt", text)
    return path


def _write_folder(root: Path, images: dict[str, tuple[int, int]], anns: dict[str, str]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for stem, (w, h) in images.items():
        (root / "images" / f"{stem}.jpg").write_bytes(_jpg(w, h))
    for stem, text in anns.items():
        (root / "annotations" / f"{stem}.txt").write_text(text)
    return root


@pytest.fixture()
def src(tmp_path: Path) -> Path:
    """val as the official zip, train as an extracted folder, test-dev as a zip."""
    s = tmp_path / "src"
    s.mkdir()
    images = {IMG_A: (100, 80), IMG_B: (60, 40)}
    _write_zip(s / "VisDrone2019-DET-val.zip", "VisDrone2019-DET-val", images, {IMG_A: ANN_A, IMG_B: ANN_B})
    _write_folder(s / "VisDrone2019-DET-train", {"9999999_00000_d_0000009": (32, 32)}, {"9999999_00000_d_0000009": ""})
    _write_zip(
        s / "VisDrone2019-DET-test-dev.zip", "VisDrone2019-DET-test-dev", {"t1": (40, 40)}, {"t1": "0,0,10,10,1,4,0,0"}
    )
    return s


# ----------------------------------------------------------------------------------------------------------------------
# Parsing and conversion (pure)
# ----------------------------------------------------------------------------------------------------------------------


def test_parse_line_accepts_trailing_comma():
    box = parse_visdrone_line("684,8,273,116,0,0,0,0,")
    assert (box.left, box.top, box.width, box.height, box.score, box.category) == (684, 8, 273, 116, 0, 0)


@pytest.mark.parametrize("line", ["1,2,3", "1,2,3,4,1,12,0,0", "1,2,x,4,1,1,0,0", "1,2,3,4,1,1.5,0,0"])
def test_parse_line_rejects_malformed_row(line):
    with pytest.raises(ValueError):
        parse_visdrone_line(line)


def test_convert_annotation_applies_every_rule_in_order():
    conv = convert_visdrone_annotation(ANN_A, 100, 80, "a.txt")
    assert conv.labels == [(0, 10, 20, 40, 60), (3, 50, 10, 70, 20), (9, 90, 70, 100, 80)]
    assert conv.ignore == [(0, 0, 25, 25), (60, 50, 70, 60)]
    assert (conv.ignored_regions, conv.score0, conv.left_out, conv.clipped, conv.dropped) == (1, 1, 1, 1, 3)
    assert [w.split(":")[:2] for w in conv.warnings] == [["a.txt", "7"], ["a.txt", "8"], ["a.txt", "10"]]
    assert "zero-area" in conv.warnings[0] and "malformed" in conv.warnings[1] and "malformed" in conv.warnings[2]


def test_convert_annotation_keeps_others_as_class_10_when_asked():
    conv = convert_visdrone_annotation("70,60,10,10,1,11,0,0", 100, 80, keep_others=True)
    assert conv.labels == [(10, 70, 60, 80, 70)] and conv.left_out == 0


# ----------------------------------------------------------------------------------------------------------------------
# Preparation end to end (zips and folders)
# ----------------------------------------------------------------------------------------------------------------------


def test_prepare_writes_labels_box_by_box_from_zip(src, tmp_path):
    dst = tmp_path / "dst"
    prepare_visdrone(src, dst, verbose=False)
    # class cx cy w h, normalised: (x1 + x2) / 2 / W, (y1 + y2) / 2 / H, (x2 - x1) / W, (y2 - y1) / H
    assert_rows(
        read_labels(dst / "labels/val" / f"{IMG_A}.txt"),
        [
            [0, 25 / 100, 40 / 80, 30 / 100, 40 / 80],  # (10, 20, 40, 60)
            [3, 60 / 100, 15 / 80, 20 / 100, 10 / 80],  # (50, 10, 70, 20)
            [9, 95 / 100, 75 / 80, 10 / 100, 10 / 80],  # clipped (90, 70, 100, 80)
        ],
    )
    assert_rows(read_labels(dst / "labels/val" / f"{IMG_B}.txt"), [[8, 0.5, 0.5, 1.0, 1.0]])
    assert (dst / "labels/train/9999999_00000_d_0000009.txt").read_text() == ""
    assert_rows(read_labels(dst / "labels/test/t1.txt"), [[3, 0.125, 0.125, 0.25, 0.25]])
    assert sorted(p.name for p in (dst / "images/val").iterdir()) == [f"{IMG_A}.jpg", f"{IMG_B}.jpg"]
    with Image.open(dst / "images/val" / f"{IMG_A}.jpg") as im:
        assert im.size == (100, 80)


def test_prepare_writes_gt_json_with_crowd_boxes_per_category(src, tmp_path):
    dst = tmp_path / "dst"
    prepare_visdrone(src, dst, splits=["val"], verbose=False)
    gt = json.loads((dst / "annotations/instances_val.json").read_text())
    assert gt["images"] == [
        {"id": 1, "file_name": f"images/val/{IMG_A}.jpg", "width": 100, "height": 80},
        {"id": 2, "file_name": f"images/val/{IMG_B}.jpg", "width": 60, "height": 40},
    ]
    assert gt["categories"] == [{"id": i + 1, "name": n} for i, n in enumerate(VISDRONE_NAMES)]
    plain = [(a["image_id"], a["category_id"], a["bbox"], a["area"]) for a in gt["annotations"] if not a["iscrowd"]]
    assert plain == [
        (1, 1, [10, 20, 30, 40], 1200),
        (1, 4, [50, 10, 20, 10], 200),
        (1, 10, [90, 70, 10, 10], 100),
        (2, 9, [0, 0, 60, 40], 2400),
    ]
    crowd = [(a["image_id"], a["category_id"], a["bbox"]) for a in gt["annotations"] if a["iscrowd"]]
    expected = [(1, c, [0, 0, 25, 25]) for c in range(1, 11)] + [(1, c, [60, 50, 10, 10]) for c in range(1, 11)]
    assert crowd == expected
    assert [a["id"] for a in gt["annotations"]] == list(range(1, 25))
    assert not (dst / "annotations/instances_train.json").exists()  # train is not an evaluated split


def test_prepare_summary_counts_and_names_every_problem(src, tmp_path, capsys):
    summary = prepare_visdrone(src, tmp_path / "dst", splits=["val"], verbose=True)
    st = summary.splits["val"]
    assert (st.images, st.ignored, st.left_out, st.clipped, st.dropped) == (2, 2, 1, 1, 4)
    assert st.boxes == [1, 0, 0, 1, 0, 0, 0, 0, 1, 1]
    assert st.details["ignored regions (category 0)"] == 1 and st.details["score-0 boxes (categories 1-11)"] == 1
    where = [w.split("/annotations/")[1].split(": ")[0] for w in summary.warnings]
    assert where == [f"{IMG_A}.txt:7", f"{IMG_A}.txt:8", f"{IMG_A}.txt:10", f"{IMG_B}.txt:2"]
    assert all("VisDrone2019-DET-val.zip" in w for w in summary.warnings)
    out = capsys.readouterr().out
    assert "4 warning(s)" in out and f"{IMG_A}.txt:7: zero-area box" in out
    saved = json.loads((tmp_path / "dst/prepare_summary.json").read_text())
    assert saved["warnings"] == summary.warnings


def test_prepare_writes_yaml_ultralytics_can_read(src, tmp_path):
    from ultralytics.data.utils import check_det_dataset

    dst = tmp_path / "dst"
    summary = prepare_visdrone(src, dst, verbose=False)
    assert summary.yaml == (dst / "VisDrone.yaml").resolve()
    data = check_det_dataset(str(summary.yaml), autodownload=False)
    assert Path(data["val"]) == (dst / "images/val").resolve()
    assert Path(data["test"]) == (dst / "images/test").resolve()
    assert list(data["names"].values()) == list(VISDRONE_NAMES)
    import ultralytics
    import yaml

    stock = yaml.safe_load((Path(ultralytics.__file__).parent / "cfg/datasets/VisDrone.yaml").read_text())
    assert list(stock["names"].values()) == list(VISDRONE_NAMES)
    ours = yaml.safe_load((Path(__file__).parents[1] / "cfg/datasets/VisDrone.yaml").read_text())
    assert ours["names"] == stock["names"] and "download" not in ours


def test_prepare_keep_others_adds_class_10_everywhere(src, tmp_path):
    dst = tmp_path / "dst"
    prepare_visdrone(src, dst, splits=["val"], keep_others=True, verbose=False)
    rows = read_labels(dst / "labels/val" / f"{IMG_A}.txt")
    assert_rows([r for r in rows if r[0] == 10], [[10, 75 / 100, 65 / 80, 10 / 100, 10 / 80]])
    gt = json.loads((dst / "annotations/instances_val.json").read_text())
    assert gt["categories"][-1] == {"id": 11, "name": "others"}
    assert sum(a["iscrowd"] for a in gt["annotations"]) == 2 * 11


@pytest.mark.parametrize("mode", ["auto", "symlink", "copy"])
def test_prepare_places_folder_images_by_mode(src, tmp_path, mode):
    dst = tmp_path / "dst"
    summary = prepare_visdrone(src, dst, splits=["train"], images=mode, verbose=False)
    placed = dst / "images/train/9999999_00000_d_0000009.jpg"
    original = src / "VisDrone2019-DET-train/images/9999999_00000_d_0000009.jpg"
    assert placed.is_symlink() == (mode == "symlink")
    assert placed.read_bytes() == original.read_bytes()
    expected = {"auto": {"hardlink", "copy"}, "symlink": {"symlink"}, "copy": {"copy"}}[mode]
    assert set(summary.splits["train"].placement) <= expected


# ----------------------------------------------------------------------------------------------------------------------
# Idempotence, interruption, errors, CLI
# ----------------------------------------------------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    """Every file as Ultralytics sees the dataset: through the split links, without the generations behind them."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(walk_files(root))
        if p.suffix != ".json" and GENERATIONS not in p.parts
    }


def test_prepare_twice_gives_same_tree_and_drops_stale_cache(src, tmp_path):
    dst = tmp_path / "dst"
    prepare_visdrone(src, dst, verbose=False)
    first = _tree(dst)
    gt_first = json.loads((dst / "annotations/instances_val.json").read_text())
    (dst / "labels/val.cache").write_text("stale")
    (dst / "labels/val/extra.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    prepare_visdrone(src, dst, verbose=False)
    assert _tree(dst) == first
    gt_second = json.loads((dst / "annotations/instances_val.json").read_text())
    assert {k: v for k, v in gt_second.items() if k != "info"} == {k: v for k, v in gt_first.items() if k != "info"}
    assert not list(dst.glob(".partial-*")) and not list(dst.glob(".old-*"))


def test_prepare_interrupted_leaves_previous_split_intact(src, tmp_path, monkeypatch):
    dst = tmp_path / "dst"
    prepare_visdrone(src, dst, splits=["val"], verbose=False)
    before = _tree(dst)
    calls = {"n": 0}
    real = visdrone.read_image_size

    def failing(path):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(visdrone, "read_image_size", failing)
    with pytest.raises(KeyboardInterrupt):
        prepare_visdrone(src, dst, splits=["val"], verbose=False)
    assert _tree(dst) == before
    assert (dst / "annotations/instances_val.json").is_file()
    assert not (dst / ".partial-val").exists()


def test_prepare_interrupted_first_run_leaves_no_split(src, tmp_path, monkeypatch):
    dst = tmp_path / "dst"

    def failing(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(visdrone, "read_image_size", failing)
    with pytest.raises(KeyboardInterrupt):
        prepare_visdrone(src, dst, splits=["val"], verbose=False)
    assert not (dst / "images/val").exists() and not (dst / "labels/val").exists()
    assert not (dst / "annotations/instances_val.json").exists() and not (dst / "VisDrone.yaml").exists()


def test_prepare_missing_split_error_names_expected_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="VisDrone2019-DET-val.zip"):
        prepare_visdrone(tmp_path / "empty", tmp_path / "dst", splits=["val"], verbose=False)
    with pytest.raises(FileNotFoundError, match="VisDrone2019-DET-test-dev.zip"):
        prepare_visdrone(tmp_path / "empty", tmp_path / "dst", verbose=False)
    with pytest.raises(FileNotFoundError, match="not found"):
        prepare_visdrone(tmp_path / "nowhere", tmp_path / "dst", verbose=False)


def test_prepare_folder_without_annotations_error_names_folder(tmp_path):
    (tmp_path / "src/VisDrone2019-DET-val/images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="annotations"):
        prepare_visdrone(tmp_path / "src", tmp_path / "dst", verbose=False)


def test_cli_prepares_and_reports_errors(src, tmp_path, capsys):
    dst = tmp_path / "dst"
    assert cli.main(["prepare", "visdrone", str(src), str(dst), "--splits", "val", "--quiet"]) == 0
    assert (dst / "annotations/instances_val.json").is_file() and not (dst / "images/train").exists()
    assert capsys.readouterr().out == ""
    assert cli.main(["prepare", "visdrone", str(tmp_path / "nowhere"), str(dst)]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert cli.main(["prepare", "visdrone", "--help"]) == 0
    assert "--keep-others" in capsys.readouterr().out
    assert cli.main(["prepare", "visdrone", str(src), str(dst), "--copy", "--splits", "bogus"]) == 2
