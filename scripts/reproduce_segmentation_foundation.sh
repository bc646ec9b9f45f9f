#!/usr/bin/env bash
# A shipped foundation encoder as the starting point of 2D segmentation (docs/downstream.md, issue "Foundation
# models that earn their name", item 3): LiteMedSAM's TinyViT image encoder (pretrained on ~1.5 M medical
# image-mask pairs) under the UNETR decoder (its pyramid: stem, stage 1, neck), on mini's LiTS slices at 64 x 64
# (input_size=64: the same weights on a 16 x 16 token grid), liver and tumour, test slab only:
#   litemedsam-full    every weight trains (configs/segmentation_lits_litemedsam.yaml)
#   litemedsam-frozen  the encoder frozen, the decoder trains (task.freeze_encoder=true)
#   litemedsam-lora    LoRA (rank 8) on the encoder's linear layers, the decoder trains (train.peft=lora)
#   litemedsam-random  the same architecture from random initialisation, every weight trains (scratch)
# at 10% and 100% of the labelled slices, seeds 0-2 (seed = label subset, decoder init and batches), the same
# steps, batch, learning rate and augmentation for every arm. Runs are ordered by what the comparison needs first
# and a run whose results exist is kept, so the script resumes. Usage:
#   [STEPS=60 SEEDS="0 1 2" FRACS="0.1 1.0" ARMS="full random frozen lora"] scripts/reproduce_segmentation_foundation.sh [OUT]
set -euo pipefail
OUT=${1:-runs/segmentation_foundation}
MMFM=${MMFM:-.venv/bin/mmfm}
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-60}
SEEDS=${SEEDS:-0 1 2}
FRACS=${FRACS:-0.1 1.0}
ARMS=${ARMS:-full random frozen lora}
S="$MMFM train configs/segmentation_lits_litemedsam.yaml train.progress=false train.max_steps=$STEPS"
once() {   # skip a run whose results are already there
  local out=$1; shift
  [ -f "$out/results.json" ] && [ -f "$out/status.json" ] || "$@" out="$out" > "$out.log" 2>&1 || echo "failed: $out (see $out.log)"
}
mkdir -p "$OUT"
for frac in $FRACS; do
  for seed in $SEEDS; do
    for arm in $ARMS; do
      run="$OUT/litemedsam-$arm-f$frac-s$seed"
      case $arm in
        full)   once "$run" $S train.seed=$seed data.label_fraction=$frac method=litemedsam-full;;
        frozen) once "$run" $S task.freeze_encoder=true train.seed=$seed data.label_fraction=$frac method=litemedsam-frozen;;
        lora)   once "$run" $S train.peft=lora train.seed=$seed data.label_fraction=$frac method=litemedsam-lora;;
        random) once "$run" $S encoder.pretrained=false train.seed=$seed data.label_fraction=$frac method=litemedsam-random;;
        *) echo "unknown arm $arm (full, random, frozen, lora)"; exit 2;;
      esac
    done
  done
done
$PY scripts/doc_tables.py collect segmentation_foundation "$OUT"
$PY scripts/doc_tables.py write
