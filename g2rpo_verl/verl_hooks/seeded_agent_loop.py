"""A single-turn agent loop that gives every rollout request its own sampling seed.

verl's agent loop sends each request with the batch's shared ``sampling_params`` and a random
``request_id``; nothing tells the rollout server *which* request it is, so a server that
samples with one generator for many requests (vLLM's default, the CPU backend's batches)
draws tokens that depend on batch composition and arrival order. This loop adds
``sampling_params["seed"] = request_seed(...)``, a hash of

* the rollout seed (``actor_rollout_ref.rollout.seed``),
* the trainer step the prompt was drawn at (``global_steps``),
* the dataset row (``index``, from ``extra_info.index``) and the sample number within its
  group (verl V1's ``session_id``; verl's V0 loop passes the row's ``priority`` instead),
* the prompt's token ids (so a validation and a training prompt with the same index differ),

and is otherwise verl's ``SingleTurnAgentLoop``. The CPU backend's ``hf`` server samples each
seeded request with its own generator; vLLM takes the seed per request too (see
``docs/reproducibility.md`` for what that does and does not make reproducible on a GPU).

Select it with :data:`g2rpo_verl.verl_compat.request_seeds.SEEDED_LOOP_OVERRIDES` (the CPU backend adds them).
"""

from __future__ import annotations

from typing import Any

from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

from g2rpo_verl.verl_compat.request_seeds import SEEDED_AGENT_LOOP, request_seed

__all__ = ["SeededSingleTurnAgentLoop"]


class _SeedingClient:
    """Wraps verl's server client; adds the request's seed to ``sampling_params``."""

    def __init__(self, inner: Any, base_seed: int, step: int, index: int, sample: int) -> None:
        self._inner = inner
        self._identity = (base_seed, step, index, sample)

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any], **kwargs):
        params = dict(sampling_params, seed=request_seed(*self._identity, prompt_ids))
        return await self._inner.generate(request_id, prompt_ids=prompt_ids, sampling_params=params, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class SeededSingleTurnAgentLoop(SingleTurnAgentLoop):
    """verl's single-turn loop with a per-request seed (see the module docstring).

    verl builds one loop object per request, so wrapping ``server_manager`` here is per request.
    Raises ``KeyError`` naming the field when the sample lacks ``global_steps`` or ``index``.
    """

    async def run(self, sampling_params: dict[str, Any], priority: int = 0, **kwargs: Any):
        missing = [k for k in ("global_steps", "index") if kwargs.get(k) is None]
        if missing:
            raise KeyError(
                f"{SEEDED_AGENT_LOOP} agent loop needs the sample fields {missing} (verl sets them per prompt)"
            )
        sample = kwargs.get("session_id")
        sample = int(priority) if sample is None else int(sample)
        self.server_manager = _SeedingClient(
            self.server_manager,
            base_seed=int(self.rollout_config.seed),
            step=int(kwargs["global_steps"]),
            index=int(kwargs["index"]),
            sample=sample,
        )
        return await super().run(sampling_params, priority=priority, **kwargs)
