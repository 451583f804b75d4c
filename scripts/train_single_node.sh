#!/usr/bin/env bash
# Train on one node: preflight, then verl's main_ppo with a config from configs/.
#
#   scripts/train_single_node.sh [hydra overrides ...]
#   CONFIG=gsgdpo_qwen3vl8b DATA_DIR=~/data/g2rpo N_GPUS=8 scripts/train_single_node.sh trainer.total_epochs=2
#
# Environment (defaults in brackets):
#   CONFIG [g2rpo_qwen3vl8b]   a config name in configs/ (grpo_qwen3vl8b, gsgdpo_qwen3vl8b, ...)
#   DATA_DIR [~/data/g2rpo]    output of `g2rpo-data convert` (train.parquet, val.parquet)
#   N_GPUS [8]                 trainer.n_gpus_per_node
#   PYTHON [python3]           interpreter with verl and g2rpo-verl installed
#   SKIP_PREFLIGHT [0]         1 skips `g2rpo-preflight`
#   DRY_RUN [0]                1 prints every command instead of running it
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG="${CONFIG:-g2rpo_qwen3vl8b}"
DATA_DIR="${DATA_DIR:-$HOME/data/g2rpo}"
N_GPUS="${N_GPUS:-8}"
PYTHON="${PYTHON:-python3}"
DRY_RUN="${DRY_RUN:-0}"

# shellcheck source=common.sh source-path=SCRIPTDIR
source "$REPO_DIR/scripts/common.sh"

# Ray 2.60 turns token auth on by default; a single-node run starts its own local cluster.
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
export PYTHONUNBUFFERED=1

args=(
    "--config-path=$REPO_DIR/configs"
    "--config-name=$CONFIG"
    "data.train_files=$DATA_DIR/train.parquet"
    "data.val_files=$DATA_DIR/val.parquet"
    "trainer.nnodes=1"
    "trainer.n_gpus_per_node=$N_GPUS"
    "$@"
)

if [[ "${SKIP_PREFLIGHT:-0}" != 1 ]]; then
    run "$PYTHON" -m g2rpo_verl.launch.preflight "${args[@]}"
fi
run "$PYTHON" -m verl.trainer.main_ppo "${args[@]}"
