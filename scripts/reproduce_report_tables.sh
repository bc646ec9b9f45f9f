#!/usr/bin/env bash
# Reproduce the report-side, report-generation and VQA numbers of docs/vision_language.md:
# 1. Radiology section matching on the IU X-ray reports (val/test): MiniLM off the shelf vs MiniLM after
#    report-side pretraining (RSM + sentence shuffling, configs/pretrain/rsm_minilm.yaml; about 12 min on 2 cores).
# 2. The rule-based labeller against the IU MeSH terms.
# 3. Report generation and VQA on mini slices (generated captions / questions), seeds 0, 1, 2.
# Usage: scripts/reproduce_report_tables.sh [OUT]     (default: runs/reports)
set -euo pipefail
OUT=${1:-runs/reports}
MMFM=${MMFM:-.venv/bin/mmfm}
PY=${PY:-.venv/bin/python}
$MMFM data prepare mini > /dev/null
mkdir -p $OUT
$MMFM pretrain configs/pretrain/rsm_minilm.yaml out=$OUT/rsm_minilm train.progress=false > $OUT/rsm.log 2>&1
$MMFM retrieve --text-encoder minilm --splits val test --out $OUT/section_matching/minilm > /dev/null
$MMFM retrieve --text-encoder $OUT/rsm_minilm --splits val test --out $OUT/section_matching/minilm_rsm > /dev/null
$MMFM data label --check-mesh --out $OUT/labeller > /dev/null
for seed in 0 1 2; do
  $MMFM report-gen configs/report_generation_2d.yaml train.seed=$seed train.progress=false \
    out=$OUT/report_generation/s$seed > $OUT/report_generation_s$seed.log 2>&1
  $MMFM vqa configs/vqa_2d.yaml train.seed=$seed train.progress=false out=$OUT/vqa/s$seed > $OUT/vqa_s$seed.log 2>&1
done
$PY scripts/vl_table.py $OUT/section_matching R@1 R@5 R@10 median_rank chance_R@1 chance_R@5
$PY scripts/vl_table.py $OUT/report_generation BLEU-1 BLEU-4 ROUGE-L CIDEr-D CE_F1
$PY scripts/vl_table.py $OUT/vqa accuracy closed_accuracy open_exact_match open_token_f1
cat $OUT/labeller/report.md
