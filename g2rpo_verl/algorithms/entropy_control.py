"""Per-task adaptive entropy coefficients (``g2rpo.entropy.controller=adaptive``): pure Python.

Why a controller. The paper's fixed penalty ``β·[relu(Ĥ_τ − high) + relu(low − Ĥ_τ)]`` has the
gradient ``±β·∇Ĥ_τ`` while τ is outside the band and none inside. Whether it wins depends on
its size next to the policy gradient's own pull on the entropy, which is task- and run-specific:
in the demo, β = 0.02 added ~0.002 to a policy loss of ~0.03 and no task that left the band came
back. A coefficient large enough for one task and step is too large (it drowns the reward
signal) for another. The controller finds, per task, the coefficient that holds the band.

The rule: dual ascent on the band constraints, with a proportional kick. For task τ with band
``[low, high]`` of width ``w = high − low`` and ``margin`` ``μ`` (a fraction of ``w``), the
controller holds Ĥ_τ inside the *target band* ``[low + μ·w, high − μ·w]`` — a little inside
the band, so that step-to-step noise around a held edge stays inside the band. A floor at
``low <= 0`` is no floor (entropy cannot go below it): the target band then starts at ``low``
and the task is never pushed up — the way to exempt a task whose right answer is
deterministic (the demo's counting, docs/shaping.md). Each step, from
the task's measured token-mean entropy Ĥ (the policy before the update)::

    e_hi = (Ĥ − (high − μ·w)) / w          e_lo = ((low + μ·w) − Ĥ) / w
    y_hi ← clip(y_hi + rate·e_hi, 0, coef_max)    y_lo ← clip(y_lo + rate·e_lo, 0, coef_max)
    λ    = clip(y_hi − y_lo + gain·(relu(e_hi) − relu(e_lo)), −coef_max, coef_max)

``y_hi`` and ``y_lo`` are the Lagrange multipliers of ``Ĥ ≤ high − μ·w`` and ``Ĥ ≥ low + μ·w``
(errors are in band widths, so the gains mean the same for any band). Outside the target band
the violated multiplier grows every step (integral action: it keeps growing until the push wins,
then holds the force that balances the policy gradient's pull); inside, both relax toward 0 in
proportion to the slack. ``gain`` adds a kick proportional to the current excursion, so a task
that leaves the band is pushed at once, not only after the integral has built up. Everything is
clipped to ``coef_max``: the controller can never outweigh the reward signal by more than that.

The term added to the actor loss for task τ is ``λ_τ · Ĥ_τ``: λ > 0 lowers τ's entropy, λ < 0
raises it (gradient ``λ_τ·∇Ĥ_τ``, the same linear per-token form as the fixed penalty's, so the
trainer hands it to verl's loss as per-row weights ``λ_τ / n_τ``). A task that never leaves the
target band keeps λ = 0 exactly: it is unaffected.

State is two floats per task (:meth:`EntropyController.state_dict`, JSON-ready), saved with
verl's checkpoints by the trainer so a resumed run continues with the same coefficients.

Where each task's band comes from (:class:`TaskBands`; both controllers use it). The paper's
rule (``band_rule=fixed``, the reference and the default) is one absolute band, ``[low, high]``
= [0.2, 0.6], tuned for Qwen3-VL-8B; ``per_task`` overrides it per task. Two options beside it:

* ``band_rule=start``: task τ's band is ``[start_low·H0_τ, start_high·H0_τ]`` with ``H0_τ`` the
  mean of the task's token-mean entropies over its first ``start_steps`` training steps — the
  entropy of the starting (warm-start) model on its own rollouts (one step's batch is a noisy
  estimate; the policy moves little in a few steps). "Collapse" and "explosion" are then
  relative to where the model started: with the defaults 0.5 / 2 a task whose entropy halves
  is pushed back up, one whose entropy doubles is pushed back down, and a task is never pushed
  towards a level it was not at. An entry in ``per_task`` still wins (absolute band). Until
  ``H0_τ`` is known the task has no band (:meth:`TaskBands.update` returns ``None``) and is not
  shaped.
* ``floor=fall``: the lower edge acts only against a *fall*. It is armed once the task's
  entropy has been at or above it; before that the task has no floor (only its ceiling acts).
  A task that starts below the band and stays there — confident, and if it is accurate,
  rightly so — is not pushed up into randomness; one that was in the band and falls out of it
  is pushed back. ``floor=always`` (default) is the paper's two-sided rule.

The starting entropies and the armed floors are the rule's state (:meth:`TaskBands.state_dict`),
saved with the checkpoints like the multipliers, so a resumed run keeps its bands.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

__all__ = [
    "AdaptiveEntropyControl",
    "BAND_RULES",
    "EntropyController",
    "FLOOR_MODES",
    "TaskBands",
    "TaskControlState",
    "in_band",
]

#: ``g2rpo.entropy.band_rule``: ``fixed`` = the configured band (the paper's), ``start`` = from H0_τ.
BAND_RULES = ("fixed", "start")
#: ``g2rpo.entropy.floor``: ``always`` = the paper's two-sided band, ``fall`` = the floor acts once reached.
FLOOR_MODES = ("always", "fall")


@dataclass
class AdaptiveEntropyControl:
    """Gains of the adaptive controller (``g2rpo.entropy.adaptive``); see the module docstring.

    Attributes:
        rate: integral gain: the multiplier change per step per band width of excursion.
        gain: proportional gain: the immediate kick per band width of excursion.
        coef_max: bound on |λ| and on each multiplier.
        margin: the target band lies ``margin`` band widths inside the band on each side, in
            ``[0, 0.5)``.
    """

    rate: float = 0.5
    gain: float = 0.5
    coef_max: float = 0.5
    margin: float = 0.15

    def __post_init__(self) -> None:
        for name in ("rate", "gain", "coef_max"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"g2rpo.entropy.adaptive.{name} must be a finite number >= 0, got {value}")
        if not 0 <= self.margin < 0.5:
            raise ValueError(f"g2rpo.entropy.adaptive.margin must be in [0, 0.5), got {self.margin}")


@dataclass
class TaskControlState:
    """One task's controller state: the two multipliers, the coefficient in effect, steps seen."""

    y_high: float = 0.0
    y_low: float = 0.0
    coef: float = 0.0
    updates: int = 0


