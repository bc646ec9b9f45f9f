#!/usr/bin/env bash
# Every benchmark on one GPU, in one command (under 8 minutes on an H100-class GPU): the MAE step (mini and
# ViT-B/16 at 224, MAE's own configuration) and the CLIP step, each against its reference library, with MFU
# (model FLOP/s over the GPU's measured bf16 matmul peak) printed by the MAE step; results go to $OUT
# (default: runs/bench-gpu/) as JSON, the console log beside them.
#
#     bash benchmarks/gpu.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/bench-gpu}"
PY="${PY:-.venv/bin/python}"
mkdir -p "$OUT"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to torch')"
run() {  # name, command...: a benchmark's output goes to the console and to $OUT/name.log
  local name="$1"; shift
  echo "== $name"
  timeout 200 "$@" --json "$OUT/$name.json" 2>&1 | tee "$OUT/$name.log" | grep -v Warning || echo "$name: failed or timed out"
}
run mae_mini  "$PY" benchmarks/mae_step.py --device cuda --batch 256 --img 128 --patch 8 --steps 20
run mae_vit_b "$PY" benchmarks/mae_step.py --device cuda --size vit_b --batch 64 --img 224 --patch 16 --steps 10
run clip      "$PY" benchmarks/clip_step.py --batch 256 --img 64 --steps 20
echo "results in $OUT"
