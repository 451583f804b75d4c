"""Reward function for the toy tasks of :mod:`g2rpo_verl.demo.tiny` (CPU smoke runs only).

verl calls it as ``compute_score(data_source, solution_str, ground_truth, extra_info=None, **kw)``
(``reward.custom_reward_function.path=pkg://g2rpo_verl.demo.toy_reward``). The returned dict has
the same keys for every sample, because verl stacks ``reward_extra_info`` per key:

* ``accuracy`` in {0, 1}: the answer inside the last ``<answer>...</answer>`` is right
  (numerical: equal to 2 decimals; multiple choice: same option letter);
* ``format`` in {0, 1}: the response is ``[<think>...</think>] <answer>...</answer>``;
* ``structure`` in {0, 0.5}: the answer has the shape its problem type needs (a number / one
  option letter), as in the project's reward design;
* ``score = 0.9 * accuracy + 0.1 * format + structure``;
* ``problem_type``: the task key (a string; verl's metrics skip non-numeric keys).

Malformed input never raises: it scores 0 on every component.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = [
    "ADDITION",
    "CHOICE",
    "TOY_TASKS",
    "OPTION_LETTERS",
    "compute_score",
]

#: data_source -> (problem_type, task_type) of each toy task.
ADDITION = "toy_addition"
CHOICE = "toy_choice"
TOY_TASKS: dict[str, tuple[str, str]] = {
    ADDITION: ("numerical", "arithmetic"),
    CHOICE: ("multiple choice", "comparison"),
}
OPTION_LETTERS = ("A", "B", "C", "D")

ACCURACY_WEIGHT = 0.9
FORMAT_WEIGHT = 0.1
STRUCTURE_BONUS = 0.5

_FORMAT_RE = re.compile(r"^\s*(?:<think>.*?</think>\s*)?<answer>.*?</answer>\s*$", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_NUMBER_RE = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)$")
_LETTER_RE = re.compile(r"^\(?([A-Da-d])\)?[.)]?$")


def _extract_answer(solution: str) -> str | None:
    matches = _ANSWER_RE.findall(solution)
    return matches[-1].strip() if matches else None


def _numerical(answer: str, truth: str) -> tuple[float, float]:
    if not _NUMBER_RE.match(answer):
        return 0.0, 0.0
    value, target = float(answer), float(truth)
    if not (math.isfinite(value) and math.isfinite(target)):
        return 0.0, STRUCTURE_BONUS
    return float(round(value, 2) == round(target, 2)), STRUCTURE_BONUS


def _multiple_choice(answer: str, truth: str) -> tuple[float, float]:
    match = _LETTER_RE.match(answer)
    if match is None:
        return 0.0, 0.0
    return float(match.group(1).upper() == truth.strip().upper()), STRUCTURE_BONUS


def _problem_type(data_source: str, extra_info: Any) -> str:
    if isinstance(extra_info, dict) and extra_info.get("problem_type"):
        return str(extra_info["problem_type"])
    return TOY_TASKS.get(data_source, ("unknown", "unknown"))[0]


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: dict | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Score one response of a toy task; see the module docstring."""
    problem_type = _problem_type(data_source, extra_info)
    accuracy = fmt = structure = 0.0
    try:
        solution = solution_str if isinstance(solution_str, str) else ""
        fmt = float(bool(_FORMAT_RE.match(solution)))
        answer = _extract_answer(solution)
        if answer is not None:
            if problem_type == "numerical":
                accuracy, structure = _numerical(answer, str(ground_truth))
            elif problem_type == "multiple choice":
                accuracy, structure = _multiple_choice(answer, str(ground_truth))
    except Exception:  # a reward must never crash the trainer; 0 is the bounded fallback
        accuracy = fmt = structure = 0.0
    score = ACCURACY_WEIGHT * accuracy + FORMAT_WEIGHT * fmt + structure
    return {
        "score": score,
        "accuracy": accuracy,
        "format": fmt,
        "structure": structure,
        "problem_type": problem_type,
    }
