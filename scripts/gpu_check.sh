#!/usr/bin/env bash
# GPU checks for a machine with only torch (no vLLM, Ray, verl or network), under 10 minutes on
# one H200 (scripts/gpu_check.py): the entropy-shaped loss at Qwen3-VL vocabulary and the
# recipe's micro-batch (peak memory eager vs compiled against the preflight's estimate, bf16 vs
# fp32 gradient cosine); one NCCL rank of FSDP2 around a Qwen3-VL-shaped model (random weights,
# 2 layers) running the plugin's loss forward + backward; the estimators on CUDA at 4k-65k
# samples equal to CPU. Prints one table.
#
#   scripts/gpu_check.sh [--device cuda|cpu] [--sizes 4096 16384 65536] [--json out.json]
#
# Environment (defaults in brackets):
#   PYTHON [python3]    interpreter with torch (nothing else of the GPU stack is needed)
#   TIMEOUT [600]       seconds before the check is stopped (exit 124)
# Exit status: 0 all checks passed, 1 a check failed, 2 no CUDA device (or no torch), 124 timeout.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
TIMEOUT="${TIMEOUT:-600}"

if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    echo "gpu_check: $PYTHON cannot import torch; set PYTHON to an interpreter with torch installed" >&2
    exit 2
fi
cd "$REPO_DIR"
exec timeout "$TIMEOUT" "$PYTHON" scripts/gpu_check.py "$@"
