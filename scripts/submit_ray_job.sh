#!/usr/bin/env bash
# Submit a training run to a running Ray cluster with `ray job submit`.
#
#   RAY_ADDRESS=http://head:8265 NNODES=2 scripts/submit_ray_job.sh [hydra overrides ...]
#
# Environment (defaults in brackets):
#   RAY_ADDRESS [http://127.0.0.1:8265]  the cluster's dashboard (job submission) address
#   CONFIG [g2rpo_qwen3vl8b]             a config name in configs/
#   DATA_DIR [$HOME/data/g2rpo]          converted data: an absolute path valid on every node
#   NNODES [1], N_GPUS_PER_NODE [8]      trainer.nnodes / trainer.n_gpus_per_node
#   CHECKPOINT_DIR [$HOME/checkpoints/g2rpo/$CONFIG]  trainer.default_local_dir, ABSOLUTE and on a
#                                        filesystem every node sees: the job's working_dir is a
#                                        per-node copy, so a relative dir would scatter the
#                                        shards of one checkpoint over the nodes (not resumable)
#   RUNTIME_ENV [scripts/ray_runtime_env.yaml]
#   NO_WAIT [0]                          1 returns after submission (`ray job logs -f` follows it)
#   DRY_RUN [0]                          1 prints the command instead of running it
# The preflight runs inside the job, on the cluster, where the GPUs and data are.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RAY_ADDRESS="${RAY_ADDRESS:-http://127.0.0.1:8265}"
CONFIG="${CONFIG:-g2rpo_qwen3vl8b}"
DATA_DIR="${DATA_DIR:-$HOME/data/g2rpo}"
NNODES="${NNODES:-1}"
N_GPUS_PER_NODE="${N_GPUS_PER_NODE:-8}"
CHECKPOINT_DIR="${CHECKPOINT_DIR:-$HOME/checkpoints/g2rpo/$CONFIG}"
RUNTIME_ENV="${RUNTIME_ENV:-$REPO_DIR/scripts/ray_runtime_env.yaml}"
DRY_RUN="${DRY_RUN:-0}"

# shellcheck source=common.sh source-path=SCRIPTDIR
source "$REPO_DIR/scripts/common.sh"

if [[ "$CHECKPOINT_DIR" != /* ]]; then
    echo "submit_ray_job: CHECKPOINT_DIR=$CHECKPOINT_DIR must be absolute (and shared by every node)" >&2
    exit 2
fi

args=(
    "--config-name=$CONFIG"
    "data.train_files=$DATA_DIR/train.parquet"
    "data.val_files=$DATA_DIR/val.parquet"
    "trainer.nnodes=$NNODES"
    "trainer.n_gpus_per_node=$N_GPUS_PER_NODE"
    "trainer.default_local_dir=$CHECKPOINT_DIR"
    "$@"
)
printf -v quoted '%q ' "${args[@]}"
# One shell line inside the job, whose working directory is the uploaded checkout: preflight
# against the live cluster, then the trainer. Hydra wants an absolute --config-path (a relative
# one is taken relative to verl's main_ppo.py), hence $PWD, expanded inside the job.
# shellcheck disable=SC2016
config_path='--config-path="$PWD/configs" '
entry="python3 -m g2rpo_verl.launch.preflight --ray-address auto $config_path$quoted"
entry+=" && python3 -m verl.trainer.main_ppo $config_path$quoted"
wait_flag=()
if [[ "${NO_WAIT:-0}" == 1 ]]; then
    wait_flag=(--no-wait)
fi

cd "$REPO_DIR"
run ray job submit --address "$RAY_ADDRESS" --runtime-env "$RUNTIME_ENV" "${wait_flag[@]}" -- bash -c "$entry"
