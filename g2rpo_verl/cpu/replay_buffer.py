"""verl's sync replay buffer with a short poll interval, for short CPU steps.

verl 0.9.1's V1 ``ReplayBuffer.sample`` checks TransferQueue for finished rollouts every
``poll_interval`` seconds, hard-wired to 2.0 by the trainer. A GPU step takes minutes, so the
wait is noise; a CPU demo step takes a few seconds, so the training sample and every validation
would each lose up to 2 s waiting for the next poll. This subclass polls every
:data:`POLL_INTERVAL_S` seconds.

It also hands out each batch in a fixed order. verl lists a batch's trajectories in the order
they finished, under random uids, so the rows of the same step arrive in a different order in
every run, and with them the micro-batch split and the float rounding of every summed loss.
Here they are sorted by what the request *is* — dataset ``index``, ``data_source``, prompt
tokens, sample number, turn — which with the seeded agent loop makes a CPU run repeatable.

Select it with::

    trainer.v1.sampler.custom_sampler.path=pkg://g2rpo_verl.cpu.replay_buffer
    trainer.v1.sampler.custom_sampler.name=FastPollReplayBuffer

Limits: ``trainer.v1.trainer_mode=sync`` only (other modes raise). verl builds a custom
sampler without its group-filtering arguments, so ``algorithm.filter_groups`` (DAPO) has no
effect with this sampler: do not combine them (the demo does not filter groups).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import transfer_queue as tq
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

__all__ = ["POLL_INTERVAL_S", "FastPollReplayBuffer", "in_request_order"]

#: Seconds between TransferQueue checks (the metadata sync is a cheap local call).
POLL_INTERVAL_S = 0.05


class FastPollReplayBuffer(ReplayBuffer):
    """:class:`verl.trainer.ppo.v1.replay_buffer.ReplayBuffer` polling every ``POLL_INTERVAL_S`` s."""

    def __init__(self, trainer_mode: str, *args: Any, **kwargs: Any) -> None:
        if trainer_mode != "sync":
            raise ValueError(f"FastPollReplayBuffer supports trainer.v1.trainer_mode=sync only, got {trainer_mode!r}")
        kwargs["poll_interval"] = POLL_INTERVAL_S
        super().__init__(trainer_mode, *args, **kwargs)

    def _materialize_batch(
        self, partition_id: str, selected_prompt_uids: list[str], partition_snapshot: dict
    ) -> KVBatchMeta:
        batch = super()._materialize_batch(partition_id, selected_prompt_uids, partition_snapshot)
        return in_request_order(batch)


def _column(rows, name: str) -> list:
    # TransferQueue returns tensors, NonTensorStacks or linked lists depending on the field.
    column = rows[name]
    if isinstance(column, torch.Tensor) and not column.is_nested:
        return list(column.unbind(0))
    return list(column)


def _plain(value):
    value = getattr(value, "data", value)
    return value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value


def _digest(value) -> str:
    array = torch.as_tensor(getattr(value, "data", value)).detach().cpu().to(torch.int64).numpy()
    return hashlib.sha256(array.tobytes()).hexdigest()


def in_request_order(batch: KVBatchMeta) -> KVBatchMeta:
    """``batch`` with its keys (``{uid}_{session}_{turn}``) sorted by request identity.

    The sort key is ``(index, data_source, sha256(prompt tokens), session, turn)``; the random
    uid is not part of it, so the order is the same in every run of the same data.
    """
    if not batch.keys:
        return batch
    rows = tq.kv_batch_get(
        keys=batch.keys, partition_id=batch.partition_id, select_fields=["index", "data_source", "prompts"]
    )
    index = [int(_plain(x)) for x in _column(rows, "index")]
    sources = [str(_plain(x)) for x in _column(rows, "data_source")]
    prompts = [_digest(p) for p in _column(rows, "prompts")]
    sessions = [tuple(int(x) for x in key.rsplit("_", 2)[1:]) for key in batch.keys]
    order = sorted(range(len(batch.keys)), key=lambda i: (index[i], sources[i], prompts[i], sessions[i]))
    return KVBatchMeta(
        partition_id=batch.partition_id,
        keys=[batch.keys[i] for i in order],
        tags=[batch.tags[i] for i in order],
        fields=batch.fields,
        extra_info=batch.extra_info,
    )
