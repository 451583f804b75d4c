"""Subprocess that runs math-verify for :mod:`g2rpo_verl.rewards.guard` (not imported by it).

Started as a *script* (``python .../_math_worker.py``), not as ``-m g2rpo_verl...``, so it
imports only the standard library and ``math_verify`` — not ``g2rpo_verl/__init__`` (which
imports torch, ~1 s and ~300 MB per worker).

Protocol: newline-delimited JSON on stdin/stdout. The worker first writes ``{"ready": true}``.
Then, per request line ``{"gold": str, "pred": str, "soft_timeout_s": float, "delimit": bool,
"fallback": bool, "kind": "math" | "choice"}`` (``delimit``, default true: wrap a bare answer in
``$…$``; ``fallback``, default false: when math-verify raises, mathruler's ``grade_answer``
decides, as the authors' reward does; ``kind="choice"``: mathruler's ``grade_answer(pred,
gold)`` alone, the authors' multiple-choice grader), it writes one line: ``{"ok": true, "correct": bool, "parsed": bool}`` or
``{"ok": false, "error": "timeout" | "exception", "detail": str}``; a reply with
``"recycle": true`` means the worker exits right after it (after a timeout, ``MemoryError``
or ``RecursionError`` its sympy state is suspect). It also exits on stdin EOF (its parent
died or closed it).

Time limits inside the worker (the parent also kills it after a hard wall-clock limit):

* a soft limit per request via ``setitimer(ITIMER_PROF)``: the worker's own CPU time, so an
  answer is not failed because the machine is busy with other work (the parent's hard
  wall-clock limit stays); this process runs math-verify on its main thread, so the signal
  handler works here. It raises a ``BaseException`` subclass so that
  math-verify's and sympy's ``except Exception`` blocks cannot swallow it;
* a CPU-time limit (``RLIMIT_CPU``) re-armed per request: it kills the worker even when it
  is stuck inside one long C call (a huge integer power) where Python signal handlers cannot
  run, and even if the parent is gone;
* an address-space limit (``RLIMIT_AS``, env ``G2RPO_MATH_WORKER_MAX_MEM_MB``, default 4096)
  so a runaway expansion raises ``MemoryError`` instead of swapping the node.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys


class _SoftTimeout(BaseException):
    """Raised by SIGPROF; a BaseException so library ``except Exception`` lets it through."""


def _on_alarm(signum, frame):
    raise _SoftTimeout()


def _delimit(text: str) -> str:
    """Wrap a bare answer in ``$…$``: math-verify's LaTeX extraction needs delimiters
    (bare ``x^2+1`` parses as ``1``, ``$x^2+1$`` as ``x**2 + 1``)."""
    if "$" in text or "\\boxed" in text or "\\(" in text or "\\[" in text:
        return text
    return f"${text}$"


def _grade_answer(pred: str, gold: str) -> bool:
    from mathruler.grader import grade_answer

    return bool(grade_answer(pred, gold))


def _score(gold: str, pred: str, delimit: bool = True, fallback: bool = False) -> tuple[bool, bool]:
    from math_verify import parse, verify
    from sympy import Basic, MatrixBase

    # Timeouts disabled here on purpose: math-verify's own timeout uses signal.alarm, which
    # would fight our timer; our CPU-time timer covers parse and verify together.
    try:
        gold_parsed = parse(_delimit(gold) if delimit else gold, parsing_timeout=None)
        pred_parsed = parse(_delimit(pred) if delimit else pred, parsing_timeout=None)
        parsed = any(isinstance(x, (Basic, MatrixBase)) for x in pred_parsed)
        if not gold_parsed or not pred_parsed:
            return False, parsed
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None)), parsed
    except (MemoryError, RecursionError):
        raise  # the worker's state is suspect: recycled below
    except Exception:
        if not fallback:
            raise
        return _grade_answer(pred, gold), False


def _set_limits() -> None:
    import resource

    mem_mb = int(os.environ.get("G2RPO_MATH_WORKER_MAX_MEM_MB", "4096"))
    if mem_mb > 0:
        try:
            resource.setrlimit(resource.RLIMIT_AS, (mem_mb * 2**20, resource.getrlimit(resource.RLIMIT_AS)[1]))
        except (ValueError, OSError):
            pass  # a lower hard limit already applies


def _arm_cpu_limit(seconds: float) -> None:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    soft = int(math.ceil(used + seconds)) + 1
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    except (ValueError, OSError):
        pass


def main() -> None:
    # the script's directory holds modules named like common ones (accuracy, answers, guard)
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]

    # Keep the protocol channel private: anything a library prints goes to stderr.
    proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    proto_in = sys.stdin.buffer

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when this process ends
    signal.signal(signal.SIGPROF, _on_alarm)
    _set_limits()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # "timeout disabled" notice
    _score("1", "1")
    _grade_answer("B", "B")  # import and warm math-verify/sympy/latex2sympy before reporting ready

    def send(obj: dict) -> None:
        proto_out.write(json.dumps(obj).encode() + b"\n")

    send({"ready": True})
    while True:
        line = proto_in.readline()
        if not line:
            return
        exit_after = False
        try:
            request = json.loads(line)
            soft = float(request.get("soft_timeout_s", 5.0))
            _arm_cpu_limit(soft + 2.0)
            signal.setitimer(signal.ITIMER_PROF, soft)
            try:
                gold, pred = str(request["gold"]), str(request["pred"])
                if request.get("kind", "math") == "choice":
                    correct, parsed = _grade_answer(pred, gold), False
                else:
                    correct, parsed = _score(
                        gold, pred, bool(request.get("delimit", True)), bool(request.get("fallback", False))
                    )
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
            response = {"ok": True, "correct": correct, "parsed": parsed}
        except _SoftTimeout:
            response = {"ok": False, "error": "timeout", "detail": f"math-verify exceeded {soft:g} s"}
            # sympy was interrupted mid-computation (caches, recursion state): start afresh
            exit_after = True
        except (MemoryError, RecursionError) as err:
            # state after these is suspect: answer, then let the parent start a fresh worker
            response = {"ok": False, "error": "exception", "detail": type(err).__name__}
            exit_after = True
        except Exception as err:
            response = {"ok": False, "error": "exception", "detail": f"{type(err).__name__}: {err}"[:300]}
        if exit_after:
            response["recycle"] = True
        try:
            send(response)
        except _SoftTimeout:  # a timer signal that fired between disarm and send; resend
            send(response)
        if exit_after:
            return


if __name__ == "__main__":
    main()
