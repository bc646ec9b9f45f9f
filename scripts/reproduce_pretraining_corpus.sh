#!/usr/bin/env bash
# Does more real unlabelled data, or continuing from a foundation encoder, make mmfm's pretraining beat random init?
# Arms, each probed linearly on mini's tissue task (patches2d, test split) at 1% and 10% of the labels:
#   random        random:resnet_small, initialised with each seed
#   mini          SimCLR on mini's unlabelled training patches (resnet_small), one pretraining run per seed
#   corpus        SimCLR on `mmfm data prepare pretrain-corpus` (every real CT/MR volume shipped offline; 32x32
#                 patches of its train-split slices at 1.5 mm), one run per seed
#   litemedsam    LiteMedSAM's packaged TinyViT encoder as it ships (input_size=64)
#   continued     SimCLR continued from LiteMedSAM on the corpus (encoder.weights=litemedsam:input_size=64)
# Seeds 0..2 by default: seed s pretrains, initialises and draws the labelled subset, so the spread covers all three.
# The corpus holds none of mini's validation or test slices (its card says how).
# Usage: scripts/reproduce_pretraining_corpus.sh [OUT] [STEPS]   (defaults: runs/pretraining_corpus, 300 steps)
#   env: SEEDS="0 1 2"  BATCH=64  CONTINUED_BATCH=32 (TinyViT's activations at batch 64 x 2 views overran 24 GB)
#        MAX_PER_SPLIT= (a stratified subset of at most N patches per split; default all)
#   smoke test (minutes): SEEDS=0 BATCH=8 MAX_PER_SPLIT=60 scripts/reproduce_pretraining_corpus.sh /tmp/pc 2
set -euo pipefail
OUT=${1:-runs/pretraining_corpus}
STEPS=${2:-300}
SEEDS=${SEEDS:-0 1 2}
BATCH=${BATCH:-64}
CONTINUED_BATCH=${CONTINUED_BATCH:-32}
MAX_PER_SPLIT=${MAX_PER_SPLIT:-}
MMFM=${MMFM:-.venv/bin/mmfm}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
$MMFM data prepare mini > /dev/null
$MMFM data prepare pretrain-corpus > "$OUT/corpus_card.md"
CORPUS=$($PY -c "from mmfm.data.sources.fetch import mmfm_home; print(mmfm_home() / 'data' / 'pretrain-corpus')")
READ_CORPUS=(data.dataset=folder "data.root=$CORPUS" "data.splits_file=$CORPUS/splits.json" data.presets.unknown=unit
             "data.patch=[32,32]" "data.spacing=[1.5,1.5]")
COMMON=("train.max_steps=$STEPS" "train.batch_size=$BATCH" train.progress=false)

pretrain() {   # NAME SEED OVERRIDES...: one pretraining run, timed; kept when it is already complete
  local name=$1 seed=$2 run="$OUT/pretrain/$1/seed$2"
  shift 2
  if [ -f "$run/status.json" ] && grep -q complete "$run/status.json"; then return; fi
  local start=$(date +%s)
  $MMFM pretrain configs/pretrain/simclr_2d.yaml "out=$run" "train.seed=$seed" "${COMMON[@]}" "$@" \
    > "$OUT/$name.seed$seed.log" 2>&1 || { echo "pretrain $name seed $seed failed (see $OUT/$name.seed$seed.log)"; exit 1; }
  echo "pretrained $name seed $seed: $STEPS steps in $(( $(date +%s) - start )) s on $(nproc) cores"
}

for seed in $SEEDS; do
  # method= names each arm in the results (both SimCLR arms would otherwise be resnet_small-simclr)
  pretrain mini "$seed" "method=resnet_small-simclr[mini]"
  pretrain corpus "$seed" "${READ_CORPUS[@]}" "method=resnet_small-simclr[corpus]"
done
for seed in $SEEDS; do
  pretrain continued "$seed" "${READ_CORPUS[@]}" encoder.weights=litemedsam:input_size=64 \
    "train.batch_size=$CONTINUED_BATCH" "method=litemedsam+simclr[continued on corpus]"
done

# seeded_init: the random baseline is a different network per seed (the CLI's `mmfm evaluate` keeps one)
OUT="$OUT" SEEDS="$SEEDS" MAX_PER_SPLIT="$MAX_PER_SPLIT" $PY - <<'EOF'
import os
from pathlib import Path

from mmfm.workflows.config import DataConfig
from mmfm.workflows.evaluate import evaluate_encoders

out = Path(os.environ["OUT"])
cap = os.environ["MAX_PER_SPLIT"]
evaluate_encoders(["random:resnet_small", *(str(out / "pretrain" / arm / "seed{seed}") for arm in
                                            ("mini", "corpus", "continued")), "litemedsam:input_size=64"],
                  ["linear"], DataConfig(set="patches2d", label="tissue"), [0.01, 0.1],
                  [int(s) for s in os.environ["SEEDS"].split()], out / "eval",
                  max_per_split=int(cap) if cap else None, seeded_init=True)
print((out / "eval" / "report.md").read_text())
EOF
$PY scripts/doc_tables.py collect pretraining_corpus "$OUT/eval"
