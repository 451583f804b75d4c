"""Per-task step metrics (``task_<τ>/...``), logged for every estimator."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from g2rpo_verl.algorithms.entropy import group_task_stats
from g2rpo_verl.verl_hooks.samples import metric_prefix

__all__ = ["task_step_metrics", "task_entropy_metrics", "estimator_metrics"]


def task_step_metrics(
    tasks: Sequence[str],
    reward_infos: Sequence[Mapping | None],
    rewards: torch.Tensor,
    advantages: torch.Tensor,
    lengths: torch.Tensor,
    truncated: torch.Tensor,
) -> dict[str, float]:
    """Per-task metrics of one training step, named ``task_<task>/...`` so W&B groups them.

    Args: per-sample ``(N,)`` tensors — ``rewards`` (the total reward the estimator saw),
    ``advantages`` (token-mean over the response), response ``lengths`` in tokens and
    ``truncated`` flags — and the reward function's dicts. Logs ``count``, ``reward/total``,
    ``reward/<component>`` for every numeric key of the reward dict (``None`` = not
    applicable, left out), ``advantage/{mean,std,min,max,skew}``, ``length/mean`` and
    ``length/truncation_rate``.
    """
    metrics: dict[str, float] = {}
    names = np.asarray(tasks, dtype=object)
    for task in dict.fromkeys(tasks):
        sel = torch.from_numpy(names == task)
        prefix = metric_prefix(task)
        a = advantages[sel].double()
        metrics[f"{prefix}/count"] = float(sel.sum())
        metrics[f"{prefix}/reward/total"] = rewards[sel].double().mean().item()
        metrics[f"{prefix}/advantage/mean"] = a.mean().item()
        metrics[f"{prefix}/advantage/std"] = a.std(unbiased=False).item()
        metrics[f"{prefix}/advantage/min"] = a.min().item()
        metrics[f"{prefix}/advantage/max"] = a.max().item()
        # skewness (third standardised moment; 0 when the advantages have no spread): the paper's
        # "symmetric updates" claim is a statement about it
        sd = a.std(unbiased=False)
        metrics[f"{prefix}/advantage/skew"] = (((a - a.mean()) / sd) ** 3).mean().item() if sd > 0 else 0.0
        metrics[f"{prefix}/length/mean"] = lengths[sel].double().mean().item()
        metrics[f"{prefix}/length/truncation_rate"] = truncated[sel].double().mean().item()
        values: dict[str, list[float]] = {}
        for i in sel.nonzero().squeeze(1).tolist():
            for key, value in (reward_infos[i] or {}).items():
                if isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)) and math.isfinite(value):
                    values.setdefault(key, []).append(float(value))
        for key, vs in values.items():
            metrics[f"{prefix}/reward/{key}"] = sum(vs) / len(vs)
    return metrics


def task_entropy_metrics(
    task_names: Sequence[str], task_ids: torch.Tensor, row_sum: torch.Tensor, row_count: torch.Tensor
) -> dict[str, float]:
    """``task_<task>/entropy``: token-mean of verl's per-token entropy over the task's tokens,
    from each row's masked entropy sum ``(N,)`` and token count ``(N,)``; ``task_ids`` ``(N,)``
    index ``task_names`` (as in :class:`~g2rpo_verl.verl_hooks.samples.SampleInfo`). A task
    without tokens gets no metric."""
    sums, counts = group_task_stats(row_sum, row_count, task_ids, torch.zeros_like(task_ids), len(task_names), 1)
    return {
        f"{metric_prefix(task)}/entropy": (sums[0, t] / counts[0, t]).item()
        for t, task in enumerate(task_names)
        if counts[0, t] > 0
    }


def estimator_metrics(per_task: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``task_<τ>/<name>`` for an estimator's own per-task metrics (``{task: {name: value}}``)."""
    return {f"{metric_prefix(t)}/{name}": float(v) for t, values in per_task.items() for name, v in values.items()}
