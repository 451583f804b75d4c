"""Multi-task visual reward: ``compute_score`` for verl's custom reward function hook.

Use it with::

    reward.custom_reward_function.path=pkg://g2rpo_verl.rewards
    reward.custom_reward_function.name=compute_score
    # optional: the rule set, then single rules (RewardSettings; docs/rewards.md)
    +reward.custom_reward_function.reward_kwargs.preset=reference
    +reward.custom_reward_function.reward_kwargs.ocr_fold=true

Two presets: ``strict`` (the default, this project's judgement) and ``reference`` (the
authors' released reward rule for rule, departing only where theirs would raise, hang or is
unbounded; every improvement on it is a key of its own, off in ``reference``).

Per sample it returns a dict with the SAME keys every time (verl stacks
``reward_extra_info`` per key from the first sample's keys — ``RewardLoopManager
.compute_rm_score`` and the agent loop do ``[info[key] for info in infos]`` — so a key
missing from one sample raises ``KeyError`` for the whole batch):

==================  ======================================================================
key                 value
==================  ======================================================================
``score``           ``Σ_k weight_k · component_k`` over :data:`COMPONENT_KEYS`
                    (default ``0.9·accuracy + 0.1·format + structure``, in [0, 1.5])
``accuracy``        in [0, 1], by problem type (:mod:`g2rpo_verl.rewards.accuracy`)
``format``          0 or 1: ``<think>…</think><answer>…</answer>`` (tag names configurable)
``structure``       0 or 0.5: the answer has the shape its problem type needs (``reference``:
                    flat 0.5 but JSON ``{"boxes": …}`` for grounding, only when the format passes)
``acc``             = ``accuracy``; verl's validation reports ``val-core/<data_source>/acc``
                    when a reward returns ``acc`` (else the raw score)
``reward_failure``  1.0 when a guarded check failed (exception, timeout, unreadable
                    ground truth), else 0.0 — its mean per task is the failure rate
``problem_type``    the task key as a string (verl's metrics skip string keys; the G²RPO
                    task resolution can read it)
==================  ======================================================================

Problem type of a sample, first match wins: ``extra_info["problem_type"]``;
``problem_type_map[data_source]`` (reward kwarg); ``data_source`` itself when it names a
problem type (``"math"``, ``"ocr"``...); ``default_problem_type`` (reward kwarg, default
``"free-form"``). Aliases are folded (``multiple_choice`` -> ``multiple choice``); an
unknown name is kept as the task key and scored as free-form with one warning.

Guarantees: malformed output scores 0 on the affected components; an exception in a
scorer, an unreadable ground truth or a math check over its time limit gives accuracy 0,
structure 0 and ``reward_failure=1`` — never a raised exception, never a hang. The only
exception ``compute_score`` raises is ``ValueError`` for an invalid or unknown
``reward_kwargs`` key (a configuration error, identical for every sample). Math answers pass
cheap pre-checks (:mod:`g2rpo_verl.rewards.math_prechecks`) first, so junk costs microseconds
instead of the math time limit. The math check runs in a
killable worker process (:mod:`g2rpo_verl.rewards.guard`), so its time limit also works
when verl calls from executor threads.

Length shaping is not part of this function (token counts live in the reward manager). A
length term plugs in as one more component: add ``length`` to every sample's dict and
recompute ``score`` with :func:`combine_score` and a ``length`` weight.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from typing import Any

from g2rpo_verl.rewards.accuracy import (
    PROBLEM_TYPES,
    ScoringFailure,
    answer_structure,
    canonical_problem_type,
    score_answer,
)
from g2rpo_verl.rewards.answers import clip_tail, collapse_tag_space, format_score, read_answer, strip_answer_tags
from g2rpo_verl.rewards.settings import PRESETS, RewardSettings, settings_from_kwargs

__all__ = [
    "compute_score",
    "combine_score",
    "resolve_problem_type",
    "COMPONENT_KEYS",
    "REWARD_KEYS",
    "PROBLEM_TYPES",
    "PRESETS",
    "RewardSettings",
]

logger = logging.getLogger(__name__)

#: components that ``score`` is a weighted sum of
COMPONENT_KEYS = ("accuracy", "format", "structure")
#: every key of ``compute_score``'s dict, in order (identical for every sample)
REWARD_KEYS = ("score", *COMPONENT_KEYS, "acc", "reward_failure", "problem_type")

_MAX_TASK_NAME = 100
_failures = 0
_failures_lock = threading.Lock()


def combine_score(components: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """``Σ_k weights[k] · components[k]`` over the keys of ``weights`` (a missing component is 0)."""
    return float(sum(w * float(components.get(k, 0.0)) for k, w in weights.items()))


def resolve_problem_type(data_source: Any, extra_info: Any, settings: RewardSettings) -> str:
    """The sample's problem type (canonical name, or the unknown name as given); never raises."""
    name: Any = None
    if isinstance(extra_info, Mapping):
        name = extra_info.get("problem_type")
    if not (isinstance(name, str) and name.strip()):
        source = str(data_source) if data_source is not None else ""
        if source in settings.problem_type_map:
            name = settings.problem_type_map[source]
        elif canonical_problem_type(source):
            name = source
        else:
            name = settings.default_problem_type
    name = str(name).strip()[:_MAX_TASK_NAME]
    return canonical_problem_type(name) or name


