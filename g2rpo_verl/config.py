"""The ``g2rpo`` section of a verl config: every key this plugin adds, with paper defaults.

verl's own ``algorithm`` section is a strict dataclass (unknown keys fail to merge), so the
plugin's keys live in a top-level section. ``++g2rpo.<key>=<value>`` sets one on any config
(verl's own ``ppo_trainer`` has no ``g2rpo`` section); the configs under ``configs/`` and the
demo hold every key (:func:`g2rpo_defaults`), so there ``g2rpo.<key>=<value>`` works too.

GS-GDPO's components reuse verl's own GDPO keys ``algorithm.gdpo_reward_keys`` and
``algorithm.gdpo_reward_weights``; when unset, gs_gdpo uses :data:`DEFAULT_GDPO_COMPONENTS`
with weight 1 each.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from omegaconf import OmegaConf

from g2rpo_verl.algorithms.ema_grpo import DECAY, EPS, FLOOR, GUARD
from g2rpo_verl.algorithms.entropy_control import BAND_RULES, FLOOR_MODES, AdaptiveEntropyControl, TaskBands
from g2rpo_verl.algorithms.length import TaskLengthRule, builtin_profile

__all__ = [
    "G2RPOConfig",
    "EntropyShapingConfig",
    "LengthShapingConfig",
    "FilterBand",
    "DiagnosticsConfig",
    "LossAggConfig",
    "LOSS_AGG_MODES",
    "TASK_MEAN_INNER_MODES",
    "EmaGrpoConfig",
    "DEFAULT_TASK_KEY",
    "DEFAULT_GDPO_COMPONENTS",
    "ENTROPY_ESTIMATORS",
    "FILTER_BAND_KEY",
    "load_g2rpo_config",
    "g2rpo_defaults",
    "load_filter_band",
    "gdpo_components",
]

#: ``g2rpo.task_key`` default: the reference normalises per problem type.
DEFAULT_TASK_KEY = "problem_type"
DEFAULT_GDPO_COMPONENTS = ("accuracy", "format", "structure")
ENTROPY_ESTIMATORS = ("exact", "sampled")
#: Key of the group-filter band in ``trainer.v1.sampler.sampler_kwargs``.
FILTER_BAND_KEY = "filter_band"
ENTROPY_CONTROLLERS = ("fixed", "adaptive")
#: ``g2rpo.loss_agg.mode``: ``verl`` = verl's ``actor.loss_agg_mode`` untouched (off); ``task_mean``.
LOSS_AGG_MODES = ("verl", "task_mean")
#: verl ``actor.loss_agg_mode`` values ``task_mean`` applies inside each task.
TASK_MEAN_INNER_MODES = ("token-mean", "seq-mean-token-mean")


@dataclass
class EntropyShapingConfig:
    """``g2rpo.entropy``: keep each task's token entropy inside a band (docs/method.md).

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
            out of the band reinforce themselves (the first is pinned in tests/verl_hooks/test_entropy_shaping.py).
        controller: ``fixed`` = the paper's penalty with coefficient ``beta`` for every task
            (default); ``adaptive`` = a per-task coefficient that rises while the task's entropy
            is outside its band and relaxes inside it, replacing ``beta``
            (g2rpo_verl.algorithms.entropy_control; needs ``estimator=exact``).
        adaptive: the adaptive controller's gains, see
            :class:`g2rpo_verl.algorithms.entropy_control.AdaptiveEntropyControl`.
        band_rule: where a task's band comes from (g2rpo_verl.algorithms.entropy_control.TaskBands):
            ``fixed`` = ``low`` / ``high`` / ``per_task`` (the paper's rule, default); ``start`` =
            ``[start_low·H0_τ, start_high·H0_τ]`` with H0_τ the task's entropy at its first
            training step (the starting model's), for a model whose natural entropies are not
            the 8B's; a ``per_task`` entry still wins.
        start_low / start_high: the factors of ``band_rule=start`` (0.5 / 2: a task whose entropy
            halves, or doubles, from where it started is pushed back).
        start_steps: ``band_rule=start``'s H0_τ is the mean over the task's first ``start_steps``
            training steps (default 1; no shaping of the task before).
        floor: ``always`` = the band's lower edge always acts (the paper's, default); ``fall`` =
            it acts only once the task's entropy has been at or above it, so a task starting
            below the band is not pushed up, one falling out of it is.
    """

    enable: bool = False
    low: float = 0.2
    high: float = 0.6
    beta: float = 0.02
    per_task: dict[str, dict[str, float]] = field(default_factory=dict)
    estimator: str = "exact"
    controller: str = "fixed"
    adaptive: AdaptiveEntropyControl = field(default_factory=AdaptiveEntropyControl)
    band_rule: str = "fixed"
    start_low: float = 0.5
    start_high: float = 2.0
    start_steps: int = 1
    floor: str = "always"

    def task_bands(self) -> TaskBands:
        """A fresh :class:`~g2rpo_verl.algorithms.entropy_control.TaskBands` of this config (state: none measured)."""
        return TaskBands(
            self.band,
            explicit=[str(t) for t in self.per_task],
            band_rule=self.band_rule,
            start_low=self.start_low,
            start_high=self.start_high,
            floor=self.floor,
            start_steps=self.start_steps,
        )

    def band(self, task: str | None = None) -> tuple[float, float]:
        """``(low, high)`` of ``task`` (``per_task`` overrides the default band); ``None`` = the default band."""
        own = self.per_task.get(str(task)) or {} if task is not None else {}
        return float(own.get("low", self.low)), float(own.get("high", self.high))

    def __post_init__(self) -> None:
        # Errors name the key, so a typo stops the run at config load, not mid-training.
        if self.estimator not in ENTROPY_ESTIMATORS:
            raise ValueError(f"g2rpo.entropy.estimator must be one of {ENTROPY_ESTIMATORS}, got {self.estimator!r}")
        if self.controller not in ENTROPY_CONTROLLERS:
            raise ValueError(f"g2rpo.entropy.controller must be one of {ENTROPY_CONTROLLERS}, got {self.controller!r}")
        if self.controller == "adaptive" and self.estimator != "exact":
            # the sampled estimate's expected gradient is zero: a controller would wind its
            # coefficient up to the bound without moving the entropy
            raise ValueError(
                "g2rpo.entropy.controller=adaptive needs g2rpo.entropy.estimator=exact "
                f"(got {self.estimator!r}): the sampled estimate's expected gradient is zero"
            )
        if self.band_rule not in BAND_RULES:
            raise ValueError(f"g2rpo.entropy.band_rule must be one of {BAND_RULES}, got {self.band_rule!r}")
        if self.floor not in FLOOR_MODES:
            raise ValueError(f"g2rpo.entropy.floor must be one of {FLOOR_MODES}, got {self.floor!r}")
        self.task_bands()  # checks start_low / start_high, naming the keys
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"g2rpo.entropy.beta must be a finite number >= 0, got {self.beta}")
        for task, band in {None: {}, **{str(k): dict(v) for k, v in self.per_task.items()}}.items():
            unknown = set(band) - {"low", "high"}
            if unknown:
                raise ValueError(f"g2rpo.entropy.per_task[{task!r}] has unknown keys {sorted(unknown)}; use low / high")
            lo, hi = self.band(task)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ValueError(
                    f"g2rpo.entropy band for task {task or '<default>'!r} needs finite low <= high, got [{lo}, {hi}]"
                )


def _default_length_profiles() -> dict[str, dict[str, Any]]:
    # Reference trends (docs/method.md): reasoning ~600 -> 1100 tokens, grounding ~125 -> 65,
    # documents ~105 -> 30-50, with 4096-token responses.
    return {
        "reasoning": {"floor": 512, "ceiling": 2048, "stretch": 0.1, "width": 0.5, "ramp": 0.5, "rate": 0.05},
        "perception": {"floor": 32, "ceiling": 128, "stretch": 0.1, "width": 1.0, "ramp": 1.0, "rate": 0.05},
        "neutral": {},
    }


@dataclass
class LengthShapingConfig:
    """``g2rpo.length``: per-task response-length envelope (rule: g2rpo_verl.algorithms.length).

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
            the built-in profile of their problem type (math -> reasoning, spatial grounding
            and OCR -> perception, any alias the reward function accepts;
            :data:`g2rpo_verl.algorithms.length.DEFAULT_TASK_PROFILES`) or ``default_profile``.
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
        profile = own.pop("profile", None) or builtin_profile(task) or self.default_profile
        try:
            return TaskLengthRule(profile=profile, **{**self.profiles.get(profile, {}), **own})
        except (TypeError, ValueError) as err:
            raise ValueError(f"g2rpo.length rule of task {task!r}: {err}") from err


@dataclass
class EmaGrpoConfig:
    """``g2rpo.ema_grpo``: constants of ``algorithm.adv_estimator=ema_grpo`` (g2rpo_verl/algorithms/ema_grpo.py).

    Defaults are OneThinker's (EasyR1 ``core_algos``), defined once in :mod:`g2rpo_verl.algorithms.ema_grpo`.

    Attributes:
        decay: EMA decay d of each task's reward moments, in [0, 1) (0.99).
        floor: lower bound of the per-task std σ_τ, > 0 (1e-3).
        guard: a group whose task-scaled advantages exceed ±guard is rescaled by its own std
            instead, > 0 (5).
        eps: added to every divisor, >= 0 (1e-6).
    """

    decay: float = DECAY
    floor: float = FLOOR
    guard: float = GUARD
    eps: float = EPS

    def __post_init__(self) -> None:
        checks = {
            "decay": 0.0 <= self.decay < 1.0,
            "floor": math.isfinite(self.floor) and self.floor > 0,
            "guard": math.isfinite(self.guard) and self.guard > 0,
            "eps": math.isfinite(self.eps) and self.eps >= 0,
        }
        rules = {"decay": "in [0, 1)", "floor": "finite and > 0", "guard": "finite and > 0", "eps": "finite and >= 0"}
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"g2rpo.ema_grpo.{key} must be {rules[key]}, got {getattr(self, key)}")


