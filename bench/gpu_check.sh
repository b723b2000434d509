#!/usr/bin/env bash
# One short GPU check of fused sampling at SD 1.x scale (random weights; nothing downloaded):
# fp16, 512x512, 50 and 20 steps: seconds per plain image and per fused request (naive, project
# unbatched, the library defaults, defaults without saliency capture, each fast sampler at 20
# steps), ratios to naive, peak memory; one table per run. COMPILE=1 adds a torch.compile run.
# Usage (repo root):  bash bench/gpu_check.sh [--smoke] [out_dir]     (< 5 min on one modern GPU)
#   --smoke: the tiny CPU run of the same code (the tests run it); also taken without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
OUT="${1:-${OUT:-bench/results}}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ "$SMOKE" = "0" ] && python -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  timeout 150 python bench/gpu_check.py --size sd1 --steps 50 --H 512 --W 512 --repeat 3 \
    --out "$OUT/gpu_check.json"
  timeout 90 python bench/gpu_check.py --size sd1 --steps 20 --H 512 --W 512 --repeat 3 --samplers "" \
    --out "$OUT/gpu_check_20steps.json"
  if [ "${COMPILE:-0}" = "1" ]; then
    timeout 300 python bench/gpu_check.py --size sd1 --steps 50 --H 512 --W 512 --repeat 3 --compile --samplers "" \
      --out "$OUT/gpu_check_compile.json" || echo "compile run failed or timed out"
  fi
else
  echo "CPU smoke run (tiny models)"
  python bench/gpu_check.py --size tiny --steps 2 --H 32 --W 32 --repeat 1 --warmup 0 --device cpu \
    --sampler_steps 2 --out "$OUT/gpu_check_cpu_smoke.json"
fi
