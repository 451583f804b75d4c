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

# first_ipv4 WORD...: prints the first word that is an IPv4 address outside 127.0.0.0/8
# (`hostname -I` / `--ip-address` may list IPv6 and loopback addresses such as 127.0.1.1,
# which the other nodes cannot reach the Ray head at); returns 1 when there is none.
first_ipv4() {
    local word
    for word in "$@"; do
        if [[ "$word" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ && "$word" != 127.* ]]; then
            printf '%s\n' "$word"
            return 0
        fi
    done
    return 1
}