def in_band(h: float, low: float, high: float) -> bool:
    """Whether ``h`` lies in ``[low, high]`` (the edges count as inside)."""
    return low <= h <= high


class EntropyController:
    """Per-task coefficients λ_τ from each step's measured entropies. Lives in the trainer.

    Args:
        gains: :class:`AdaptiveEntropyControl`.
    """

    def __init__(self, gains: AdaptiveEntropyControl) -> None:
        self.gains = gains
        self.state: dict[str, TaskControlState] = {}

    def coef(self, task: str) -> float:
        """λ_τ in effect (0 for a task not seen yet)."""
        state = self.state.get(task)
        return 0.0 if state is None else state.coef

    def update(self, task: str, entropy: float, low: float, high: float) -> float:
        """Fold task ``task``'s measured entropy of this step into its state; returns the new λ_τ.

        ``entropy`` is the token-mean over the task's response tokens; ``low <= high``. A band of
        zero width holds a point: errors are then measured in nats. ``low <= 0`` is no floor:
        the target band's low edge stays at ``low`` (no margin), so the task is never pushed up.
        """
        if not math.isfinite(entropy):
            raise ValueError(f"entropy of task {task!r} is {entropy}; the controller needs a finite value")
        g = self.gains
        width = high - low
        scale = width if width > 0 else 1.0
        e_hi = (entropy - (high - g.margin * width)) / scale
        # entropy is >= 0: a floor at 0 constrains nothing, and the margin must not invent one
        target_low = low + g.margin * width if low > 0 else low
        e_lo = (target_low - entropy) / scale
        s = self.state.setdefault(task, TaskControlState())
        s.y_high = min(max(s.y_high + g.rate * e_hi, 0.0), g.coef_max)
        s.y_low = min(max(s.y_low + g.rate * e_lo, 0.0), g.coef_max)
        kick = g.gain * (max(e_hi, 0.0) - max(e_lo, 0.0))
        s.coef = min(max(s.y_high - s.y_low + kick, -g.coef_max), g.coef_max)
        s.updates += 1
        return s.coef

    def state_dict(self) -> dict:
        return {"tasks": {t: asdict(s) for t, s in self.state.items()}}

    def load_state_dict(self, state: Mapping) -> None:
        names = {f.name for f in fields(TaskControlState)}
        self.state = {
            str(t): TaskControlState(**{k: v for k, v in s.items() if k in names}) for t, s in state["tasks"].items()
        }