def _log_failure(problem_type: str, data_source: Any, err: BaseException) -> None:
    # the first failures in full, then one line per 1000 so a broken run does not flood logs
    global _failures
    with _failures_lock:
        _failures += 1
        count = _failures
    if count <= 20 or count % 1000 == 0:
        logger.warning(
            "g2rpo_verl.rewards: reward failure #%d (problem_type=%r, data_source=%r): %s: %s",
            count,
            problem_type,
            str(data_source)[:100],
            type(err).__name__,
            str(err)[:300],
            exc_info=not isinstance(err, (ScoringFailure, ValueError)),
        )


def compute_score(
    data_source: Any,
    solution_str: Any,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Score one response; returns the dict described in the module docstring.

    Example: ``compute_score("geo", "<thinking>…</thinking><answer>15</answer>", "15",
    {"problem_type": "numerical"}, preset="reference")["score"] == 1.5``.

    Args:
        data_source: the sample's ``data_source`` (problem-type fallback only).
        solution_str: the decoded response.
        ground_truth: ``reward_model.ground_truth``; ``<answer>…</answer>`` is stripped.
        extra_info: the sample's ``extra_info``; reads ``problem_type`` and, for multiple
            choice, ``options``.
        **kwargs: ``reward_kwargs`` (:class:`RewardSettings` fields, ``preset`` first); any
            other key but verl's own raises ``ValueError``.
    """
    settings = settings_from_kwargs(kwargs)  # ValueError on bad config, by design
    info: Mapping[str, Any] = extra_info if isinstance(extra_info, Mapping) else {}
    problem_type = resolve_problem_type(data_source, info, settings)

    fmt = accuracy = structure = 0.0
    failure = 0.0
    answer: str | None = None
    tagged = False
    try:
        solution, truncated = clip_tail(solution_str, settings.max_solution_chars)
        truth = strip_answer_tags(ground_truth, settings.answer_tag, settings.answer_block)
        if isinstance(truth, str):
            truth, _ = clip_tail(truth, settings.max_solution_chars)
        if settings.collapse_tag_space:
            solution = collapse_tag_space(solution)
            if settings.collapse_truth_space and isinstance(truth, str):  # so "a / b" still matches itself
                truth = collapse_tag_space(truth)
        if not truncated:  # a clipped response lost its start: its format cannot be checked
            fmt = format_score(
                solution, settings.think_tag, settings.answer_tag, settings.format_requires_think, settings.format_check
            )
        answer, tagged = read_answer(
            solution, settings.answer_tag, settings.think_tag, settings.answer_block, settings.answer_fallback
        )
        scored = score_answer(problem_type, answer, truth, info, settings, tagged)
        accuracy, structure = scored.accuracy, scored.structure
        if settings.structure_requires_format and not fmt:
            structure = 0.0
    except Exception as err:
        accuracy = structure = 0.0
        failure = 1.0
        _log_failure(problem_type, data_source, err)
        if not settings.failure_drops_structure and (fmt or not settings.structure_requires_format):
            # the authors' reward keeps the structure bonus when the accuracy check fails
            structure = answer_structure(problem_type, answer if tagged else None, settings)

    components = {"accuracy": float(accuracy), "format": float(fmt), "structure": float(structure)}
    score = combine_score(components, settings.weights())
    if not math.isfinite(score):  # unreachable with finite weights; belt and braces
        score = 0.0
    return {
        "score": score,
        **components,
        "acc": components["accuracy"],
        "reward_failure": failure,
        "problem_type": problem_type,
    }
