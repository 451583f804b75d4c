"""The ``hf`` rollout backend: verl's server-mode rollout interface over HF ``generate()``.

verl 0.9.1 rolls out through a *server* per replica (vLLM / SGLang / TRT-LLM), which needs a GPU.
This backend provides the same three pieces with a Hugging Face model on the CPU:

* :class:`HFRolloutServer` - a Ray actor holding an :class:`~g2rpo_verl.cpu.hf_generation.HFGenerator`.
  verl's agent loop calls ``generate(request_id, prompt_ids, sampling_params, image_data, ...)``
  and gets a :class:`~verl.workers.rollout.replica.TokenOutput` (response ids, per-token
  log-probs, stop reason ``"completed"`` on EOS / ``"length"`` on truncation, and the
  ``global_steps`` weight version). Concurrent requests are batched into one ``generate()``.
* :class:`HFServerAdapter` - the :class:`~verl.workers.rollout.base.BaseRollout` that lives in the
  training worker (hybrid engine). verl's weight sync calls its ``update_weights`` with the
  trainer's full tensors; it forwards them to its replica's server.
* :class:`HFReplica` - the :class:`~verl.workers.rollout.replica.RolloutReplica` that launches
  the server actor next to the training worker.

Select it with ``actor_rollout_ref.rollout.name=hf`` once :func:`g2rpo_verl.cpu.register` ran.
Supported: hybrid mode (the default sync trainer: rollout colocated with training), one
process per replica (``tensor_model_parallel_size=1``), full-weight sync (LoRA only with
``lora.merge=True``). Not supported: aborting in-flight requests (they finish; responses are
short on CPU) and the OpenAI HTTP endpoint (used by tool agents).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Generator
from typing import Any

import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.config import HFModelConfig, RolloutConfig
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutMode, RolloutReplica, TokenOutput
from verl.workers.rollout.utils import ensure_async_iterator

from g2rpo_verl.cpu.env import ROLLOUT_NAME
from g2rpo_verl.cpu.hf_generation import GenerationResult, HFGenerator, SamplingSpec, eos_token_ids, load_hf_model

__all__ = [
    "ROLLOUT_NAME",
    "HFRolloutServer",
    "HFServerAdapter",
    "HFReplica",
    "server_actor_name",
]

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "WARN"))

# verl's TokenOutput.stop_reason vocabulary ("completed" / "aborted" / ...); its resuming client
# itself reports "length" for a response cut at max_tokens, so we use that for truncation.
_STOP_REASON = {"stop": "completed", "length": "length"}

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def server_actor_name(replica_rank: int) -> str:
    """Ray actor name of replica ``replica_rank``'s server (how the adapter finds it)."""
    return f"{ROLLOUT_NAME}_server_{replica_rank}"


def _as_rollout_config(config: Any) -> RolloutConfig:
    if isinstance(config, RolloutConfig):
        return config
    return omega_conf_to_dataclass(config, dataclass_type=RolloutConfig)


def _as_model_config(model_config: Any) -> HFModelConfig:
    if isinstance(model_config, HFModelConfig):
        return model_config
    return omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)


def _eos_token_ids(model_config: HFModelConfig) -> set[int]:
    """Tokenizer EOS plus the generation config's EOS ids (what vLLM stops on)."""
    return eos_token_ids(model_config.tokenizer, model_config.generation_config, model_config.hf_config)


@dataclasses.dataclass(eq=False)
class _Request:
    """A queued generation request and the future its caller awaits (result, weight version)."""

    prompt_ids: list[int]
    spec: SamplingSpec
    image_data: list[Any] | None
    video_data: list[Any] | None
    mm_processor_kwargs: dict[str, Any] | None
    future: asyncio.Future = dataclasses.field(default_factory=lambda: asyncio.get_running_loop().create_future())


def _batch_key(spec: SamplingSpec) -> SamplingSpec:
    """Requests whose specs agree up to the seed share a batch (each row has its own generator)."""
    return dataclasses.replace(spec, seed=None)


