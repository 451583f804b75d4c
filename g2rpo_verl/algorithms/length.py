"""Task-level response-length shaping: a per-task trapezoid envelope with dynamic bounds.

Each task τ scores a response of ``L`` tokens with the trapezoid (docs/method.md)::

    0 if L < a or L > d;   (L − a)/(b − a) on [a, b);   1 on [b, c];   1 − (L − c)/(d − c) on (c, d]

The plateau hangs off one *moving edge* ``e_τ`` per task, set by the task's profile:

``reasoning`` (math, general VQA, charts) — pulled toward longer chains, ``e = b``::

    b = e        c = (1 + width)·b        a = (1 − ramp)·b        d = (1 + ramp)·c

``perception`` (grounding, OCR / documents) — pulled toward direct answers, ``e = c``::

    c = e        b = (1 − width)·c        a = 0                   d = (1 + ramp)·c

``neutral`` — score 1 for every length (no shaping).

How the edge moves. ``m_τ`` is a running mean (EMA over steps) of the lengths of τ's
*successful*, non-truncated responses; the edge's target is a little beyond it
(``(1 + stretch)·m`` for reasoning) or a little short of it (``(1 − stretch)·m`` for
perception), clipped to ``[floor, ceiling]``. The edge follows its target **in the profile's
direction only and at a bounded rate**: a reasoning edge never moves down and rises by at most
``rate`` of itself per step; a perception edge never moves up and falls by at most ``rate`` of
itself per step. The edge starts at the profile's limit on the side it moves away from
(``floor`` for reasoning, ``ceiling`` for perception), so set those near the task's current
lengths: the pull starts at once and the edge then moves at most ``rate`` a step. ``m`` starts
at the mean of the task's first successful responses (not at the limit, which an EMA would
take tens of steps to forget).

Why this converges. The edge is monotone and bounded (by ``ceiling`` / ``floor``), so it
converges; it stops where the task's successful lengths stop moving (the target stops moving)
or at the limit. Without the ratchet a reasoning task whose successful answers got shorter for
another reason (learning a terse answer format, say) dragged its own plateau down with it and
lost the pull toward longer chains; without the rate bound one noisy batch of successes could
move the plateau by any amount.

What pressure the rule puts on a task. With ``weight`` 0.1 and the default factors a response
at the running length ``m`` scores 0.82 on a reasoning envelope whose edge sits at its target
(the plateau starts at 1.1·m) and 0.89 on a perception one (the plateau ends at 0.9·m): moving
10 % toward the plateau changes the reward by ~0.02 at most. That never outweighs a difference
in accuracy, but G²RPO ranks rewards: among the responses of a prompt group whose other reward
components tie, the length score alone orders them, and the order is all the rank mapping sees
(8 tied responses spread over ±1.5 advantages however small their differences). So the pull
on a task is the share of its responses that tie with a group mate (the trainer logs it as
``task_<τ>/length/tied_share``): high for binary rewards (a group all right or all wrong), low
where accuracy is continuous and rarely ties.

All state is a few floats per task (:meth:`LengthShaper.state_dict`), saved with verl's
checkpoints by the trainer mixin so a resumed run continues with the same bounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import torch

from g2rpo_verl.rewards.accuracy import GROUNDING, MATH, OCR, canonical_problem_type

__all__ = [
    "trapezoid",
    "ties_within_groups",
    "TaskLengthRule",
    "LengthShaper",
    "PROFILES",
    "DEFAULT_TASK_PROFILES",
    "builtin_profile",
]

PROFILES = ("reasoning", "perception", "neutral")

#: Built-in profile of each canonical problem type of the reward function
#: (:data:`g2rpo_verl.rewards.accuracy.PROBLEM_TYPES`); the other types are not shaped unless
#: configured (``g2rpo.length.tasks`` / ``default_profile``).
DEFAULT_TASK_PROFILES: dict[str, str] = {
    MATH: "reasoning",
    GROUNDING: "perception",
    OCR: "perception",
}


def builtin_profile(task: str) -> str | None:
    """The built-in profile of ``task`` read as a problem type (any alias the reward accepts), else None."""
    canonical = canonical_problem_type(task)
    return DEFAULT_TASK_PROFILES.get(canonical) if canonical is not None else None


def trapezoid(lengths: torch.Tensor, a, b, c, d) -> torch.Tensor:
    """Trapezoid envelope score of ``lengths`` ``(N,)``; bounds are scalars or ``(N,)``.

    Requires ``a <= b <= c <= d``. Returns ``(N,)`` float64 in [0, 1]; a zero-width ramp
    (``a == b`` or ``c == d``) is a step.
    """
    L = lengths.to(torch.float64)
    a, b, c, d = (torch.as_tensor(x, dtype=torch.float64) for x in (a, b, c, d))
    rise = torch.where(b > a, (L - a) / (b - a).clamp(min=1e-12), torch.ones_like(L))
    fall = torch.where(d > c, 1 - (L - c) / (d - c).clamp(min=1e-12), torch.ones_like(L))
    score = torch.where(L < b, rise, torch.where(L > c, fall, torch.ones_like(L)))
    return torch.where((L < a) | (L > d), torch.zeros_like(L), score.clamp(0.0, 1.0))


def ties_within_groups(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool: response i shares its exact reward ``(N,)`` with another response of its group.

    With ``rewards`` taken before the length term, these are the responses whose rank within
    the group (all that G²RPO's stage 1 sees) the length score decides.
    """
    key = torch.stack([group_ids.detach().cpu().double(), rewards.detach().cpu().double()], -1)
    _, inverse, counts = torch.unique(key, dim=0, return_inverse=True, return_counts=True)
    return counts[inverse] > 1


