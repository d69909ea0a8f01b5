"""Helpers shared by the dataset tests: reading YOLO label files back, and a user-style dataset to build."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from drconv_yolo.io import yolo_label_line

TOL = 1e-6  # labels are written with 6 decimals


def read_labels(path: Path) -> list[list[float]]:
    """The rows of a YOLO label file as ``[cls, cx, cy, w, h]`` floats."""
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines()]


def walk_files(root: Path) -> list[Path]:
    """Every file below ``root``, following links to folders (``Path.rglob`` does not)."""
    return [Path(d) / f for d, _, files in os.walk(root, followlinks=True) for f in files]


def assert_rows(rows: list[list[float]], expected: list[list[float]]) -> None:
    """Label rows equal ``expected``: the class exactly, the box to the written precision."""
    assert len(rows) == len(expected)
    for row, exp in zip(rows, expected):
        assert row[0] == exp[0]
        assert row[1:] == pytest.approx(exp[1:], abs=TOL)


# ----------------------------------------------------------------------------------------------------------------------
# A dataset the way users have them: Ultralytics layout, val as a .txt list plus a folder, polygon labels, stems that
# are not numbers, images of different sizes, one EXIF-rotated JPEG, no ground-truth JSON.
# ----------------------------------------------------------------------------------------------------------------------

USER_NAMES = ("blob", "bar", "ring")
EXIF_ORIENTATION = 274  # EXIF tag
ROTATE_90 = 6  # orientation "rotate 90 CW to display": the displayed image is the stored one transposed

TRIANGLE = [(5, 5), (25, 8), (15, 30)]
SQUARE = [(30, 20), (80, 20), (80, 70), (30, 70)]  # an image's rows are all polygons or all boxes (Ultralytics)
#: Validation images: (folder under images/, file name, displayed (width, height), rotated, objects). Objects are
#: ("box", cls, x1, y1, x2, y2) or ("poly", cls, [(x, y), ...]) in displayed pixels; a polygon is scored by its
#: enclosing box, as Ultralytics trains on it.
USER_VAL = (
    ("val", "street_a.jpg", (96, 64), False, [("box", 0, 8, 8, 40, 30), ("box", 2, 50, 20, 90, 60)]),
    ("val", "IMG-0042.png", (64, 80), False, [("poly", 1, [(10, 12), (40, 10), (44, 50), (12, 60)])]),
    ("val", "0007.jpg", (120, 90), False, [("poly", 1, SQUARE), ("poly", 0, TRIANGLE)]),
    ("val", "portrait.jpg", (48, 80), True, [("box", 2, 4, 10, 30, 70)]),
    ("more", "empty scene.png", (72, 72), False, []),
)
#: Training images (folder images/train): (file name, (width, height), objects).
USER_TRAIN = (
    ("train_1.jpg", (96, 64), [("box", 0, 10, 10, 50, 40)]),
    ("train_2.png", (64, 64), [("poly", 1, [(8, 8), (50, 12), (30, 56)]), ("box", 2, 2, 2, 20, 20)]),
)


def enclosing_box(obj: tuple) -> tuple[int, float, float, float, float]:
    """``(cls, x1, y1, x2, y2)`` of a box or the box enclosing a polygon."""
    if obj[0] == "box":
        return obj[1], *obj[2:]
    xs, ys = [p[0] for p in obj[2]], [p[1] for p in obj[2]]
    return obj[1], min(xs), min(ys), max(xs), max(ys)


def _label_row(obj: tuple, width: int, height: int) -> str:
    if obj[0] == "box":
        return yolo_label_line(*obj[1:], width, height)
    return f"{obj[1]} " + " ".join(f"{x / width:.6f} {y / height:.6f}" for x, y in obj[2])


def _write_image(path: Path, size: tuple[int, int], objects: list, rotated: bool) -> None:
    """Draw the objects as filled shapes on a grey image; ``rotated`` stores it transposed with EXIF orientation 6."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", size, (110, 110, 110))
    draw = ImageDraw.Draw(im)
    for k, obj in enumerate(objects):
        _, x1, y1, x2, y2 = enclosing_box(obj)
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=(220 - 60 * k, 40 + 80 * obj[1], 60))
    path.parent.mkdir(parents=True, exist_ok=True)
    if rotated:  # stored so that rotating it 90 degrees clockwise displays `im`
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = ROTATE_90
        im.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)
    else:
        im.save(path)


def _write_labels(path: Path, size: tuple[int, int], objects: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(_label_row(o, *size) + "\n" for o in objects))


