"""How much sooner ``compare --backend ray`` finishes than ``--backend local`` on this machine: prints a table, writes
JSON.

Runs the same small comparison (by default 2 arms x 2 seeds at the study's sizes: 320 train / 400 val synthetic
images at 128 px, 6 epochs, batch 8, from scratch, on the CPU) as a fresh ``drconv-yolo compare`` process per try,
each into a fresh output folder: ``--backend local --device cpu`` (one run after another) and ``--backend ray
--cpus-per-run 1`` (Ray started on this machine: one run per core at once), in the order local, ray, ray, local, ...
so drift on a shared machine falls on both. Wall time is the whole command (pre-flight, Ray's start and stop,
report). Then checks every run's accuracy figures and per-epoch losses are the same under both backends (training is
deterministic on the CPU with the same seed and one thread per run).

Run: ``python scripts/backend_speedup.py`` (about 20 minutes on 2 cores with the defaults; needs the ``ray`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARMS = ["yolov8n.yaml", "yolov8n-drconv-blocks-lite.yaml"]
SAME = ("mAP50", "mAP50-95", "AP", "AP50", "AP75", "APs", "APm", "APl", "AR", "params", "GFLOPs")  # must match
LOSSES = ("train/box_loss", "train/cls_loss", "train/dfl_loss", "val/box_loss", "val/cls_loss", "val/dfl_loss")
BACKENDS = {
    "local": ["--backend", "local", "--device", "cpu"],
    "ray": ["--backend", "ray", "--cpus-per-run", "1", "--gpus-per-run", "0"],
}


def compare_argv(a: argparse.Namespace, data: Path, out: Path, backend: str) -> list[str]:
    """The ``drconv-yolo compare`` command of one try."""
    return [
        *(sys.executable, "-m", "drconv_yolo.cli", "compare", "--data", str(data), "--models", *a.models),
        *("--seeds", *map(str, a.seeds), "--epochs", str(a.epochs), "--imgsz", str(a.imgsz)),
        *("--batch", str(a.batch), "--workers", "0", "--deploy-runtime", "none"),
        *("--latency-runs", "5", "--latency-warmup", "1", "--out", str(out), *BACKENDS[backend]),
    ]


def run_try(a: argparse.Namespace, data: Path, out: Path, backend: str) -> dict:
    """One comparison as its own process: its wall time and each run's figures."""
    t0 = time.perf_counter()
    done = subprocess.run(compare_argv(a, data, out, backend), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{backend} comparison failed (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    runs = {}
    for path in sorted((out / "runs").glob("*/seed*/run.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        runs[f"{path.parent.parent.name}/{path.parent.name}"] = {
            "metrics": {k: record["metrics"].get(k) for k in SAME},
            "losses": [[row.get(k) for k in LOSSES] for row in record["per_epoch"]],
            "placement": {k: record["placement"].get(k) for k in ("backend", "node", "cpus", "started", "finished")},
            "torch_threads": record.get("torch_threads"),
            "wall_s": record["metrics"]["wall_s"],
        }
    print(f"{backend}: {wall:.1f} s for {len(runs)} runs", flush=True)
    return {"backend": backend, "wall_s": wall, "runs": runs}


def differences(tries: list[dict]) -> list[str]:
    """Every run figure that differs between any two tries (empty: identical)."""
    first, diffs = tries[0], []
    for t in tries[1:]:
        if set(t["runs"]) != set(first["runs"]):
            diffs.append(f"{t['backend']}: runs {sorted(t['runs'])} != {sorted(first['runs'])}")
            continue
        for name, run in t["runs"].items():
            for what in ("metrics", "losses"):
                if run[what] != first["runs"][name][what]:
                    diffs.append(f"{name} {what}: {t['backend']} {run[what]} != {first['backend']} "
                                 f"{first['runs'][name][what]}")  # fmt: skip
    return diffs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=ARMS, help="the comparison's arms")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="the comparison's seeds")
    p.add_argument("--epochs", type=int, default=6, help="epochs per run")
    p.add_argument("--imgsz", type=int, default=128, help="image size")
    p.add_argument("--batch", type=int, default=8, help="batch size")
    p.add_argument("--n-train", type=int, default=320, help="synthetic train images")
    p.add_argument("--n-val", type=int, default=400, help="synthetic val images")
    p.add_argument("--pairs", type=int, default=2, help="tries per backend (order: local, ray, ray, local, ...)")
    p.add_argument("--out", default="bench_results/backend_speedup.json", help="JSON output")
    a = p.parse_args(argv)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp())
    from drconv_yolo.data.synthetic import generate
    from drconv_yolo.io import atomic_write_json
    from drconv_yolo.measure import environment

    order = [b for i in range(a.pairs) for b in (("local", "ray") if i % 2 == 0 else ("ray", "local"))]
    with tempfile.TemporaryDirectory(prefix="backend-speedup-") as tmp:  # the data and every try's runs
        work = Path(tmp)
        data = generate(work / "data", n_train=a.n_train, n_val=a.n_val, imgsz=a.imgsz, seed=0, verbose=False)
        tries = [run_try(a, data, work / f"out{i}-{b}", b) for i, b in enumerate(order)]
    wall = {b: [t["wall_s"] for t in tries if t["backend"] == b] for b in BACKENDS}
    ratios = [r / loc for loc, r in zip(wall["local"], wall["ray"])]
    diffs = differences(tries)
    print("\n| backend | wall time per try (s) | median (s) |\n|---|---|---|")
    for b, ws in wall.items():
        print(f"| {b} | {', '.join(f'{w:.1f}' for w in ws)} | {statistics.median(ws):.1f} |")
    print(f"\nray / local wall time: median {statistics.median(ratios):.3f} (tries: "
          f"{', '.join(f'{r:.3f}' for r in ratios)}; target <= 0.6)")  # fmt: skip
    mAPs = [run["metrics"]["mAP50-95"] for run in tries[0]["runs"].values()]
    print(f"per-run metrics and per-epoch losses identical across all {len(tries)} tries: {not diffs}"
          f" (mAP50-95 of the runs: {', '.join(f'{m:.4f}' for m in mAPs)})")  # fmt: skip
    for d in diffs:
        print("  differs:", d)
    atomic_write_json(
        a.out,
        {
            "environment": environment("cpu"),
            "settings": vars(a),
            "command": compare_argv(a, Path("DATA.yaml"), Path("OUT"), "local")[2 : -len(BACKENDS["local"])],
            "wall_s": wall,
            "ratio_ray_over_local": ratios,
            "ratio_median": statistics.median(ratios),
            "identical_metrics": not diffs,
            "differences": diffs,
            "tries": tries,
        },
    )
    print(f"wrote {a.out}")
    return 0 if not diffs else 1


if __name__ == "__main__":
    sys.exit(main())
