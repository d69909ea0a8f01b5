#!/usr/bin/env bash
# The issue-10 study: where DRConv pays off in YOLOv8n, on the built-in synthetic set and its control.
#
#   bash scripts/study.sh [ROOT]        (default ROOT=runs/study; about 1.9 h of CPU, one run at a time; resumable: run it again)
#
# ROOT/datasets/{main,control}: 320 train / 400 val images at 128 px, objects x2; control: --appearance uniform (the
# same scenes and boxes, every object lit independently of its region).
# ROOT/pretrain/{main,control}: YOLOv8n trained from scratch, seed 0, 20 epochs: the common start of every arm.
# ROOT/main: every arm x 3 seeds fine-tunes 6 epochs from it (each DRConv starts as the Conv or block it replaces, so
# every arm starts from the same function); the baseline fine-tunes too. 4 arms + the centre_guide remedy arm.
# ROOT/control: the baseline and the two block arms, same protocol. ROOT/remedy: the remedy arm against the block
# arm it changes (the main comparison's runs, linked: trains nothing). ROOT/contrast.md: each arm's Δ on main vs
# control (drconv-yolo contrast). ROOT/main5, ROOT/control5: the baseline and the two block arms with seeds 3 and 4
# added (seeds 0-2 linked from ROOT/main, ROOT/control): five seeds where the arms are cheap enough;
# ROOT/contrast5.md: their contrast.
#
# Why fine-tuning: from scratch, 12 epochs of this recipe gave a baseline seed spread of several mAP50-95 points
# (45.9 and 39.4 for seeds 0 and 1), far above the 0.5 the study needs; from a common start the spread comes from
# the data order and the augmentation only. With the augmentation on it was still 0.87 (3 seeds) / 0.63 (5 seeds),
# so the fine-tuning runs without it (hsv, translate, scale and flip off; mosaic is off throughout): the seed then
# changes the data order and DRConv's new weights only. nbs=8: an optimizer step every batch (Ultralytics' default
# nbs=64 would accumulate 8 batches per step). val=False: only the final epoch is validated (compare evaluates
# best.pt on all 400 validation images anyway).
set -euo pipefail
ROOT=${1:-runs/study}
HERE=$(cd "$(dirname "$0")/.." && pwd)
CFG=$HERE/bench_results/study/cfg
COMMON=(--seeds 0 1 2 --epochs 6 --imgsz 128 --batch 8 --device cpu)
FINETUNE=(warmup_epochs=0 mosaic=0 optimizer=AdamW lr0=0.0005 nbs=8 val=False
          hsv_h=0 hsv_s=0 hsv_v=0 translate=0 scale=0 fliplr=0)
ARMS=(yolov8n.yaml yolov8n-drconv-blocks-lite.yaml yolov8n-drconv-blocks.yaml yolov8n-drconv.yaml)
REMEDY=$CFG/yolov8n-drconv-blocks-centred.yaml

drconv-yolo prepare synthetic "$ROOT/datasets/main" --n-train 320 --n-val 400 --imgsz 128 --object-scale 2 -q
drconv-yolo prepare synthetic "$ROOT/datasets/control" --n-train 320 --n-val 400 --imgsz 128 --object-scale 2 \
    --appearance uniform -q
for set in main control; do
    [ -f "$ROOT/pretrain/$set/weights/last.pt" ] && continue
    rm -rf "$ROOT/pretrain/$set"
    drconv-yolo train model=yolov8n.yaml data="$ROOT/datasets/$set/synthetic.yaml" epochs=20 imgsz=128 batch=8 \
        device=cpu workers=0 seed=0 deterministic=True warmup_epochs=1 mosaic=0 optimizer=AdamW lr0=0.002 nbs=8 \
        val=False plots=False project="$(mkdir -p "$ROOT/pretrain" && cd "$ROOT/pretrain" && pwd)" name=$set
done
start() { echo "pretrained=$(cd "$ROOT/pretrain/$1/weights" && pwd)/last.pt"; }
# link_runs SRC DST CONFIG...: seeds 0-2 of each config's finished runs in ROOT/SRC, linked into ROOT/DST (compare
# reuses them there: nothing is trained twice)
link_runs() {
    local src=$1 dst=$2 cfg arm seed
    shift 2
    for cfg in "$@"; do
        arm=$(basename "$cfg" .yaml)
        mkdir -p "$ROOT/$dst/runs/$arm"
        for seed in 0 1 2; do
            ln -sfn "$(cd "$ROOT/$src/runs/$arm/seed$seed" && pwd)" "$ROOT/$dst/runs/$arm/seed$seed"
        done
    done
}
drconv-yolo compare --data "$ROOT/datasets/main/synthetic.yaml" --models "${ARMS[@]}" "$REMEDY" "${COMMON[@]}" \
    --out "$ROOT/main" "${FINETUNE[@]}" "$(start main)"
drconv-yolo compare --data "$ROOT/datasets/control/synthetic.yaml" --models "${ARMS[@]:0:3}" "${COMMON[@]}" \
    --out "$ROOT/control" "${FINETUNE[@]}" "$(start control)"
link_runs main remedy yolov8n-drconv-blocks.yaml "$REMEDY"
drconv-yolo compare --data "$ROOT/datasets/main/synthetic.yaml" --models yolov8n-drconv-blocks.yaml "$REMEDY" \
    "${COMMON[@]}" --out "$ROOT/remedy" "${FINETUNE[@]}" "$(start main)"
drconv-yolo contrast --main "$ROOT/main" --control "$ROOT/control" --out "$ROOT/contrast.md"
for set in main control; do
    link_runs "$set" "${set}5" "${ARMS[@]:0:3}"
    drconv-yolo compare --data "$ROOT/datasets/$set/synthetic.yaml" --models "${ARMS[@]:0:3}" --seeds 0 1 2 3 4 \
        "${COMMON[@]:4}" --out "$ROOT/${set}5" "${FINETUNE[@]}" "$(start $set)"
done
drconv-yolo contrast --main "$ROOT/main5" --control "$ROOT/control5" --out "$ROOT/contrast5.md"
