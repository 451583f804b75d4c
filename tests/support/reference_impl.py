"""Plain-Python loop implementations of G²RPO / GS-GDPO, written straight from docs/method.md.

Kept deliberately naive (dicts, sorted(), statistics.NormalDist) so that the vectorised
torch code in g2rpo_verl is checked against an independent reading of the formulas.
"""

from __future__ import annotations

from collections import defaultdict
from statistics import NormalDist

_PHI_INV = NormalDist().inv_cdf


def gaussianize_list(xs: list[float]) -> list[float]:
    n = len(xs)
    if n <= 1:
        return [0.0] * n
    order = sorted(range(n), key=lambda i: xs[i])
    q = [_PHI_INV((k + 0.5) / n) for k in range(n)]  # k is 0-based: (k+1 - 0.5)/n
    out = [0.0] * n
    start = 0
    while start < n:
        end = start
        while end + 1 < n and xs[order[end + 1]] == xs[order[start]]:
            end += 1
        mean = sum(q[start : end + 1]) / (end - start + 1)
        for pos in range(start, end + 1):
            out[order[pos]] = mean
        start = end + 1
    return out


def gaussianize_by(values: list[float], labels: list) -> list[float]:
    members = defaultdict(list)
    for i, lab in enumerate(labels):
        members[lab].append(i)
    out = [0.0] * len(values)
    for idx in members.values():
        for i, v in zip(idx, gaussianize_list([values[i] for i in idx])):
            out[i] = v
    return out


def gs_grpo_loop(rewards: list[float], groups: list, tasks: list) -> list[float]:
    # Rounded so that stage-2 ties are decided on the value, not on the last float bit.
    stage1 = [round(a, 12) for a in gaussianize_by(rewards, groups)]
    return gaussianize_by(stage1, tasks)


def gs_gdpo_loop(components: list[list[float | None]], weights: list[float], groups: list, tasks: list) -> list[float]:
    n, k = len(components), len(weights)
    summed = [0.0] * n
    for c in range(k):
        idx = [i for i in range(n) if components[i][c] is not None]
        a = gaussianize_by([components[i][c] for i in idx], [groups[i] for i in idx])
        for i, v in zip(idx, a):
            summed[i] += weights[c] * v
    return gaussianize_by([round(s, 12) for s in summed], tasks)


def ema_grpo_loop(
    steps: list[tuple[list[float], list, list]],
    decay: float = 0.99,
    floor: float = 1e-3,
    guard: float = 5.0,
    eps: float = 1e-6,
) -> list[list[float]]:
    """OneThinker's EMA-std GRPO over several batches ``(rewards, groups, tasks)``, one step at a time.

    Per task: EMA of E[R] and E[R²] (initialised at first sight, updated before use); each
    group centred on its mean and divided by the task's EMA std, unless some value of the group
    then exceeds ±guard, in which case the group is divided by its own population std.
    """
    state: dict = {}
    out = []
    for rewards, groups, tasks in steps:
        for task in dict.fromkeys(tasks):
            xs = [r for r, t in zip(rewards, tasks) if t == task]
            b1, b2 = sum(xs) / len(xs), sum(x * x for x in xs) / len(xs)
            if task in state:
                m1, m2 = state[task]
                state[task] = (decay * m1 + (1 - decay) * b1, decay * m2 + (1 - decay) * b2)
            else:
                state[task] = (b1, b2)
        adv = [0.0] * len(rewards)
        for group in dict.fromkeys(groups):
            idx = [i for i, g in enumerate(groups) if g == group]
            mean = sum(rewards[i] for i in idx) / len(idx)
            m1, m2 = state[tasks[idx[0]]]
            sigma = max(m2 - m1 * m1, floor * floor) ** 0.5
            scaled = [(rewards[i] - mean) / (sigma + eps) for i in idx]
            if any(abs(v) > guard for v in scaled):
                std = (sum((rewards[i] - mean) ** 2 for i in idx) / len(idx)) ** 0.5
                scaled = [(rewards[i] - mean) / (std + eps) for i in idx]
            for i, v in zip(idx, scaled):
                adv[i] = v
        out.append(adv)
    return out
