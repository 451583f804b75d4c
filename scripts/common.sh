# shellcheck shell=bash
# Sourced by the launchers (train_single_node.sh, submit_ray_job.sh, slurm_multinode.sbatch).

# run CMD...: runs CMD, or with DRY_RUN=1 prints it shell-quoted (one line) instead.
run() {
    if [[ "${DRY_RUN:-0}" == 1 ]]; then
        printf '%q ' "$@"
        printf '\n'
    else
        "$@"
    fi
}
