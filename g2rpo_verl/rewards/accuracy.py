"""Per-problem-type accuracy (in [0, 1]) and structure (0 or 0.5) of one extracted answer.

Problem types (canonical names; aliases in :data:`PROBLEM_TYPE_ALIASES`), as the ``strict``
preset judges them (the switches of :class:`~g2rpo_verl.rewards.settings.RewardSettings` change
single rules; ``docs/rewards.md`` has both presets side by side):

==================  ====================================================  ==========================
problem type        accuracy                                              structure 0.5 when
==================  ====================================================  ==========================
multiple choice     predicted option letter == true letter (1/0)          the answer is a letter form
numerical           equal after rounding to 2 decimals (1/0)              the answer is one number
regression          mean relative accuracy over t = 0.50, 0.55, …, 0.95   the answer is one number
OCR                 1 − word error rate (jiwer), clipped to [0, 1]         the answer is non-empty
math                symbolic equivalence via math-verify (1/0), after     math-verify parses it
                    cheap pre-checks (:mod:`.math_prechecks`)
spatial grounding   IoU of boxes, optimal one-to-one matching              the answer is strict JSON boxes
free-form           exact match after normalization (1/0)                 the answer is non-empty
==================  ====================================================  ==========================

With ``structure_check="flat"`` every type but grounding gets the bonus whatever the answer.
An unknown problem type is scored as free-form (one warning per name). A ground truth that
cannot be read for its problem type raises ``ValueError`` (counted as a reward failure by
the caller: it is a data error, not a model error).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from g2rpo_verl.rewards.answers import (
    match_option_text,
    normalize_text,
    parse_boxes,
    parse_boxes_key,
    parse_choice_letter,
    parse_number,
    parse_options,
)
from g2rpo_verl.rewards.guard import GuardError, GuardTimeout, math_pool
from g2rpo_verl.rewards.math_prechecks import MAX_LETTERLESS, last_boxed, longest_letterless, precheck_math

__all__ = [
    "MULTIPLE_CHOICE",
    "NUMERICAL",
    "REGRESSION",
    "OCR",
    "MATH",
    "GROUNDING",
    "FREE_FORM",
    "PROBLEM_TYPES",
    "PROBLEM_TYPE_ALIASES",
    "STRUCTURE_BONUS",
    "REGRESSION_THRESHOLDS",
    "Scored",
    "ScoringFailure",
    "canonical_problem_type",
    "score_answer",
    "box_iou",
    "match_boxes",
    "mean_relative_accuracy",
    "ocr_accuracy",
    "math_equivalent",
    "answer_structure",
    "float_number",
    "mean_relative_accuracy_float32",
    "iou_as_written",
]

logger = logging.getLogger(__name__)

MULTIPLE_CHOICE = "multiple choice"
NUMERICAL = "numerical"
REGRESSION = "regression"
OCR = "OCR"
MATH = "math"
GROUNDING = "spatial grounding"
FREE_FORM = "free-form"
PROBLEM_TYPES = (MULTIPLE_CHOICE, NUMERICAL, REGRESSION, OCR, MATH, GROUNDING, FREE_FORM)

#: normalized alias (lower case, ``_``/``-`` as spaces) -> canonical problem type
PROBLEM_TYPE_ALIASES: dict[str, str] = {
    "multiple choice": MULTIPLE_CHOICE,
    "multiple choices": MULTIPLE_CHOICE,
    "multi choice": MULTIPLE_CHOICE,
    "multiplechoice": MULTIPLE_CHOICE,
    "mcq": MULTIPLE_CHOICE,
    "mc": MULTIPLE_CHOICE,
    "choice": MULTIPLE_CHOICE,
    "numerical": NUMERICAL,
    "numeric": NUMERICAL,
    "number": NUMERICAL,
    "regression": REGRESSION,
    "ocr": OCR,
    "math": MATH,
    "mathematics": MATH,
    "math reasoning": MATH,
    "spatial grounding": GROUNDING,
    "grounding": GROUNDING,
    "bbox": GROUNDING,
    "free form": FREE_FORM,
    "freeform": FREE_FORM,
}

STRUCTURE_BONUS = 0.5
#: t = 0.50, 0.55, ..., 0.95 (exact decimal steps, not accumulated float steps)
REGRESSION_THRESHOLDS = tuple((50 + 5 * i) / 100 for i in range(10))


class ScoringFailure(Exception):
    """A guarded check failed (timeout, crashed worker); the sample counts as a reward failure."""


@dataclass(frozen=True)
class Scored:
    """Accuracy in [0, 1] and structure in {0, STRUCTURE_BONUS} of one answer."""

    accuracy: float
    structure: float


def _alias_key(name: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[_\-]", " ", name.strip().lower()))


def canonical_problem_type(name: Any) -> str | None:
    """The canonical problem type for ``name`` (case, ``_``/``-`` and aliases ignored), else None."""
    if not isinstance(name, str):
        return None
    return PROBLEM_TYPE_ALIASES.get(_alias_key(name))


# ---------------------------------------------------------------------------------------
def _guarded_grade_answer(pred: str, truth: str, settings: Any) -> bool:
    """mathruler's ``grade_answer(pred, truth)`` (the authors' multiple-choice grader) in the
    killable worker: its sympy step can hang (``9**9**9**9``). Raises :class:`ScoringFailure`."""
    pool = math_pool(settings.math_workers or None)
    try:
        reply = pool.call(
            {"kind": "choice", "gold": truth, "pred": pred, "soft_timeout_s": settings.math_timeout_s},
            timeout_s=settings.math_timeout_s + 2.0,
            queue_timeout_s=settings.math_queue_timeout_s,
        )
    except (GuardTimeout, GuardError) as err:
        raise ScoringFailure(f"multiple-choice check: {err}") from err
    if not reply.get("ok"):
        raise ScoringFailure(f"multiple-choice check: {reply.get('error')}: {reply.get('detail')}")
    return bool(reply.get("correct"))


def _single_letter(text: str) -> bool:
    return len(text) == 1 and text.isascii() and text.isalpha()


def _multiple_choice(
    answer: str | None, truth: Any, extra_info: Mapping[str, Any], settings: Any, tagged: bool = True
) -> Scored:
    truth_s = str(truth).strip()
    if settings.choice_format == "grade_answer":
        # the authors' rule: mathruler's string normalization, then sympy (letters: any case,
        # "(B)" and "$B$" match; "B.", "**B**", "B: dog" do not)
        if not answer:
            return Scored(0.0, 0.0)
        if answer == truth_s:  # equal texts normalize equal: grade_answer's first test
            return Scored(1.0, STRUCTURE_BONUS)
        if _single_letter(answer) and _single_letter(truth_s):
            # what grade_answer gives two single letters (its normalization lowers the case; the
            # sympy step then finds b - c != 0), without the worker's ~20 ms of sympy
            return Scored(float(answer.lower() == truth_s.lower()), STRUCTURE_BONUS)
        # junk (unbalanced brackets, power towers, 1000000!, 65-letter runs) cannot equal an
        # option and would cost grade_answer's sympy the time limit: 0 without the worker
        if (
            longest_letterless(answer) > MAX_LETTERLESS  # "1+1+…": sympy sums it for 0.6 s, never a letter
            or precheck_math(answer, truth_s, settings.max_math_depth, settings.max_math_digits, verbatim=False)
            is False
        ):
            return Scored(0.0, STRUCTURE_BONUS)
        return Scored(float(_guarded_grade_answer(answer, truth_s, settings)), STRUCTURE_BONUS)
    options = parse_options(extra_info.get("options"))
    true_letter = parse_choice_letter(truth_s) or match_option_text(truth_s, options)
    if answer is None:
        return Scored(0.0, 0.0)
    lenient = settings.choice_format == "lenient"
    letter = parse_choice_letter(answer, lenient=lenient)
    structure = STRUCTURE_BONUS if letter is not None else 0.0
    if letter is None and lenient:
        letter = match_option_text(answer, options)
    if true_letter is None:
        # a ground truth that is neither a letter nor an option: compare the texts
        return Scored(float(normalize_text(answer) == normalize_text(truth_s) and bool(truth_s)), structure)
    return Scored(float(letter == true_letter), structure)


def float_number(text: Any) -> float | None:
    """Python's ``float()`` of ``text`` with commas removed (``number_format="float"``, the
    authors' rule: ``15 objects``, ``$15$``, ``45%`` are not numbers; ``3,5`` is 35;
    ``1e3``, `` 15 ``, ``inf``, ``1_000`` are), else ``None``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    try:
        return float(str(text).replace(",", ""))
    except (ValueError, OverflowError):
        return None


