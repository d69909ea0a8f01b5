"""What compare's pre-flight costs on a VisDrone-sized dataset: prints a table, writes JSON.

Builds (once, in --root) a dataset the size of VisDrone2019-DET (6471 train and 548 val JPEGs of 1360x765 with 54
boxes each, in Ultralytics' layout), then times the parts of the pre-flight on it: Ultralytics' label check of the
train split, the ground truth of the val split (built, then reused), and every arm built and stepped at the given
image size and batch on the CPU. Run: ``python scripts/preflight_cost.py`` (about 5 minutes on 2 cores the first
time, most of it writing the images).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

SIZE = (1360, 765)  # VisDrone2019-DET's most common image size
COUNTS = {"train": 6471, "val": 548}
BOXES = 54  # VisDrone train: about 343k boxes over 6471 images
ARMS = ["yolov8n.yaml", "yolov8n-drconv.yaml", "yolov8n-drconv-blocks.yaml", "yolov8n-drconv-blocks-lite.yaml"]


def make_dataset(root: Path) -> Path:
    """Write the dataset (reused when its YAML is there); returns the YAML."""
    from PIL import Image

    yaml = root / "visdrone-sized.yaml"
    if yaml.is_file():
        return yaml
    rng = random.Random(0)
    base = Image.effect_noise(SIZE, 40).convert("RGB")
    for split, n in COUNTS.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            base.save(root / "images" / split / f"{i:07d}.jpg", quality=90)
            rows = [
                f"{rng.randrange(10)} {rng.uniform(0.1, 0.9):.6f} {rng.uniform(0.1, 0.9):.6f} "
                f"{rng.uniform(0.01, 0.1):.6f} {rng.uniform(0.01, 0.1):.6f}"
                for _ in range(BOXES)
            ]
            (root / "labels" / split / f"{i:07d}.txt").write_text("\n".join(rows) + "\n")
        print(f"wrote {n} {split} images", flush=True)
    names = "".join(f"  {i}: c{i}\n" for i in range(10))
    yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return yaml


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="datasets/visdrone-sized", help="where the dataset is written (reused)")
    p.add_argument("--imgsz", type=int, default=640, help="the runs' image size for the arm steps")
    p.add_argument("--batch", type=int, default=16, help="the runs' batch size for the arm steps")
    p.add_argument("--arms", nargs="+", default=ARMS, help="model YAMLs stepped")
    p.add_argument("--out", default="bench_results/preflight_cost.json", help="JSON output")
    a = p.parse_args(argv)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp())
    from drconv_yolo.plugin import register

    register()
    from drconv_yolo.data.yolo import load_split, resolve_ground_truth, scored_split
    from drconv_yolo.experiment.preflight import check_arms
    from drconv_yolo.io import atomic_write_json
    from drconv_yolo.measure import environment

    yaml = make_dataset(Path(a.root).resolve())
    rows = []

    def timed(what: str, fn):
        t0 = time.perf_counter()
        fn()
        rows.append({"check": what, "seconds": time.perf_counter() - t0})
        print(f"{what}: {rows[-1]['seconds']:.1f} s", flush=True)

    timed(
        f"train split, Ultralytics' label check ({COUNTS['train']} images)",
        lambda: scored_split(load_split(yaml, "train")),
    )
    cache = Path(tempfile.mkdtemp())
    timed(
        f"val ground truth, built ({COUNTS['val']} images)", lambda: resolve_ground_truth(yaml, "val", cache_dir=cache)
    )
    timed("val ground truth, reused", lambda: resolve_ground_truth(yaml, "val", cache_dir=cache))
    job = {"nc": 10, "imgsz": a.imgsz, "batch": a.batch, "device": "cpu", "amp": True}
    for arm in a.arms:
        timed(
            f"arm {Path(arm).stem} built and stepped (batch {a.batch}, {a.imgsz} px, CPU)",
            lambda arm=arm: check_arms({**job, "arms": {Path(arm).stem: arm}}),
        )
    total = sum(r["seconds"] for r in rows if "reused" not in r["check"])
    print("\n| pre-flight check | seconds |\n|---|---|")
    for r in rows:
        print(f"| {r['check']} | {r['seconds']:.1f} |")
    print(f"| total (ground truth built once) | {total:.1f} |")
    atomic_write_json(a.out, {"environment": environment("cpu"), "settings": vars(a), "rows": rows, "total_s": total})
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
