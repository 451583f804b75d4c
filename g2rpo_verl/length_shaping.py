"""Task-level response-length shaping: a per-task trapezoid envelope with dynamic bounds.

Each task τ scores a response of ``L`` tokens with the trapezoid (docs/method.md)::

    0 if L < a or L > d;   (L − a)/(b − a) on [a, b);   1 on [b, c];   1 − (L − c)/(d − c) on (c, d]

The plateau ``[b, c]`` follows ``m_τ``, a running mean (EMA over steps) of the lengths of τ's
*successful*, non-truncated responses, according to the task's profile:

``reasoning`` (math, general VQA, charts) — pulled toward longer chains::

    b = clip((1 + stretch)·m, floor, ceiling)     c = (1 + width)·b
    a = (1 − ramp)·b                              d = (1 + ramp)·c

``perception`` (grounding, OCR / documents) — pulled toward direct answers::

    c = clip((1 − stretch)·m, floor, ceiling)     b = (1 − width)·c
    a = 0                                         d = (1 + ramp)·c

``neutral`` — score 1 for every length (no shaping).

So a reasoning task's plateau always starts a little beyond what already succeeds (never
below ``floor``) and a perception task's ends a little short of it (never above
``ceiling``); once lengths reach those limits the bounds stop moving, which is what makes
lengths settle early. Before a task has had a successful response, ``m`` is the
profile's limit (``floor`` for reasoning, ``ceiling`` for perception).

All state is a few floats per task (:meth:`LengthShaper.state_dict`), saved with verl's
checkpoints by the trainer mixin so a resumed run continues with the same bounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import torch

from g2rpo_verl.rewards.accuracy import GROUNDING, MATH, OCR, canonical_problem_type

__all__ = ["trapezoid", "TaskLengthRule", "LengthShaper", "PROFILES", "DEFAULT_TASK_PROFILES", "builtin_profile"]

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


@dataclass
class TaskLengthRule:
    """Constants of one task's envelope (``g2rpo.length.tasks.<task>``); tokens unless noted.

    Attributes:
        profile: ``reasoning``, ``perception`` or ``neutral`` (see module docstring).
        floor / ceiling: limits of the moving plateau edge (``b`` for reasoning, ``c`` for
            perception).
        stretch: how far beyond (reasoning) or short of (perception) the running successful
            length the plateau edge sits, as a fraction.
        width: plateau width as a fraction of its moving edge.
        ramp: ramp widths as a fraction of the plateau edges.
    """

    profile: str = "neutral"
    floor: float = 0.0
    ceiling: float = math.inf
    stretch: float = 0.1
    width: float = 0.5
    ramp: float = 0.5

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"length profile must be one of {PROFILES}, got {self.profile!r}")
        if not 0 <= self.floor <= self.ceiling:
            raise ValueError(f"length rule needs 0 <= floor <= ceiling, got floor={self.floor}, ceiling={self.ceiling}")
        for name in ("stretch", "width", "ramp"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"length rule '{name}' must be in [0, 1], got {getattr(self, name)}")

    def bounds(self, m: float) -> tuple[float, float, float, float]:
        """``(a, b, c, d)`` for running successful length ``m``."""
        if self.profile == "reasoning":
            b = min(max((1 + self.stretch) * m, self.floor), self.ceiling)
            c = (1 + self.width) * b
            return (1 - self.ramp) * b, b, c, (1 + self.ramp) * c
        if self.profile == "perception":
            c = min(max((1 - self.stretch) * m, self.floor), self.ceiling)
            return 0.0, (1 - self.width) * c, c, (1 + self.ramp) * c
        return 0.0, 0.0, math.inf, math.inf

    def initial_length(self) -> float:
        if self.profile == "reasoning":
            return self.floor
        return self.ceiling if math.isfinite(self.ceiling) else self.floor


@dataclass
class _TaskState:
    running_length: float  # m_τ
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
            self.state[task] = _TaskState(self.rule(task).initial_length())
        return self.state[task]

    def bounds(self, task: str) -> tuple[float, float, float, float]:
        return self.rule(task).bounds(self._state(task).running_length)

    def score(self, lengths: torch.Tensor, tasks: Sequence[str]) -> torch.Tensor:
        """``(N,)`` float64 envelope scores of ``lengths`` ``(N,)`` under current bounds."""
        bounds = torch.tensor([self.bounds(t) for t in tasks], dtype=torch.float64).reshape(-1, 4)
        return trapezoid(lengths, *bounds.unbind(-1))

    def update(self, lengths: torch.Tensor, tasks: Sequence[str], successful: torch.Tensor) -> None:
        """Fold this step's successful responses (``successful`` ``(N,)`` bool) into ``m_τ``."""
        for task in dict.fromkeys(tasks):
            sel = torch.tensor([t == task for t in tasks]) & successful.cpu()
            if not sel.any():
                continue
            state = self._state(task)
            batch_mean = lengths.cpu()[sel].double().mean().item()
            state.running_length = self.momentum * state.running_length + (1 - self.momentum) * batch_mean
            state.updates += 1

    def state_dict(self) -> dict:
        return {"momentum": self.momentum, "tasks": {t: asdict(s) for t, s in self.state.items()}}

    def load_state_dict(self, state: Mapping) -> None:
        names = {f.name for f in fields(_TaskState)}
        self.state = {t: _TaskState(**{k: v for k, v in s.items() if k in names}) for t, s in state["tasks"].items()}