def _truth_number(truth: Any, settings: Any = None) -> tuple[float, bool]:
    if settings is not None and settings.number_format == "float":
        value = float_number(truth)
        if value is None:
            raise ValueError(f"ground truth {str(truth)[:80]!r} is not a number")
        return value, False
    if isinstance(truth, (int, float)) and not isinstance(truth, bool) and math.isfinite(truth):
        return float(truth), False
    parsed = parse_number(str(truth), strict=False)
    if parsed is None:
        raise ValueError(f"ground truth {str(truth)[:80]!r} is not a number")
    return parsed


def _numbers_equal(pred: tuple[float, bool], truth: tuple[float, bool]) -> bool:
    """Equal to 2 decimals; a ``%`` on either side may also mean /100 (45% == 45 == 0.45)."""

    def candidates(value: float, percent: bool) -> tuple[float, ...]:
        return (value, value / 100.0) if percent else (value,)

    pv, tv = candidates(*pred), candidates(*truth)
    return any(round(p, 2) == round(t, 2) for p in pv for t in tv)


def _answer_number(answer: str) -> tuple[tuple[float, bool] | None, float]:
    """The answer's number and its structure bonus: only a bare number earns the bonus, but a
    number inside prose still counts for accuracy."""
    pred = parse_number(answer, strict=True)
    if pred is not None:
        return pred, STRUCTURE_BONUS
    return parse_number(answer, strict=False), 0.0


