#!/usr/bin/env bash
# Reproduce the report-side, report-generation and VQA numbers of docs/vision_language.md:
# 1. Radiology section matching on the IU X-ray reports (val/test): MiniLM off the shelf vs MiniLM after
#    report-side pretraining (RSM + sentence shuffling, configs/pretrain/rsm_minilm.yaml; seeds 0-2, about 12 min
#    each on 2 cores).
# 2. The rule-based labeller against the IU MeSH terms.
# 3. Report generation and VQA on mini slices (2D, seeds 0, 1, 2) and crops (3D, seed 0), with generated
#    captions and questions.
# Usage: scripts/reproduce_report_tables.sh [OUT]     (default: runs/reports)
set -euo pipefail
OUT=${1:-runs/reports}
MMFM=${MMFM:-.venv/bin/mmfm}
PY=${PY:-.venv/bin/python}
$MMFM data prepare mini > /dev/null
mkdir -p $OUT
$MMFM retrieve --text-encoder minilm --splits val test --out $OUT/section_matching/minilm > /dev/null
for seed in 0 1 2; do
  $MMFM pretrain configs/pretrain/rsm_minilm.yaml out=$OUT/rsm_minilm_s$seed train.seed=$seed train.progress=false \
    > $OUT/rsm_s$seed.log 2>&1
  $MMFM retrieve --text-encoder $OUT/rsm_minilm_s$seed --splits val test --out $OUT/section_matching/minilm_rsm_s$seed \
    > /dev/null
done
$MMFM data label --check-mesh --out $OUT/labeller > /dev/null
for seed in 0 1 2; do
  $MMFM report-gen configs/report_generation_2d.yaml train.seed=$seed train.progress=false \
    out=$OUT/report_generation_2d/s$seed > $OUT/report_generation_2d_s$seed.log 2>&1
  $MMFM vqa configs/vqa_2d.yaml train.seed=$seed train.progress=false out=$OUT/vqa_2d/s$seed > $OUT/vqa_2d_s$seed.log 2>&1
done
# 3D (32^3 crops): one seed; a 3D ResNet step costs about 1.5 s on 2 cores
$MMFM report-gen configs/report_generation_3d.yaml train.progress=false out=$OUT/report_generation_3d/s0 \
  > $OUT/report_generation_3d_s0.log 2>&1
$MMFM vqa configs/vqa_3d.yaml train.progress=false out=$OUT/vqa_3d/s0 > $OUT/vqa_3d_s0.log 2>&1
$PY scripts/vl_table.py $OUT/section_matching R@1 R@5 R@10 median_rank chance_R@1 chance_R@5
$PY scripts/vl_table.py $OUT/report_generation_2d BLEU-1 BLEU-4 ROUGE-L CIDEr-D CE_precision CE_recall CE_F1
$PY scripts/vl_table.py $OUT/report_generation_3d BLEU-1 BLEU-4 ROUGE-L CIDEr-D CE_precision CE_recall CE_F1
$PY scripts/vl_table.py $OUT/vqa_2d accuracy closed_accuracy open_exact_match open_token_f1
$PY scripts/vl_table.py $OUT/vqa_3d accuracy closed_accuracy open_exact_match open_token_f1
cat $OUT/labeller/report.md