@dataclass
class DiagnosticsConfig:
    """``g2rpo.diagnostics``: measurements that cost compute and leave training unchanged.

    Attributes:
        grad_every: every this many training steps (``global_steps % grad_every == 0``), log per
            task τ the norm of τ's part of the policy gradient (``task_<τ>/grad/norm``), its
            projection share ``g_τ·g/‖g‖²`` (``task_<τ>/grad/share``, the shares sum to 1) and the
            cosine between every pair of tasks' parts (``grad/cosine/<τ1>__<τ2>``); 0 = off (the
            default). Cost on a diagnosed step: one extra forward+backward pass of the actor
            mini-batch per task, and one copy of the local gradient shard per task
            (g2rpo_verl/verl_hooks/grad_diagnostics.py, docs/diagnostics.md).
    """

    grad_every: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.grad_every, bool) or not isinstance(self.grad_every, int) or self.grad_every < 0:
            raise ValueError(f"g2rpo.diagnostics.grad_every must be an integer >= 0 (0 = off), got {self.grad_every!r}")


@dataclass
class LossAggConfig:
    """``g2rpo.loss_agg``: how the actor's per-token loss is aggregated (docs/method.md, "Loss aggregation").

    Attributes:
        mode: ``verl`` (default, off): verl's ``actor_rollout_ref.actor.loss_agg_mode`` as configured,
            the plugin does not touch the aggregation. ``task_mean``: for each global PPO
            mini-batch g, ``L_g = Σ_τ w_{g,τ} · A_τ``, where ``A_τ`` is verl's
            ``actor.loss_agg_mode`` (``token-mean`` or ``seq-mean-token-mean``) applied to τ's rows
            of g alone, normalised by τ's token (sequence) count over the whole mini-batch, all
            micro-batches and data-parallel ranks; applies to verl's whole ``ppo_loss`` (policy
            loss, ``entropy_coeff`` term, KL loss). See g2rpo_verl/algorithms/loss_agg.py.
        weights: task name -> weight ω_τ > 0 (absent tasks 1.0); ``w_{g,τ} = ω_τ / Σ_{τ' in g} ω_τ'``
            over the tasks with a response token in g, so the weights of a mini-batch sum to 1.
    """

    mode: str = "verl"
    weights: dict[str, float] = field(default_factory=dict)

    @property
    def task_mean(self) -> bool:
        return self.mode == "task_mean"

    def __post_init__(self) -> None:
        if self.mode not in LOSS_AGG_MODES:
            raise ValueError(f"g2rpo.loss_agg.mode must be one of {LOSS_AGG_MODES}, got {self.mode!r}")
        for task, weight in dict(self.weights).items():
            if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight > 0):
                raise ValueError(f"g2rpo.loss_agg.weights.{task} must be a finite number > 0, got {weight!r}")
        if self.weights and not self.task_mean:
            raise ValueError(
                "g2rpo.loss_agg.weights is set but g2rpo.loss_agg.mode is not task_mean: set mode=task_mean"
            )

    def weight(self, task: str) -> float:
        return float(self.weights.get(str(task), 1.0))