def _numerical(
    answer: str | None, truth: Any, extra_info: Mapping[str, Any], settings: Any, tagged: bool = True
) -> Scored:
    true_num = _truth_number(truth, settings)
    if answer is None:
        return Scored(0.0, 0.0)
    if settings.number_format == "float":
        value = float_number(answer)
        right = value is not None and round(value, 2) == round(true_num[0], 2)
        return Scored(float(right), STRUCTURE_BONUS if value is not None else 0.0)
    pred, structure = _answer_number(answer)
    return Scored(float(pred is not None and _numbers_equal(pred, true_num)), structure)


def mean_relative_accuracy(pred: float, truth: float, thresholds: tuple[float, ...] = REGRESSION_THRESHOLDS) -> float:
    """Mean over thresholds t of ``1[|pred − truth| / |truth| < 1 − t]``.

    ``truth == 0``: the relative error is 0 when ``pred == 0`` and infinite otherwise.
    Non-finite inputs score 0.
    """
    if not (math.isfinite(pred) and math.isfinite(truth)):
        return 0.0
    if truth == 0:
        rel = 0.0 if pred == 0 else math.inf
    else:
        rel = abs(pred - truth) / abs(truth)
    return sum(1.0 for t in thresholds if rel < 1.0 - t) / len(thresholds)


_F32_ONE_MINUS_T = None  # numpy float32 array of 1 − t, built on first use


def mean_relative_accuracy_float32(pred: float, truth: float) -> float:
    """The authors' float32 reading of :func:`mean_relative_accuracy`
    (``regression_arithmetic="float32"``): ``|p − t| / (|t| + 1e-8) < 1 − t`` with every value
    and step in float32, thresholds 0.50, 0.55, …, 0.95 as float32, and the mean k/10 as a
    float32 (so 9 of 10 is 0.8999999761581421). Non-finite values compare false."""
    import numpy as np

    global _F32_ONE_MINUS_T
    if _F32_ONE_MINUS_T is None:
        _F32_ONE_MINUS_T = np.float32(1) - np.array([(50 + 5 * i) / 100 for i in range(10)], dtype=np.float32)
    with np.errstate(all="ignore"):
        p, t = np.float32(pred), np.float32(truth)
        rel = np.abs(p - t) / (np.abs(t) + np.float32(1e-8))
        hits = int(np.count_nonzero(rel < _F32_ONE_MINUS_T))
    return float(np.float32(hits) / np.float32(10))


def _regression(
    answer: str | None, truth: Any, extra_info: Mapping[str, Any], settings: Any, tagged: bool = True
) -> Scored:
    true_value, _ = _truth_number(truth, settings)
    if answer is None:
        return Scored(0.0, 0.0)
    if settings.number_format == "float":
        pred_value = float_number(answer)
        structure = STRUCTURE_BONUS if pred_value is not None else 0.0
        if pred_value is None:
            return Scored(0.0, structure)
        if settings.regression_arithmetic == "float32":
            return Scored(mean_relative_accuracy_float32(pred_value, true_value), structure)
        return Scored(mean_relative_accuracy(pred_value, true_value), structure)
    pred, structure = _answer_number(answer)
    # a percent sign is ignored here: regression targets are plain quantities
    if pred is None:
        return Scored(0.0, structure)
    if settings.regression_arithmetic == "float32":
        return Scored(mean_relative_accuracy_float32(pred[0], true_value), structure)
    return Scored(mean_relative_accuracy(pred[0], true_value), structure)


