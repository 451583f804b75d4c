"""``gs_grpo`` / ``gs_gdpo`` in verl's advantage-estimator registry, and the per-task channel.

verl calls a registered estimator with ``token_level_rewards``, ``response_mask``, ``index``
(uid) and ``config`` only — nothing per task. The plugin's trainer (see
:mod:`g2rpo_verl.verl_hooks.trainer`) reads each sample's task key and reward components
from TransferQueue and opens a :func:`task_batch` context around verl's own advantage step;
the estimator reads it here and checks it is aligned with the rows it was given (same uids
in the same order).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from verl.trainer.ppo.core_algos import register_adv_est

from g2rpo_verl.advantages import gs_gdpo_advantages, gs_grpo_advantages

__all__ = ["ESTIMATORS", "TaskBatch", "task_batch", "compute_gs_grpo_outcome_advantage", "compute_gs_gdpo_outcome_advantage"]

ESTIMATORS = ("gs_grpo", "gs_gdpo")


@dataclass
class TaskBatch:
    """Per-sample side information for one advantage computation, rows in batch order.

    Attributes:
        uids: ``(N,)`` object array, verl's prompt-group ``uid`` of each row.
        task_ids: ``(N,)`` long tensor, index into ``task_names``.
        task_names: the distinct task-key values.
        components: ``(N, K)`` float tensor of GS-GDPO reward components (``None`` for gs_grpo).
        present: ``(N, K)`` bool tensor, False where a component does not apply.
        component_names / component_weights: the K names and weights.
    """

    uids: np.ndarray
    task_ids: torch.Tensor
    task_names: list[str]
    components: torch.Tensor | None = None
    present: torch.Tensor | None = None
    component_names: list[str] = field(default_factory=list)
    component_weights: list[float] = field(default_factory=list)


_CURRENT: contextvars.ContextVar[TaskBatch | None] = contextvars.ContextVar("g2rpo_task_batch", default=None)


@contextlib.contextmanager
def task_batch(batch: TaskBatch) -> Iterator[TaskBatch]:
    """Make ``batch`` visible to the gs_* estimators called inside the ``with`` block."""
    token = _CURRENT.set(batch)
    try:
        yield batch
    finally:
        _CURRENT.reset(token)


def _current(name: str, index: np.ndarray | None, n_rows: int) -> TaskBatch:
    batch = _CURRENT.get()
    if batch is None:
        raise RuntimeError(
            f"advantage estimator '{name}' needs each sample's task key, which verl does not pass to "
            "estimators. It is supplied by g2rpo_verl's trainer, installed for verl's V1 trainer "
            "(trainer.use_v1=true, the default) when the plugin loads; call the estimator inside "
            "g2rpo_verl.verl_hooks.estimators.task_batch(...), or use g2rpo_verl.gs_grpo_advantages directly."
        )
    if len(batch.uids) != n_rows:
        raise RuntimeError(f"{name}: task context has {len(batch.uids)} rows but the batch has {n_rows}")
    if index is not None and not np.array_equal(np.asarray(index, dtype=object), batch.uids):
        raise RuntimeError(f"{name}: task context rows are not in the batch's order (uid mismatch)")
    return batch


def _group_ids(uids: np.ndarray, device: torch.device) -> torch.Tensor:
    # Hash-based factorisation: ~5x faster than np.unique's string sort at 4096 uids.
    return torch.from_numpy(pd.factorize(uids)[0]).to(device)


def _scores(token_level_rewards: torch.Tensor) -> torch.Tensor:
    scores = token_level_rewards.sum(dim=-1)
    bad = ~torch.isfinite(scores)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(
            f"non-finite reward {scores[i].item()} for sample {i} of {scores.numel()}: check the reward "
            "function (a NaN reward would poison every advantage of its task)"
        )
    return scores


def _broadcast(per_sample: torch.Tensor, response_mask: torch.Tensor):
    adv = per_sample.unsqueeze(-1) * response_mask.to(per_sample.dtype)
    return adv, adv


@register_adv_est("gs_grpo")
def compute_gs_grpo_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray | None = None,
    config=None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """verl adapter of :func:`g2rpo_verl.gs_grpo_advantages`.

    Args: ``token_level_rewards`` / ``response_mask`` ``(N, T)``; ``index`` ``(N,)`` uids.
    Returns ``(advantages, returns)``, both ``(N, T)`` and equal (outcome-only estimator).
    """
    batch = _current("gs_grpo", index, token_level_rewards.shape[0])
    device = token_level_rewards.device
    with torch.no_grad():
        scores = _scores(token_level_rewards)
        per_sample = gs_grpo_advantages(scores, _group_ids(batch.uids, device), batch.task_ids.to(device))
    return _broadcast(per_sample, response_mask)


@register_adv_est("gs_gdpo")
def compute_gs_gdpo_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray | None = None,
    config=None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """verl adapter of :func:`g2rpo_verl.gs_gdpo_advantages`; shapes as for gs_grpo.

    The components come from the reward function's returned dict (per-sample
    ``reward_extra_info``), named by ``algorithm.gdpo_reward_keys``.
    """
    batch = _current("gs_gdpo", index, token_level_rewards.shape[0])
    if batch.components is None:
        raise RuntimeError("gs_gdpo: the task context carries no reward components")
    device = token_level_rewards.device
    with torch.no_grad():
        per_sample = gs_gdpo_advantages(
            batch.components.to(device),
            _group_ids(batch.uids, device),
            batch.task_ids.to(device),
            weights=batch.component_weights,
            present=batch.present.to(device),
        ).to(token_level_rewards.dtype)
    return _broadcast(per_sample, response_mask)
