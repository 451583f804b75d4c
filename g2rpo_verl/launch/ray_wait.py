"""Wait until a Ray cluster has all its nodes and GPUs (the Slurm launcher's barrier).

::

    python -m g2rpo_verl.launch.ray_wait --address HEAD_IP:6379 --nodes 4 --gpus 32 [--timeout 600]

Exit status 0 once ``--nodes`` alive nodes and ``--gpus`` GPUs are registered; 1 after
``--timeout`` seconds, naming the nodes that did join, or saying that the head never answered.
Starting the trainer before every worker has joined makes verl size its resource pools to the
nodes present, or wait forever.

``ray.init`` retries an unreachable head without end (its GCS client logs "Failed to connect to
GCS" every few seconds and never returns), so the connection is made in a background thread
(:class:`HeadConnection`) and the ``--timeout`` holds whether or not the head answers.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["HeadConnection", "wait_for_cluster", "ray_cluster_state", "main"]

T = TypeVar("T")


def _ray_connect(address: str) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")


def ray_cluster_state() -> tuple[list[str], float]:
    """``(alive node addresses, total GPUs)`` of the cluster this process is connected to."""
    import ray

    alive = [n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")]
    return alive, float(ray.cluster_resources().get("GPU", 0))


class HeadConnection(Generic[T]):
    """A driver connection to the Ray head made in a daemon thread, so no caller ever blocks on it.

    :meth:`state` raises :class:`ConnectionError` while the head has not answered (and the error
    of a failed attempt, after which the next call tries again); once connected it returns
    ``query()``. ``connect(address)`` and ``query()`` default to ``ray.init`` and
    :func:`ray_cluster_state`.
    """

    def __init__(
        self,
        address: str,
        connect: Callable[[str], None] = _ray_connect,
        query: Callable[[], T] = ray_cluster_state,  # type: ignore[assignment]
        patience_s: float = 5.0,
    ) -> None:
        self.address = address
        self._connect, self._query, self._patience_s = connect, query, patience_s
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.connected = False

    def _run(self) -> None:
        try:
            self._connect(self.address)
            self.connected = True
        except BaseException as err:  # noqa: BLE001 - handed to the caller of state()
            self._error = err

    @property
    def hanging(self) -> bool:
        """True while a connection attempt has not returned."""
        return self._thread is not None and self._thread.is_alive()

    def state(self) -> T:
        if not self.connected:
            if self._thread is None:
                self._error = None
                self._thread = threading.Thread(target=self._run, name="ray-head-connect", daemon=True)
                self._thread.start()
            self._thread.join(self._patience_s)
            if self._thread.is_alive():
                raise ConnectionError(f"no answer from the Ray head at {self.address}")
            self._thread = None
            if not self.connected:
                raise self._error or ConnectionError(f"could not connect to the Ray head at {self.address}")
        return self._query()


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


def unreachable_message(address: str, timeout_s: float) -> str:
    """What to check when the head never answered within the wait."""
    return (
        f"ray_wait: the Ray head at {address} did not answer within {timeout_s:g}s. Check that "
        "`ray start --head` is running (its log), and that the address is the one its GCS "
        "listens on: the head node's IP as the other nodes reach it (not 127.0.0.1) and its --port"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m g2rpo_verl.launch.ray_wait", description=__doc__.split("\n")[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--gpus", type=float, default=0)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--poll", type=float, default=5)
    args = parser.parse_args(argv)
    head = HeadConnection(args.address, patience_s=min(args.poll, 5.0))
    ok = wait_for_cluster(head.state, args.nodes, args.gpus, args.timeout, args.poll)
    if not ok and not head.connected:
        print(unreachable_message(args.address, args.timeout), flush=True)
    if head.hanging:
        # the thread is stuck inside ray.init: interpreter shutdown (Ray's atexit hook) would wait on it
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0 if ok else 1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
