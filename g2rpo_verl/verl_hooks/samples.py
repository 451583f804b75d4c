"""Per-sample information of one training step: the bottom layer of the verl wiring.

Everything above (estimators, shaping, filtering, metrics) takes these typed values as
arguments; this module imports nothing from the rest of :mod:`g2rpo_verl.verl_hooks`.

* :func:`resolve_task_keys` — each sample's task τ (``g2rpo.task_key``), looked up in the
  dataset columns, ``extra_info``, then the reward function's dict;
* :class:`SampleInfo` — uids, tasks factorised once into ids, reward dicts (immutable);
* :func:`metric_prefix` — the ``task_<τ>`` metric namespace;
* :class:`TokenRows` — the row layout of the per-token fields, for sums without padding;
* :class:`ResponseBatch` — the step's responses, rewards, lengths and truncation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from g2rpo_verl.task_lookup import task_values
from g2rpo_verl.verl_compat.api import TQ, group_uid

__all__ = [
    "metric_prefix",
    "resolve_task_keys",
    "SampleInfo",
    "read_sample_info",
    "TokenRows",
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
        tasks: ``(N,)`` the task of each row (the value of ``g2rpo.task_key``).
        task_names: ``(T,)`` the distinct tasks, sorted.
        task_ids: ``(N,)`` long tensor, ``tasks[i] == task_names[task_ids[i]]``.
        reward_infos: ``(N,)`` the reward function's dict of each row (``None`` if it returned a float).
    """

    uids: tuple[str, ...]
    tasks: tuple[str, ...]
    task_names: tuple[str, ...]
    task_ids: torch.Tensor
    reward_infos: tuple[Mapping | None, ...]

    @classmethod
    def build(cls, uids, tasks, reward_infos) -> SampleInfo:
        """Factorise ``tasks`` (once per step) and freeze the per-row sequences."""
        names, ids = np.unique(np.asarray(list(tasks), dtype=object), return_inverse=True)
        return cls(
            uids=tuple(str(u) for u in uids),
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

    Reads two per-row object fields (``extra_info``, ``extra_fields``), plus ``task_key`` where
    the batch lists it as a field of its own: TransferQueue hands per-row objects back one
    tensordict wrapper a row and field (~50 µs each, 0.2 s a field at 4,096 rows), so the uids
    come from the keys (:func:`~g2rpo_verl.verl_compat.api.group_uid`, as verl's own
    multi-trajectory advantage step reads them; the estimators check them against verl's uids)
    and ``data_source`` is read only when a task is missing.
    """
    import transfer_queue as tq

    column = [task_key] if task_key in (batch.fields or ()) and task_key not in _OBJECT_FIELDS else []
    rows = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=[*column, *_OBJECT_FIELDS])
    columns = {name: rows.pop(name).tolist() for name in column if name in rows.keys()}
    extra_infos = rows.pop(TQ.EXTRA_INFO).tolist()
    reward_infos = [(ef or {}).get(TQ.REWARD_EXTRA_INFO) for ef in rows.pop(TQ.EXTRA_FIELDS).tolist()]
    uids = [group_uid(key) for key in batch.keys]
    try:
        tasks = resolve_task_keys(task_key, columns, extra_infos, reward_infos)
    except ValueError:
        sources = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=[TQ.DATA_SOURCE])
        columns[TQ.DATA_SOURCE] = sources.pop(TQ.DATA_SOURCE).tolist()
        if fallback_to_data_source:
            tasks = [str(ds) for ds in columns[TQ.DATA_SOURCE]]
        else:  # again with data_source: the task key may be that column, else the error names it
            tasks = resolve_task_keys(task_key, columns, extra_infos, reward_infos)
    return SampleInfo.build(uids, tasks, reward_infos)


#: The per-row object fields every step reads (see :func:`read_sample_info`).
_OBJECT_FIELDS = (TQ.EXTRA_INFO, TQ.EXTRA_FIELDS)


@dataclass(frozen=True)
class TokenRows:
    """The row layout of one step's per-token fields, read without padding to ``(N, T)``.

    TransferQueue returns a per-token field as a jagged nested tensor: one ``(M,)`` values
    tensor (M = the step's tokens) and ``(N + 1,)`` row offsets, shared by every per-token
    field of the same rows. Sums per row are one ``index_add`` over the values, where padding
    would copy an ``(N, T)`` tensor per field (T = the longest response). A padded ``(N, T)``
    field is accepted too and read at the same positions.

    Attributes:
        mask: the ``response_mask`` as read (nested or padded); fields are rebuilt in its layout.
        offsets: ``(N + 1,)`` long, row ``i``'s tokens are ``values[offsets[i]:offsets[i + 1]]``.
        row_ids: ``(M,)`` long, the row of each token.
        mask_values: ``(M,)`` float64, the mask of each token.
        counts: ``(N,)`` float64, masked tokens per row (Σ mask).
    """

    mask: torch.Tensor
    offsets: torch.Tensor
    row_ids: torch.Tensor
    mask_values: torch.Tensor
    counts: torch.Tensor

    @classmethod
    def of(cls, mask: torch.Tensor) -> TokenRows:
        """The layout of ``mask`` (jagged nested, strided nested or padded ``(N, T)``)."""
        if mask.is_nested and (mask.layout != torch.jagged or mask.lengths() is not None):
            mask = mask.to_padded_tensor(0)  # a layout with holes: read it padded
        if mask.is_nested:
            values, offsets = mask.values(), mask.offsets().long()
        else:
            n, width = mask.shape
            values, offsets = mask.reshape(-1), torch.arange(n + 1, dtype=torch.long) * width
        row_ids = torch.repeat_interleave(torch.arange(len(offsets) - 1), offsets.diff())
        mask_values = values.to(torch.float64)
        counts = torch.zeros(len(offsets) - 1, dtype=torch.float64).index_add_(0, row_ids, mask_values)
        return cls(mask, offsets, row_ids, mask_values, counts)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> torch.Tensor:
        """``(N,)`` long: each row's response length (its masked tokens)."""
        return self.counts.round().long()

    def values(self, field: torch.Tensor) -> torch.Tensor:
        """``(M,)`` the tokens of a per-token ``field`` of these rows, in the mask's order."""
        if field.is_nested:
            if field.layout == torch.jagged and field.lengths() is None:
                if torch.equal(field.offsets(), self.offsets.to(field.offsets().dtype)):
                    return field.values()
                raise ValueError("a per-token field's row lengths differ from response_mask's")
            field = field.to_padded_tensor(0)
        if self.mask.is_nested:  # a padded field of nested rows: the same positions, gathered
            positions = torch.arange(len(self.row_ids)) - self.offsets[self.row_ids]
            return field[self.row_ids, positions]
        if field.shape != self.mask.shape:
            raise ValueError(f"a per-token field of shape {tuple(field.shape)} for a mask of {tuple(self.mask.shape)}")
        return field.reshape(-1)

    def sum(self, field: torch.Tensor, masked: bool = True) -> torch.Tensor:
        """``(N,)`` float64: Σ over each row's tokens of ``field`` (times the mask when ``masked``)."""
        v = self.values(field).to(torch.float64)
        return torch.zeros(len(self), dtype=torch.float64).index_add_(
            0, self.row_ids, v * self.mask_values if masked else v
        )

    def mean(self, field: torch.Tensor) -> torch.Tensor:
        """``(N,)`` float64: the masked mean of ``field`` over each row (0 for an empty row)."""
        return self.sum(field) / self.counts.clamp(min=1)

    @property
    def last_positions(self) -> torch.Tensor:
        """``(N,)`` long: where each row's last masked token sits in the ``(M,)`` values
        (meaningless for an empty row: mask those with ``lengths > 0``)."""
        return self.offsets[:-1] + self.lengths - 1

    def last(self, field: torch.Tensor) -> torch.Tensor:
        """``(N,)`` each row's value at its last masked position (any value for an empty row)."""
        values = self.values(field)
        if not len(values):
            return values.new_zeros(len(self))
        return values[self.last_positions.clamp(0, len(values) - 1)]

    def rebuild(self, values: torch.Tensor) -> torch.Tensor:
        """``(M,)`` token values as a field in the mask's layout (to write back to TransferQueue)."""
        if self.mask.is_nested:
            # with its row-length bounds: without them torch takes the whole values length as
            # the longest row, and padding the field would allocate (N, M)
            widths = self.offsets.diff()
            bounds = (int(widths.min()), int(widths.max())) if len(widths) else (0, 0)
            return torch.nested.nested_tensor_from_jagged(
                values, self.offsets, min_seqlen=bounds[0], max_seqlen=bounds[1]
            )
        return values.reshape(self.mask.shape)


def response_stats(responses: torch.Tensor, rows: TokenRows, eos_ids: set[int]):
    """Lengths ``(N,)`` and truncation flags ``(N,)`` of the ``responses`` (token ids) of ``rows``.

    A response is truncated when its last valid token is not an EOS token — whatever the
    padded width is. An empty response is not truncated.
    """
    lengths, last = rows.lengths, rows.last(responses)
    ended = torch.isin(last, torch.tensor(sorted(eos_ids), dtype=last.dtype))
    return lengths, (lengths > 0) & ~ended


@dataclass(frozen=True)
class ResponseBatch:
    """One step's responses from TransferQueue, rows in ``batch.keys`` order (N rows).

    Attributes:
        rows: the per-token layout (:class:`TokenRows`); fields stay as TransferQueue holds them.
        responses: token ids, as read.
        rm_scores: token-level rewards from the reward function, as read.
        reward_sums: ``(N,)`` float64, Σ of each row's ``rm_scores``.
        lengths: ``(N,)`` long, tokens.
        truncated: ``(N,)`` bool, ended without EOS.
    """

    rows: TokenRows
    responses: torch.Tensor
    rm_scores: torch.Tensor
    reward_sums: torch.Tensor
    lengths: torch.Tensor
    truncated: torch.Tensor

    @classmethod
    def fetch(cls, batch, eos_ids: set[int]) -> ResponseBatch:
        import transfer_queue as tq

        data = tq.kv_batch_get(
            keys=batch.keys,
            partition_id=batch.partition_id,
            select_fields=[TQ.RM_SCORES, TQ.RESPONSE_MASK, TQ.RESPONSES],
        )
        rows = TokenRows.of(data[TQ.RESPONSE_MASK])
        lengths, truncated = response_stats(data[TQ.RESPONSES], rows, eos_ids)
        rm_scores = data[TQ.RM_SCORES]
        return cls(rows, data[TQ.RESPONSES], rm_scores, rows.sum(rm_scores, masked=False), lengths, truncated)

    def get(self, batch, field: str) -> torch.Tensor:
        """A per-token field of these rows, as TransferQueue holds it."""
        import transfer_queue as tq

        return tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=[field])[field]

    def put(self, batch, field: str, values: torch.Tensor) -> None:
        """Write a per-token field's ``(M,)`` token values back to TransferQueue."""
        import transfer_queue as tq
        from tensordict import TensorDict

        fields = TensorDict({field: self.rows.rebuild(values)}, batch_size=len(batch.keys))
        tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=fields)