def ocr_accuracy(pred: str, truth: str, fold: bool = True) -> float:
    """``1 − WER(truth, pred)`` clipped to [0, 1]; words are split on whitespace.

    ``fold=True``: :func:`normalize_text` on both first (Unicode NFKC, case-folding). With
    ``fold=False`` the words are compared as written (the reference). Punctuation is kept
    either way (it is part of the text to read). Empty truth: 1 if the prediction is empty
    too, else 0.
    """
    import jiwer

    if fold:
        ref, hyp = normalize_text(truth), normalize_text(pred)
    else:
        ref, hyp = " ".join(truth.split()), " ".join(pred.split())
    if not ref:
        return 1.0 if not hyp else 0.0
    if not hyp:
        return 0.0
    return min(1.0, max(0.0, 1.0 - float(jiwer.wer(ref, hyp))))


def _ocr(answer: str | None, truth: Any, extra_info: Mapping[str, Any], settings: Any, tagged: bool = True) -> Scored:
    if answer is None:
        return Scored(0.0, 0.0)
    return Scored(ocr_accuracy(answer, str(truth), settings.ocr_fold), STRUCTURE_BONUS)


def math_equivalent(
    pred: str,
    truth: str,
    timeout_s: float = 1.0,
    queue_timeout_s: float = 60.0,
    workers: int = 0,
    delimit: bool = True,
    fallback: bool = False,
) -> tuple[bool, bool]:
    """``(equivalent, parsed)`` by math-verify, run in a killable worker process.

    ``delimit``: a bare answer and ground truth are read as one LaTeX expression (wrapped in
    ``$…$``); False passes both as they are (math-verify finds the expression in free text).
    ``fallback``: when math-verify raises, mathruler's ``grade_answer`` decides (the authors').

    ``parsed``: math-verify turned the prediction into a sympy object. Raises
    :class:`ScoringFailure` on a timeout or a worker failure. Typical worst case
    ``timeout_s + 2 s`` (+ ~0.5 s to start a replacement worker); absolute bound
    ``queue_timeout_s + 2 · (60 s start-up limit + timeout_s + 2 s)``.
    """
    pool = math_pool(workers or None)
    try:
        reply = pool.call(
            {"gold": truth, "pred": pred, "soft_timeout_s": timeout_s, "delimit": delimit, "fallback": fallback},
            timeout_s=timeout_s + 2.0,  # the worker's own alarm fires first; this is the hard stop
            queue_timeout_s=queue_timeout_s,
        )
    except (GuardTimeout, GuardError) as err:
        raise ScoringFailure(f"math check: {err}") from err
    if not reply.get("ok"):
        raise ScoringFailure(f"math check: {reply.get('error')}: {reply.get('detail')}")
    return bool(reply.get("correct")), bool(reply.get("parsed"))


def _math(answer: str | None, truth: Any, extra_info: Mapping[str, Any], settings: Any, tagged: bool = True) -> Scored:
    # delimited: the answer is parsed as ONE LaTeX expression, whose cost grows with its length;
    # as written (the authors' call), math-verify extracts the math from the text, so a whole
    # response or a chatty answer is read to its end (bounded by max_solution_chars only)
    delimit = tagged and settings.math_delimit
    as_written = not settings.math_delimit
    if answer is None or (len(answer) > settings.max_math_chars and not as_written):
        return Scored(0.0, 0.0)
    if as_written and longest_letterless(answer) > MAX_LETTERLESS:
        return Scored(0.0, 0.0)  # math-verify reads the whole text; see MAX_LETTERLESS
    truth_s = str(truth).strip()
    if not truth_s:
        raise ValueError("empty ground truth")
    if len(truth_s) > settings.max_math_chars:
        raise ValueError(f"ground truth longer than max_math_chars={settings.max_math_chars}")
    # a fallback text (a whole response) is prose: math-verify reads its last \boxed{} first,
    # so that is what the pre-checks judge (prose may hold "1)" or other unpaired brackets)
    probe = answer if tagged else (last_boxed(answer) or answer)
    settled = precheck_math(
        probe, truth_s, settings.max_math_depth, settings.max_math_digits, settings.math_verbatim, as_written
    )
    if settled is not None:  # verbatim right, or junk: no math-verify call
        return Scored(float(settled), STRUCTURE_BONUS if settled else 0.0)
    correct, parsed = math_equivalent(
        answer,
        truth_s,
        settings.math_timeout_s,
        settings.math_queue_timeout_s,
        settings.math_workers,
        delimit=delimit,
        fallback=settings.math_fallback == "grade_answer",
    )
    return Scored(float(correct), STRUCTURE_BONUS if parsed else 0.0)


