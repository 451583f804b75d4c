"""verl's sync replay buffer with a short poll interval, for short CPU steps.

verl 0.9.1's V1 ``ReplayBuffer.sample`` checks TransferQueue for finished rollouts every
``poll_interval`` seconds, hard-wired to 2.0 by the trainer. A GPU step takes minutes, so the
wait is noise; a CPU demo step takes a few seconds, so the training sample and every validation
would each lose up to 2 s waiting for the next poll. This subclass polls every
:data:`POLL_INTERVAL_S` seconds and changes nothing else.

Select it with::

    trainer.v1.sampler.custom_sampler.path=pkg://g2rpo_verl.cpu.replay_buffer
    trainer.v1.sampler.custom_sampler.name=FastPollReplayBuffer

Limits: ``trainer.v1.trainer_mode=sync`` only (other modes raise). verl builds a custom
sampler without its group-filtering arguments, so ``algorithm.filter_groups`` (DAPO) has no
effect with this sampler: do not combine them (the demo does not filter groups).
"""

from __future__ import annotations

from typing import Any

from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

__all__ = ["POLL_INTERVAL_S", "FastPollReplayBuffer"]

#: Seconds between TransferQueue checks (the metadata sync is a cheap local call).
POLL_INTERVAL_S = 0.05


class FastPollReplayBuffer(ReplayBuffer):
    """:class:`verl.trainer.ppo.v1.replay_buffer.ReplayBuffer` polling every ``POLL_INTERVAL_S`` s."""

    def __init__(self, trainer_mode: str, *args: Any, **kwargs: Any) -> None:
        if trainer_mode != "sync":
            raise ValueError(f"FastPollReplayBuffer supports trainer.v1.trainer_mode=sync only, got {trainer_mode!r}")
        kwargs["poll_interval"] = POLL_INTERVAL_S
        super().__init__(trainer_mode, *args, **kwargs)
