#!/usr/bin/env bash
# Reproduce the report-side, report-generation and VQA tables of docs/vision_language.md:
# 1. section_matching: radiology section matching on the IU X-ray reports (val/test): MiniLM off the shelf vs
#    MiniLM after report-side pretraining (RSM + sentence shuffling, configs/pretrain/rsm_minilm.yaml; about 12 min
#    per seed on 2 cores), next to a no-model baseline (impressions ranked by frequency) and chance.
# 2. labeller: the rule-based labeller against the IU MeSH terms.
# 3. generation: report generation and VQA on mini slices (2D) and crops (3D), generated captions and questions.
# 4. summarization: findings -> impression on the IU X-ray test reports: SmolLM2 prompted (no training; one
#    greedy impression per report, about 1.5 s each on one core) against three no-training baselines (`mmfm
#    summarize`; deterministic, so one run).
# Usage: scripts/reproduce_report_tables.sh [OUT] [PART ...]    (default: runs/reports, all parts)
#        SEEDS="0 1 2" (default) sets the seeds of the trained models; STEPS_2D / STEPS_3D (default: the
#        configs' train.max_steps) the training steps of the 2D / 3D generation and VQA runs; the tables
#        read the test split, so the generation runs evaluate on test only.
set -euo pipefail
OUT=${1:-runs/reports}
shift || true
PARTS=${*:-section_matching labeller generation summarization}
SEEDS=${SEEDS:-0 1 2}
MMFM=${MMFM:-.venv/bin/mmfm}
PY=${PY:-.venv/bin/python}
OPTS_2D="${STEPS_2D:+train.max_steps=$STEPS_2D} data.eval_splits=[test]"
OPTS_3D="${STEPS_3D:+train.max_steps=$STEPS_3D} data.eval_splits=[test]"
TABLES=""
$MMFM data prepare mini > /dev/null
mkdir -p $OUT
if [[ " $PARTS " == *" section_matching "* ]]; then
  $MMFM retrieve --text-encoder minilm --splits val test --out $OUT/section_matching/minilm > /dev/null
  for seed in $SEEDS; do
    $MMFM pretrain configs/pretrain/rsm_minilm.yaml out=$OUT/rsm_minilm_s$seed train.seed=$seed \
      train.progress=false > $OUT/rsm_s$seed.log 2>&1
    $MMFM retrieve --text-encoder $OUT/rsm_minilm_s$seed --splits val test \
      --out $OUT/section_matching/minilm_rsm_s$seed > /dev/null
  done
  $PY scripts/doc_tables.py collect section_matching $OUT/section_matching --splits val test
  TABLES="$TABLES section-matching"
fi
if [[ " $PARTS " == *" labeller "* ]]; then
  $MMFM data label --check-mesh --out $OUT/labeller > /dev/null
  $PY scripts/doc_tables.py collect labeller $OUT/labeller --splits dev held_out
  TABLES="$TABLES labeller"
fi
if [[ " $PARTS " == *" generation "* ]]; then
  # run NAME SEED COMMAND CONFIG OPTIONS: a run already complete in OUT is kept (a second call resumes); a run
  # that fails is listed in its failed.jsonl, which the table shows as FAILED, and the others go on
  run() {
    local name=$1 seed=$2 dir=$OUT/$1/s$2; shift 2
    if grep -qs complete $dir/status.json; then echo "$name seed $seed: kept"; return; fi
    rm -f $dir/failed.jsonl
    $MMFM "$@" train.seed=$seed train.progress=false out=$dir > $OUT/${name}_s$seed.log 2>&1 || {
      echo "$name seed $seed FAILED (see $OUT/${name}_s$seed.log)"
      mkdir -p $dir
      $PY -c "import json, sys; sys.path.insert(0, 'scripts'); from doc_tables import failed_record
print(json.dumps(failed_record('$name', 'mini', '$name', $seed, open('$OUT/${name}_s$seed.log').read())))" \
        > $dir/failed.jsonl; }
  }
  for seed in $SEEDS; do
    run report_generation_2d $seed report-gen configs/report_generation_2d.yaml $OPTS_2D
    run vqa_2d $seed vqa configs/vqa_2d.yaml $OPTS_2D
    # 3D: 32^3 crops; a 3D ResNet step costs about 1.5 s on 2 cores
    run report_generation_3d $seed report-gen configs/report_generation_3d.yaml $OPTS_3D
    run vqa_3d $seed vqa configs/vqa_3d.yaml $OPTS_3D
  done
  for name in report_generation_2d report_generation_3d vqa_2d vqa_3d; do
    $PY scripts/doc_tables.py collect $name $OUT/$name
  done
  TABLES="$TABLES report-generation-2d report-generation-3d vqa-2d vqa-3d"
fi
if [[ " $PARTS " == *" summarization "* ]]; then
  $MMFM summarize --splits test --out $OUT/summarization train.progress=false > /dev/null
  $PY scripts/doc_tables.py collect summarization $OUT/summarization --splits test
  TABLES="$TABLES summarization"
fi
$PY scripts/doc_tables.py write $TABLES      # only the tables of the parts that ran
