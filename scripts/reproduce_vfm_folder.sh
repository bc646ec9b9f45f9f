#!/usr/bin/env bash
# The label-efficiency table of docs/vision_pretraining.md through the user-data path: mini/patches2d exported as a
# plain folder (one NIfTI per patch, labels.csv, splits.json with mini's own splits) and evaluated with
# `mmfm evaluate --dataset folder`, with the encoders that scripts/reproduce_vfm_table.sh pretrained.
# Usage: scripts/reproduce_vfm_folder.sh [VFM_RUNS] [OUT]     (defaults: runs/vfm, runs/vfm_folder)
set -euo pipefail
VFM=${1:-runs/vfm}
OUT=${2:-runs/vfm_folder}
MMFM=${MMFM:-.venv/bin/mmfm}
PY=${PY:-.venv/bin/python}
[ -d "$OUT/data" ] || $PY scripts/export_mini_folder.py "$OUT/data"
$MMFM evaluate --encoder random:vit_mini random:resnet_small $VFM/pretrain/mae_2d $VFM/pretrain/simclr_2d \
  $VFM/pretrain/moco_2d --protocol linear knn --dataset folder --data-root "$OUT/data" --label label \
  --fractions 0.01 0.1 1.0 --seeds 0 1 2 --out "$OUT/eval" data.size=[32,32] \
  data.splits_file="$OUT/data/splits.json" "data.presets={unknown: unit}"
$PY scripts/doc_tables.py collect vfm_folder "$OUT/eval"
$PY scripts/doc_tables.py write
