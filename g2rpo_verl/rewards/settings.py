"""Reward settings: the ``reward.custom_reward_function.reward_kwargs`` keys, presets and checks.

verl passes ``reward_kwargs`` to :func:`g2rpo_verl.rewards.compute_score` as keyword
arguments on every call (``verl.trainer.ppo.reward._call_with_kwargs``), e.g.::

    reward.custom_reward_function.path=pkg://g2rpo_verl.rewards
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.preset=reference
    +reward.custom_reward_function.reward_kwargs.ocr_fold=true   # one rule changed

A *preset* is a named set of rule values (:data:`PRESETS`); any key given next to it
overrides that one rule. ``strict`` (the default) is this project's judgement; ``reference``
reproduces the authors' released reward (OpenVLThinkerV2) for every response, departing only
where theirs would raise, hang or is unbounded; each other difference is a key, off in
``reference`` and on in ``strict`` — ``docs/rewards.md`` lists every rule of both and why.

An invalid value, or a key that is not a setting, raises ``ValueError`` naming the key (and,
for an unknown key, the known ones): a configuration error is the same for every sample and a
typo would otherwise silently change the reward, so it stops the run at the first reward
call. The only keys ignored are the ones verl itself adds (:data:`VERL_KWARGS`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

__all__ = [
    "RewardSettings",
    "settings_from_kwargs",
    "preset_settings",
    "PRESETS",
    "DEFAULT_PRESET",
    "CHOICES",
    "VERL_KWARGS",
]

#: keys verl may pass that are not ours (reward-model routing in the reward managers)
VERL_KWARGS = frozenset({"reward_router_address", "reward_model_tokenizer"})
_TAG_RE = re.compile(r"[A-Za-z_][\w\-.:]*")
#: keys of earlier versions -> what replaced them (named in the unknown-key error)
_RENAMED = {"require_answer_tag": "answer_fallback (require_answer_tag=false is answer_fallback=after_think)"}


@dataclass(frozen=True)
class RewardSettings:
    """Every knob of the reward function. Field defaults are the ``strict`` preset.

    Attributes:
        preset: the named rule set the other fields start from (:data:`PRESETS`).
        accuracy_weight, format_weight, structure_weight: ``score = accuracy_weight·accuracy
            + format_weight·format + structure_weight·structure`` (0.9 / 0.1 / 1 in both
            presets; structure is already 0 or 0.5).
        think_tag, answer_tag: tag names of the format ``<think>…</think><answer>…</answer>``
            (``strict``: ``think``; ``reference``: ``thinking``, which Qwen3-VL *Instruct*
            follows when asked, unlike ``think``).
        format_requires_think: False makes the think block optional in the format check.
        format_check: ``exact`` — one think block then one answer block, nothing around them,
            each tag exactly once, a non-empty answer; ``loose`` (reference) — the response
            starts with ``<think>``, ends with ``</answer>`` and somewhere has ``</think>``
            followed (spaces allowed) by ``<answer>``: extra blocks, text inside and an empty
            answer pass.
        collapse_tag_space: remove whitespace next to ``<``, ``>`` and ``/`` before reading the
            response (reference; so ``< answer >`` is a tag). Applied to the ground truth too.
        answer_block: ``last`` or ``first`` complete ``<answer>…</answer>`` block is the answer.
        answer_fallback: what is scored when there is no non-empty answer block: ``none``
            (accuracy 0), ``after_think`` (the text after the last ``</think>``) or
            ``response`` (the whole response; reference).
        structure_requires_format: structure counts only when the format check passes
            (reference); otherwise it is judged on the answer alone.
        structure_check: ``shape`` — the answer must have its problem type's shape (an option
            letter, one number, parseable math, box JSON); ``flat`` (reference) — every
            problem type but grounding gets the bonus (grounding is judged by ``box_format``).
        box_format: which grounding answers are read. ``any``: strict JSON boxes in any common
            layout (``{"boxes": …}``, a bare list, Qwen's ``bbox_2d`` objects, a ```json
            fence) earn structure, and any ``[x1, y1, x2, y2]`` in the text counts for
            accuracy, several boxes matched one-to-one; ``boxes_key`` (reference): only the
            JSON object ``{"boxes": [x1, y1, x2, y2]}`` (numbers or numeric strings), for
            both structure and accuracy.
        box_corners: ``sort`` reorders swapped corners before IoU; ``as_given`` (reference)
            gives a box with ``x2 < x1`` or ``y2 < y1`` no area (IoU 0).
        choice_format: ``lenient`` reads ``B``, ``(B)``, ``B.``, ``B)``, ``B: text`` and an
            answer equal to one option's text; ``letter`` only the letter alone (any case,
            optionally in parentheses, ``$…$`` or ``\\boxed{}``); ``grade_answer``
            (reference) — mathruler's ``grade_answer(answer, truth)``, the authors' grader
            (normalized strings, then sympy), in the guarded worker.
        ocr_fold: Unicode NFKC and case folding before the word error rate (``strict``);
            the reference compares the words as written.
        number_format: how numerical and regression answers (and ground truths) are read.
            ``read`` (strict): the one number in the text (``15 objects``, ``$15$``, ``45%``,
            ``3/4``; two numbers are ambiguous and score 0); ``float`` (reference): Python's
            ``float()`` of the whole text with commas removed, anything else scores 0.
        collapse_truth_space: with ``collapse_tag_space``, rewrite the ground truth too (strict),
            so an OCR text ``A / B`` still matches itself; the reference rewrites the response only.
        unscored_types: problem types the authors' reward has no scorer for (free-form,
            open-ended, unknown names): ``free_form`` (strict) scores them by exact normalized
            match (one warning per name); ``zero`` (reference) gives them accuracy 0.
        regression_arithmetic: ``exact`` (strict) compares the relative error with the
            thresholds 0.50…0.95 in exact decimals (a true 0 only matches 0); ``float32``
            (reference) computes ``|p − t| / (|t| + 1e-8) < 1 − t`` in float32 as the authors'
            torch code does (11 for a true 10 passes t = 0.9).
        math_delimit: read a bare math answer (and ground truth) as one LaTeX expression
            (wrapped in ``$…$``) before math-verify (strict); the reference passes the texts to
            math-verify as they are (``x^2+1`` then parses as ``1``).
        math_verbatim: accept a math answer equal to the ground truth once spaces and ``$``
            are removed without asking math-verify (strict); the reference asks math-verify
            (which rejects, e.g., two identical texts it cannot parse).
        math_fallback: when math-verify raises: ``none`` (strict) — a counted reward failure;
            ``grade_answer`` (reference) — mathruler's ``grade_answer`` decides, as theirs does.
        failure_drops_structure: a failed check (exception, time-out, unreadable ground truth)
            also scores structure 0 (strict); the reference keeps the structure bonus.
        truth_box_format: which grounding ground truths are read: ``any`` (strict) — the box
            layouts of ``box_format=any``, several boxes matched one to one; ``boxes_key``
            (reference) — only ``{"boxes": [x1, y1, x2, y2]}`` (otherwise accuracy 0).
        default_problem_type: problem type for samples whose ``extra_info`` has none and whose
            ``data_source`` is neither in ``problem_type_map`` nor a problem-type name.
        problem_type_map: ``{data_source: problem_type}`` fallback.
        math_timeout_s: time limit of one math-verify check (parse + verify, per sample): CPU
            seconds of the worker process, which is also killed after ``math_timeout_s + 2``
            seconds of wall-clock time. Default 1 (junk is rejected before, see
            :mod:`g2rpo_verl.rewards.math_prechecks`).
        math_queue_timeout_s: longest wait for a free math worker before scoring a failure.
        math_workers: size of the per-process math worker pool (read when the pool starts;
            env ``G2RPO_MATH_WORKERS``; default min(4, cpu_count)).
        max_solution_chars: longer responses keep their last ``max_solution_chars`` characters
            and get format 0 (their start cannot be checked).
        max_math_chars: a math answer longer than this is not parsed (accuracy 0).
        max_math_depth: a math answer nesting brackets deeper than this is not parsed.
        max_math_digits: a math answer holding a number with more digits than this (a power
            tower, a huge factorial) is not parsed.
    """

    preset: str = "strict"
    accuracy_weight: float = 0.9
    format_weight: float = 0.1
    structure_weight: float = 1.0
    think_tag: str = "think"
    answer_tag: str = "answer"
    format_requires_think: bool = True
    format_check: str = "exact"
    collapse_tag_space: bool = False
    answer_block: str = "last"
    answer_fallback: str = "none"
    structure_requires_format: bool = False
    structure_check: str = "shape"
    box_format: str = "any"
    box_corners: str = "sort"
    choice_format: str = "lenient"
    ocr_fold: bool = True
    number_format: str = "read"
    collapse_truth_space: bool = True
    unscored_types: str = "free_form"
    regression_arithmetic: str = "exact"
    math_delimit: bool = True
    math_verbatim: bool = True
    math_fallback: str = "none"
    failure_drops_structure: bool = True
    truth_box_format: str = "any"
    default_problem_type: str = "free-form"
    problem_type_map: Mapping[str, str] = field(default_factory=dict)
    math_timeout_s: float = 1.0
    math_queue_timeout_s: float = 60.0
    math_workers: int = 0  # 0: default_math_workers()
    max_solution_chars: int = 65_536
    max_math_chars: int = 2_000
    max_math_depth: int = 8
    max_math_digits: int = 100_000

    def weights(self) -> dict[str, float]:
        """``{component: weight}`` of the weighted sum that gives ``score``."""
        return {"accuracy": self.accuracy_weight, "format": self.format_weight, "structure": self.structure_weight}


#: allowed values of the settings that take one of a few words
CHOICES: dict[str, tuple[str, ...]] = {
    "preset": ("strict", "reference"),
    "format_check": ("exact", "loose"),
    "answer_block": ("last", "first"),
    "answer_fallback": ("none", "after_think", "response"),
    "structure_check": ("shape", "flat"),
    "box_format": ("any", "boxes_key"),
    "box_corners": ("sort", "as_given"),
    "choice_format": ("lenient", "letter", "grade_answer"),
    "number_format": ("read", "float"),
    "unscored_types": ("free_form", "zero"),
    "regression_arithmetic": ("exact", "float32"),
    "math_fallback": ("none", "grade_answer"),
    "truth_box_format": ("any", "boxes_key"),
}

DEFAULT_PRESET = "strict"
#: preset -> the rule values that differ from the ``strict`` field defaults
PRESETS: dict[str, dict[str, Any]] = {
    "strict": {},
    "reference": {
        "think_tag": "thinking",
        "format_check": "loose",
        "collapse_tag_space": True,
        "answer_block": "first",
        "answer_fallback": "response",
        "structure_requires_format": True,
        "structure_check": "flat",
        "box_format": "boxes_key",
        "box_corners": "as_given",
        "choice_format": "grade_answer",
        "ocr_fold": False,
        "number_format": "float",
        "collapse_truth_space": False,
        "unscored_types": "zero",
        "regression_arithmetic": "float32",
        "math_delimit": False,
        "math_verbatim": False,
        "math_fallback": "grade_answer",
        "failure_drops_structure": False,
        "truth_box_format": "boxes_key",
    },
}

_FIELDS = {f.name: f for f in fields(RewardSettings)}
_BOOLS = frozenset(n for n, f in _FIELDS.items() if f.type in ("bool", bool))
_TAGS = ("think_tag", "answer_tag")
_SECONDS = ("math_timeout_s", "math_queue_timeout_s")
_COUNTS = {
    "math_workers": 0,
    "max_solution_chars": 16,
    "max_math_chars": 16,
    "max_math_depth": 1,
    "max_math_digits": 16,
}


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


def _as_choice(key: str, value: Any) -> str:
    if not isinstance(value, str) or value.strip() not in CHOICES[key]:
        raise ValueError(f"reward_kwargs.{key} must be one of {list(CHOICES[key])}, got {value!r}")
    return value.strip()


def _checked(name: str, value: Any) -> Any:
    """The validated value of setting ``name`` (ValueError naming the key otherwise)."""
    if name.endswith("_weight"):
        return _as_float(name, value)
    if name in _TAGS:
        return _as_tag(name, value)
    if name in _BOOLS:
        return _as_bool(name, value)
    if name in CHOICES:
        return _as_choice(name, value)
    if name == "default_problem_type":
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"reward_kwargs.default_problem_type must be a non-empty string, got {value!r}")
        return value
    if name == "problem_type_map":
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ValueError(f"reward_kwargs.problem_type_map must be a mapping, got {type(value).__name__}")
        return {str(k): str(v) for k, v in value.items()}
    if name in _SECONDS:
        return _as_float(name, value, 0.05)
    if name in _COUNTS:
        return _as_int(name, value, _COUNTS[name])
    raise AssertionError(f"setting {name!r} has no check")  # every field is handled above


def preset_settings(name: str) -> RewardSettings:
    """The settings of preset ``name`` with nothing overridden."""
    return settings_from_kwargs({"preset": name})


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

    The ``preset`` key (default ``strict``) gives every rule its value; the other keys
    override single rules. Raises ``ValueError`` on a key that is not a setting (naming the
    known ones), an invalid value, or ``think_tag == answer_tag``. Results are cached per
    distinct kwargs (verl passes the same kwargs on every call).
    """
    key = _cache_key(kwargs)
    if key is not None:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
    unknown = sorted(str(k) for k in kwargs if k not in _FIELDS and k not in VERL_KWARGS)
    if unknown:
        raise ValueError(
            f"reward_kwargs.{unknown[0]} is not a reward setting"
            + (f" (nor are {unknown[1:]})" if len(unknown) > 1 else "")
            + (f"; it was replaced by {_RENAMED[unknown[0]]}" if unknown[0] in _RENAMED else "")
            + f"; the settings are: {', '.join(_FIELDS)} (see g2rpo_verl.rewards.settings.RewardSettings)"
        )
    preset = _as_choice("preset", kwargs.get("preset", DEFAULT_PRESET))
    values = {name: _checked(name, value) for name, value in PRESETS[preset].items()}
    values["preset"] = preset
    for name, value in kwargs.items():
        if name in _FIELDS and name != "preset":
            values[name] = _checked(name, value)
    settings = replace(RewardSettings(), **values)
    if settings.think_tag == settings.answer_tag:
        raise ValueError(f"reward_kwargs.think_tag and answer_tag must differ, both are {settings.think_tag!r}")
    if key is not None:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        _CACHE[key] = settings
    return settings
