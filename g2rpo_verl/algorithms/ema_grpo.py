"""EMA-std GRPO (``ema_grpo``): OneThinker's per-task baseline to G²RPO, in pure torch.

GRPO divides each group's centred rewards by the *group's* std, so a group whose rewards
barely differ gets huge advantages. OneThinker (tulerfeng/OneThinker, EasyR1) divides by a
*per-task* moving average of the reward spread instead, so every task's advantages have
about unit scale and a near-tied group stays small. The rule, for one training batch:

1. each task τ's moments are updated with this batch's scores of τ (first sighting:
   initialised to them)::

       m1_τ ← d · m1_τ + (1 − d) · mean(R),     m2_τ ← d · m2_τ + (1 − d) · mean(R²)

2. ``σ_τ = sqrt(max(m2_τ − m1_τ², floor²))`` (the updated moments: the batch sees itself);
3. ``A_i = (R_i − mean_{g(i)} R) / (σ_τ(i) + eps)``;
4. guard: a group with any ``|A_i| > guard`` is rescaled by its own population std instead,
   ``A_i = (R_i − mean_g R) / (std_g R + eps)`` (that group only).

Defaults are OneThinker's: ``d = 0.99``, ``floor = 1e-3``, ``guard = 5``, ``eps = 1e-6``.
The moments are the estimator's only state; the trainer keeps them between steps and in
its checkpoints (:meth:`TaskMoments.to_dict` / :meth:`TaskMoments.from_dict`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

__all__ = [
    "DECAY",
    "FLOOR",
    "GUARD",
    "EPS",
    "TaskMoments",
    "EmaStdState",
    "EmaGrpoResult",
    "update_moments",
    "ema_grpo_advantages",
]

#: EMA decay d of the per-task moments (OneThinker's default).
DECAY = 0.99
#: Lower bound of the per-task std σ_τ.
FLOOR = 1e-3
#: A group whose task-scaled advantages exceed ±GUARD falls back to its own std.
GUARD = 5.0
#: Added to every divisor.
EPS = 1e-6


@dataclass(frozen=True)
class TaskMoments:
    """EMA of a task's first and second reward moments, ``m1 ≈ E[R]``, ``m2 ≈ E[R²]``."""

    m1: float
    m2: float

    def std(self, floor: float = FLOOR) -> float:
        """``sqrt(max(m2 − m1², floor²))`` (the variance may round below 0; the floor holds)."""
        return math.sqrt(max(self.m2 - self.m1 * self.m1, floor * floor))

    def to_dict(self) -> dict[str, float]:
        return {"m1": self.m1, "m2": self.m2}

    @classmethod
    def from_dict(cls, d: Mapping[str, float]) -> TaskMoments:
        return cls(m1=float(d["m1"]), m2=float(d["m2"]))


@dataclass
class EmaStdState:
    """ema_grpo's state across steps, kept by the trainer: each task's moments.

    ``moments`` only ever change through :meth:`advance` (one step's result);
    ``last_fallback_groups`` is that step's count per task, for its metrics.
    ``state_dict()`` / ``load_state_dict()`` give the JSON form ``{task: {"m1", "m2"}}``
    saved in the checkpoint.
    """

    moments: dict[str, TaskMoments] = field(default_factory=dict)
    last_fallback_groups: dict[str, int] = field(default_factory=dict)

    def advance(self, result: EmaGrpoResult) -> None:
        """Take this step's updated moments (called once per advantage computation)."""
        self.moments = dict(result.moments)
        self.last_fallback_groups = dict(result.fallback_groups)

    def state_dict(self) -> dict[str, dict[str, float]]:
        return {task: m.to_dict() for task, m in self.moments.items()}

    def load_state_dict(self, state: Mapping[str, Mapping[str, float]]) -> None:
        self.moments = {str(task): TaskMoments.from_dict(d) for task, d in state.items()}


