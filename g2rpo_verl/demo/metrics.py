"""verl's file-logger metrics: merge the runs of a work directory, read series, summarise.

verl's ``file`` logger writes one JSON object per step, ``{"step": N, "data": {key: value}}``,
and truncates its file when a run starts. The demo gives every run its own file and merges
them here, in run order, per step: a later run's value of a key replaces an earlier one (a
resumed run repeats the validation of its starting step and redoes steps after the last
checkpoint).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = [
    "Metrics",
    "load_metrics",
    "merge_run_metrics",
    "series",
    "task_names",
    "validation_sources",
    "validation_summary",
    "validation_steps",
    "validation_value",
]

#: ``{step: {key: value}}``, steps ascending.
Metrics = dict[int, dict[str, float]]

_TASK_KEY = re.compile(r"^task_(.+)/reward/total$")
_VAL_ACC = re.compile(r"^val-core/([^/]+)/acc/mean@\d+$")
_VAL_REWARD = re.compile(r"^val-aux/([^/]+)/reward/mean@\d+$")


def load_metrics(paths: Iterable[Path]) -> Metrics:
    """Merge the JSONL files ``paths`` in order (see module docstring); unreadable lines are skipped."""
    merged: Metrics = {}
    for path in paths:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                record = json.loads(line)
                step, data = int(record["step"]), record["data"]
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a killed run
            if isinstance(data, Mapping):
                merged.setdefault(step, {}).update(data)
    return dict(sorted(merged.items()))


def merge_run_metrics(run_files: Iterable[Path], out_path: Path) -> Metrics:
    """Merge ``run_files`` and write them to ``out_path`` in verl's JSONL format; returns them."""
    merged = load_metrics(run_files)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for step, data in merged.items():
            f.write(json.dumps({"step": step, "data": data}, default=float) + "\n")
    tmp.replace(out_path)
    return merged


def series(metrics: Metrics, key: str) -> tuple[list[int], list[float]]:
    """``(steps, values)`` of ``key`` over the steps that logged a finite number for it."""
    steps, values = [], []
    for step, data in metrics.items():
        value = data.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            steps.append(step)
            values.append(float(value))
    return steps, values


def task_names(metrics: Metrics) -> list[str]:
    """Task-key values with per-task training metrics (``task_<τ>/reward/total``), sorted."""
    names = {m.group(1) for data in metrics.values() for key in data if (m := _TASK_KEY.match(key))}
    return sorted(names)


def validation_sources(metrics: Metrics) -> list[str]:
    """Data sources with validation accuracy (``val-core/<source>/acc/mean@N``), sorted."""
    names = {m.group(1) for data in metrics.values() for key in data if (m := _VAL_ACC.match(key))}
    return sorted(names)


def _val_key(data: Mapping[str, float], source: str, pattern: re.Pattern = _VAL_ACC) -> str | None:
    for key in data:
        match = pattern.match(key)
        if match and match.group(1) == source:
            return key
    return None


def validation_steps(metrics: Metrics) -> list[int]:
    """Steps that logged a validation accuracy, ascending."""
    return [step for step, data in metrics.items() if any(_VAL_ACC.match(k) for k in data)]


def validation_value(data: Mapping[str, float], source: str, kind: str) -> float | None:
    """One step's validation ``kind`` (``"accuracy"`` or ``"reward"``) of ``source``, else None."""
    pattern = {"accuracy": _VAL_ACC, "reward": _VAL_REWARD}[kind]
    key = _val_key(data, source, pattern)
    return None if key is None else float(data[key])


def validation_summary(metrics: Metrics) -> list[str]:
    """Lines comparing each task's first and last validation (empty if < 2 validations).

    Per data source: accuracy (``val-core/<source>/acc/mean@N``) and reward
    (``val-aux/<source>/reward/mean@N``, the reward function's score), first -> last.
    """
    val_steps = [step for step, data in metrics.items() if any(_VAL_ACC.match(k) for k in data)]
    if len(val_steps) < 2:
        return []
    first, last = metrics[val_steps[0]], metrics[val_steps[-1]]
    some_key = _val_key(first, validation_sources(metrics)[0]) or ""
    samples = some_key.rsplit("/", 1)[-1]
    lines = [f"validation, step {val_steps[0]} -> step {val_steps[-1]} ({samples} per prompt):"]
    for source in validation_sources(metrics):
        parts = []
        for name, pattern in (("accuracy", _VAL_ACC), ("reward", _VAL_REWARD)):
            k0, k1 = _val_key(first, source, pattern), _val_key(last, source, pattern)
            if k0 is not None and k1 is not None:
                a, b = first[k0], last[k1]
                parts.append(f"{name} {a:5.3f} -> {b:5.3f} ({b - a:+.3f})")
        if parts:
            lines.append(f"  {source:<16} " + "   ".join(parts))
    return lines
