"""Per-sample information of one training step: the bottom layer of the verl wiring.

Everything above (estimators, shaping, filtering, metrics) takes these typed values as
arguments; this module imports nothing from the rest of :mod:`g2rpo_verl.verl_hooks`.

* :func:`resolve_task_keys` — each sample's task τ (``g2rpo.task_key``), looked up in the
  dataset columns, ``extra_info``, then the reward function's dict;
* :class:`SampleInfo` — uids, tasks factorised once into ids, reward dicts (immutable);
* :func:`metric_prefix` — the ``task_<τ>`` metric namespace;
* :class:`ResponseBatch` — the step's responses, masks, rewards, lengths and truncation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from g2rpo_verl.task_lookup import task_values
from g2rpo_verl.verl_compat.api import TQ

__all__ = [
    "metric_prefix",
    "resolve_task_keys",
    "SampleInfo",
    "read_sample_info",
    "response_stats",
    "ResponseBatch",
]


def metric_prefix(task: str) -> str:
    """``task_<τ>`` with characters W&B / TensorBoard dislike replaced by ``_``."""
    return "task_" + (re.sub(r"[^0-9A-Za-z_.-]+", "_", str(task)).strip("_") or "empty")


def resolve_task_keys(
    task_key: str,
    columns: Mapping[str, Sequence[Any]],
    extra_infos: Sequence[Mapping | None],
    reward_infos: Sequence[Mapping | None],
) -> list[str]:
    """Each sample's task (:func:`g2rpo_verl.task_lookup.task_values`) as a string.

    Raises ``ValueError`` naming the key, the first sample lacking it and where it looked.
    """
    n = len(extra_infos)
    values = task_values(task_key, columns, extra_infos, reward_infos)
    missing = [i for i, v in enumerate(values) if v is None]
    if missing:
        i = missing[0]
        ds = columns.get("data_source", [None] * n)[i]
        raise ValueError(
            f"g2rpo.task_key='{task_key}' is missing for {len(missing)} of {n} samples (first: sample {i}, "
            f"data_source={ds!r}); looked in the dataset columns {sorted(columns)}, in extra_info "
            f"(keys {sorted(extra_infos[i] or {})}) and in the reward dict (keys {sorted(reward_infos[i] or {})}). "
            "Add it to the data, or set g2rpo.task_key to one of those keys."
        )
    return [str(v) for v in values]


@dataclass(frozen=True)
class SampleInfo:
    """What the plugin knows per sample of one step, rows in ``batch.keys`` order (N rows).

    Attributes:
        uids: ``(N,)`` verl's prompt-group uid of each row.
        data_sources: ``(N,)`` the ``data_source`` column.
        tasks: ``(N,)`` the task of each row (the value of ``g2rpo.task_key``).
        task_names: ``(T,)`` the distinct tasks, sorted.
        task_ids: ``(N,)`` long tensor, ``tasks[i] == task_names[task_ids[i]]``.
        reward_infos: ``(N,)`` the reward function's dict of each row (``None`` if it returned a float).
    """

    uids: tuple[str, ...]
    data_sources: tuple[Any, ...]
    tasks: tuple[str, ...]
    task_names: tuple[str, ...]
    task_ids: torch.Tensor
    reward_infos: tuple[Mapping | None, ...]

    @classmethod
    def build(cls, uids, data_sources, tasks, reward_infos) -> SampleInfo:
        """Factorise ``tasks`` (once per step) and freeze the per-row sequences."""
        names, ids = np.unique(np.asarray(list(tasks), dtype=object), return_inverse=True)
        return cls(
            uids=tuple(str(u) for u in uids),
            data_sources=tuple(data_sources),
            tasks=tuple(str(t) for t in tasks),
            task_names=tuple(str(t) for t in names),
            task_ids=torch.as_tensor(ids.reshape(-1), dtype=torch.long),
            reward_infos=tuple(reward_infos),
        )

    def __len__(self) -> int:
        return len(self.uids)

    def task_mask(self, task: str) -> torch.Tensor:
        """``(N,)`` bool: the rows of ``task``."""
        return self.task_ids == self.task_names.index(task)

    def with_component(self, name: str, values: torch.Tensor) -> SampleInfo:
        """A copy whose reward dicts carry ``name: values[i]`` (e.g. the length score as a GS-GDPO component)."""
        infos = tuple(
            {**(info or {}), name: float(v)} for info, v in zip(self.reward_infos, values.tolist(), strict=True)
        )
        return replace(self, reward_infos=infos)


def read_sample_info(batch, task_key: str, fallback_to_data_source: bool = False) -> SampleInfo:
    """The :class:`SampleInfo` of ``batch`` (a ``KVBatchMeta``) from TransferQueue.

    ``fallback_to_data_source``: samples without ``task_key`` are grouped by ``data_source``
    instead of raising (used only where the task feeds metrics, never an estimator).
    """
    import transfer_queue as tq

    fields = [TQ.UID, TQ.DATA_SOURCE, TQ.EXTRA_INFO, TQ.EXTRA_FIELDS]
    rows = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
    columns = {name: rows.pop(name).tolist() for name in (TQ.UID, TQ.DATA_SOURCE)}
    extra_infos = rows.pop(TQ.EXTRA_INFO).tolist()
    reward_infos = [(ef or {}).get(TQ.REWARD_EXTRA_INFO) for ef in rows.pop(TQ.EXTRA_FIELDS).tolist()]
    try:
        tasks = resolve_task_keys(task_key, columns, extra_infos, reward_infos)
    except ValueError:
        if not fallback_to_data_source:
            raise
        tasks = [str(ds) for ds in columns[TQ.DATA_SOURCE]]
    return SampleInfo.build(columns[TQ.UID], columns[TQ.DATA_SOURCE], tasks, reward_infos)


def response_stats(responses: torch.Tensor, response_mask: torch.Tensor, eos_ids: set[int]):
    """Lengths ``(N,)`` and truncation flags ``(N,)`` of padded ``responses`` ``(N, T)``.

    A response is truncated when its last valid token is not an EOS token — whatever the
    padded width is. An empty response is not truncated.
    """
    lengths = response_mask.sum(-1).long()
    last = responses.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
    ended = torch.isin(last, torch.tensor(sorted(eos_ids), dtype=last.dtype))
    return lengths, (lengths > 0) & ~ended


@dataclass
class ResponseBatch:
    """One step's responses from TransferQueue, padded to ``(N, T)``, rows in ``batch.keys`` order."""

    nested_mask: torch.Tensor  # TransferQueue's own (nested) response_mask, to write fields back
    response_mask: torch.Tensor  # (N, T)
    responses: torch.Tensor  # (N, T) token ids
    rm_scores: torch.Tensor  # (N, T) token-level rewards from the reward function
    lengths: torch.Tensor  # (N,) tokens
    truncated: torch.Tensor  # (N,) bool: ended without EOS

    @classmethod
    def fetch(cls, batch, eos_ids: set[int]) -> ResponseBatch:
        import transfer_queue as tq

        data = tq.kv_batch_get(
            keys=batch.keys,
            partition_id=batch.partition_id,
            select_fields=[TQ.RM_SCORES, TQ.RESPONSE_MASK, TQ.RESPONSES],
        )
        nested_mask = data[TQ.RESPONSE_MASK]
        padded = data.to_padded_tensor()
        lengths, truncated = response_stats(padded[TQ.RESPONSES], padded[TQ.RESPONSE_MASK], eos_ids)
        return cls(
            nested_mask, padded[TQ.RESPONSE_MASK], padded[TQ.RESPONSES], padded[TQ.RM_SCORES], lengths, truncated
        )

    def get(self, batch, field: str) -> torch.Tensor:
        """A per-token field of these rows, padded ``(N, T)``."""
        import transfer_queue as tq

        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=[field])
        return data.to_padded_tensor()[field]

    def token_mean(self, batch, field: str) -> torch.Tensor:
        """``(N,)`` mean of a per-token field over each response's tokens (0 for an empty one)."""
        mask = self.response_mask.to(torch.float64)
        return (self.get(batch, field).to(torch.float64) * mask).sum(-1) / mask.sum(-1).clamp(min=1)

    def put(self, batch, field: str, padded: torch.Tensor) -> None:
        """Write a padded ``(N, T)`` per-token field back to TransferQueue."""
        import transfer_queue as tq
        from tensordict import TensorDict
        from verl.workers.utils.padding import response_to_nested

        fields = TensorDict({field: response_to_nested(padded, self.nested_mask)}, batch_size=len(batch))
        tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=fields)
