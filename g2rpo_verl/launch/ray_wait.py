"""Wait until a Ray cluster has all its nodes and GPUs (the Slurm launcher's barrier).

::

    python -m g2rpo_verl.launch.ray_wait --address HEAD_IP:6379 --nodes 4 --gpus 32 [--timeout 600]

Exit status 0 once ``--nodes`` alive nodes and ``--gpus`` GPUs are registered; 1 after
``--timeout`` seconds, naming the nodes that did join. Starting the trainer before every worker
has joined makes verl size its resource pools to the nodes present, or wait forever.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

__all__ = ["wait_for_cluster", "ray_cluster_state", "main"]


def ray_cluster_state(address: str) -> tuple[list[str], float]:
    """``(alive node addresses, total GPUs)`` of the cluster at ``address``."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    alive = [n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")]
    return alive, float(ray.cluster_resources().get("GPU", 0))


def wait_for_cluster(
    state: Callable[[], tuple[list[str], float]],
    nodes: int,
    gpus: float,
    timeout_s: float,
    poll_s: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
) -> bool:
    """Poll ``state`` until ``nodes`` nodes and ``gpus`` GPUs are up; False on timeout."""
    deadline = clock() + timeout_s
    last = None
    while True:
        try:
            alive, have = state()
        except Exception as err:  # the head may still be starting
            alive, have = [], 0.0
            message = f"ray_wait: cluster not reachable yet ({type(err).__name__}: {err})"
        else:
            message = f"ray_wait: {len(alive)}/{nodes} nodes, {have:g}/{gpus:g} GPUs"
        if len(alive) >= nodes and have >= gpus:
            log(message + ": ready")
            return True
        if message != last:
            log(message)
            last = message
        if clock() >= deadline:
            log(f"ray_wait: timed out after {timeout_s:g}s; joined: {sorted(alive)}")
            return False
        sleep(poll_s)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m g2rpo_verl.launch.ray_wait", description=__doc__.split("\n")[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--gpus", type=float, default=0)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--poll", type=float, default=5)
    args = parser.parse_args(argv)
    ok = wait_for_cluster(lambda: ray_cluster_state(args.address), args.nodes, args.gpus, args.timeout, args.poll)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