def _factorise(tasks: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """The distinct tasks in first-seen order and each sample's index into them, ``(N,)`` long."""
    index: dict[str, int] = {}
    ids = [index.setdefault(t, len(index)) for t in tasks]
    return list(index), torch.tensor(ids, dtype=torch.long)


@dataclass
class TaskLengthRule:
    """Constants of one task's envelope (``g2rpo.length.tasks.<task>``); tokens unless noted.

    Attributes:
        profile: ``reasoning``, ``perception`` or ``neutral`` (see module docstring).
        floor / ceiling: limits of the moving edge (``b`` for reasoning, ``c`` for perception).
        stretch: how far beyond (reasoning) or short of (perception) the running successful
            length the edge's target sits, as a fraction.
        width: plateau width as a fraction of the moving edge.
        ramp: ramp widths as a fraction of the plateau edges.
        rate: the most the edge moves per step, as a fraction of itself (of 1 token when the
            edge is below 1 token).
    """

    profile: str = "neutral"
    floor: float = 0.0
    ceiling: float = math.inf
    stretch: float = 0.1
    width: float = 0.5
    ramp: float = 0.5
    rate: float = 0.05

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"length profile must be one of {PROFILES}, got {self.profile!r}")
        if not 0 <= self.floor <= self.ceiling:
            raise ValueError(f"length rule needs 0 <= floor <= ceiling, got floor={self.floor}, ceiling={self.ceiling}")
        for name in ("stretch", "width", "ramp", "rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"length rule '{name}' must be in [0, 1], got {getattr(self, name)}")

    def target_edge(self, m: float) -> float:
        """Where the moving edge heads for running successful length ``m`` (clipped to the limits)."""
        factor = 1 + self.stretch if self.profile == "reasoning" else 1 - self.stretch
        return min(max(factor * m, self.floor), self.ceiling)

    def bounds_at(self, edge: float) -> tuple[float, float, float, float]:
        """``(a, b, c, d)`` with the moving edge at ``edge``."""
        if self.profile == "reasoning":
            c = (1 + self.width) * edge
            return (1 - self.ramp) * edge, edge, c, (1 + self.ramp) * c
        if self.profile == "perception":
            return 0.0, (1 - self.width) * edge, edge, (1 + self.ramp) * edge
        return 0.0, 0.0, math.inf, math.inf

    def bounds(self, m: float) -> tuple[float, float, float, float]:
        """``(a, b, c, d)`` with the edge on its target for running successful length ``m``."""
        return self.bounds_at(self.target_edge(m))

    def step_edge(self, edge: float, target: float) -> float:
        """One step of the edge toward ``target``: in the profile's direction only, by <= ``rate``."""
        step = self.rate * max(edge, 1.0)
        if self.profile == "reasoning":
            return min(target, edge + step) if target > edge else edge
        if self.profile == "perception":
            return max(target, edge - step) if target < edge else edge
        return edge

    def initial_length(self) -> float:
        """The profile's limit in its direction: the edge before the task's first success."""
        if self.profile == "reasoning":
            return self.floor
        return self.ceiling if math.isfinite(self.ceiling) else self.floor


@dataclass
class _TaskState:
    running_length: float  # m_τ (meaningless while updates == 0)
    edge: float  # the moving plateau edge: b (reasoning) or c (perception)
    updates: int = 0  # steps that had successful responses of τ


class LengthShaper:
    """Per-task envelopes with running statistics. Not thread-safe; lives in the trainer.

    Args:
        rules: task-key value -> its :class:`TaskLengthRule`; tasks not listed use
            ``default_rule(task)``.
        default_rule: callable giving the rule of an unlisted task.
        momentum: EMA momentum of the running successful length (0 = last batch only).
    """

    def __init__(self, rules: Mapping[str, TaskLengthRule], default_rule, momentum: float = 0.9) -> None:
        if not 0 <= momentum < 1:
            raise ValueError(f"length momentum must be in [0, 1), got {momentum}")
        self.rules = dict(rules)
        self.default_rule = default_rule
        self.momentum = momentum
        self.state: dict[str, _TaskState] = {}

    def rule(self, task: str) -> TaskLengthRule:
        if task not in self.rules:
            self.rules[task] = self.default_rule(task)
        return self.rules[task]

    def _state(self, task: str) -> _TaskState:
        if task not in self.state:
            limit = self.rule(task).initial_length()
            self.state[task] = _TaskState(running_length=limit, edge=limit)
        return self.state[task]

    def bounds(self, task: str) -> tuple[float, float, float, float]:
        return self.rule(task).bounds_at(self._state(task).edge)

    def score(self, lengths: torch.Tensor, tasks: Sequence[str]) -> torch.Tensor:
        """``(N,)`` float64 envelope scores of ``lengths`` ``(N,)`` under current bounds."""
        names, ids = _factorise(tasks)  # one bounds lookup per distinct task, not per sample
        table = torch.tensor([self.bounds(t) for t in names], dtype=torch.float64).reshape(-1, 4)
        return trapezoid(lengths, *table[ids].unbind(-1))

    def update(self, lengths: torch.Tensor, tasks: Sequence[str], successful: torch.Tensor) -> None:
        """Fold this step's successful responses (``successful`` ``(N,)`` bool) into ``m_τ`` and move the edges."""
        names, ids = _factorise(tasks)
        for k, task in enumerate(names):
            sel = (ids == k) & successful.cpu()
            if not sel.any():
                continue
            rule, state = self.rule(task), self._state(task)
            batch_mean = lengths.cpu()[sel].double().mean().item()
            if state.updates == 0:  # the EMA starts at the first successes, not at the limit
                state.running_length = batch_mean
            else:
                state.running_length = self.momentum * state.running_length + (1 - self.momentum) * batch_mean
            state.edge = rule.step_edge(state.edge, rule.target_edge(state.running_length))
            state.updates += 1

    def state_dict(self) -> dict:
        return {"momentum": self.momentum, "tasks": {t: asdict(s) for t, s in self.state.items()}}

    def load_state_dict(self, state: Mapping) -> None:
        names = {f.name for f in fields(_TaskState)}
        self.state = {}
        for task, saved in state["tasks"].items():
            values = {k: v for k, v in saved.items() if k in names}
            if "edge" not in values:  # a state file written before the edge was kept: its target
                values["edge"] = self.rule(task).target_edge(values["running_length"])
            self.state[task] = _TaskState(**values)
