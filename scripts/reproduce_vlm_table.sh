#!/usr/bin/env bash
# Reproduce the image-text table of docs/vision_language.md: CLIP (eq. 6), CLIP with identical captions as
# positives, MedCLIP soft targets (tissue labels) and GLoRIA (global + local) on mini/patches2d and its
# generated captions, each pretrained for STEPS steps with seeds 0, 1, 2, then zero-shot classification
# (prompt templates that differ from the captions) and image<->text retrieval on the test split.
# Usage: scripts/reproduce_vlm_table.sh [OUT] [STEPS]     (defaults: runs/vlm, 150 steps)
#        VARIANTS="clip clip_dup medclip gloria" (default) chooses the rows; a run whose retrieval is complete
#        in OUT is kept, so a second call (other VARIANTS, or after an interruption) adds to the same table.
set -euo pipefail
OUT=${1:-runs/vlm}
STEPS=${2:-150}
MMFM=${MMFM:-.venv/bin/mmfm}
PY=${PY:-.venv/bin/python}
$MMFM data prepare mini > /dev/null
mkdir -p $OUT
VARIANTS=${VARIANTS:-clip clip_dup medclip gloria}
for seed in 0 1 2; do
  for variant in $VARIANTS; do
    run=$OUT/${variant}_s$seed
    if grep -qs complete $run/retrieve/status.json; then echo "$variant seed $seed: kept"; continue; fi
    case $variant in
      clip_dup) cfg=clip_2d; extra="objective.duplicates=positive method=resnet_small-clip[duplicates+]";;
      *) cfg=${variant}_2d; extra="";;
    esac
    start=$(date +%s)
    $MMFM pretrain configs/pretrain/$cfg.yaml out=$run/pretrain train.max_steps=$STEPS train.seed=$seed \
      train.progress=false $extra > $run.log 2>&1 || { echo "pretrain $variant seed $seed failed (see $run.log)"; continue; }
    $MMFM zeroshot --model $run/pretrain --out $run/zeroshot >> $run.log 2>&1
    $MMFM retrieve --model $run/pretrain --out $run/retrieve >> $run.log 2>&1
    echo "$variant seed $seed: $(( $(date +%s) - start )) s"
  done
done
$PY scripts/doc_tables.py collect vlm $OUT
$PY scripts/doc_tables.py write vlm      # only this table