def box_iou(a: tuple[float, ...], b: tuple[float, ...], sort_corners: bool = True) -> float:
    """IoU of two boxes ``(x1, y1, x2, y2)``; no-area -> 0.

    ``sort_corners``: swapped corners are reordered; otherwise a box with ``x2 < x1`` or
    ``y2 < y1`` has no area (the reference).
    """
    if sort_corners:
        ax1, ax2 = sorted((a[0], a[2]))
        ay1, ay2 = sorted((a[1], a[3]))
        bx1, bx2 = sorted((b[0], b[2]))
        by1, by2 = sorted((b[1], b[3]))
    else:
        ax1, ay1, ax2, ay2 = a[:4]
        bx1, by1, bx2, by2 = b[:4]
        if ax2 < ax1 or ay2 < ay1 or bx2 < bx1 or by2 < by1:
            return 0.0
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    if not (union > 0.0 and math.isfinite(union)):
        return 0.0
    return min(1.0, max(0.0, inter / union))


def match_boxes(pred: list[tuple[float, ...]], truth: list[tuple[float, ...]], sort_corners: bool = True) -> float:
    """Sum of IoUs of the best one-to-one matching, divided by ``max(len(pred), len(truth))``.

    Each true box is matched with at most one predicted box (Hungarian assignment maximizing
    total IoU), so extra predicted boxes and missed true boxes both lower the score, and
    predicting many boxes cannot inflate it. One box each: plain IoU.
    """
    if not pred or not truth:
        return 0.0
    if len(pred) == 1 and len(truth) == 1:
        return box_iou(pred[0], truth[0], sort_corners)
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    ious = np.array([[box_iou(p, t, sort_corners) for t in truth] for p in pred], dtype=np.float64)
    rows, cols = linear_sum_assignment(ious, maximize=True)
    return float(min(1.0, ious[rows, cols].sum() / max(len(pred), len(truth))))


