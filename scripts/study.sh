#!/usr/bin/env bash
# The issue-10 study: where DRConv pays off in YOLOv8n, on the built-in synthetic set and its control.
#
#   bash scripts/study.sh [ROOT]        (default ROOT=runs/study; about 2 h on 2 CPU cores; resumable: run it again)
#
# ROOT/datasets/{main,control}: 320 train / 400 val images at 128 px, objects x2; control: --appearance uniform
# (objects lit independently of their region). ROOT/main: 4 arms + the centre_guide remedy arm x 3 seeds;
# ROOT/control: the baseline and the two block arms x the same seeds; ROOT/remedy: the remedy arm against the block
# arm it changes (the main comparison's runs, linked: trains nothing); ROOT/contrast.md: each arm's Δ on main vs control.
#
# The recipe: 12 epochs from scratch, batch 8, AdamW lr0=0.002, warm-up 1 epoch, no mosaic, nbs=8 (an optimizer step
# every batch: Ultralytics' default nbs=64 would accumulate 8 batches per step, 60 steps in all), val=False (the
# final epoch is still validated, and compare evaluates best.pt on all 400 images).
set -euo pipefail
ROOT=${1:-runs/study}
HERE=$(cd "$(dirname "$0")/.." && pwd)
CFG=$HERE/bench_results/study/cfg
TRAIN=(warmup_epochs=1 mosaic=0 optimizer=AdamW lr0=0.002 nbs=8 val=False)
COMMON=(--seeds 0 1 2 --epochs 12 --imgsz 128 --batch 8 --device cpu)
ARMS=(yolov8n.yaml yolov8n-drconv-blocks-lite.yaml yolov8n-drconv-blocks.yaml yolov8n-drconv.yaml)

drconv-yolo prepare synthetic "$ROOT/datasets/main" --n-train 320 --n-val 400 --imgsz 128 --object-scale 2 -q
drconv-yolo prepare synthetic "$ROOT/datasets/control" --n-train 320 --n-val 400 --imgsz 128 --object-scale 2 \
    --appearance uniform -q
drconv-yolo compare --data "$ROOT/datasets/main/synthetic.yaml" --models "${ARMS[@]}" "${COMMON[@]}" \
    --out "$ROOT/main" "${TRAIN[@]}"
drconv-yolo compare --data "$ROOT/datasets/control/synthetic.yaml" --models "${ARMS[@]:0:3}" "${COMMON[@]}" \
    --out "$ROOT/control" "${TRAIN[@]}"
drconv-yolo compare --data "$ROOT/datasets/main/synthetic.yaml" --models "${ARMS[@]}" \
    "$CFG/yolov8n-drconv-blocks-centred.yaml" "${COMMON[@]}" --out "$ROOT/main" "${TRAIN[@]}"
for arm in yolov8n-drconv-blocks yolov8n-drconv-blocks-centred; do
    mkdir -p "$ROOT/remedy/runs/$arm"
    for seed in 0 1 2; do
        ln -sfn "$(cd "$ROOT/main/runs/$arm/seed$seed" && pwd)" "$ROOT/remedy/runs/$arm/seed$seed"
    done
done
drconv-yolo compare --data "$ROOT/datasets/main/synthetic.yaml" --models yolov8n-drconv-blocks.yaml \
    "$CFG/yolov8n-drconv-blocks-centred.yaml" "${COMMON[@]}" --out "$ROOT/remedy" "${TRAIN[@]}"
drconv-yolo contrast --main "$ROOT/main" --control "$ROOT/control" --out "$ROOT/contrast.md"
