"""The plugin's advantage estimators, each declared once as an :class:`EstimatorSpec`.

Everything else about an estimator is derived from its declaration: verl's registry entry
(:mod:`g2rpo_verl.verl_hooks.advantages` registers one adapter per spec), the config checks
(:mod:`g2rpo_verl.verl_hooks.checks`: the name, the V1 trainer, ``spec.config_problems``), the
trainer's per-step input and state (:class:`TaskBatch`, ``spec.state`` checkpointed in
``g2rpo_state.json``), its metrics (``spec.step_metrics``) and the demo's overrides
(``spec.demo_overrides``). Adding an estimator = its math (a pure-torch module under
:mod:`g2rpo_verl.algorithms`) + one :class:`EstimatorSpec` and one line in :data:`ESTIMATORS`
here (docs/adding_an_estimator.md walks through it; the tests run that example).

No verl import here: the checks, the preflight and the demo read the declarations without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from g2rpo_verl.algorithms.advantages import gs_gdpo_advantages, gs_grpo_advantages
from g2rpo_verl.algorithms.ema_grpo import EmaStdState, ema_grpo_advantages
from g2rpo_verl.config import G2RPOConfig, gdpo_components

__all__ = [
    "EstimatorSpec",
    "TaskBatch",
    "ESTIMATORS",
    "plugin_estimators",
    "component_estimators",
    "estimator_spec",
    "group_ids",
]


@dataclass(frozen=True)
class TaskBatch:
    """Per-sample side information for one advantage computation, rows in batch order.

    Attributes:
        uids: ``(N,)`` object array, verl's prompt-group ``uid`` of each row.
        task_ids: ``(N,)`` long tensor, index into ``task_names``.
        task_names: the distinct task-key values.
        components: ``(N, K)`` float64 reward components (``None`` unless the estimator ranks
            components, :attr:`EstimatorSpec.ranks_components`).
        present: ``(N, K)`` bool, False where a component does not apply to the sample.
        component_names / component_weights: the K names and weights.
        state: the estimator's trainer-side state (:attr:`EstimatorSpec.state`; ``None`` if it has
            none). The estimator may advance it: verl keeps only the estimator's return value,
            so the new state goes back this way.
        g2rpo: the run's plugin config (the estimator's constants, e.g. ``g2rpo.ema_grpo``).
    """

    uids: np.ndarray
    task_ids: torch.Tensor
    task_names: tuple[str, ...]
    components: torch.Tensor | None = None
    present: torch.Tensor | None = None
    component_names: tuple[str, ...] = field(default_factory=tuple)
    component_weights: tuple[float, ...] = field(default_factory=tuple)
    state: Any = None
    g2rpo: G2RPOConfig = field(default_factory=G2RPOConfig)


def group_ids(uids: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(N,)`` long prompt-group index of each row (first-seen order)."""
    import pandas as pd

    # Hash-based factorisation: ~5x faster than np.unique's string sort at 4096 uids.
    return torch.from_numpy(pd.factorize(uids)[0]).to(device)


@dataclass(frozen=True)
class EstimatorSpec:
    """One advantage estimator of the plugin (``algorithm.adv_estimator=<name>``).

    Attributes:
        name: the config value, and verl's registry key.
        advantages: ``(scores, batch) -> (N,)`` per-sample advantages. ``scores`` is ``(N,)``, the
            summed token-level reward verl hands estimators (finite, checked by the adapter), on the
            device and in the dtype of verl's rewards; ``batch`` is the step's :class:`TaskBatch`.
            The result is broadcast over each response's tokens (outcome-only estimators).
        ranks_components: ranks reward components (``algorithm.gdpo_reward_keys``) instead of the
            summed reward: the task batch then carries them, and length shaping must be a component.
        state: class of the estimator's state across steps (constructed with no argument, with
            ``state_dict``/``load_state_dict``), checkpointed as ``state_name``; ``None`` = stateless.
        state_name: its part name in ``g2rpo_state.json``.
        step_metrics: ``(state, g2rpo) -> {task: {metric: value}}`` logged after each step as
            ``task_<task>/<metric>``, or ``None``.
        config_problems: ``(verl config) -> [problem, ...]`` checked with the rest of the config
            before anything starts (each problem names its key), or ``None``.
        demo_overrides: Hydra overrides the CPU demo adds on top of its YAML for this estimator.
    """

    name: str
    advantages: Callable[[torch.Tensor, TaskBatch], torch.Tensor]
    ranks_components: bool = False
    state: type | None = None
    state_name: str | None = None
    step_metrics: Callable[[Any, G2RPOConfig], dict[str, dict[str, float]]] | None = None
    config_problems: Callable[[Any], list[str]] | None = None
    demo_overrides: tuple[str, ...] = ()

    def __post_init__(self):
        if (self.state is None) != (self.state_name is None):
            raise ValueError(f"estimator {self.name!r}: state and state_name go together")


