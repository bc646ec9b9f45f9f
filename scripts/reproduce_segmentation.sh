#!/usr/bin/env bash
# Liver/tumour segmentation on mini's LiTS slices (docs/downstream.md), 3 seeds each, test slab only:
#  1. why the quickstart's Dice was weak: BasicUNet trained on the train slab (the old quickstart) vs on the train
#     and val slabs with augmentation (the quickstart now);
#  2. a pretrained encoder vs the same encoder from scratch at 10% and 100% of the labelled slices: vit_mini
#     (patch 4, UNETR decoder) pretrained by MAE on mini's unlabelled 32x32 training patches (CT and MRI; the run
#     scripts/reproduce_vfm_table.sh and the detection table use, pretrained here if missing) vs random.
# About 45 minutes on 2 CPU cores with the defaults. Usage:
#   [STEPS=300 SEEDS="0 1 2"] scripts/reproduce_segmentation.sh [VFM_RUNS] [OUT]  (defaults: runs/vfm, runs/segmentation)
set -euo pipefail
VFM=${1:-runs/vfm}
OUT=${2:-runs/segmentation}
MMFM=${MMFM:-.venv/bin/mmfm}
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-300}
SEEDS=${SEEDS:-0 1 2}
Q="$MMFM train configs/quickstart_segmentation.yaml train.progress=false train.max_steps=$STEPS"
S="$MMFM train configs/segmentation_lits.yaml train.progress=false train.max_steps=$STEPS data.train_split=train+val"
[ -f "$VFM/pretrain/mae_2d/encoder/encoder.json" ] || \
  $MMFM pretrain configs/pretrain/mae_2d.yaml out="$VFM/pretrain/mae_2d" train.progress=false
for seed in $SEEDS; do
  $Q out="$OUT/quickstart-before-s$seed" train.seed=$seed data.train_split=train "data.augment=[]" \
    method=basicunet-train_slab
  $Q out="$OUT/quickstart-now-s$seed" train.seed=$seed method=basicunet-train+val_slabs+augment
  for frac in 0.1 1.0; do
    $S out="$OUT/mae-f$frac-s$seed" train.seed=$seed data.label_fraction=$frac \
      encoder.weights="$VFM/pretrain/mae_2d" method=vit_mini-mae
    $S out="$OUT/random-f$frac-s$seed" train.seed=$seed data.label_fraction=$frac method=vit_mini-random
  done
done
$PY scripts/doc_tables.py collect segmentation "$OUT"
$PY scripts/doc_tables.py write
