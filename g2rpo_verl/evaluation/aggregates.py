"""Aggregates of ``predictions.jsonl``: overall, per data source and per task.

Every number is a plain function of the records (:func:`group_metrics`), so anyone can
recompute ``metrics.json`` from ``predictions.jsonl``. Per group of records:

=====================  ==========================================================================
key                    value
=====================  ==========================================================================
``prompts``            distinct prompts (file, row)
``samples``            responses (``prompts · n``)
``accuracy``           mean of the reward's ``accuracy`` (else ``acc``, else ``score``) over
                       responses -- with n > 1 this is ``mean@n``
``reward``             mean ``score`` (the scalar training optimised, before length shaping)
``format_rate``        mean ``format`` (0/1): responses in the ``<think>…</think><answer>…</answer>`` form
``structure_rate``     share of responses with ``structure > 0`` (answer has its type's shape)
``response_length``    mean response length in tokens
``truncated_rate``     share of responses cut at ``max_new_tokens`` (``finish_reason == "length"``)
``reward_failures``    responses whose scoring failed (``reward_failure > 0``), a count
``mean@n``/``pass@n``  n > 1 only: mean accuracy, and the mean over prompts of the best
                       accuracy among its n responses (for 0/1 accuracy: the share of prompts
                       solved at least once)
``grounding``          for spatial-grounding responses in the group: ``mean_iou`` and
                       ``R@0.3`` / ``R@0.5`` / ``R@0.7``, the share of responses whose IoU is
                       ``>=`` the threshold. The IoU is the reward's grounding accuracy: plain
                       IoU for one box each, the matched mean IoU for several boxes
                       (:func:`g2rpo_verl.rewards.accuracy.match_boxes`).
=====================  ==========================================================================

Keys whose component the reward function does not return (``format``, ``structure``) are
``None``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from g2rpo_verl.evaluation.predictions import group_by
from g2rpo_verl.rewards.accuracy import GROUNDING, canonical_problem_type

__all__ = ["IOU_THRESHOLDS", "accuracy_of", "compute_metrics", "group_metrics", "is_grounding"]

#: the grounding recall thresholds (OneThinker's evaluation: IoU >= 0.3 / 0.5 / 0.7)
IOU_THRESHOLDS = (0.3, 0.5, 0.7)


def accuracy_of(record: Mapping[str, Any]) -> float:
    """A response's accuracy: the reward's ``accuracy``, else ``acc``, else ``score``."""
    reward = record.get("reward") or {}
    for key in ("accuracy", "acc", "score"):
        value = reward.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    raise ValueError(f"record {record.get('key')!r}: the reward has no numeric accuracy, acc or score")


def is_grounding(record: Mapping[str, Any]) -> bool:
    """True for a spatial-grounding response (the reward's ``problem_type``, else the task)."""
    reward = record.get("reward") or {}
    name = reward.get("problem_type", record.get("task"))
    return canonical_problem_type(name) == GROUNDING if isinstance(name, str) else False


def _mean(values: Sequence[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


def _component_mean(records: Sequence[Mapping[str, Any]], key: str, positive: bool = False) -> float | None:
    values = [r["reward"][key] for r in records if isinstance((r.get("reward") or {}).get(key), (int, float))]
    if len(values) < len(records) or not values:
        return None
    return _mean([float(v > 0) if positive else float(v) for v in values])


def group_metrics(records: Sequence[Mapping[str, Any]], n: int = 1) -> dict[str, Any]:
    """The metrics of one group of records (see the module docstring); ``n`` responses per prompt."""
    if not records:
        raise ValueError("no records to aggregate")
    accuracy = [accuracy_of(r) for r in records]
    prompts = _by_prompt(records)
    out: dict[str, Any] = {
        "prompts": len(prompts),
        "samples": len(records),
        "accuracy": _mean(accuracy),
        "reward": _component_mean(records, "score"),
        "format_rate": _component_mean(records, "format"),
        "structure_rate": _component_mean(records, "structure", positive=True),
        "response_length": _mean([float(r["response_tokens"]) for r in records]),
        "truncated_rate": _mean([float(r.get("finish_reason") == "length") for r in records]),
        "reward_failures": int(sum(float((r.get("reward") or {}).get("reward_failure") or 0) > 0 for r in records)),
    }
    if n > 1:
        out[f"mean@{n}"] = out["accuracy"]
        out[f"pass@{n}"] = _mean([max(accuracy_of(r) for r in group) for group in prompts.values()])
    grounding = [accuracy_of(r) for r in records if is_grounding(r)]
    if grounding:
        out["grounding"] = {
            "samples": len(grounding),
            "mean_iou": _mean(grounding),
            **{f"R@{t}": _mean([float(iou >= t) for iou in grounding]) for t in IOU_THRESHOLDS},
        }
    return out


def _by_prompt(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        out.setdefault(f"{r['file']}:{r['row']}", []).append(r)
    return out


def compute_metrics(records: Sequence[Mapping[str, Any]], n: int = 1) -> dict[str, Any]:
    """``{"overall": ..., "by_data_source": {ds: ...}, "by_task": {task: ...}}`` (sorted keys)."""
    return {
        "overall": group_metrics(records, n),
        "by_data_source": {k: group_metrics(v, n) for k, v in sorted(group_by(records, "data_source").items())},
        "by_task": {k: group_metrics(v, n) for k, v in sorted(group_by(records, "task").items())},
    }