@dataclass
class G2RPOConfig:
    """Keys of the ``g2rpo`` config section.

    Attributes:
        task_key: the per-sample key whose value is the task τ that stage 2 normalises over.
            Looked up, in order, as a dataset column (``data_source``, ``ability``, ...), in
            the sample's ``extra_info``, then in the reward function's returned dict. The
            reference normalises per ``problem_type`` (answer type: "multiple choice",
            "math", "numerical", ...); ``task_type`` (domain) and ``data_source`` are common
            alternatives. A sample without it is an error, never a silent default task: the
            run stops before anything starts, naming the file and the first such row
            (:func:`g2rpo_verl.verl_hooks.checks.task_problems`).
        allow_task_fallback: opt-in, off by default. With the project's reward and
            ``task_key=problem_type``, a row without the key takes the reward's
            ``default_problem_type`` (``free-form`` unless set), and a problem type the reward
            has no scorer for is scored as free-form; without it both stop the run.
        entropy: task-level entropy shaping, see :class:`EntropyShapingConfig`.
        length: task-level response-length shaping, see :class:`LengthShapingConfig`.
        diagnostics: per-task gradient diagnostics, see :class:`DiagnosticsConfig`.
        ema_grpo: constants of the ``ema_grpo`` estimator, see :class:`EmaGrpoConfig`.
        loss_agg: the actor loss aggregation (``task_mean``), see :class:`LossAggConfig`.
    """

    task_key: str = DEFAULT_TASK_KEY
    allow_task_fallback: bool = False
    entropy: EntropyShapingConfig = field(default_factory=EntropyShapingConfig)
    length: LengthShapingConfig = field(default_factory=LengthShapingConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    ema_grpo: EmaGrpoConfig = field(default_factory=EmaGrpoConfig)
    loss_agg: LossAggConfig = field(default_factory=LossAggConfig)


def g2rpo_defaults() -> dict[str, Any]:
    """Every key of the ``g2rpo`` section with its default, as a plain nested dict.

    The project's configs include it (``configs/g2rpo_defaults.yaml``, checked equal to this by
    tests/test_configs.py) and the demo adds it before its own YAML, so every plugin key is in the
    composed config there and ``g2rpo.<key>=<value>`` overrides it without a ``+``.
    """
    return OmegaConf.to_container(OmegaConf.structured(G2RPOConfig), resolve=True)


def _unknown_keys(section: Any, schema: type, path: str) -> list[str]:
    """Messages for keys of ``section`` that ``schema`` (a dataclass) does not define, with a guess."""
    if not hasattr(section, "items"):
        return []
    known = {f.name: f for f in fields(schema)}
    problems = []
    for key, value in section.items():
        if key not in known:
            guess = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f"; did you mean '{path}.{guess[0]}'?" if guess else f"; the keys are {sorted(known)}"
            problems.append(f"unknown key '{path}.{key}'{hint}")
        elif isinstance(known[key].default_factory, type) and is_dataclass(known[key].default_factory):
            problems += _unknown_keys(value, known[key].default_factory, f"{path}.{key}")
    return problems


def load_g2rpo_config(full_config: Any) -> G2RPOConfig:
    """Read and validate ``full_config.g2rpo`` (absent -> defaults).

    Raises ``ValueError`` naming the key for an unknown key (with the nearest known one) or an
    invalid value.
    """
    section = full_config.get("g2rpo", None) if full_config is not None else None
    schema = OmegaConf.structured(G2RPOConfig)
    if section is None:
        return OmegaConf.to_object(schema)
    unknown = _unknown_keys(section, G2RPOConfig, "g2rpo")
    if unknown:
        raise ValueError("invalid 'g2rpo' config section: " + "; ".join(unknown))
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


@dataclass(frozen=True)
class FilterBand:
    """``trainer.v1.sampler.sampler_kwargs.filter_band``: keep a prompt group iff ``low < mean < high``.

    The mean is that of ``algorithm.filter_groups.metric`` over the group's responses; the
    interval is open, as the reference's ``(0.01, 0.99)``. It lives in verl's sampler section
    because that is verl's slot for the replay buffer's own parameters.
    """

    low: float = 0.01
    high: float = 0.99

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(
                f"trainer.v1.sampler.sampler_kwargs.{FILTER_BAND_KEY} needs finite low < high, "
                f"got low={self.low}, high={self.high}"
            )

    def keeps(self, mean: float) -> bool:
        return self.low < mean < self.high


def load_filter_band(config: Any) -> FilterBand | None:
    """The band of a full verl config, or ``None`` when verl's own rule applies.

    ``None`` when the band is absent / null. Raises ``ValueError`` naming the key for unknown
    keys or an invalid band, when a band is set while ``algorithm.filter_groups.enable`` is
    false (it would silently do nothing), and with a custom sampler (which owns its filtering).
    """
    sampler = ((config.get("trainer", None) or {}).get("v1", None) or {}).get("sampler", None) or {}
    raw = (sampler.get("sampler_kwargs", None) or {}).get(FILTER_BAND_KEY, None)
    if raw is None:
        return None
    filter_groups = (config.get("algorithm", None) or {}).get("filter_groups", None)
    if not (filter_groups is not None and filter_groups.get("enable", False)):
        raise ValueError(
            f"trainer.v1.sampler.sampler_kwargs.{FILTER_BAND_KEY} is set but algorithm.filter_groups.enable "
            "is false: set it true (and algorithm.filter_groups.metric, e.g. accuracy) or remove the band"
        )
    custom = sampler.get("custom_sampler", None) or {}
    if custom.get("path") and custom.get("name"):
        raise ValueError(
            f"trainer.v1.sampler.sampler_kwargs.{FILTER_BAND_KEY} works with verl's built-in replay buffer only; "
            "a custom sampler (trainer.v1.sampler.custom_sampler) owns its filtering"
        )
    raw = dict(raw)
    unknown = set(raw) - {"low", "high"}
    if unknown:
        raise ValueError(
            f"trainer.v1.sampler.sampler_kwargs.{FILTER_BAND_KEY} has unknown keys {sorted(unknown)}; use low / high"
        )
    return FilterBand(**{k: float(v) for k, v in raw.items()})
