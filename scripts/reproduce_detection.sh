#!/usr/bin/env bash
# Tumour detection on mini's LiTS slices (docs/downstream.md): RetinaNet on a ViT pretrained by MAE
# (scripts/reproduce_vfm_table.sh's run, pretrained here if missing) against the same ViT randomly initialised,
# 3 seeds each, mAP@0.1/0.5 and FROC on the test slab. About an hour on 2 CPU cores with the defaults
# (STEPS=200 BATCH=8); the table in docs/downstream.md says which were used.
# Usage: [STEPS=N BATCH=B] scripts/reproduce_detection.sh [VFM_RUNS] [OUT]     (defaults: runs/vfm, runs/detection)
set -euo pipefail
VFM=${1:-runs/vfm}
OUT=${2:-runs/detection}
MMFM=${MMFM:-.venv/bin/mmfm}
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-200}
BATCH=${BATCH:-8}
[ -f "$VFM/pretrain/mae_2d/encoder/encoder.json" ] || \
  $MMFM pretrain configs/pretrain/mae_2d.yaml out="$VFM/pretrain/mae_2d"
for seed in 0 1 2; do
  $MMFM train configs/detection_2d.yaml out="$OUT/mae-s$seed" encoder.weights="$VFM/pretrain/mae_2d" \
    method=vit_mini-mae train.seed=$seed train.max_steps=$STEPS train.batch_size=$BATCH data.size=[64,64] data.eval_splits=[test] \
    train.progress=false
  $MMFM train configs/detection_2d.yaml out="$OUT/random-s$seed" encoder.name=vit_mini encoder.patch_size=4 \
    method=vit_mini-random train.seed=$seed train.max_steps=$STEPS train.batch_size=$BATCH data.size=[64,64] data.eval_splits=[test] \
    train.progress=false
done
$PY scripts/doc_tables.py collect detection "$OUT"
$PY scripts/doc_tables.py write
