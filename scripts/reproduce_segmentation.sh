#!/usr/bin/env bash
# Liver/tumour segmentation on mini's LiTS slices (docs/downstream.md), 3 seeds each, test slab only:
#  1. why the quickstart's Dice was weak: BasicUNet trained on the train slab (the old quickstart) vs on the train
#     and val slabs with augmentation (the quickstart now);
#  2. a pretrained encoder vs the same encoder from scratch at 10% and 100% of the labelled slices: vit_mini
#     (patch 4, UNETR decoder) pretrained by MAE on mini's unlabelled 32x32 training patches (CT and MRI; the run
#     scripts/reproduce_vfm_table.sh and the detection table use, pretrained here if missing) vs random.
# About an hour on 2 CPU cores with the defaults; a run whose results exist is not repeated. Usage:
#   [STEPS=300 ENC_STEPS=200 SEEDS="0 1 2"] scripts/reproduce_segmentation.sh [VFM_RUNS] [OUT]  (defaults: runs/vfm, runs/segmentation)
set -euo pipefail
VFM=${1:-runs/vfm}
OUT=${2:-runs/segmentation}
MMFM=${MMFM:-.venv/bin/mmfm}
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-300}
SEEDS=${SEEDS:-0 1 2}
Q="$MMFM train configs/quickstart_segmentation.yaml train.progress=false train.max_steps=$STEPS"
ENC_STEPS=${ENC_STEPS:-200}
# the ViT at the resolution it was pretrained at (32x32; 64 tokens): 64x64 is 4x the tokens and, on 2 CPU
# cores, ~3.4 s per step (3 hours for the 12 runs)
S="$MMFM train configs/segmentation_lits.yaml train.progress=false train.max_steps=$ENC_STEPS data.train_split=train+val \
   data.size=[32,32]"
once() {   # skip a run whose results are already there (the script resumes where it stopped)
  local out=$1; shift
  [ -f "$out/results.json" ] && [ -f "$out/status.json" ] || "$@" out="$out"
}
[ -f "$VFM/pretrain/mae_2d/encoder/encoder.json" ] || \
  $MMFM pretrain configs/pretrain/mae_2d.yaml out="$VFM/pretrain/mae_2d" train.progress=false
for seed in $SEEDS; do
  once "$OUT/quickstart-before-s$seed" $Q train.seed=$seed data.train_split=train "data.augment=[]" \
    method=basicunet-train_slab
  once "$OUT/quickstart-now-s$seed" $Q train.seed=$seed method=basicunet-train+val_slabs+augment
  for frac in 0.1 1.0; do
    once "$OUT/mae-f$frac-s$seed" $S train.seed=$seed data.label_fraction=$frac \
      encoder.weights="$VFM/pretrain/mae_2d" method=vit_mini-mae
    once "$OUT/random-f$frac-s$seed" $S train.seed=$seed data.label_fraction=$frac method=vit_mini-random
  done
done
$PY scripts/doc_tables.py collect segmentation "$OUT"
$PY scripts/doc_tables.py write
