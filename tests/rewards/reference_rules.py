"""The authors' reward rules (OpenVLThinkerV2), written from the plain statement in
docs/rewards.md ("The authors' rules") — independent of g2rpo_verl.rewards.

Used as the oracle of the wide case table (tests/rewards/reference_reward_cases.py): the expected
accuracy, format and structure of each case are what this reading of the statement gives.
Deliberately naive (a regex for the format, float(), torch for the float32 arithmetic, a
word-level Levenshtein loop); the graders the statement names (mathruler's ``grade_answer``,
math-verify) are called as the statement says. It has no time limit: cases must not hang.
"""

from __future__ import annotations

import json
import re

FORMAT_RE = re.compile(r"\s*<thinking>.*</thinking>\s*<answer>.*</answer>\s*", re.DOTALL)
GROUNDING = "spatial grounding"


def rewrite(response: str) -> str:
    """Rule 1: drop the whitespace on both sides of every '<', '>' and '/'."""
    return re.sub(r"\s*([<>/])\s*", r"\1", response)


def first_block(text: str) -> str:
    """Rule 3: stripped text between the first '<answer>' and the next '</answer>' ('' if none)."""
    start = text.find("<answer>")
    if start < 0:
        return ""
    end = text.find("</answer>", start + len("<answer>"))
    return text[start + len("<answer>") : end].strip() if end >= 0 else ""


def as_float(text: str):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def four_floats(value) -> list[float] | None:
    if not isinstance(value, list) or len(value) != 4:
        return None
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return None


def boxes_of(text: str) -> list[float] | None:
    try:
        obj = json.loads(text)
    except Exception:
        return None
    return four_floats(obj.get("boxes")) if isinstance(obj, dict) else None


def iou(a: list[float], b: list[float]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter
    return inter / union if union > 1e-12 else 0.0


def word_errors(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = prev[j - 1] if r == h else 1 + min(prev[j], cur[j - 1], prev[j - 1])
        prev = cur
    return prev[-1]


def regression_accuracy(pred: float, truth: float) -> float:
    import torch

    p, t = torch.tensor(pred, dtype=torch.float32), torch.tensor(truth, dtype=torch.float32)
    rel = (p - t).abs() / (t.abs() + 1e-8)
    thresholds = torch.tensor([0.5 + 0.05 * i for i in range(10)], dtype=torch.float32)
    return (rel < (1 - thresholds)).float().mean().item()


def accuracy(problem_type: str, answer: str, truth: str) -> float:
    kind = problem_type.lower()
    if kind == "multiple choice":
        from mathruler.grader import grade_answer

        return float(grade_answer(answer.strip(), truth.strip()))
    if kind in ("numerical", "regression"):
        p, t = as_float(answer), as_float(truth)
        if p is None or t is None:
            return 0.0
        if kind == "numerical":
            return float(round(p, 2) == round(t, 2))
        return regression_accuracy(p, t)
    if kind == "ocr":
        ref = truth.split()
        return min(1.0, max(0.0, 1.0 - word_errors(ref, answer.split()) / max(1, len(ref))))
    if kind == "math":
        from math_verify import parse, verify

        try:
            return float(bool(verify(parse(truth), parse(answer))))
        except Exception:
            from mathruler.grader import grade_answer

            return float(grade_answer(answer, truth))
    if kind == GROUNDING:
        p, t = boxes_of(answer), boxes_of(truth)
        return iou(p, t) if p is not None and t is not None else 0.0
    return 0.0  # any other problem type (open-ended, free-form, ...)


def score(problem_type: str, response: str, ground_truth: str) -> dict[str, float]:
    """``{"accuracy", "format", "structure", "overall"}`` by the stated rules."""
    r = rewrite(response)
    truth = first_block(ground_truth) or ground_truth
    fmt = 1.0 if FORMAT_RE.fullmatch(r) else 0.0
    block = first_block(r)
    if not fmt:
        structure = 0.0
    elif problem_type.lower() == GROUNDING:
        structure = 0.5 if boxes_of(block) is not None else 0.0
    else:
        structure = 0.5
    acc = accuracy(problem_type, block or r.strip(), truth)
    return {"accuracy": acc, "format": fmt, "structure": structure, "overall": 0.9 * acc + 0.1 * fmt + structure}
