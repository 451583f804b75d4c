"""The ``g2rpo`` section of a verl config: every key this plugin adds, with paper defaults.

verl's own ``algorithm`` section is a strict dataclass (unknown keys fail to merge), so the
plugin's keys live in a top-level section. In a plain verl config add them with Hydra's ``+``
(``+g2rpo.task_key=data_source``); the configs under ``configs/`` already define the section.

GS-GDPO's components reuse verl's own GDPO keys ``algorithm.gdpo_reward_keys`` and
``algorithm.gdpo_reward_weights``; when unset, gs_gdpo uses :data:`DEFAULT_GDPO_COMPONENTS`
with weight 1 each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from g2rpo_verl.length_shaping import DEFAULT_TASK_PROFILES, TaskLengthRule

from omegaconf import OmegaConf

__all__ = ["G2RPOConfig", "EntropyShapingConfig", "LengthShapingConfig", "DEFAULT_GDPO_COMPONENTS", "load_g2rpo_config", "gdpo_components"]

DEFAULT_GDPO_COMPONENTS = ("accuracy", "format", "structure")
ENTROPY_ESTIMATORS = ("exact", "sampled")


@dataclass
class EntropyShapingConfig:
    """``g2rpo.entropy``: keep each task's token entropy inside a band (DESIGN.md).

    Penalty added to verl's actor loss: ``beta · Σ_τ [relu(Ĥ_τ − high_τ) + relu(low_τ − Ĥ_τ)]``
    with Ĥ_τ the token-mean entropy of task τ's responses.

    Attributes:
        enable: add the penalty (off by default in a plain verl config; the project's configs
            turn it on as the paper does).
        low / high: the band, reference 0.2 / 0.6, for every task not in ``per_task``.
        beta: penalty coefficient, reference 0.02.
        per_task: task-key value -> ``{low: ..., high: ...}`` overriding the band for that task.
        estimator: ``exact`` = entropy of the full next-token distribution from the logits
            (default), ``sampled`` = −log π(y_t) of the sampled token (the reference's
            estimate). ``exact`` is the default because the expected gradient of −log π(y)
            over tokens drawn from π is zero: ``sampled`` acts only through the particular
            tokens of the batch, cannot lower entropy below theirs, and lets chance excursions
            out of the band reinforce themselves (the first is pinned in tests/test_entropy_shaping.py).
    """

    enable: bool = False
    low: float = 0.2
    high: float = 0.6
    beta: float = 0.02
    per_task: dict[str, dict[str, float]] = field(default_factory=dict)
    estimator: str = "exact"

    def __post_init__(self) -> None:
        # Errors name the key, so a typo stops the run at config load, not mid-training.
        if self.estimator not in ENTROPY_ESTIMATORS:
            raise ValueError(f"g2rpo.entropy.estimator must be one of {ENTROPY_ESTIMATORS}, got {self.estimator!r}")
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"g2rpo.entropy.beta must be a finite number >= 0, got {self.beta}")
        bands = {"<default>": {"low": self.low, "high": self.high}, **{str(k): dict(v) for k, v in self.per_task.items()}}
        for task, band in bands.items():
            unknown = set(band) - {"low", "high"}
            if unknown:
                raise ValueError(f"g2rpo.entropy.per_task[{task!r}] has unknown keys {sorted(unknown)}; use low / high")
            lo, hi = float(band.get("low", self.low)), float(band.get("high", self.high))
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ValueError(f"g2rpo.entropy band for task {task!r} needs finite low <= high, got [{lo}, {hi}]")


def _default_length_profiles() -> dict[str, dict[str, Any]]:
    # Reference trends (DESIGN.md): reasoning ~600 -> 1100 tokens, grounding ~125 -> 65,
    # documents ~105 -> 30-50, with 4096-token responses.
    return {
        "reasoning": {"floor": 512, "ceiling": 2048, "stretch": 0.1, "width": 0.5, "ramp": 0.5},
        "perception": {"floor": 32, "ceiling": 128, "stretch": 0.1, "width": 1.0, "ramp": 1.0},
        "neutral": {},
    }


@dataclass
class LengthShapingConfig:
    """``g2rpo.length``: per-task response-length envelope (rule: g2rpo_verl.length_shaping).

    Attributes:
        enable: score response lengths (off by default in a plain verl config).
        weight: ``w_len`` — the length score enters the reward as ``score + weight·length``
            (reference 0.1; the reference also lowers the accuracy weight to 0.8, set that
            in the reward function's kwargs to match it exactly).
        mode: ``reward`` (added to the scalar reward) or ``component`` (a GS-GDPO component
            named ``length``; list it in ``algorithm.gdpo_reward_keys``).
        momentum: EMA momentum of each task's running successful length.
        success_key / success_threshold: a response counts as successful for the running
            statistics when ``reward_extra_info[success_key] >= success_threshold``.
        truncation: responses that hit the length limit without EOS: ``penalize`` (length
            score 0), ``mask`` (their advantages are zeroed: no gradient from them) or
            ``none``. They never enter the running statistics.
        profiles: default constants of each profile (see TaskLengthRule).
        tasks: task-key value -> ``{profile: ..., floor: ..., ceiling: ..., stretch: ...,
            width: ..., ramp: ...}``; unset keys come from the profile. Tasks not listed use
            the built-in profile of their name (math, grounding, OCR, ...) or
            ``default_profile``.
        default_profile: profile of tasks neither listed nor known.
    """

    enable: bool = False
    weight: float = 0.1
    mode: str = "reward"
    momentum: float = 0.9
    success_key: str = "accuracy"
    success_threshold: float = 0.5
    truncation: str = "penalize"
    profiles: dict[str, dict[str, Any]] = field(default_factory=_default_length_profiles)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_profile: str = "neutral"

    def __post_init__(self) -> None:
        if self.mode not in ("reward", "component"):
            raise ValueError(f"g2rpo.length.mode must be 'reward' or 'component', got {self.mode!r}")
        if self.truncation not in ("penalize", "mask", "none"):
            raise ValueError(f"g2rpo.length.truncation must be penalize, mask or none, got {self.truncation!r}")

    def rule(self, task: str) -> TaskLengthRule:
        """The envelope constants of ``task`` (raises ValueError naming the task if invalid)."""
        own = dict(self.tasks.get(task, {}))
        profile = own.pop("profile", None) or DEFAULT_TASK_PROFILES.get(task, self.default_profile)
        try:
            return TaskLengthRule(profile=profile, **{**self.profiles.get(profile, {}), **own})
        except (TypeError, ValueError) as err:
            raise ValueError(f"g2rpo.length rule of task {task!r}: {err}") from err


@dataclass
class G2RPOConfig:
    """Keys of the ``g2rpo`` config section.

    Attributes:
        task_key: the per-sample key whose value is the task τ that stage 2 normalises over.
            Looked up, in order, as a dataset column (``data_source``, ``ability``, ...), in
            the sample's ``extra_info``, then in the reward function's returned dict. The
            reference normalises per ``problem_type`` (answer type: "multiple choice",
            "math", "numerical", ...); ``task_type`` (domain) and ``data_source`` are common
            alternatives. A sample without it is an error, never a silent default task.
        entropy: task-level entropy shaping, see :class:`EntropyShapingConfig`.
        length: task-level response-length shaping, see :class:`LengthShapingConfig`.
    """

    task_key: str = "problem_type"
    entropy: EntropyShapingConfig = field(default_factory=EntropyShapingConfig)
    length: LengthShapingConfig = field(default_factory=LengthShapingConfig)


def load_g2rpo_config(full_config: Any) -> G2RPOConfig:
    """Read and validate ``full_config.g2rpo`` (absent -> defaults; unknown keys -> error)."""
    section = full_config.get("g2rpo", None) if full_config is not None else None
    schema = OmegaConf.structured(G2RPOConfig)
    if section is None:
        return OmegaConf.to_object(schema)
    try:
        return OmegaConf.to_object(OmegaConf.merge(schema, section))
    except Exception as err:  # omegaconf raises several types; the message names the key
        raise ValueError(f"invalid 'g2rpo' config section: {err}") from err


def gdpo_components(algorithm_config: Any) -> tuple[list[str], list[float]]:
    """GS-GDPO's component names and weights from verl's ``algorithm`` section.

    Returns ``(names, weights)``; defaults to :data:`DEFAULT_GDPO_COMPONENTS`, weight 1 each.
    """
    get = algorithm_config.get if algorithm_config is not None else (lambda k, d=None: d)
    names = get("gdpo_reward_keys", None) or list(DEFAULT_GDPO_COMPONENTS)
    names = [str(x) for x in names]
    weights = get("gdpo_reward_weights", None)
    if weights is None:
        weights = [1.0] * len(names)
    weights = [float(x) for x in weights]
    if len(weights) != len(names):
        raise ValueError(
            f"algorithm.gdpo_reward_weights has {len(weights)} entries but "
            f"algorithm.gdpo_reward_keys names {len(names)} components {names}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"algorithm.gdpo_reward_keys repeats a component: {names}")
    return names, weights
