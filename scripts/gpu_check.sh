#!/usr/bin/env bash
# GPU checks for a machine with torch (+ transformers) but no vLLM or Ray, under 5 minutes:
# gaussianize / gs_grpo / gs_gdpo on CUDA equal to CPU (ties included) with timings at 4k-65k
# samples, and the entropy-shaped loss forward/backward on a small random Qwen3-VL in bf16.
#
#   scripts/gpu_check.sh [--device cuda|cpu] [--sizes 4096 16384 65536] [--json out.json]
#
# Environment (defaults in brackets):
#   PYTHON [python3]    interpreter with torch and transformers (verl is not needed)
#   TIMEOUT [300]       seconds before the check is stopped (exit 124)
# Exit status: 0 all checks passed, 1 a check failed, 2 no CUDA device (or no torch), 124 timeout.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
TIMEOUT="${TIMEOUT:-300}"

if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    echo "gpu_check: $PYTHON cannot import torch; set PYTHON to an interpreter with torch installed" >&2
    exit 2
fi
cd "$REPO_DIR"
exec timeout "$TIMEOUT" "$PYTHON" scripts/gpu_check.py "$@"
