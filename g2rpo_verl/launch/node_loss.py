"""After a failed multi-node run: was a Ray node lost? (the Slurm launcher's last word)

::

    python -m g2rpo_verl.launch.node_loss --address HEAD_IP:6379 --nodes 4 [--grace 60]

The Slurm launcher runs it when the trainer exits non-zero. When a node goes away mid-run, the
trainer fails within seconds on the actors it lost (``ActorUnavailableError`` /
``ActorDiedError`` deep in a Ray traceback), often before Ray has marked the node dead (it
does so after missed health checks), so this polls the head for up to ``--grace`` seconds for
a dead node and prints one line saying what happened and what to do:

* ``node_loss: 1 of 2 node(s) lost: ...`` with each lost node and Ray's reason, and that the
  same command resumes from the last checkpoint (verl's ``trainer.resume_mode=auto``);
* ``node_loss: all 2 node(s) alive ...``: the trainer failed for another reason (its error is
  above);
* ``node_loss: the Ray head at ... does not answer``: the head node itself (or its Ray) is gone.

Exit status 0 in all three cases (the launcher exits with the trainer's status).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence

from g2rpo_verl.launch.ray_wait import HeadConnection

__all__ = ["describe_nodes", "lost_node_report", "main"]

RESUME_HINT = (
    "Run the same command again (on a full allocation): with trainer.resume_mode=auto, verl's "
    "default, it resumes from the last checkpoint in trainer.default_local_dir, the plugin's "
    "state included; the steps after that checkpoint are trained again."
)


def _node_name(node: dict) -> str:
    host = node.get("NodeManagerHostname") or node.get("NodeManagerAddress", "?")
    where = f"{node.get('NodeManagerAddress', '?')}:{node.get('NodeManagerPort', '?')}"
    return f"{host} ({where}, node {str(node.get('NodeID', '?'))[:8]})"


def describe_nodes(table: Sequence[dict], expected: int) -> str | None:
    """One line on a lost node from Ray's node table (``ray.nodes()``), or None if none is lost.

    A node is lost when Ray marks it dead, or (not yet marked) when fewer than ``expected``
    nodes are alive.
    """
    dead = [n for n in table if not n.get("Alive")]
    alive = [n for n in table if n.get("Alive")]
    if not dead and len(alive) >= expected:
        return None
    lost = max(len(dead), expected - len(alive))
    parts = []
    for node in dead:
        reason = node.get("DeathReasonMessage") or "marked dead"
        parts.append(f"{_node_name(node)}: {reason}")
    if not parts:
        parts.append(f"only {len(alive)} of {expected} nodes still registered")
    return f"node_loss: {lost} of {expected} node(s) lost: {'; '.join(parts)}. {RESUME_HINT}"


def lost_node_report(
    table: Callable[[], Sequence[dict]],
    expected: int,
    grace_s: float,
    poll_s: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Poll ``table`` (Ray's node table) up to ``grace_s`` for a lost node; the line to print."""
    deadline = clock() + grace_s
    error: Exception | None = None
    while True:
        try:
            line = describe_nodes(table(), expected)
            error = None
        except Exception as err:  # the head may be the lost node
            line, error = None, err
        if line is not None:
            return line
        if clock() >= deadline:
            break
        sleep(poll_s)
    if error is not None:
        return (
            f"node_loss: the Ray head does not answer ({type(error).__name__}: {error}): the head "
            f"node or its Ray processes are gone. {RESUME_HINT}"
        )
    return (
        f"node_loss: all {expected} node(s) alive {grace_s:g}s after the failure: the trainer "
        "failed for another reason (its error is above)."
    )


def _ray_nodes() -> list[dict]:
    import ray

    return ray.nodes()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m g2rpo_verl.launch.node_loss", description=__doc__.split("\n")[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--grace", type=float, default=60)
    parser.add_argument("--poll", type=float, default=2)
    args = parser.parse_args(argv)
    head = HeadConnection(args.address, query=_ray_nodes, patience_s=min(args.poll, 5.0))
    print(lost_node_report(head.state, args.nodes, args.grace, args.poll), flush=True)
    if head.hanging:  # stuck inside ray.init (see ray_wait): do not wait on it at exit
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
