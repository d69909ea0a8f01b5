#!/usr/bin/env bash
# The GPU checks of issue 11 as one prepared run, for a machine with a GPU and no network (a lent device machine
# has torch, pytest and OpenCV, but not Ultralytics or pycocotools).
#
#   bash scripts/gpu_check.sh fetch   # here, with PyPI: the wheels that machine lacks -> .whl/ (git-ignored)
#   bash scripts/gpu_check.sh run     # there, in the repo root, with .whl carried: the steps below -> $OUT
#
# Steps of `run`, each logged to $OUT/<step>.log; a failing step is reported and the next ones still run:
#   tests   every test that takes the device fixture or needs CUDA (the op's paths on the GPU against the reference
#           in float64, output and every gradient, and under autocast)
#   layer   drconv-yolo bench --device $DEVICE                       -> $OUT/drconv_layer_<device>.json
#   model   drconv-yolo bench --model --device $DEVICE --variant drconv drconv-blocks-lite
#                                                                     -> $OUT/drconv_model_<device>.json
# DEVICE (default cuda) picks the device and QUICK=1 passes --quick to the benchmarks: `DEVICE=cpu QUICK=1 bash
# scripts/gpu_check.sh run` rehearses the run here. OUT defaults to ./gpu_check_out, WHEELS to .whl, PYTHON to
# python3. Wheels are installed (to /tmp/drconv-site) only where Ultralytics or pycocotools is missing. Exit code: the
# number of failed steps (0: all passed), 1 if the wheels cannot be installed.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.whl}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-gpu_check_out}
PY=${PYTHON:-python3}

fetch() {
    local ultralytics
    ultralytics=$("$PY" -c 'import ultralytics; print(ultralytics.__version__)') || return 1
    # cp312 manylinux wheels, the device image's Python; --no-deps: the image has the rest (torch, numpy, OpenCV...)
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$WHEELS" "ultralytics==$ultralytics" ultralytics-thop ultralytics-platform pycocotools || return 1
    ls -l "$WHEELS"
}

step() {  # step NAME COMMAND...: run it, log to $OUT/NAME.log, count a failure
    local name=$1
    shift
    echo "== $name: $*"
    if "$@" >"$OUT/$name.log" 2>&1; then
        echo "== $name: passed"
    else
        echo "== $name: FAILED (exit $?); last lines of $OUT/$name.log:"
        tail -n 30 "$OUT/$name.log"
        failed=$((failed + 1))
    fi
}

bench() {  # the drconv-yolo command without installing the package (nothing can be installed there but wheels)
    "$PY" -m drconv_yolo.cli bench "$@"
}

run() {
    mkdir -p "$OUT"
    export YOLO_AUTOINSTALL=false YOLO_OFFLINE=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
    YOLO_CONFIG_DIR=$(mktemp -d)
    export YOLO_CONFIG_DIR
    if ! "$PY" -c 'import ultralytics, pycocotools' 2>/dev/null && compgen -G "$WHEELS/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/drconv-site \
            "$WHEELS"/*.whl || { echo "== wheels: installing $WHEELS/*.whl FAILED" >&2; return 1; }
        export PYTHONPATH="/tmp/drconv-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    else
        export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    fi
    "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' | tee "$OUT/environment.txt"
    local quick=() tests=(-m "not slow") dev=${DEVICE%%:*}
    [[ -n "${QUICK:-}" ]] && quick=(--quick)
    [[ $dev == cuda ]] && tests=(-k "cuda or CUDA")
    failed=0
    step tests "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_ops.py tests/test_ops_grouped.py \
        tests/test_ops_mix.py tests/test_segment_mm.py tests/test_plugin.py "${tests[@]}"
    step layer bench --device "$DEVICE" "${quick[@]}" --out "$OUT/drconv_layer_$dev.json"
    step model bench --model --device "$DEVICE" --variant drconv drconv-blocks-lite "${quick[@]}" \
        --out "$OUT/drconv_model_$dev.json"
    echo "== $failed step(s) failed; logs and JSON in $OUT"
    return "$failed"
}

case "${1:-}" in
fetch) fetch ;;
run) run ;;
*)
    echo "usage: bash scripts/gpu_check.sh fetch|run   (see the comment at the top of this file)" >&2
    exit 2
    ;;
esac
