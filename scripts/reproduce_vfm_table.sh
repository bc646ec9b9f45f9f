#!/usr/bin/env bash
# Reproduce the vision-foundation-model table of docs/vision_pretraining.md:
# pretrain every 2D objective on mini/patches2d (train split, labels unused), then compare linear probe and k-NN
# at 1%, 10% and 100% of the labels over 3 seeds against random initialisation, and LiteMedSAM on a subset.
# Every probe is scored on the validation split too (--record-val): the "best encoder" lines of the doc are chosen
# on validation and reported on test. A finished pretraining run (status.json) is not repeated.
# Usage: scripts/reproduce_vfm_table.sh [OUT] [STEPS]     (defaults: runs/vfm, 150 steps per objective)
set -euo pipefail
OUT=${1:-runs/vfm}
STEPS=${2:-150}
MMFM=${MMFM:-.venv/bin/mmfm}
mkdir -p "$(dirname "$OUT")"
$MMFM data prepare mini > /dev/null
RUNS=()
FAILED=()   # pretraining runs that failed: listed as FAILED under the table (scripts/doc_tables.py), not dropped
for cfg in mae_2d mae_block_2d mae_entropy_2d mae_anatomask_2d mae_superpixel_2d simmim_2d simclr_2d moco_2d \
           micle_2d pcl_2d voco_2d dae_2d mae_simclr_2d; do
  start=$(date +%s)
  if [ -f $OUT/pretrain/$cfg/status.json ]; then RUNS+=("$OUT/pretrain/$cfg"); echo "kept $cfg"; continue; fi
  $MMFM pretrain configs/pretrain/$cfg.yaml out=$OUT/pretrain/$cfg train.max_steps=$STEPS train.progress=false \
    data.set=patches2d > $OUT.$cfg.log 2>&1 || { echo "pretrain $cfg failed (see $OUT.$cfg.log)"; FAILED+=("$cfg"); continue; }
  echo "pretrained $cfg in $(( $(date +%s) - start )) s"
  RUNS+=("$OUT/pretrain/$cfg")
done
$MMFM evaluate --encoder random:vit_mini random:resnet_small "${RUNS[@]}" \
  --protocol linear knn --set patches2d --label tissue --fractions 0.01 0.1 1.0 --seeds 0 1 2 --record-val \
  --out $OUT/eval
# LiteMedSAM runs at 256x256 (its contract): about 3.6 s per image on 2 CPU cores, so it is compared on a
# stratified subset of at most 96 samples per split, together with random init and MAE on the same subset.
$MMFM evaluate --encoder litemedsam random:vit_mini $OUT/pretrain/mae_2d $OUT/pretrain/moco_2d random:resnet_small --max-per-split 96 \
  --protocol linear knn --set patches2d --label tissue --fractions 0.1 1.0 --seeds 0 1 2 --record-val \
  --out $OUT/eval_litemedsam
PY=${PY:-.venv/bin/python}
rm -f $OUT/eval/failed.jsonl
for cfg in "${FAILED[@]}"; do
  printf '{"task": "classification/linear", "dataset": "mini/patches2d", "split": "test", "method": "%s", "metric": "failed", "value": null, "seed": 0, "label_fraction": 1.0, "error": "pretraining failed (see %s)"}\n' \
    "$cfg" "$(basename $OUT.$cfg.log)" >> $OUT/eval/failed.jsonl
done
$PY scripts/doc_tables.py collect vfm $OUT/eval --splits test val
$PY scripts/doc_tables.py collect vfm_litemedsam $OUT/eval_litemedsam --splits test val
$PY scripts/doc_tables.py write