class HFRolloutServer:
    """Generation server of one replica (wrapped with ``ray.remote`` by :class:`HFReplica`).

    Args:
        config: verl ``RolloutConfig`` (dataclass or DictConfig). Read: ``dtype``,
            ``load_format`` (``dummy`` = random init, real weights come with the first sync),
            ``prompt_length``, ``response_length``, ``max_model_len``, ``seed``.
        model_config: verl ``HFModelConfig`` (dataclass or DictConfig) of the actor model; its
            patched ``hf_config`` (attention implementation, token ids) is used as is.
        replica_rank: rank of the replica (seeds torch's global generator with
            ``seed + replica_rank``, which draws the seeds of requests that bring none).
        max_batch_size: most requests served by one batched ``generate()``; default: the
            rollout config's ``max_num_seqs`` (vLLM's knob for the same thing).

    A request whose ``sampling_params`` carry a ``seed`` (the plugin's seeded agent loop,
    :mod:`g2rpo_verl.verl_hooks.seeded_agent_loop`, derives one per request) is sampled with its
    own generator: its tokens do not depend on which requests share its batch.
    """

    def __init__(
        self, config: Any, model_config: Any, replica_rank: int = 0, max_batch_size: int | None = None
    ) -> None:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the "Loading weights" bar would spam the trainer log
        self.config = _as_rollout_config(config)
        self.model_config = _as_model_config(model_config)
        self.replica_rank = replica_rank
        dtype = _DTYPES.get(str(self.config.dtype).lower())
        if dtype is None:
            raise ValueError(f"unsupported rollout dtype {self.config.dtype!r}")
        model = load_hf_model(
            self.model_config.local_path,
            dtype=dtype,
            hf_config=self.model_config.hf_config,
            random_init=str(self.config.load_format).startswith("dummy"),
        )
        self.generator = HFGenerator(
            model,
            eos_token_ids=_eos_token_ids(self.model_config),
            pad_token_id=getattr(self.model_config.tokenizer, "pad_token_id", None),
            processor=self.model_config.processor,
        )
        self.max_model_len = self.config.max_model_len or getattr(
            self.model_config.hf_config, "max_position_embeddings", None
        )
        self.global_steps: int | None = None
        # One lock for generation and weight loads: a response never mixes two weight versions.
        self._lock = asyncio.Lock()
        self._queue: list[_Request] = []
        self._server_task: asyncio.Task | None = None
        #: batching: largest batch, and how long to wait for more requests (see _serve)
        self.max_batch_size = max(1, int(max_batch_size or self.config.max_num_seqs or 1))
        self.batch_window_s = 0.03
        self.max_batch_wait_s = 0.3
        torch.manual_seed(self.config.seed + replica_rank)

    # ------------------------------------------------------------------------------------------
    # generation
    # ------------------------------------------------------------------------------------------
    def _default_max_tokens(self, prompt_len: int) -> int:
        """verl/vLLM default: the response budget left within prompt_length + response_length."""
        return min(
            self.config.response_length,
            self.config.prompt_length + self.config.response_length - prompt_len,
        )

    def _clamp_max_tokens(self, max_tokens: int, prompt_len: int) -> int:
        limit = max_tokens
        if self.max_model_len is not None:
            headroom = int(self.max_model_len) - prompt_len
            if headroom < 1:
                raise ValueError(
                    f"prompt of {prompt_len} tokens leaves no room within max_model_len={self.max_model_len}"
                )
            limit = min(limit, headroom)
        return max(1, limit)

    async def generate(
        self,
        request_id: str,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        audio_data: list[Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
        **_ignored: Any,
    ) -> TokenOutput:
        """Token-in / token-out generation (the signature verl's ``LLMServerClient`` calls).

        Concurrent requests with the same sampling parameters (seeds aside) are served together
        in one batched ``generate()`` (see :meth:`_serve`); each keeps its own seed. ``_ignored`` absorbs scheduler hints other servers take
        (``priority``, ...).
        """
        if audio_data:
            raise ValueError("hf rollout does not support audio inputs")
        prompt_ids = [int(t) for t in prompt_ids]
        spec = SamplingSpec.from_verl(sampling_params, self._default_max_tokens(len(prompt_ids)))
        max_new = self._clamp_max_tokens(spec.max_new_tokens, len(prompt_ids))
        if max_new != spec.max_new_tokens:
            spec = dataclasses.replace(spec, max_new_tokens=max_new)
        request = _Request(prompt_ids, spec, image_data, video_data, mm_processor_kwargs)
        self._queue.append(request)
        if self._server_task is None or self._server_task.done():
            self._server_task = asyncio.get_running_loop().create_task(self._serve())
        result, global_steps = await request.future
        return TokenOutput(
            token_ids=result.token_ids,
            log_probs=result.log_probs,
            stop_reason=_STOP_REASON[result.finish_reason],
            extra_fields={"global_steps": global_steps},
        )

    async def _serve(self) -> None:
        """Drain the request queue in batches until it is empty.

        Waits while requests keep arriving (verl's agent loop sends a whole training batch at
        once, spread over a few milliseconds of prompt preparation) so that they share one
        ``generate()`` call, then takes the oldest request and every queued request with the
        same sampling parameters, up to ``max_batch_size``. Generation and weight loads hold
        the same lock, so a batch never mixes two weight versions.
        """
        while self._queue:
            waited, seen = 0.0, -1
            while (
                len(self._queue) != seen and waited < self.max_batch_wait_s and len(self._queue) < self.max_batch_size
            ):
                seen = len(self._queue)
                await asyncio.sleep(self.batch_window_s)
                waited += self.batch_window_s
            key = _batch_key(self._queue[0].spec)
            batch = [r for r in self._queue if _batch_key(r.spec) == key][: self.max_batch_size]
            taken = {id(r) for r in batch}
            self._queue = [r for r in self._queue if id(r) not in taken]
            try:
                async with self._lock:
                    results = await asyncio.to_thread(self._generate_batch, batch)
                    global_steps = self.global_steps
            except Exception as err:  # every waiter gets the error; the server keeps serving
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(err)
                continue
            for request, result in zip(batch, results, strict=True):
                if not request.future.done():
                    request.future.set_result((result, global_steps))

    def _generate_batch(self, batch: list[_Request]) -> list[GenerationResult]:
        mm_inputs = [
            self.generator.multi_modal_inputs(r.image_data, r.video_data, r.mm_processor_kwargs) for r in batch
        ]
        return self.generator.generate_batch(
            [r.prompt_ids for r in batch], batch[0].spec, mm_inputs, seeds=[r.spec.seed for r in batch]
        )

    # ------------------------------------------------------------------------------------------
    # weights
    # ------------------------------------------------------------------------------------------
    async def load_weights(self, state: dict[str, torch.Tensor], global_steps: int | None = None) -> int:
        """Replace the model weights with ``state`` (HF names -> full tensors); return the count."""
        async with self._lock:
            count = await asyncio.to_thread(self.generator.load_weights, state.items())
            if global_steps is not None:
                self.global_steps = global_steps
        return count

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    async def ready(self) -> bool:
        """Returns once the model is loaded (lets the replica surface load errors at launch)."""
        return True

    # ------------------------------------------------------------------------------------------
    # lifecycle calls verl makes on every server. Weights stay in host RAM and HF allocates a
    # fresh KV cache per request, so there is nothing to free or restore.
    # ------------------------------------------------------------------------------------------
    async def wake_up(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def sleep(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def clear_kv_cache(self) -> None:
        return None

    async def release_kv_cache(self) -> None:
        return None

    async def resume_kv_cache(self) -> None:
        return None

    async def abort_all_requests(self, reject_request: bool = False) -> None:
        # In-flight HF generate() calls cannot be interrupted; they finish normally.
        return None

    async def resume_generation(self) -> None:
        return None

    async def start_profile(self, **kwargs: Any) -> None:
        return None

    async def stop_profile(self) -> None:
        return None


class HFServerAdapter(BaseRollout):
    """Rollout object inside each training worker; pushes synced weights to its server.

    Every training rank of a replica receives the weight generator (producing it is a
    collective for sharded FSDP parameters, so every rank must drain it); only the replica's
    leader rank (``rollout_rank == 0``) sends the tensors to the server.
    """

    def __init__(
        self,
        config: RolloutConfig,
        model_config: HFModelConfig,
        device_mesh: Any = None,
        replica_rank: int = -1,
        server_handle: Any = None,
    ) -> None:
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        rollout_world_size = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        self.replica_rank = rank // rollout_world_size if replica_rank == -1 else replica_rank
        self.rollout_rank = rank % rollout_world_size
        self.is_leader_rank = self.rollout_rank == 0
        self._server_handle = server_handle

    def _server(self):
        # Looked up lazily: verl builds the adapter before the replica launches the server.
        if self._server_handle is None:
            self._server_handle = ray.get_actor(server_actor_name(self.replica_rank))
        return self._server_handle

    async def resume(self, tags: list[str]) -> None:
        return None

    async def release(self) -> None:
        return None

    async def update_weights(
        self,
        weights: Generator[tuple[str, torch.Tensor], None, None],
        wire_format: str = "named_tensors",
        global_steps: int | None = None,
        peft_config: Any = None,
        **kwargs: Any,
    ) -> None:
        """Send full named tensors to the server; the server swaps them in between requests."""
        if wire_format != "named_tensors":
            raise NotImplementedError(f"hf rollout supports wire_format='named_tensors' only, got {wire_format!r}")
        if peft_config is not None:
            raise NotImplementedError(
                "hf rollout takes full weights only; set actor_rollout_ref.model.lora.merge=True for LoRA"
            )
        state: dict[str, torch.Tensor] = {}
        async for name, tensor in ensure_async_iterator(weights):
            if self.is_leader_rank:
                state[name] = tensor.detach().to("cpu", copy=True)
        if self.is_leader_rank:
            await self._server().load_weights.remote(state, global_steps)


class HFReplica(RolloutReplica):
    """A replica served by one :class:`HFRolloutServer` actor on the training worker's node."""

    async def launch_servers(self) -> None:
        if self.rollout_mode != RolloutMode.HYBRID:
            raise NotImplementedError(
                f"hf rollout supports the hybrid engine (rollout colocated with training) only, got {self.rollout_mode}"
            )
        if self.world_size != 1:
            raise ValueError(
                "hf rollout runs one process per replica: set actor_rollout_ref.rollout.tensor_model_parallel_size=1 "
                f"(and data/pipeline parallel 1); got world_size={self.world_size}"
            )
        node_id = await self.workers[0].__ray_call__.remote(lambda worker: ray.get_runtime_context().get_node_id())
        name = server_actor_name(self.replica_rank)
        server = (
            ray.remote(HFRolloutServer)
            .options(
                name=name,
                # No CPU reservation: the logical CPU count of a CPU run is already spent on
                # verl's placement groups, and the server is idle whenever training runs.
                num_cpus=0,
                max_concurrency=self.max_concurrency,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
            )
            .remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank)
        )
        await server.ready.remote()
        self.servers = [server]
        self._server_handle = server
        # verl keys its load balancer by this string; there is no HTTP endpoint behind it.
        self._server_address = name

    def rollout_worker_use_gpu(self) -> bool:
        return False
