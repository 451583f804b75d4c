"""``gs_grpo`` / ``gs_gdpo`` in verl's advantage-estimator registry, and their per-task input.

verl calls a registered estimator with ``token_level_rewards``, ``response_mask``, ``index``
(uid) and ``config`` only — nothing per task — and its V1 trainer builds that call itself
(after KL-in-reward and rollout correction). The plugin's trainer therefore hands each step's
:class:`TaskBatch` (built from the step's :class:`~g2rpo_verl.verl_hooks.samples.SampleInfo`)
to the estimator for the duration of verl's own advantage step with :func:`task_batch`; the
estimator checks it is aligned with the rows verl gave it (same uids, same order) and fails
loudly when it is absent. This scoped hand-over is the one place a value does not travel as an
argument: verl's estimator signature has no slot for it, and re-implementing verl's advantage
step to add one would fork verl.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from verl.trainer.ppo.core_algos import register_adv_est

from g2rpo_verl.algorithms.advantages import gs_gdpo_advantages, gs_grpo_advantages
from g2rpo_verl.algorithms.ema_grpo import EmaStdState, ema_grpo_advantages
from g2rpo_verl.config import PLUGIN_ESTIMATORS, EmaGrpoConfig
from g2rpo_verl.verl_hooks.samples import SampleInfo

__all__ = [
    "ESTIMATORS",
    "TaskBatch",
    "build_task_batch",
    "task_batch",
    "compute_gs_grpo_outcome_advantage",
    "compute_gs_gdpo_outcome_advantage",
    "compute_ema_grpo_outcome_advantage",
]

#: The estimators this module registers (names defined in :mod:`g2rpo_verl.config`).
ESTIMATORS = PLUGIN_ESTIMATORS


@dataclass(frozen=True)
class TaskBatch:
    """Per-sample side information for one advantage computation, rows in batch order.

    Attributes:
        uids: ``(N,)`` object array, verl's prompt-group ``uid`` of each row.
        task_ids: ``(N,)`` long tensor, index into ``task_names``.
        task_names: the distinct task-key values.
        components: ``(N, K)`` float64 tensor of GS-GDPO reward components (``None`` for gs_grpo).
        present: ``(N, K)`` bool tensor, False where a component does not apply.
        component_names / component_weights: the K names and weights.
        ema: ema_grpo's state (``None`` for the other estimators): the trainer's own
            :class:`~g2rpo_verl.algorithms.ema_grpo.EmaStdState`, which the estimator advances by one step
            (verl keeps the estimator's return value, so the new moments go back this way).
        ema_config: ema_grpo's constants (``g2rpo.ema_grpo``; ``None`` for the other estimators).
    """

    uids: np.ndarray
    task_ids: torch.Tensor
    task_names: tuple[str, ...]
    components: torch.Tensor | None = None
    present: torch.Tensor | None = None
    component_names: tuple[str, ...] = field(default_factory=tuple)
    component_weights: tuple[float, ...] = field(default_factory=tuple)
    ema: EmaStdState | None = None
    ema_config: EmaGrpoConfig | None = None


def _component_matrix(
    names: Sequence[str], reward_infos: Sequence[Mapping | None]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, K)`` float64 values and ``(N, K)`` presence from the per-sample reward dicts.

    ``None`` or an absent key means "does not apply to this sample"; a name that no sample
    has is a configuration error, as is a value that is not a number.
    """
    n, k = len(reward_infos), len(names)
    values = torch.zeros(n, k, dtype=torch.float64)
    present = torch.zeros(n, k, dtype=torch.bool)
    for i, info in enumerate(reward_infos):
        info = info or {}
        for c, name in enumerate(names):
            v = info.get(name)
            if v is None:
                continue
            if not isinstance(v, (bool, int, float, np.bool_, np.integer, np.floating)):
                raise ValueError(f"reward component '{name}' of sample {i} is {v!r}, not a number")
            values[i, c] = float(v)
            present[i, c] = True
    unknown = [name for c, name in enumerate(names) if not present[:, c].any()]
    if unknown:
        seen = sorted({key for info in reward_infos for key in (info or {})})
        raise ValueError(
            f"gs_gdpo: reward component(s) {unknown} (algorithm.gdpo_reward_keys) are returned for no sample; "
            f"the reward function returned the keys {seen}"
        )
    return values, present


def build_task_batch(
    info: SampleInfo,
    components: tuple[Sequence[str], Sequence[float]] | None = None,
    ema: EmaStdState | None = None,
    ema_config: EmaGrpoConfig | None = None,
) -> TaskBatch:
    """The :class:`TaskBatch` of one advantage step (``components`` = names and weights, for
    gs_gdpo; ``ema`` = the trainer's state and ``ema_config`` its constants, for ema_grpo)."""
    batch = TaskBatch(
        uids=np.asarray(info.uids, dtype=object),
        task_ids=info.task_ids,
        task_names=info.task_names,
        ema=ema,
        ema_config=ema_config,
    )
    if components is None:
        return batch
    names, weights = components
    values, present = _component_matrix(names, info.reward_infos)
    return TaskBatch(
        uids=batch.uids,
        task_ids=batch.task_ids,
        task_names=batch.task_names,
        components=values,
        present=present,
        component_names=tuple(names),
        component_weights=tuple(float(w) for w in weights),
        ema=ema,
        ema_config=ema_config,
    )


_CURRENT: contextvars.ContextVar[TaskBatch | None] = contextvars.ContextVar("g2rpo_task_batch", default=None)


@contextlib.contextmanager
def task_batch(batch: TaskBatch) -> Iterator[TaskBatch]:
    """Make ``batch`` the input of the gs_* estimators called inside the ``with`` block."""
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
        raise RuntimeError(f"{name}: task batch has {len(batch.uids)} rows but verl's batch has {n_rows}")
    if index is not None and not np.array_equal(np.asarray(index, dtype=object), batch.uids):
        raise RuntimeError(f"{name}: task batch rows are not in verl's batch order (uid mismatch)")
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
    ``reward_extra_info``), named by ``algorithm.gdpo_reward_keys``. ``token_level_rewards``
    is not used, which is why the config check refuses ``algorithm.use_kl_in_reward`` with
    gs_gdpo (verl subtracts the KL penalty from that tensor only).
    """
    batch = _current("gs_gdpo", index, token_level_rewards.shape[0])
    if batch.components is None:
        raise RuntimeError("gs_gdpo: the task batch carries no reward components")
    device = token_level_rewards.device
    with torch.no_grad():
        per_sample = gs_gdpo_advantages(
            batch.components.to(device),
            _group_ids(batch.uids, device),
            batch.task_ids.to(device),
            weights=list(batch.component_weights),
            present=batch.present.to(device),
        ).to(token_level_rewards.dtype)
    return _broadcast(per_sample, response_mask)


@register_adv_est("ema_grpo")
def compute_ema_grpo_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray | None = None,
    config=None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """verl adapter of :func:`g2rpo_verl.algorithms.ema_grpo.ema_grpo_advantages`; shapes as for gs_grpo.

    Reads the trainer's per-task moments from the task batch and advances them by this step.
    """
    batch = _current("ema_grpo", index, token_level_rewards.shape[0])
    if batch.ema is None or batch.ema_config is None:
        raise RuntimeError("ema_grpo: the task batch carries no EMA state / constants (the trainer's g2rpo.ema_grpo)")
    cfg = batch.ema_config
    device = token_level_rewards.device
    with torch.no_grad():
        scores = _scores(token_level_rewards)
        result = ema_grpo_advantages(
            scores.cpu(), _group_ids(batch.uids, torch.device("cpu")), batch.task_ids, list(batch.task_names),
            batch.ema.moments, decay=cfg.decay, floor=cfg.floor, guard=cfg.guard, eps=cfg.eps,
        )
    batch.ema.advance(result)
    return _broadcast(result.advantages.to(device=device, dtype=token_level_rewards.dtype), response_mask)
