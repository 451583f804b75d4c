"""The one task lookup: which task a sample belongs to, by ``g2rpo.task_key``.

Used by the trainer (:func:`g2rpo_verl.verl_hooks.samples.resolve_task_keys`), the driver and
preflight data checks (:mod:`g2rpo_verl.verl_hooks.checks`) and ``g2rpo-data`` alike, so the
three cannot disagree on where a task comes from. Plain Python (no torch, no verl).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["is_blank", "task_values"]


def is_blank(value: Any) -> bool:
    """No task value: ``None``, NaN or the empty string."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value)


def task_values(
    task_key: str,
    columns: Mapping[str, Sequence[Any]],
    extra_infos: Sequence[Mapping | None],
    reward_infos: Sequence[Mapping | None] | None = None,
) -> list[Any]:
    """The one task lookup (trainer, driver checks, preflight, ``g2rpo-data``): each sample's raw
    value of ``task_key`` — the column ``columns[task_key]`` where the row has a scalar there,
    else ``extra_info[task_key]``, else the reward dict's — and ``None`` where none has one.
    ``(N,)`` in, ``(N,)`` out (N = ``len(extra_infos)``)."""
    column = columns.get(task_key)
    values = []
    for i, extra in enumerate(extra_infos):
        value = column[i] if column is not None else None
        if is_blank(value) or isinstance(value, (Mapping, list, tuple)):
            value = None
            for source in (extra, reward_infos[i] if reward_infos is not None else None):
                if isinstance(source, Mapping) and not is_blank(source.get(task_key)):
                    value = source[task_key]
                    break
        values.append(value)
    return values
