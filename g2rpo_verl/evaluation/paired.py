"""Two evaluations side by side: per-task deltas with paired bootstrap intervals.

``g2rpo-eval --compare A B`` pairs the two runs' prompts by identity (data file name and row)
and, per task (and overall), reports ``B - A`` of the mean accuracy and the mean reward with a
95 % **paired bootstrap** interval: prompts are resampled with replacement, the same prompts
for both runs, 10 000 times (``scipy.stats.bootstrap(..., paired=True, method="percentile")``,
fixed seed). The unit is the prompt: with n > 1 responses per prompt its value is the mean
over them, so runs with different ``n`` still pair. Pairing removes the prompt-difficulty
variance that two independent intervals would carry, which matters at a few dozen prompts
per task. Prompts present in only one run are left out and counted (``unpaired``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from g2rpo_verl.evaluation.aggregates import accuracy_of
from g2rpo_verl.evaluation.predictions import PredictionStore

__all__ = ["CONFIDENCE", "Delta", "TaskComparison", "compare_records", "compare_dirs", "paired_delta"]

CONFIDENCE = 0.95
N_RESAMPLES = 10_000
SEED = 0
ALL = "(all)"


@dataclass(frozen=True)
class Delta:
    """``b - a`` of a mean over paired prompts, with its bootstrap interval ``[low, high]``."""

    a: float
    b: float
    delta: float
    low: float
    high: float


@dataclass(frozen=True)
class TaskComparison:
    """One task's paired comparison: ``prompts`` paired, ``unpaired`` left out."""

    task: str
    prompts: int
    unpaired: int
    accuracy: Delta
    reward: Delta | None


def paired_delta(a: Sequence[float], b: Sequence[float]) -> Delta:
    """Mean of ``b - a`` over pairs and its 95 % paired bootstrap percentile interval.

    A single pair, or pairs that all differ by the same amount, give a zero-width interval
    (every resample has the same mean).
    """
    from scipy import stats

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"need equally many paired values, got {x.size} and {y.size}")
    diff = y - x
    delta = float(diff.mean())
    if x.size == 1 or np.ptp(diff) == 0:
        low = high = delta
    else:
        result = stats.bootstrap(
            (x, y),
            lambda u, v, axis=-1: np.mean(v - u, axis=axis),
            paired=True,
            vectorized=True,
            confidence_level=CONFIDENCE,
            n_resamples=N_RESAMPLES,
            method="percentile",
            random_state=np.random.default_rng(SEED),
        )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return Delta(a=float(x.mean()), b=float(y.mean()), delta=delta, low=low, high=high)


def _per_prompt(records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """``(file name, row) -> {task, accuracy, reward}``, means over the prompt's responses."""
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault((Path(r["file"]).name, int(r["row"])), []).append(r)
    out = {}
    for key, group in groups.items():
        scores = [(g.get("reward") or {}).get("score") for g in group]
        out[key] = {
            "task": str(group[0]["task"]),
            "accuracy": float(np.mean([accuracy_of(g) for g in group])),
            "reward": float(np.mean(scores)) if all(isinstance(s, (int, float)) for s in scores) else None,
        }
    return out


def compare_records(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> list[TaskComparison]:
    """Per task (sorted) and then over all tasks (``"(all)"``): paired deltas ``b - a``.

    Raises ``ValueError`` when the runs share no prompt (different data files).
    """
    pa, pb = _per_prompt(a), _per_prompt(b)
    common = sorted(set(pa) & set(pb))
    if not common:
        raise ValueError("the two evaluations share no prompt (compare runs on the same data files)")
    unpaired = set(pa) ^ set(pb)
    tasks = sorted({pa[k]["task"] for k in common})
    out = []
    for task in [*tasks, ALL]:
        keys = [k for k in common if task == ALL or pa[k]["task"] == task]
        left_out = sum(1 for k in unpaired if task == ALL or (pa.get(k) or pb.get(k))["task"] == task)
        rewards = [(pa[k]["reward"], pb[k]["reward"]) for k in keys]
        reward = None
        if all(x is not None and y is not None for x, y in rewards):
            reward = paired_delta([x for x, _ in rewards], [y for _, y in rewards])
        out.append(
            TaskComparison(
                task=task,
                prompts=len(keys),
                unpaired=left_out,
                accuracy=paired_delta([pa[k]["accuracy"] for k in keys], [pb[k]["accuracy"] for k in keys]),
                reward=reward,
            )
        )
    return out


def compare_dirs(a: str | Path, b: str | Path) -> list[TaskComparison]:
    """:func:`compare_records` of two evaluation output directories (their ``predictions.jsonl``)."""
    runs = []
    for d in (a, b):
        path = Path(d) / "predictions.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: pass two g2rpo-eval --out directories")
        runs.append(PredictionStore(path).load())
    return compare_records(*runs)