@dataclass(frozen=True)
class EmaGrpoResult:
    """Advantages ``(N,)`` (dtype of the scores), the updated moments of every task seen so
    far, and how many groups fell back to their own std (``fallback_groups``, per task)."""

    advantages: torch.Tensor
    moments: dict[str, TaskMoments]
    fallback_groups: dict[str, int]


def update_moments(
    moments: Mapping[str, TaskMoments],
    scores: torch.Tensor,
    task_ids: torch.Tensor,
    task_names: Sequence[str],
    decay: float = DECAY,
) -> dict[str, TaskMoments]:
    """Step 1 of the module docstring; tasks absent from the batch keep their moments.

    ``scores``: ``(N,)``; ``task_ids``: ``(N,)`` indices into ``task_names``.
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
    out = dict(moments)
    x = scores.detach().double()
    for t, name in enumerate(task_names):
        sel = task_ids == t
        if not bool(sel.any()):
            continue
        b1, b2 = x[sel].mean().item(), (x[sel] * x[sel]).mean().item()
        prior = out.get(name)
        if prior is None:
            out[name] = TaskMoments(b1, b2)
        else:
            out[name] = TaskMoments(decay * prior.m1 + (1 - decay) * b1, decay * prior.m2 + (1 - decay) * b2)
    return out


def ema_grpo_advantages(
    scores: torch.Tensor,
    group_ids: torch.Tensor,
    task_ids: torch.Tensor,
    task_names: Sequence[str],
    moments: Mapping[str, TaskMoments],
    *,
    decay: float = DECAY,
    floor: float = FLOOR,
    guard: float = GUARD,
    eps: float = EPS,
) -> EmaGrpoResult:
    """EMA-std GRPO advantages of one batch (module docstring, steps 1-4).

    Args:
        scores: ``(N,)`` finite outcome rewards.
        group_ids: ``(N,)`` integer prompt-group labels; a group lies inside one task.
        task_ids: ``(N,)`` integer indices into ``task_names``.
        task_names: the task-key value of each task id.
        moments: the moments after the previous step (``{}`` at the start).

    A one-sample group has advantage 0 (its centred reward is 0). Computation is float64;
    the advantages are returned in the scores' dtype.
    """
    n = scores.shape[0]
    for name, ids in (("group_ids", group_ids), ("task_ids", task_ids)):
        if ids.shape != (n,) or ids.is_floating_point():
            raise ValueError(f"{name} must be an integer tensor of shape ({n},), got {ids.dtype} {tuple(ids.shape)}")
    if n and int(task_ids.max()) >= len(task_names):
        raise ValueError(f"task_ids go up to {int(task_ids.max())} but there are {len(task_names)} task names")
    updated = update_moments(moments, scores, task_ids, task_names, decay)
    x = scores.detach().double()
    groups, g = torch.unique(group_ids, return_inverse=True)
    n_groups = groups.numel()
    count = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, g, torch.ones_like(x))
    mean = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, g, x) / count
    centred = x - mean[g]
    group_std = (torch.zeros(n_groups, dtype=torch.float64).index_add_(0, g, centred * centred) / count).sqrt()
    sigma = torch.tensor(
        [updated[name].std(floor) if name in updated else floor for name in task_names], dtype=torch.float64
    )
    task_scaled = centred / (sigma[task_ids] + eps)
    worst = torch.zeros(n_groups, dtype=torch.float64).scatter_reduce_(
        0, g, task_scaled.abs(), "amax", include_self=True
    )
    fallback = worst > guard
    adv = torch.where(fallback[g], centred / (group_std[g] + eps), task_scaled)
    # the task of each group (a group lies inside one task), for the per-task fallback count
    group_task = torch.zeros(n_groups, dtype=torch.long).scatter_reduce_(0, g, task_ids, "amax", include_self=False)
    fallback_groups = {name: int((fallback & (group_task == t)).sum()) for t, name in enumerate(task_names)}
    dtype = scores.dtype if scores.is_floating_point() else torch.get_default_dtype()
    return EmaGrpoResult(advantages=adv.to(dtype), moments=updated, fallback_groups=fallback_groups)