# ------------------------------------------------------------------------------------ gs_grpo
def _gs_grpo(scores: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    return gs_grpo_advantages(scores, group_ids(batch.uids, scores.device), batch.task_ids.to(scores.device))


GS_GRPO = EstimatorSpec(name="gs_grpo", advantages=_gs_grpo)


# ------------------------------------------------------------------------------------ gs_gdpo
def _gs_gdpo(scores: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    if batch.components is None:
        raise RuntimeError("gs_gdpo: the task batch carries no reward components")
    device = scores.device
    return gs_gdpo_advantages(
        batch.components.to(device),
        group_ids(batch.uids, device),
        batch.task_ids.to(device),
        weights=list(batch.component_weights),
        present=batch.present.to(device),
    ).to(scores.dtype)


def _gs_gdpo_problems(config: Any) -> list[str]:
    algorithm = config.get("algorithm", None) or {}
    problems = []
    try:
        gdpo_components(algorithm)
    except ValueError as err:
        problems.append(str(err))
    if algorithm.get("use_kl_in_reward", False):
        problems.append(
            "algorithm.use_kl_in_reward=true with algorithm.adv_estimator=gs_gdpo: gs_gdpo ranks the reward "
            "components (algorithm.gdpo_reward_keys), so the KL penalty verl subtracts from the summed reward "
            "would be silently dropped. Use the KL loss instead (actor_rollout_ref.actor.use_kl_loss=true) "
            "and set algorithm.use_kl_in_reward=false, or use gs_grpo"
        )
    return problems


GS_GDPO = EstimatorSpec(
    name="gs_gdpo",
    advantages=_gs_gdpo,
    ranks_components=True,
    config_problems=_gs_gdpo_problems,
    # GS-GDPO never sees the summed reward, so the length score must be one of its components;
    # the weights mirror the scalar reward's (0.9 accuracy, 0.1 format, 1 structure, 0.1 length).
    demo_overrides=(
        "++g2rpo.length.mode=component",
        "++algorithm.gdpo_reward_keys=[accuracy,format,structure,length]",
        "++algorithm.gdpo_reward_weights=[0.9,0.1,1.0,0.1]",
    ),
)


# ----------------------------------------------------------------------------------- ema_grpo
def _ema_grpo(scores: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    if not isinstance(batch.state, EmaStdState):
        raise RuntimeError("ema_grpo: the task batch carries no EMA state (the trainer's per-task moments)")
    cfg = batch.g2rpo.ema_grpo
    result = ema_grpo_advantages(
        scores.cpu(), group_ids(batch.uids), batch.task_ids, list(batch.task_names), batch.state.moments,
        decay=cfg.decay, floor=cfg.floor, guard=cfg.guard, eps=cfg.eps,
    )  # fmt: skip
    batch.state.advance(result)
    return result.advantages.to(device=scores.device, dtype=scores.dtype)


def _ema_metrics(state: EmaStdState, g2rpo: G2RPOConfig) -> dict[str, dict[str, float]]:
    """``ema/std`` (σ_τ after this step, floored at ``g2rpo.ema_grpo.floor``) and
    ``ema/fallback_groups`` (the step's groups that fell back to their own std), per task."""
    floor = g2rpo.ema_grpo.floor
    metrics: dict[str, dict[str, float]] = {t: {"ema/std": m.std(floor)} for t, m in state.moments.items()}
    for t, k in state.last_fallback_groups.items():
        metrics.setdefault(t, {})["ema/fallback_groups"] = float(k)
    return metrics


EMA_GRPO = EstimatorSpec(
    name="ema_grpo",
    advantages=_ema_grpo,
    state=EmaStdState,
    state_name="ema_std",
    step_metrics=_ema_metrics,
)


#: Every estimator the plugin registers with verl (all need per-sample task keys). The names,
#: the checks, the trainer and the demo read it when they run (through the functions below), so
#: a line added here is all the wiring a new estimator needs.
ESTIMATORS: tuple[EstimatorSpec, ...] = (GS_GRPO, GS_GDPO, EMA_GRPO)


def plugin_estimators() -> tuple[str, ...]:
    """The ``algorithm.adv_estimator`` values the plugin registers."""
    return tuple(spec.name for spec in ESTIMATORS)


def component_estimators() -> tuple[str, ...]:
    """Estimators that rank reward components, never the summed reward: the plugin's and verl's ``gdpo``."""
    return tuple(spec.name for spec in ESTIMATORS if spec.ranks_components) + ("gdpo",)


def estimator_spec(name: str) -> EstimatorSpec | None:
    """The declaration of ``name``, or ``None`` for an estimator that is not the plugin's."""
    return next((spec for spec in ESTIMATORS if spec.name == name), None)
