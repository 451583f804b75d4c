#!/usr/bin/env python
"""Time cost of the per-task gradient diagnostics on the demo: the same short run without and with them.

Runs the demo (``python -m g2rpo_verl.demo``: the tiny Qwen3-VL, six tasks, gs_grpo, shaping)
for ``--steps`` training steps twice, in ``W/off`` and ``W/grad_every_<k>`` (same seed, model,
data; no validation, no checkpoints), and prints, side by side, verl's per-step timings from each
run's ``metrics.jsonl``: ``timing_s/update_actor`` (where the diagnostic passes run) and
``timing_s/step`` (the whole step), mean over the steps after the first (the first carries
one-off start-up work) and the ratio with / without.

Usage (heavy: hold the shared lock on a shared machine):

    flock /tmp/g2rpo-heavy.lock python scripts/bench_grad_diagnostics.py --workdir /tmp/bench_grad \\
        [--steps 3] [--grad-every 1] [Hydra overrides for both runs]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from g2rpo_verl.demo.run_metrics import load_metrics

TIMINGS = ("timing_s/update_actor", "timing_s/step")


def run_demo(workdir: Path, steps: int, overrides: list[str]) -> float:
    cmd = [
        sys.executable,
        "-m",
        "g2rpo_verl.demo",
        "--workdir",
        str(workdir),
        "--warm-start-steps",
        "30",
        "--no-plots",
        f"trainer.total_training_steps={steps}",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        *overrides,
    ]
    env = {k: v for k, v in os.environ.items() if k != "VERL_FILE_LOGGER_PATH"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"demo failed in {workdir}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--grad-every", type=int, default=1)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    arms = {"off": [], f"grad_every_{args.grad_every}": [f"++g2rpo.diagnostics.grad_every={args.grad_every}"]}
    results = {}
    for name, extra in arms.items():
        wall = run_demo(args.workdir / name, args.steps, [*args.overrides, *extra])
        metrics = load_metrics([args.workdir / name / "metrics.jsonl"])
        later = [s for s in metrics if s > 1] or list(metrics)
        means = {k: math.fsum(metrics[s][k] for s in later) / len(later) for k in TIMINGS}
        tasks = sorted(k for k in metrics[max(metrics)] if k.endswith("/grad/norm"))
        results[name] = means
        print(
            f"{name:>14}: wall {wall:6.1f} s for {len(metrics)} steps; steps {later}: "
            + ", ".join(f"{k} {v:6.2f} s" for k, v in means.items())
            + (f"; {len(tasks)} tasks diagnosed" if tasks else "")
        )
    off, on = results["off"], results[f"grad_every_{args.grad_every}"]
    print("ratio with / without: " + ", ".join(f"{k} {on[k] / off[k]:.2f}x" for k in TIMINGS))


if __name__ == "__main__":
    main()
