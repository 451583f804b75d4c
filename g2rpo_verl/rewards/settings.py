"""Reward settings: the ``reward.custom_reward_function.reward_kwargs`` keys and their checks.

verl passes ``reward_kwargs`` to :func:`g2rpo_verl.rewards.compute_score` as keyword
arguments on every call (``verl.trainer.ppo.reward._call_with_kwargs``), e.g.::

    reward.custom_reward_function.path=pkg://g2rpo_verl.rewards
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.format_weight=0.2
    +reward.custom_reward_function.reward_kwargs.think_tag=thinking

An invalid value raises ``ValueError`` naming the key: a configuration error is the same for
every sample, so it must stop the run at the first reward call instead of silently scoring
everything 0. Unknown keys are ignored with one warning (verl itself may add keys such as
``reward_router_address``).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["RewardSettings", "settings_from_kwargs"]

logger = logging.getLogger(__name__)

# keys verl may pass that are not ours (reward-model routing in NaiveRewardManager)
_VERL_KWARGS = frozenset({"reward_router_address", "reward_model_tokenizer"})
_TAG_RE = re.compile(r"[A-Za-z_][\w\-.:]*")
_warned_unknown: set[str] = set()


@dataclass(frozen=True)
class RewardSettings:
    """Every knob of the reward function; defaults are the reference's.

    Attributes:
        accuracy_weight, format_weight, structure_weight: ``score = accuracy_weight·accuracy
            + format_weight·format + structure_weight·structure`` (reference 0.9 / 0.1 / 1;
            structure is already 0 or 0.5).
        think_tag, answer_tag: tag names of the format ``<think>…</think><answer>…</answer>``
            (the reference uses ``thinking``; Qwen3 thinking models emit ``think``).
        format_requires_think: False makes the think block optional in the format check
            (Qwen3-VL *Instruct* does not emit one unless prompted).
        require_answer_tag: False scores a response without an answer block by its text after
            the last ``</think>`` instead of giving it accuracy 0.
        default_problem_type: problem type for samples whose ``extra_info`` has none and whose
            ``data_source`` is neither in ``problem_type_map`` nor a problem-type name.
        problem_type_map: ``{data_source: problem_type}`` fallback.
        math_timeout_s: time limit of one math-verify check (parse + verify, per sample).
        math_queue_timeout_s: longest wait for a free math worker before scoring a failure.
        math_workers: size of the per-process math worker pool (read when the pool starts;
            env ``G2RPO_MATH_WORKERS``; default min(4, cpu_count)).
        max_solution_chars: longer responses keep their last ``max_solution_chars`` characters
            and get format 0 (their start cannot be checked).
        max_math_chars: a math answer longer than this is not parsed (accuracy 0).
    """

    accuracy_weight: float = 0.9
    format_weight: float = 0.1
    structure_weight: float = 1.0
    think_tag: str = "think"
    answer_tag: str = "answer"
    format_requires_think: bool = True
    require_answer_tag: bool = True
    default_problem_type: str = "free-form"
    problem_type_map: Mapping[str, str] = field(default_factory=dict)
    math_timeout_s: float = 5.0
    math_queue_timeout_s: float = 60.0
    math_workers: int = 0  # 0: default_math_workers()
    max_solution_chars: int = 65_536
    max_math_chars: int = 2_000

    def weights(self) -> dict[str, float]:
        """``{component: weight}`` of the weighted sum that gives ``score``."""
        return {"accuracy": self.accuracy_weight, "format": self.format_weight, "structure": self.structure_weight}


_FIELDS = {f.name: f for f in fields(RewardSettings)}


def _as_float(key: str, value: Any, low: float = -math.inf) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"reward_kwargs.{key} must be a number, got {value!r}") from None
    if not math.isfinite(out) or out < low:
        raise ValueError(f"reward_kwargs.{key} must be a finite number >= {low}, got {value!r}")
    return out


def _as_int(key: str, value: Any, low: int) -> int:
    out = _as_float(key, value, low)
    if out != int(out):
        raise ValueError(f"reward_kwargs.{key} must be an integer, got {value!r}")
    return int(out)


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"reward_kwargs.{key} must be a boolean, got {value!r}")


def _as_tag(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _TAG_RE.fullmatch(value):
        raise ValueError(f"reward_kwargs.{key} must be a tag name like 'think' (no '<>'), got {value!r}")
    return value


_CACHE: dict[Any, RewardSettings] = {}
_CACHE_MAX = 64


def _cache_key(kwargs: Mapping[str, Any]) -> Any:
    try:
        items = []
        for k in sorted(kwargs):
            v = kwargs[k]
            if isinstance(v, Mapping):
                v = ("__map__", tuple(sorted((str(a), str(b)) for a, b in v.items())))
            items.append((k, v))
        key = tuple(items)
        hash(key)
        return key
    except Exception:  # unhashable value (a tokenizer object): no caching
        return None


def settings_from_kwargs(kwargs: Mapping[str, Any]) -> RewardSettings:
    """Validated :class:`RewardSettings` from ``compute_score``'s keyword arguments.

    Raises ``ValueError`` on an invalid value or on ``think_tag == answer_tag``. Results are
    cached per distinct kwargs (verl passes the same kwargs on every call).
    """
    key = _cache_key(kwargs)
    if key is not None:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
    values: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name not in _FIELDS:
            if name not in _VERL_KWARGS and name not in _warned_unknown:
                _warned_unknown.add(name)
                logger.warning("g2rpo_verl.rewards: ignoring unknown reward_kwargs key %r", name)
            continue
        if name.endswith("_weight"):
            values[name] = _as_float(name, value)
        elif name in ("think_tag", "answer_tag"):
            values[name] = _as_tag(name, value)
        elif name in ("format_requires_think", "require_answer_tag"):
            values[name] = _as_bool(name, value)
        elif name == "default_problem_type":
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"reward_kwargs.default_problem_type must be a non-empty string, got {value!r}")
            values[name] = value
        elif name == "problem_type_map":
            if value is None:
                value = {}
            if not isinstance(value, Mapping):
                raise ValueError(f"reward_kwargs.problem_type_map must be a mapping, got {type(value).__name__}")
            values[name] = {str(k): str(v) for k, v in value.items()}
        elif name in ("math_timeout_s", "math_queue_timeout_s"):
            values[name] = _as_float(name, value, 0.05)
        elif name == "math_workers":
            values[name] = _as_int(name, value, 0)
        elif name in ("max_solution_chars", "max_math_chars"):
            values[name] = _as_int(name, value, 16)
    settings = RewardSettings(**values)
    if settings.think_tag == settings.answer_tag:
        raise ValueError(f"reward_kwargs.think_tag and answer_tag must differ, both are {settings.think_tag!r}")
    if key is not None:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        _CACHE[key] = settings
    return settings
