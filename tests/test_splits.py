"""Committing a prepared split: a kill at any step leaves the old or the new split, complete; the next run cleans up.

The kill is simulated by making every file-system primitive the commit uses (rename, replace, link, unlink, rmtree)
fail from its k-th call on, for every k: like a killed process, nothing after that point runs, clean-up handlers
included.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml
from _data_fixtures import walk_files
from PIL import Image

from drconv_yolo import cli
from drconv_yolo.data.coco import prepare_coco
from drconv_yolo.data.splits import GENERATIONS
from drconv_yolo.data.visdrone import prepare_visdrone
from drconv_yolo.io import DataError

VAL = "VisDrone2019-DET-val"
TRAIN = "VisDrone2019-DET-train"
PRIMITIVES = [(os, "replace"), (os, "rename"), (os, "symlink"), (os, "unlink"), (os, "rmdir"), (shutil, "rmtree")]


class Killed(BaseException):
    """The process died here: nothing after it runs."""


def _jpg(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (90, 120, 150)).save(buf, format="JPEG")
    return buf.getvalue()


def _source(root: Path, version: int) -> Path:
    """A VisDrone source (val and train folders); ``version`` 2 changes a box and adds an image to each split."""
    for folder in (VAL, TRAIN):
        (root / folder / "images").mkdir(parents=True)
        (root / folder / "annotations").mkdir()
        images = {"a": "10,10,20,20,1,1,0,0\n", "b": f"5,5,{10 + version},10,1,4,0,0\n"}
        if version == 2:
            images["c"] = "1,1,30,30,1,9,0,0\n"
        for stem, ann in images.items():
            (root / folder / "images" / f"{stem}.jpg").write_bytes(_jpg(64, 48))
            (root / folder / "annotations" / f"{stem}.txt").write_text(ann)
    return root


def _state(dst: Path) -> dict:
    """What Ultralytics and pycocotools read, through the final names: per split its images, labels and GT."""
    out = {}
    for split in ("train", "val"):
        images = dst / "images" / split
        if not images.is_dir():
            out[split] = None
            continue
        labels = {p.name: p.read_text() for p in (dst / "labels" / split).iterdir()}
        gt_path = dst / "annotations" / f"instances_{split}.json"
        gt = json.loads(gt_path.read_text()) if gt_path.is_file() else None
        gt = gt and ([im["file_name"] for im in gt["images"]], [a["bbox"] for a in gt["annotations"]])
        out[split] = (sorted(p.name for p in images.iterdir()), labels, gt)
    return out


def _check_yaml(dst: Path) -> None:
    """The YAML names only splits that are there, and the classes their labels use."""
    doc = yaml.safe_load((dst / "VisDrone.yaml").read_text())
    assert doc["path"] == str(dst.resolve())
    for key in ("train", "val", "test"):
        if key in doc:
            images = Path(doc["path"]) / doc[key]
            assert images.is_dir(), key
            classes = {
                int(row.split()[0]) for p in (dst / "labels" / key).iterdir() for row in p.read_text().splitlines()
            }
            assert classes <= set(doc["names"]), key


def _leftovers(dst: Path) -> list[str]:
    names = [p for p in walk_files(dst)] + [Path(d) for d, _, _ in os.walk(dst, followlinks=True)]
    bad = [p for p in names if p.name.startswith((".partial-", ".old-")) or ".tmp-" in p.name]
    store = dst / GENERATIONS
    generations = sorted(p.name for p in store.iterdir() if not p.is_symlink()) if store.is_dir() else []
    current = sorted(os.readlink(p) for p in store.iterdir() if p.is_symlink()) if store.is_dir() else []
    return [str(p) for p in bad] + ([f"stale generations {generations}"] if generations != current else [])


def _kill_from(monkeypatch, k: int) -> dict:
    """Make every primitive fail from its k-th call on (k < 0: count only); returns the call counter."""
    calls = {"n": 0}
    for module, name in PRIMITIVES:
        real = getattr(module, name)

        def wrapped(*args, _real=real, **kwargs):
            calls["n"] += 1
            if 0 <= k < calls["n"]:
                raise Killed
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapped)
    return calls


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sources")
    return _source(root / "old", 1), _source(root / "new", 2)


@pytest.fixture(scope="module")
def expected(sources, tmp_path_factory) -> tuple[dict, dict, int]:
    """The old and the new state, and how many primitive calls preparing the new over the old makes."""
    dst = tmp_path_factory.mktemp("expected") / "dst"
    prepare_visdrone(sources[0], dst, verbose=False)
    old = _state(dst)
    with pytest.MonkeyPatch.context() as mp:
        calls = _kill_from(mp, -1)
        prepare_visdrone(sources[1], dst, verbose=False)
    new = _state(dst)
    assert old != new and old["val"][2] is not None and old["train"][2] is None
    return old, new, calls["n"]


def test_commit_killed_at_every_step_leaves_old_or_new_split_and_rerun_cleans_up(sources, expected, tmp_path):
    old, new, steps = expected
    assert steps >= 10  # the commit of two splits, the YAML and the summary
    seen = set()
    for k in range(steps):
        dst = tmp_path / f"k{k}"
        prepare_visdrone(sources[0], dst, verbose=False)
        with pytest.MonkeyPatch.context() as mp:
            _kill_from(mp, k)
            with pytest.raises(Killed):
                prepare_visdrone(sources[1], dst, verbose=False)
        state = _state(dst)
        for split in ("train", "val"):
            assert state[split] in (old[split], new[split]), (k, split)
            seen.add((split, state[split] == new[split]))
        _check_yaml(dst)
        prepare_visdrone(sources[1], dst, verbose=False)
        assert _state(dst) == new, k
        assert _leftovers(dst) == [], k
    assert seen == {(s, b) for s in ("train", "val") for b in (False, True)}  # kills before and after each commit


def test_commit_converts_a_dataset_prepared_with_real_folders(sources, tmp_path):
    dst = tmp_path / "dst"
    prepare_visdrone(sources[0], dst, verbose=False)
    for link in [dst / "images/val", dst / "labels/val", dst / "annotations/instances_val.json"]:
        target = link.resolve()
        link.unlink()
        (shutil.copytree if target.is_dir() else shutil.copyfile)(target, link)  # the older layout
    prepare_visdrone(sources[1], dst, verbose=False)
    assert (dst / "images/val").is_symlink() and _leftovers(dst) == []
    assert sorted(p.name for p in (dst / "images/val").iterdir()) == ["a.jpg", "b.jpg", "c.jpg"]


@pytest.mark.parametrize("inside", [False, True])
def test_dst_equal_to_or_inside_src_is_refused(sources, tmp_path, inside, capsys):
    src = tmp_path / "src"
    shutil.copytree(sources[0], src)
    dst = src / "prepared" if inside else src
    for prepare in (prepare_visdrone, prepare_coco):
        with pytest.raises(DataError, match="source folder") as e:
            prepare(src, dst, verbose=False)
        assert str(src) in str(e.value) and str(dst) in str(e.value)
    assert not (src / "prepared").exists() and not (src / GENERATIONS).exists()
    assert cli.main(["prepare", "visdrone", str(src), str(dst)]) == 2
    assert "source folder" in capsys.readouterr().err


def test_corrupt_image_is_named_by_its_source_and_skipped(sources, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(sources[0], src)
    (src / VAL / "images/b.jpg").write_bytes(b"not a jpeg")
    summary = prepare_visdrone(src, tmp_path / "dst", splits=["val"], verbose=False)
    bad = [w for w in summary.warnings if "not a readable image" in w]
    assert len(bad) == 1 and bad[0].startswith(str(src / VAL / "images/b.jpg")) and ".partial" not in bad[0]
    assert summary.splits["val"].images == 1 and summary.splits["val"].details["corrupt images skipped"] == 1
    assert sorted(p.name for p in (tmp_path / "dst/images/val").iterdir()) == ["a.jpg"]
    assert "corrupt images skipped: 1" in summary.format()


def test_corrupt_zip_member_is_one_error_naming_it(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    image = _jpg(64, 48)
    with zipfile.ZipFile(src / f"{VAL}.zip", "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{VAL}/images/a.jpg", image)
        zf.writestr(f"{VAL}/annotations/a.txt", "1,1,5,5,1,1,0,0\n")
    raw = bytearray((src / f"{VAL}.zip").read_bytes())
    at = raw.find(image) + len(image) // 2
    raw[at] ^= 0xFF  # the stored bytes no longer match the member's CRC
    (src / f"{VAL}.zip").write_bytes(bytes(raw))
    with pytest.raises(DataError, match=rf"{VAL}\.zip: member {VAL}/images/a\.jpg is corrupt"):
        prepare_visdrone(src, tmp_path / "dst", verbose=False)
    assert cli.main(["prepare", "visdrone", str(src), str(tmp_path / "dst"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{VAL}/images/a.jpg" in err


@pytest.mark.slow
def test_ultralytics_validates_a_committed_split_through_its_links(sources, tmp_path):
    from ultralytics import YOLO

    from drconv_yolo.data.visdrone import VISDRONE_NAMES
    from drconv_yolo.evaluation import evaluate

    dst = tmp_path / "dst"
    prepare_visdrone(sources[1], dst, verbose=False)
    from ultralytics.nn.tasks import DetectionModel

    model = YOLO("yolov8n.yaml")  # untrained, with VisDrone's 10 classes: only the plumbing is checked
    model.model = DetectionModel("yolov8n.yaml", nc=len(VISDRONE_NAMES), verbose=False)
    model.model.names = dict(enumerate(VISDRONE_NAMES))
    model.save(tmp_path / "untrained.pt")
    common = dict(imgsz=64, batch=2, device="cpu", conf=0.0, project=str(tmp_path / "runs"), verbose=False)
    report = evaluate(str(tmp_path / "untrained.pt"), dst / "VisDrone.yaml", **common)
    assert report["ground_truth"]["source"] == "prepared" and report["warnings"] == []
    assert report["pycocotools"]["n_images"] == 3 and report["predictions"]["unknown_image"] == 0
    assert report["predictions"]["mapped"] > 0
