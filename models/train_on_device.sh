#!/usr/bin/env bash
# Fine-tune the committed model on a GPU machine that takes the repository and little else (the device tool:
# no package index, 64 MiB carried, minutes of time).  Made here beforehand:
#   .whl/ultralytics-8.4.190-py3-none-any.whl   (pip download --no-deps; torch, torchvision, onnx, opencv,
#                                                 matplotlib are there; polars is not: models.train copes)
#   .gpu/data.tar                                (python -m models.pack OUT/data .gpu/data.tar --max-bytes N)
# Run from the repository root:  HOURS=0.11 bash models/train_on_device.sh
# Writes last.pt, best.pt, results.csv, args.yaml, train_command.txt and train.log to $OUT (copied there every
# 45 s while training, so a run cut short still returns its last checkpoint).  Then, here:
#   python -m models.train --out OUT --weights best.pt --steps export,quantize,evaluate   (test split made here)
set -euo pipefail
PY=${PY:-python3}
HOURS=${HOURS:-0.11}
WORKERS=${WORKERS:-14}
DEVICE=${DEVICE:-0}
W=${WORK:-/tmp/walkout-train}
OUT=${OUT:?OUT must name the folder that comes back}

"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$W/site" .whl/*.whl
export PYTHONPATH="$W/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 YOLO_OFFLINE=1
mkdir -p "$W"
tar -xf .gpu/data.tar -C "$W"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
nproc

collect() {  # checkpoints without the optimizer's state (a mid-run last.pt holds it: over 16 MB)
    for f in last best; do
        if [ -f "$W/train/weights/$f.pt" ]; then
            "$PY" -c "import sys; from ultralytics.utils.torch_utils import strip_optimizer as s; s(sys.argv[1], sys.argv[2])" \
                "$W/train/weights/$f.pt" "$OUT/.$f.tmp" >/dev/null 2>&1 && mv "$OUT/.$f.tmp" "$OUT/$f.pt" || true
        fi
    done
    for f in train/results.csv train/args.yaml train_command.txt; do
        if [ -f "$W/$f" ]; then cp "$W/$f" "$OUT/.tmp" && mv "$OUT/.tmp" "$OUT/$(basename "$f")" || true; fi
    done
}
( while sleep 45; do collect; done ) &
COPIER=$!
trap 'kill $COPIER 2>/dev/null || true; collect' EXIT

status=0
"$PY" -m models.train --out "$W" --steps train --init-onnx models/person_pose.onnx --imgsz 320 --batch 64 \
    --workers "$WORKERS" --device "$DEVICE" --epochs 100 --time-hours "$HOURS" --warmup-epochs 1 \
    --close-mosaic 10 --save-period -1 "$@" 2>&1 | tr '\r' '\n' | grep --line-buffered -v '^ *$' \
    > "$OUT/train.log" || status=$?
grep -v 'it/s]$\|s/it]$' "$OUT/train.log" | tail -n 60
exit $status
