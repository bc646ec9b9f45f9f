#!/usr/bin/env bash
# Every benchmark on one GPU, in one command (meant to take under 8 minutes on an H100-class GPU): the MAE step
# (mini and ViT-B/16 at 224, MAE's own configuration), the CLIP step and LiteMedSAM box-prompt inference, each
# against its reference library on CUDA, each side at its best working precision (--precision best: bf16 autocast
# on a GPU with bf16, a side whose step fails in bf16 runs fp32 and says so), medians over 3 rounds, MFU as the
# fraction of the GPU's measured matmul peak of the precision each side ran in; then the quickstart's
# classification in fp32 and in bf16 over 3 seeds (does bf16 keep the downstream result within the seed spread?).
# Results go to $OUT (default: runs/bench-gpu/) as JSON records with provenance (commit, date, torch, GPU,
# precisions), the console log beside them.
#
#     bash benchmarks/gpu.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/bench-gpu}"
PY="${PY:-.venv/bin/python}"
mkdir -p "$OUT/precision"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to torch')"
run() {  # name, command...: a benchmark's output goes to the console and to $OUT/name.log
  local name="$1"; shift
  echo "== $name"
  timeout 200 "$@" --json "$OUT/$name.json" 2>&1 | tee "$OUT/$name.log" | grep -v Warning || echo "$name: failed or timed out"
}
run mae_mini   "$PY" benchmarks/mae_step.py --device cuda --precision best --batch 256 --img 128 --patch 8 --steps 20 --rounds 3
run mae_vit_b  "$PY" benchmarks/mae_step.py --device cuda --precision best --size vit_b --batch 64 --img 224 --patch 16 \
  --steps 10 --rounds 3
run clip       "$PY" benchmarks/clip_step.py --device cuda --precision best --batch 256 --img 64 --steps 20
run promptable "$PY" benchmarks/promptable.py --device cuda --precision best --slices 24
echo "== precision: quickstart classification, fp32 vs bf16, 3 seeds"
for p in fp32 bf16; do
  for s in 0 1 2; do
    timeout 120 "$PY" -m mmfm.cli.main train configs/quickstart_classification.yaml "out=$OUT/precision/$p-$s" \
      "train.precision=$p" "train.seed=$s" train.progress=false > "$OUT/precision/$p-$s.log" 2>&1 \
      || echo "precision $p seed $s: failed or timed out"
  done
done
"$PY" - "$OUT/precision" <<'PY'
import json, statistics, sys
from pathlib import Path
root = Path(sys.argv[1])
for p in ("fp32", "bf16"):
    vals = []
    for f in sorted(root.glob(f"{p}-*/results.json")):
        vals += [r["value"] for r in json.loads(f.read_text()) if r["metric"] == "balanced_accuracy" and r["split"] == "test"]
    if vals:
        print(f"{p}: test balanced accuracy {statistics.mean(vals):.3f} +- {statistics.stdev(vals) if len(vals) > 1 else 0:.3f} (n={len(vals)})")
PY
echo "results in $OUT"
