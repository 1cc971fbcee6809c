#!/usr/bin/env bash
# GPU check of issue 15: the speed benchmark at paper scale (DeiT-S, 544x960, N = 2040, batch 1 and 8; fp32 and
# bf16 autocast; ViT-Adapter-S when the configuration has model.host=adapter) plus a few training steps on random
# data with peak memory. Runs as is on a GPU machine from the repository root, in under 10 minutes:
#   scripts/gpu_check.sh                 # writes results/gpu_check/gpu_check.{json,md}
#   scripts/gpu_check.sh --compile       # also time with torch.compile'd blocks
# CPU path (what the tests run): scripts/gpu_check.sh --device cpu --tiny --out /tmp/gpu_check
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
exec timeout 590 "$PY" -m vppkit.bench.gpu_check "$@"
