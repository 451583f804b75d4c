"""Hard time limits that work from any thread: a small pool of persistent worker processes.

Why a process pool: math-verify's own timeout uses ``signal.alarm``, which only works on the
main thread (off it, math-verify raises, and an unguarded caller scores every math answer 0 —
verl PR #5635). verl's reward loop calls a synchronous ``compute_score`` through
``loop.run_in_executor`` (a thread pool), so the reward never runs on the main thread. A
thread cannot be killed in Python, and sympy can spin for minutes (``2^{2^{2^{2^{2^2}}}}``),
so the only robust limit is a separate process that can be killed.

Design (:class:`WorkerPool`):

* workers are ``subprocess.Popen`` of a standalone script speaking one JSON line per request
  over pipes — no ``fork`` of the (multi-threaded, Ray/gRPC-carrying) trainer process, and no
  re-import of ``__main__`` as multiprocessing's spawn/forkserver would do;
* at most ``max_workers`` processes; a caller checks one out, so concurrent callers (verl's
  executor threads) run in parallel up to that count and queue beyond it;
* the caller waits for the reply with ``poll`` on the pipe until a wall-clock deadline; on
  timeout, a crash or a garbled reply the worker is SIGKILLed and dropped, and the next call
  starts a fresh one (the only expensive path: ~0.5-1.5 s of interpreter + sympy start-up);
* workers are started lazily; they exit on stdin EOF, so they never outlive the trainer by
  more than their own per-request limits (see ``_math_worker.py``);
* a pool created before a ``fork`` is not used by the child (pid check); the child builds
  its own.

Cost per request on the happy path: one pipe round trip and JSON encoding (~0.1-0.3 ms) on top
of the work itself. Worst case per call: ``queue_timeout_s`` (all workers busy) +
``start_timeout_s`` (starting a worker) + ``timeout_s``, twice the last two when a reused
worker died while idle and the call is retried once — finite in every case. A worker is
also replaced after it reports a timeout (its sympy state was interrupted mid-way).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["GuardTimeout", "GuardError", "WorkerPool", "math_pool", "default_math_workers", "MATH_WORKER_SCRIPT"]

MATH_WORKER_SCRIPT = Path(__file__).with_name("_math_worker.py")


class GuardTimeout(Exception):
    """The guarded call did not finish in time (the worker was killed), or no worker was free."""


class GuardError(Exception):
    """The guarded call failed: the worker crashed, could not start, or replied garbage."""


class _Worker:
    """One worker process and its pipe ends. Used by one thread at a time."""

    def __init__(self, argv: list[str], env: dict[str, str], start_timeout_s: float):
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the worker's own diagnostics go to our stderr
            env=env,
            close_fds=True,
            start_new_session=True,  # a Ctrl-C to the trainer's process group is not for it
        )
        self._in = self.proc.stdin.fileno()  # type: ignore[union-attr]
        self._out = self.proc.stdout.fileno()  # type: ignore[union-attr]
        self._buf = bytearray()
        self._poller = select.poll()
        self._poller.register(self._out, select.POLLIN | select.POLLHUP | select.POLLERR)
        try:
            hello = self.recv(time.monotonic() + start_timeout_s)
        except GuardTimeout as err:
            self.kill()
            raise GuardError(f"worker did not start within {start_timeout_s:g} s") from err
        except BaseException:
            self.kill()
            raise
        if hello.get("ready") is not True:
            self.kill()
            raise GuardError(f"worker sent {hello!r} instead of its ready line")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, obj: dict) -> None:
        data = memoryview(json.dumps(obj).encode() + b"\n")
        try:
            while data:
                n = os.write(self._in, data)
                data = data[n:]
        except OSError as err:  # BrokenPipeError: it died
            raise GuardError(f"worker pipe closed: {err}") from err

    def recv(self, deadline: float) -> dict:
        """Read one JSON line; GuardTimeout at ``deadline``, GuardError on EOF/garbage."""
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                try:
                    obj = json.loads(line)
                except ValueError as err:
                    raise GuardError(f"worker replied non-JSON {line[:80]!r}") from err
                if not isinstance(obj, dict):
                    raise GuardError(f"worker replied {obj!r}")
                return obj
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise GuardTimeout("no reply before the deadline")
            # poll, not select: a big trainer process can hold fds above FD_SETSIZE (1024)
            if not self._poller.poll(max(1, int(remaining * 1000) + 1)):
                continue  # loop re-checks the deadline
            chunk = os.read(self._out, 65536)
            if not chunk:
                raise GuardError(f"worker exited (returncode {self.proc.poll()})")
            self._buf += chunk
            if len(self._buf) > 1 << 20:
                raise GuardError("worker reply exceeds 1 MiB")

    def kill(self) -> None:
        """SIGKILL and reap; never raises."""
        try:
            self.proc.kill()
        except OSError:
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()  # type: ignore[union-attr]
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except Exception:
            pass


class WorkerPool:
    """At most ``max_workers`` worker processes running ``script``; thread-safe.

    :meth:`call` guarantees: it returns the worker's reply dict, or raises
    :class:`GuardTimeout` / :class:`GuardError`; it never blocks longer than
    ``queue_timeout_s + 2 · (start_timeout_s + timeout_s)`` (the 2: one retry when a reused
    worker turns out dead); a worker that missed its deadline or misbehaved is killed and
    never reused.
    """

    def __init__(self, script: Path | str, max_workers: int = 2, start_timeout_s: float = 60.0):
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.script = str(script)
        self.max_workers = int(max_workers)
        self.start_timeout_s = float(start_timeout_s)
        self._slots = threading.BoundedSemaphore(self.max_workers)
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._pid = os.getpid()
        self._closed = False
        #: counters for diagnostics (approximate under concurrency): workers started,
        #: workers killed/dropped, calls made
        self.stats = {"started": 0, "killed": 0, "calls": 0}

    def _argv_env(self) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ)
        # the worker must import the same math_verify as we do, wherever it was found
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
        return [sys.executable, "-u", self.script], env

    def _checkout(self) -> tuple[_Worker, bool]:
        """``(worker, reused)``: an idle live worker, else a freshly started one."""
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker, True
                self._all.discard(worker)
                worker.kill()
        argv, env = self._argv_env()
        worker = _Worker(argv, env, self.start_timeout_s)  # outside the lock: takes ~0.5 s
        with self._lock:
            self._all.add(worker)
            self.stats["started"] += 1
        return worker, False

    def _discard(self, worker: _Worker) -> None:
        with self._lock:
            self._all.discard(worker)
            self.stats["killed"] += 1
        worker.kill()

    def call(self, request: dict[str, Any], timeout_s: float, queue_timeout_s: float = 60.0) -> dict:
        """Send ``request`` to a free worker; return its reply within ``timeout_s`` seconds."""
        if self._closed:
            raise GuardError("worker pool is closed")
        if not self._slots.acquire(timeout=max(0.0, queue_timeout_s)):
            raise GuardTimeout(f"all {self.max_workers} workers stayed busy for {queue_timeout_s:g} s")
        try:
            self.stats["calls"] += 1
            for attempt in (0, 1):
                worker, reused = self._checkout()
                healthy = False
                try:
                    worker.send(request)
                    reply = worker.recv(time.monotonic() + timeout_s)
                    # "recycle": the worker exits after this reply; never hand it out again
                    healthy = reply.get("recycle") is not True
                    return reply
                except GuardError:
                    # an idle worker that died meanwhile (OOM killer, ...) is not this
                    # request's fault: retry once on a fresh worker
                    if reused and attempt == 0 and not self._closed:
                        continue
                    raise
                finally:
                    if healthy and not self._closed:
                        with self._lock:
                            self._idle.append(worker)
                    else:
                        self._discard(worker)
            raise AssertionError("unreachable")
        finally:
            self._slots.release()

    def warm_up(self, n: int | None = None) -> None:
        """Start up to ``n`` (default ``max_workers``) workers now instead of on first use."""
        started = []
        for _ in range(min(n or self.max_workers, self.max_workers)):
            if not self._slots.acquire(timeout=0):
                break
            try:
                started.append(self._checkout()[0])
            except Exception:
                self._slots.release()
                raise
        with self._lock:
            self._idle.extend(started)
        for _ in started:
            self._slots.release()

    def close(self) -> None:
        """Kill every worker (idle or busy); later calls raise :class:`GuardError`."""
        self._closed = True
        with self._lock:
            workers = list(self._all)
            self._all.clear()
            self._idle.clear()
        for worker in workers:
            worker.kill()

    @property
    def owned_by_this_process(self) -> bool:
        return self._pid == os.getpid()


def default_math_workers() -> int:
    """Env ``G2RPO_MATH_WORKERS`` if set, else ``min(4, cpu_count)``."""
    env = os.environ.get("G2RPO_MATH_WORKERS")
    if env:
        return max(1, int(env))
    return max(1, min(4, os.cpu_count() or 1))


_MATH_POOL: WorkerPool | None = None
_MATH_POOL_LOCK = threading.Lock()


def math_pool(max_workers: int | None = None) -> WorkerPool:
    """The process-wide math-verify pool, created on first use.

    ``max_workers`` only applies when the pool is created (first call in this process);
    default :func:`default_math_workers`. After a ``fork`` the child gets its own pool.
    """
    global _MATH_POOL
    pool = _MATH_POOL
    if pool is not None and pool.owned_by_this_process and not pool._closed:
        return pool
    with _MATH_POOL_LOCK:
        pool = _MATH_POOL
        if pool is None or not pool.owned_by_this_process or pool._closed:
            pool = WorkerPool(MATH_WORKER_SCRIPT, max_workers or default_math_workers())
            _MATH_POOL = pool
        return pool


@atexit.register
def _close_math_pool() -> None:
    pool = _MATH_POOL
    if pool is not None and pool.owned_by_this_process:
        pool.close()
