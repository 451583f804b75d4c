"""The plugin's estimators (:mod:`g2rpo_verl.estimators`) in verl's registry, and their per-task input.

One adapter per :class:`~g2rpo_verl.estimators.EstimatorSpec`, registered under its name
(:func:`register_estimators`, called when verl's ``core_algos`` is imported).

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
from typing import Any

import numpy as np
import torch

from g2rpo_verl.config import G2RPOConfig
from g2rpo_verl.estimators import EstimatorSpec, TaskBatch
from g2rpo_verl.verl_hooks.samples import SampleInfo

__all__ = ["build_task_batch", "task_batch", "verl_adapter", "register_estimators"]


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
    state: Any = None,
    g2rpo: G2RPOConfig | None = None,
) -> TaskBatch:
    """The :class:`~g2rpo_verl.estimators.TaskBatch` of one advantage step.

    ``components`` = names and weights, for an estimator that ranks components; ``state`` = the
    estimator's trainer-side state; ``g2rpo`` = the run's plugin config (default: the defaults).
    """
    batch = TaskBatch(
        uids=np.asarray(info.uids, dtype=object),
        task_ids=info.task_ids,
        task_names=info.task_names,
        state=state,
        g2rpo=g2rpo if g2rpo is not None else G2RPOConfig(),
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
        state=batch.state,
        g2rpo=batch.g2rpo,
    )


_CURRENT: contextvars.ContextVar[TaskBatch | None] = contextvars.ContextVar("g2rpo_task_batch", default=None)


@contextlib.contextmanager
def task_batch(batch: TaskBatch) -> Iterator[TaskBatch]:
    """Make ``batch`` the input of the plugin's estimators called inside the ``with`` block."""
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
            "g2rpo_verl.verl_hooks.advantages.task_batch(...), or use g2rpo_verl.gs_grpo_advantages directly."
        )
    if len(batch.uids) != n_rows:
        raise RuntimeError(f"{name}: task batch has {len(batch.uids)} rows but verl's batch has {n_rows}")
    if index is not None and not np.array_equal(np.asarray(index, dtype=object), batch.uids):
        raise RuntimeError(f"{name}: task batch rows are not in verl's batch order (uid mismatch)")
    return batch


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


def verl_adapter(spec: EstimatorSpec):
    """verl's estimator signature around ``spec.advantages``.

    Args: ``token_level_rewards`` / ``response_mask`` ``(N, T)``; ``index`` ``(N,)`` uids.
    Returns ``(advantages, returns)``, both ``(N, T)`` and equal (outcome-only estimators).
    """

    def compute(token_level_rewards, response_mask, index=None, config=None, **kwargs):
        batch = _current(spec.name, index, token_level_rewards.shape[0])
        with torch.no_grad():
            # an estimator that ranks components never reads the summed reward, so a non-finite
            # sum (e.g. a KL term) is not its problem; every other one refuses it
            scores = token_level_rewards.sum(dim=-1) if spec.ranks_components else _scores(token_level_rewards)
            per_sample = spec.advantages(scores, batch)
        return _broadcast(per_sample, response_mask)

    compute.g2rpo_spec = spec
    compute.__name__ = compute.__qualname__ = f"compute_{spec.name}_outcome_advantage"
    compute.__doc__ = f"verl adapter of the plugin's ``{spec.name}`` estimator. " + (verl_adapter.__doc__ or "")
    return compute


def register_estimators(specs: Sequence[EstimatorSpec] | None = None) -> None:
    """Put every spec's adapter in verl's advantage-estimator registry under ``spec.name``.

    Idempotent for the same spec; verl itself refuses a second, different function for a name.
    """
    from verl.trainer.ppo.core_algos import register_adv_est

    from g2rpo_verl import estimators
    from g2rpo_verl.verl_compat.api import adv_estimator_registry

    registry = adv_estimator_registry()
    for spec in estimators.ESTIMATORS if specs is None else specs:
        if getattr(registry.get(spec.name), "g2rpo_spec", None) is not spec:
            register_adv_est(spec.name)(verl_adapter(spec))
