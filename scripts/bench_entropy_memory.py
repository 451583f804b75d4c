#!/usr/bin/env python
"""Peak memory and time of the exact-entropy loss step, with and without verl's entropy_checkpointing.

Side by side, in one run, for one micro-batch of ``--tokens`` × ``--vocab`` logits: the step
without the entropy (``sampled``, the baseline), the exact entropy as verl computes it by
default, and with ``actor_rollout_ref.actor.entropy_checkpointing=true``
(scripts/entropy_memory.py says what each case runs). Reported per case: the peak memory
above the logits themselves, in GiB and in units of one ``tokens × vocab`` logits tensor, and
the median forward + backward time; and the largest relative difference of the logits'
gradient between the two exact cases.

    python scripts/bench_entropy_memory.py [--tokens 2048] [--vocab 151936] [--dtype bfloat16] [--device cpu]

On the CPU each case runs in its own process, its peak taken from the kernel's peak RSS
(``VmHWM`` after resetting it) with glibc's mmap threshold fixed, so freed tensors leave the
resident set; on CUDA from ``torch.cuda.max_memory_allocated``. The factors feed the
preflight's estimate (``g2rpo_verl/launch/cluster_checks.py``: ``ENTROPY_PEAK_FACTOR``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from entropy_memory import CASES, loss_and_grad, make_inputs  # noqa: E402

GIB = 1024**3


def _rss_peak() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _rss_now() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure_case(case: str, tokens: int, vocab: int, dtype: torch.dtype, device: torch.device, repeat: int) -> dict:
    """Peak bytes above the inputs and median seconds of one case, in this process."""
    inputs = make_inputs(tokens, vocab, dtype, device)
    fn = CASES[case]
    fn(inputs)  # warm-up: kernels, allocator pools
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn(inputs)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        base = _rss_now()
        fn(inputs)
        peak = _rss_peak() - base
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(inputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    logits_bytes = inputs["logits"].numel() * inputs["logits"].element_size()
    return {"case": case, "peak_bytes": peak, "factor": peak / logits_bytes, "seconds": statistics.median(times)}


def gradient_difference(tokens: int, vocab: int, dtype: torch.dtype, device: torch.device) -> float:
    """max |g_ckpt − g| / max |g| of d loss / d logits (computed in float32)."""
    inputs = make_inputs(tokens, vocab, dtype, device)
    _, plain = loss_and_grad(inputs, checkpointing=False)
    _, ckpt = loss_and_grad(inputs, checkpointing=True)
    return ((ckpt.float() - plain.float()).abs().max() / plain.float().abs().max()).item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)  # one case, in a child
    args = parser.parse_args(argv)
    dtype, device = getattr(torch, args.dtype), torch.device(args.device)
    if args.case:
        print(json.dumps(measure_case(args.case, args.tokens, args.vocab, dtype, device, args.repeat)))
        return 0
    rows = []
    for case in CASES:
        if device.type == "cuda":
            rows.append(measure_case(case, args.tokens, args.vocab, dtype, device, args.repeat))
            continue
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024), "MALLOC_TRIM_THRESHOLD_": "0"}
        child = [sys.executable, __file__, "--case", case, *(argv if argv is not None else sys.argv[1:])]
        out = subprocess.run(child, env=env, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    base = rows[0]
    logits_gib = args.tokens * args.vocab * dtype.itemsize / GIB
    print(f"{args.tokens} tokens × {args.vocab} vocab, {args.dtype} logits = {logits_gib:.2f} GiB, on {device}")
    print(
        f"{'case':30s} {'peak above inputs':>18s} {'× logits':>9s} {'extra vs sampled':>17s} {'fwd+bwd':>9s} {'time ×':>7s}"
    )
    for row in rows:
        extra = row["factor"] - base["factor"]
        print(
            f"{row['case']:30s} {row['peak_bytes'] / GIB:15.2f} GiB {row['factor']:9.2f} {extra:14.2f} × "
            f"{1e3 * row['seconds']:7.0f} ms {row['seconds'] / base['seconds']:6.2f}"
        )
    diff = gradient_difference(min(args.tokens, 512), args.vocab, dtype, device)
    print(
        f"max |grad(checkpointing) − grad| / max |grad| = {diff:.1e} (d loss / d logits, {min(args.tokens, 512)} tokens)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
