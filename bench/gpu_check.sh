#!/usr/bin/env bash
# One short GPU check of fused sampling at SD 1.x scale (random weights; nothing downloaded):
# fp16, 512x512, 50 steps: seconds per plain image and per fused request (naive, project,
# project + batch_trajectories), ratios. Then the same with torch.compile (set COMPILE=0 to skip).
# Usage (repo root):  bash bench/gpu_check.sh [out_dir]      (< 5 min on one modern GPU)
# Without a GPU it runs a tiny CPU smoke test of the same code instead.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-${OUT:-bench/results}}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if python -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  timeout 240 python bench/gpu_check.py --size sd1 --steps 50 --H 512 --W 512 --repeat 3 \
    --out "$OUT/gpu_check.json"
  if [ "${COMPILE:-1}" = "1" ]; then
    timeout 300 python bench/gpu_check.py --size sd1 --steps 50 --H 512 --W 512 --repeat 3 --compile \
      --out "$OUT/gpu_check_compile.json" || echo "compile run failed or timed out"
  fi
else
  echo "no CUDA device: tiny CPU smoke test"
  python bench/gpu_check.py --size tiny --steps 2 --H 32 --W 32 --repeat 1 --warmup 0 --out "$OUT/gpu_check_cpu_smoke.json"
fi