def make_user_dataset(root: Path) -> Path:
    """Write the user-style dataset of :data:`USER_VAL` / :data:`USER_TRAIN` under ``root``; returns its data YAML.

    ``val`` is ``[val.txt, images/more]``: a list file (``./`` lines and one absolute line) plus a folder.
    """
    root = Path(root)
    for name, size, objects in USER_TRAIN:
        _write_image(root / "images/train" / name, size, objects, False)
        _write_labels(root / "labels/train" / f"{Path(name).stem}.txt", size, objects)
    lines = []
    for folder, name, size, rotated, objects in USER_VAL:
        _write_image(root / "images" / folder / name, size, objects, rotated)
        if objects:  # an image without objects has no label file, as users often leave it
            _write_labels(root / "labels" / folder / f"{Path(name).stem}.txt", size, objects)
        if folder == "val":
            lines.append(f"./images/val/{name}")
    lines[-1] = str((root / lines[-1]).resolve())  # one absolute line
    (root / "val.txt").write_text("\n".join(lines) + "\n")
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(USER_NAMES))
    yaml_path = root / "mydata.yaml"
    splits = "train: images/train\nval:\n  - val.txt\n  - images/more\n"
    yaml_path.write_text(f"path: {root.resolve()}\n{splits}names:\n{names}")
    return yaml_path


def user_gt_by_hand(root: Path) -> dict:
    """The COCO ground truth of :func:`make_user_dataset`'s val split written out by hand from :data:`USER_VAL`.

    Image ids and annotation order deliberately differ from the built one (reverse order, ids from 101).
    """
    images, annotations = [], []
    for k, (folder, name, size, _, objects) in enumerate(reversed(USER_VAL)):
        images.append({"id": 101 + k, "file_name": f"images/{folder}/{name}", "width": size[0], "height": size[1]})
        for obj in objects:
            c, x1, y1, x2, y2 = enclosing_box(obj)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": 101 + k,
                    "category_id": c + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(USER_NAMES)]
    return {"images": images, "annotations": annotations, "categories": categories}


# ----------------------------------------------------------------------------------------------------------------------
# The faults users' label files have, added to the user dataset's train and val splits
# ----------------------------------------------------------------------------------------------------------------------

FAULT_SIZE = (96, 64)
MIXED_BOX = ("box", 1, 50, 20, 90, 60)
#: Fault images: file stem -> (objects drawn, label file text or None for no label file, image bytes or None for a
#: valid image). Label text is written in the image's normalized coordinates.
FAULTS = {
    "mixed": ([("poly", 0, TRIANGLE), MIXED_BOX], "rows", None),  # one polygon row and one box row in one file
    "broken": ([("box", 0, 8, 8, 40, 30)], "rows", b"not an image"),  # unreadable image
    "empty": ([], "", None),  # empty label file: an image without objects
    "badclass": ([("box", 7, 8, 8, 40, 30)], "rows", None),  # class 7 beyond the 3 names
    "background": ([], None, None),  # no label file: a background image
}
#: Faults every supported Ultralytics skips as corrupt, with words of its reason; "mixed" is skipped by 8.4 and later
#: ("labels mix segment and detection rows") and read by 8.3 with its box row taken as a two-point polygon.
ALWAYS_SKIPPED = {"broken": "", "badclass": "exceeds dataset class count"}
MIXED_REASON = "labels mix segment and detection rows"


def add_faults(data: Path) -> Path:
    """Add :data:`FAULTS` as ``fault_<stem>.jpg`` to :func:`make_user_dataset`'s train split and to its val folder
    ``images/more``; returns the data YAML."""
    root = data.parent
    for split, folder in (("train", "train"), ("val", "more")):
        for stem, (objects, label, raw) in FAULTS.items():
            image = root / "images" / folder / f"{split}_fault_{stem}.jpg"
            _write_image(image, FAULT_SIZE, [o for o in objects if o[1] < len(USER_NAMES)], False)
            if raw is not None:
                image.write_bytes(raw)
            if label is not None:
                path = root / "labels" / folder / f"{image.stem}.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(label and "".join(_label_row(o, *FAULT_SIZE) + "\n" for o in objects))
    return data


def ultralytics_mixed_boxes_v83() -> list[tuple[int, float, float, float, float]]:
    """``(cls, x1, y1, x2, y2)`` in pixels of the "mixed" fault as Ultralytics 8.3 reads it: the polygon's enclosing
    box, and the box row ``c cx cy w h`` as the polygon through the points ``(cx, cy)`` and ``(w, h)``."""
    width, height = FAULT_SIZE
    _, c, x1, y1, x2, y2 = MIXED_BOX
    points = [((x1 + x2) / 2, (y1 + y2) / 2), (x2 - x1, y2 - y1)]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return [enclosing_box(("poly", 0, TRIANGLE)), (c, min(xs), min(ys), max(xs), max(ys))]