def iou_as_written(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """IoU with corners as given, the authors' formula: each area is ``max(0, x2 − x1) ·
    max(0, y2 − y1)`` and a union of at most 1e-12 gives 0 (swapped corners: no area)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter
    return inter / union if union > 1e-12 else 0.0


def _grounding(
    answer: str | None, truth: Any, extra_info: Mapping[str, Any], settings: Any, tagged: bool = True
) -> Scored:
    if settings.truth_box_format == "boxes_key":
        true_box = parse_boxes_key(truth) if isinstance(truth, str) else None
        if true_box is None:
            raise ValueError(f'ground truth {str(truth)[:80]!r} is not {{"boxes": [x1, y1, x2, y2]}}')
        true_boxes = [true_box]
    else:
        true_boxes = parse_boxes(truth, strict=True) or parse_boxes(truth, strict=False)
    if true_boxes is None:
        raise ValueError(f"ground truth {str(truth)[:80]!r} has no box")
    if answer is None:
        return Scored(0.0, 0.0)
    sort_corners = settings.box_corners == "sort"
    if settings.box_format == "boxes_key":
        box = parse_boxes_key(answer)
        if box is None:
            return Scored(0.0, 0.0)
        if not sort_corners and len(true_boxes) == 1:  # the authors' rule exactly
            value = iou_as_written(box, true_boxes[0])
            return Scored(value if math.isfinite(value) else 0.0, STRUCTURE_BONUS)
        return Scored(match_boxes([box], true_boxes, sort_corners), STRUCTURE_BONUS)
    boxes = parse_boxes(answer, strict=True)
    structure = STRUCTURE_BONUS if boxes is not None else 0.0
    if boxes is None:
        boxes = parse_boxes(answer, strict=False)
    return Scored(match_boxes(boxes or [], true_boxes, sort_corners), structure)


def _free_form_norm(text: str) -> str:
    s = normalize_text(text)
    s = s.strip("\"'`“”‘’")
    return s.rstrip(".。!").strip()


def _free_form(
    answer: str | None, truth: Any, extra_info: Mapping[str, Any], settings: Any, tagged: bool = True
) -> Scored:
    if answer is None:
        return Scored(0.0, 0.0)
    truth_n = _free_form_norm(str(truth))
    return Scored(float(bool(truth_n) and _free_form_norm(answer) == truth_n), STRUCTURE_BONUS)


def _unscored(
    answer: str | None, truth: Any, extra_info: Mapping[str, Any], settings: Any, tagged: bool = True
) -> Scored:
    return Scored(0.0, STRUCTURE_BONUS if answer else 0.0)


# scorer(answer, truth, extra_info, settings, tagged): ``tagged`` is False when the answer is
# a fallback text (no answer block), e.g. a whole response
_SCORERS: dict[str, Callable[[str | None, Any, Mapping[str, Any], Any, bool], Scored]] = {
    MULTIPLE_CHOICE: _multiple_choice,
    NUMERICAL: _numerical,
    REGRESSION: _regression,
    OCR: _ocr,
    MATH: _math,
    GROUNDING: _grounding,
    FREE_FORM: _free_form,
}


def answer_structure(problem_type: str, answer: str | None, settings: Any) -> float:
    """The structure bonus of ``answer`` judged without the ground truth (used when the
    accuracy check failed and ``failure_drops_structure`` is off): ``flat`` — 0.5 for every
    type but grounding, whose answer must be box JSON; ``shape`` — the type's answer shape
    (math: 0, its parse is unknown). Never raises."""
    try:
        if problem_type == GROUNDING:
            if answer is None:
                return 0.0
            if settings.box_format == "boxes_key":
                return STRUCTURE_BONUS if parse_boxes_key(answer) is not None else 0.0
            return STRUCTURE_BONUS if parse_boxes(answer, strict=True) is not None else 0.0
        if settings.structure_check == "flat":
            return STRUCTURE_BONUS
        if answer is None or problem_type == MATH:
            return 0.0
        if problem_type == MULTIPLE_CHOICE:
            return STRUCTURE_BONUS if parse_choice_letter(answer, settings.choice_format == "lenient") else 0.0
        if problem_type in (NUMERICAL, REGRESSION):
            if settings.number_format == "float":
                return STRUCTURE_BONUS if float_number(answer) is not None else 0.0
            return STRUCTURE_BONUS if parse_number(answer, strict=True) is not None else 0.0
        return STRUCTURE_BONUS
    except Exception:  # a structure check is pure parsing; belt and braces
        return 0.0


_warned_types: set[str] = set()
_warned_lock = threading.Lock()


def score_answer(
    problem_type: str, answer: str | None, truth: Any, extra_info: Mapping[str, Any], settings: Any, tagged: bool = True
) -> Scored:
    """Accuracy and structure of ``answer`` (``None``: no answer found) for ``problem_type``.

    ``settings`` is a :class:`~g2rpo_verl.rewards.settings.RewardSettings` (the rule switches);
    ``tagged=False``: the answer is a fallback text, not an answer block's content.

    ``problem_type`` is canonical or unknown (unknown -> free-form, warned once per name).
    Raises ``ValueError`` for an unreadable ground truth and :class:`ScoringFailure` for a
    failed guarded check; any other exception is a bug the caller also guards against.
    """
    scorer = _SCORERS.get(problem_type)
    if settings.unscored_types == "zero" and (scorer is None or problem_type == FREE_FORM):
        # the authors' reward has no scorer for these (open-ended's ROUGE import is commented
        # out): accuracy 0, the structure bonus as for any non-JSON type
        scorer = _unscored
    elif scorer is None:
        with _warned_lock:
            first = problem_type not in _warned_types
            _warned_types.add(problem_type)
        if first:
            logger.warning(
                "g2rpo_verl.rewards: no scorer for problem_type %r; scoring it as free-form "
                "(exact normalized match). Known: %s",
                problem_type,
                ", ".join(PROBLEM_TYPES),
            )
        scorer = _free_form
    result = scorer(answer, truth, extra_info, settings, tagged)
    accuracy = result.accuracy if math.isfinite(result.accuracy) else 0.0
    structure = result.structure > 0
    if settings.structure_check == "flat" and problem_type != GROUNDING:
        structure = True  # the reference: a flat bonus for every type without a JSON answer
    return Scored(min(1.0, max(0.0, accuracy)), STRUCTURE_BONUS if structure else 0.0)