class TaskBands:
    """Each task's band in effect, by ``band_rule`` and ``floor`` (module docstring). Lives in the trainer.

    Args:
        configured: ``task -> (low, high)``, the configured band of a task (the paper's default
            band or its ``per_task`` entry).
        explicit: tasks with a ``per_task`` entry: under ``band_rule=start`` their configured
            band wins over the one derived from their starting entropy.
        band_rule: one of :data:`BAND_RULES`.
        start_low / start_high: the factors of ``band_rule=start``, ``0 <= start_low <= 1 <= start_high``.
        start_steps: how many of a task's first measured steps ``H0`` averages (``>= 1``).
        floor: one of :data:`FLOOR_MODES`.
    """

    def __init__(
        self,
        configured,
        explicit=(),
        band_rule="fixed",
        start_low=0.5,
        start_high=2.0,
        floor="always",
        start_steps=1,
    ):
        if band_rule not in BAND_RULES:
            raise ValueError(f"g2rpo.entropy.band_rule must be one of {BAND_RULES}, got {band_rule!r}")
        if floor not in FLOOR_MODES:
            raise ValueError(f"g2rpo.entropy.floor must be one of {FLOOR_MODES}, got {floor!r}")
        if not (0 <= start_low <= 1 <= start_high and math.isfinite(start_high)):
            raise ValueError(
                "g2rpo.entropy.start_low / start_high need 0 <= start_low <= 1 <= start_high (finite), "
                f"got {start_low} / {start_high}"
            )
        if not (isinstance(start_steps, int) and start_steps >= 1):
            raise ValueError(f"g2rpo.entropy.start_steps must be an integer >= 1, got {start_steps!r}")
        self.configured = configured
        self.start_steps = start_steps
        self.seen: dict[str, list[float]] = {}
        self.explicit = set(explicit)
        self.band_rule, self.start_low, self.start_high, self.floor = band_rule, start_low, start_high, floor
        self.start: dict[str, float] = {}
        self.armed: dict[str, bool] = {}

    def derived(self, task: str) -> bool:
        """Whether ``task``'s band comes from its starting entropy (``band_rule=start``, no ``per_task`` entry)."""
        return self.band_rule == "start" and task not in self.explicit

    def nominal(self, task: str) -> tuple[float, float] | None:
        """``(low, high)`` of ``task`` by ``band_rule`` before the ``floor`` mode; ``None`` while H0 is unknown."""
        if self.derived(task):
            if task not in self.start:
                return None
            h0 = self.start[task]
            return self.start_low * h0, self.start_high * h0
        return self.configured(task)

    def update(self, task: str, entropy: float) -> tuple[float, float] | None:
        """Fold task ``task``'s measured entropy of this step in; returns the band ``(low, high)`` in effect.

        Under ``band_rule=start`` the first ``start_steps`` measurements of a task fix its
        ``H0`` (their mean); until then the task has no band and ``None`` is returned. With
        ``floor=fall`` the floor is 0 (none) until the task's entropy has been ``>= low``.
        """
        if not math.isfinite(entropy):
            raise ValueError(f"entropy of task {task!r} is {entropy}; the band rule needs a finite value")
        if self.derived(task) and task not in self.start:
            seen = self.seen.setdefault(task, [])
            seen.append(float(entropy))
            if len(seen) < self.start_steps:
                return None
            self.start[task] = sum(seen) / len(seen)
        low, high = self.nominal(task)
        if self.floor == "fall":
            self.armed[task] = self.armed.get(task, False) or entropy >= low
            if not self.armed[task]:
                low = 0.0  # a floor at 0 is no floor (EntropyController.update)
        return low, high

    def state_dict(self) -> dict:
        return {
            "start": dict(self.start),
            "armed": dict(self.armed),
            "seen": {t: list(v) for t, v in self.seen.items()},
        }

    def load_state_dict(self, state: Mapping) -> None:
        self.start = {str(t): float(h) for t, h in state["start"].items()}
        self.armed = {str(t): bool(a) for t, a in state["armed"].items()}
        self.seen = {str(t): [float(h) for h in v] for t, v in state.get("seen", {}).items()}
