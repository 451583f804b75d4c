#!/usr/bin/env python
"""Time gs_grpo / gs_gdpo against verl's grpo, grpo_vectorized and a Python-loop reference.

All estimators are called the way verl's trainer calls them: ``(N, T)`` token-level rewards
and response mask, uids as an object array of uuid strings (6 tasks, rewards in
{0, 0.5, 1} for half the tasks and dense for the rest). ``gs_*`` run through verl's registry
inside the task context the plugin's trainer provides. Prints the median time of each and
the ratios the targets are stated in:

    gs_grpo / grpo_vectorized  (target <= 2)      torch_loop / gs_grpo  (target >= 30 at 512x8)

Two loop baselines: ``torch_loop`` is G²RPO written the way reference RL code (and verl's own
loop ``grpo``) writes group statistics — a Python dict of per-sample tensors and a few small
torch ops per group; ``python_loop`` is the plain-Python oracle of the tests
(tests/support/reference_impl.py), which never touches torch and is much faster than the former.

Usage: python scripts/bench_advantages.py [--device cpu|cuda] [--sizes 512 2048 8192] [--repeat 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from verl.trainer.ppo import core_algos  # noqa: E402

from g2rpo_verl.verl_hooks.advantages import build_task_batch, task_batch  # noqa: E402
from g2rpo_verl.verl_hooks.samples import SampleInfo  # noqa: E402
from support.reference_impl import gs_grpo_loop  # noqa: E402

N_TASKS, N_ROLLOUTS, RESPONSE_LEN = 6, 8, 32


def make_batch(n_prompts: int, device: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = n_prompts * N_ROLLOUTS
    prompt_task = rng.integers(0, N_TASKS, n_prompts)
    task = np.repeat(prompt_task, N_ROLLOUTS)
    discrete = rng.choice([0.0, 0.5, 1.0], n)
    dense = rng.random(n).round(3)
    scores = np.where(task % 2 == 0, discrete, dense)
    uids = np.repeat(np.array([str(uuid.uuid4()) for _ in range(n_prompts)], dtype=object), N_ROLLOUTS)
    lengths = rng.integers(1, RESPONSE_LEN + 1, n)
    mask = torch.arange(RESPONSE_LEN)[None, :] < torch.as_tensor(lengths)[:, None]
    rewards = torch.zeros(n, RESPONSE_LEN)
    rewards[torch.arange(n), torch.as_tensor(lengths) - 1] = torch.as_tensor(scores, dtype=torch.float32)
    components = [
        {"accuracy": float(s), "format": float(rng.integers(0, 2)), "structure": float(rng.choice([0.0, 0.5]))}
        for s in scores
    ]
    task_names = [f"task{t}" for t in task]
    return rewards.to(device), mask.float().to(device), uids, task_names, components, scores


def _torch_loop_transport(values: torch.Tensor, labels) -> torch.Tensor:
    members = defaultdict(list)
    for i in range(len(values)):
        members[labels[i]].append(i)
    out = torch.zeros_like(values)
    for idx in members.values():
        x = values[idx]
        n = len(idx)
        if n == 1:
            continue
        ranks = torch.argsort(torch.argsort(x))
        q = torch.special.ndtri((ranks.double() + 0.5) / n)
        for v in torch.unique(x):
            tied = x == v
            q[tied] = q[tied].mean()
        out[idx] = q
    return out


def gs_grpo_torch_loop(token_level_rewards, response_mask, index, tasks):
    scores = token_level_rewards.sum(-1).double()
    stage1 = _torch_loop_transport(scores, index)
    return _torch_loop_transport(stage1, tasks).unsqueeze(-1) * response_mask


def median_times(fns: dict, repeat: int, device: str) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved round-robin so that
    load from other processes hits every contender alike (the ratios are what we report)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up (allocations, lazy init)
    for _ in range(repeat):
        for name, fn in fns.items():
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench_size(n_prompts: int, device: str, repeat: int) -> dict[str, float]:
    rewards, mask, uids, task_names, components, scores = make_batch(n_prompts, device)
    cfg = {"norm_adv_by_std_in_grpo": True}
    gs_grpo = core_algos.get_adv_estimator_fn("gs_grpo")
    gs_gdpo = core_algos.get_adv_estimator_fn("gs_gdpo")
    grpo_vec = core_algos.get_adv_estimator_fn("grpo_vectorized")
    info = SampleInfo.build(list(uids), task_names, components)
    ctx_grpo = build_task_batch(info)
    ctx_gdpo = build_task_batch(info, (["accuracy", "format", "structure"], [1.0, 1.0, 1.0]))

    def run_gs(fn, ctx):
        with task_batch(ctx):
            fn(token_level_rewards=rewards, response_mask=mask, index=uids, config=cfg)

    groups, tasks = list(uids), task_names
    fast = {
        "gs_grpo": lambda: run_gs(gs_grpo, ctx_grpo),
        "gs_gdpo": lambda: run_gs(gs_gdpo, ctx_gdpo),
        "grpo_vectorized": lambda: grpo_vec(token_level_rewards=rewards, response_mask=mask, index=uids),
    }
    slow = {
        "grpo": lambda: core_algos.compute_grpo_outcome_advantage(rewards, mask, uids),
        "torch_loop": lambda: gs_grpo_torch_loop(rewards, mask, uids, tasks),
        "python_loop": lambda: gs_grpo_loop(scores.tolist(), groups, tasks),
    }
    return {**median_times(fast, repeat, device), **median_times(slow, max(3, repeat // 10), device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048, 8192], help="prompts per batch")
    parser.add_argument("--repeat", type=int, default=20)
    # One intra-op thread by default: these are ~4k-65k-element ops, and on a small machine a
    # second OpenMP thread that has to wait for a busy core makes timings 5-10x noisier.
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"tasks={N_TASKS} rollouts={N_ROLLOUTS} response_len={RESPONSE_LEN}"
    )
    names = ["gs_grpo", "gs_gdpo", "grpo_vectorized", "grpo", "torch_loop", "python_loop"]
    ratios = {
        "gs_grpo/grpo_vectorized": ("gs_grpo", "grpo_vectorized"),
        "torch_loop/gs_grpo": ("torch_loop", "gs_grpo"),
        "python_loop/gs_grpo": ("python_loop", "gs_grpo"),
        "grpo/gs_grpo": ("grpo", "gs_grpo"),
    }
    print(f"{'batch':>9} | " + " | ".join(f"{k:>15}" for k in names) + " | " + " | ".join(ratios))
    for n_prompts in args.sizes:
        t = bench_size(n_prompts, args.device, args.repeat)
        cells = " | ".join(f"{t[k] * 1e3:12.3f} ms" for k in names)
        rcells = " | ".join(f"{t[a] / t[b]:{len(r)}.2f}" for r, (a, b) in ratios.items())
        print(f"{n_prompts:>5}x{N_ROLLOUTS:<3} | {cells} | {rcells}")


if __name__ == "__main__":
    main()
