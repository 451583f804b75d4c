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
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Metrics",
    "load_metrics",
    "merge_run_metrics",
    "series",
    "shaping_summary",
    "task_shaping",
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


#: Windows of the shaping targets: entropy in band over the last 20 steps; length of the last 10
#: steps against the first 5.
IN_BAND_WINDOW = 20
LENGTH_FIRST, LENGTH_LAST = 5, 10
_DIRECTION = {1.0: "reasoning", -1.0: "perception", 0.0: "neutral"}


@dataclass
class TaskShaping:
    """What the shaping did to one task over a run (``None`` where the run logged nothing for it).

    ``in_band`` / ``in_band_last``: share of all steps / of the last :data:`IN_BAND_WINDOW`
    steps whose token entropy (``task_<τ>/entropy``) was inside the task's band
    (``entropy/band_low..band_high``); ``length_first`` / ``length_last``: mean response length
    over the first :data:`LENGTH_FIRST` / last :data:`LENGTH_LAST` steps; ``profile``: the
    length profile (``length/direction``); ``length_met``: whether the length moved the way the
    profile pulls (shorter for perception, longer for reasoning; None for neutral).
    """

    task: str
    steps: int
    in_band: float | None
    in_band_last: float | None
    length_first: float | None
    length_last: float | None
    profile: str | None

    @property
    def length_met(self) -> bool | None:
        if self.length_first is None or self.length_last is None or self.profile in (None, "neutral"):
            return None
        if self.profile == "reasoning":
            return self.length_last > self.length_first
        return self.length_last < self.length_first


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def task_shaping(metrics: Metrics, task: str) -> TaskShaping:
    """:class:`TaskShaping` of ``task`` (metric-name form, e.g. ``spatial_grounding``)."""
    prefix = f"task_{task}"
    in_band = []
    for _step, data in metrics.items():
        h, lo, hi = (data.get(f"{prefix}/{k}") for k in ("entropy", "entropy/band_low", "entropy/band_high"))
        if all(isinstance(v, (int, float)) and math.isfinite(v) for v in (h, lo, hi)):
            in_band.append(lo <= h <= hi)
    _, lengths = series(metrics, f"{prefix}/length/mean")
    _, direction = series(metrics, f"{prefix}/length/direction")
    enough = len(lengths) >= LENGTH_FIRST + LENGTH_LAST
    return TaskShaping(
        task=task,
        steps=len(lengths),
        in_band=_mean([float(x) for x in in_band]),
        in_band_last=_mean([float(x) for x in in_band[-IN_BAND_WINDOW:]]),
        length_first=_mean(lengths[:LENGTH_FIRST]) if enough else None,
        length_last=_mean(lengths[-LENGTH_LAST:]) if enough else None,
        profile=_DIRECTION.get(direction[-1]) if direction else None,
    )


def replay_bands(metrics: Metrics, entropy_config) -> Metrics:
    """``metrics`` with each task's band filled in where the run logged none (entropy shaping off).

    The band is the one ``entropy_config``'s rule (:class:`~g2rpo_verl.config.EntropyShapingConfig`,
    ``band_rule`` / ``floor``) sets from the run's own ``task_<τ>/entropy`` series, step by step
    as the trainer would have: so a run with the shaping off is judged against the band the
    shaping would have held. Steps that already carry a band are left as they are.
    """
    bands = entropy_config.task_bands()
    out = {step: dict(data) for step, data in metrics.items()}
    for step in sorted(out):
        data = out[step]
        for task in task_names({step: data}):
            prefix = f"task_{task}"
            h = data.get(f"{prefix}/entropy")
            if f"{prefix}/entropy/band_low" in data or not isinstance(h, (int, float)) or not math.isfinite(h):
                continue
            band = bands.update(task.replace("_", " "), float(h))
            if band is not None:
                data[f"{prefix}/entropy/band_low"], data[f"{prefix}/entropy/band_high"] = band
    return out


def shaping_summary(metrics: Metrics) -> list[str]:
    """Per task: the share of steps with token entropy in its band, and the length change."""
    rows = [task_shaping(metrics, task) for task in task_names(metrics)]
    if not any(r.in_band is not None or r.length_first is not None for r in rows):
        return []
    lines = [
        f"shaping per task: token entropy inside the band (last {IN_BAND_WINDOW} steps | all steps), "
        f"mean response length (first {LENGTH_FIRST} -> last {LENGTH_LAST} steps):"
    ]
    for r in rows:
        parts = []
        if r.in_band is not None:
            parts.append(f"in band {r.in_band_last:4.0%} | {r.in_band:4.0%}")
        if r.length_first is not None:
            want = {"reasoning": ", longer wanted", "perception": ", shorter wanted"}.get(r.profile or "", "")
            verdict = {True: ": yes", False: ": NO"}.get(r.length_met, "")
            parts.append(
                f"length {r.length_first:5.1f} -> {r.length_last:5.1f} tokens "
                f"(x{r.length_last / max(r.length_first, 1e-9):.2f}{want}{verdict})"
            )
        lines.append(f"  {r.task.replace('_', ' '):<18} " + "   ".join(parts))
    return lines
