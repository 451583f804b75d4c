"""Token-in / token-out generation with a Hugging Face model: the engine of the ``hf`` rollout.

This module knows nothing about Ray or verl's rollout classes (those live in
:mod:`g2rpo_verl.cpu.hf_rollout`), so it can be tested in-process in milliseconds.

Contract of :meth:`HFGenerator.generate` (and of every row of :meth:`HFGenerator.generate_batch`) for one prompt ``prompt_ids`` (``list[int]``, length P):

* returns ``GenerationResult(token_ids, log_probs, finish_reason)`` with
  ``1 <= len(token_ids) == len(log_probs) <= spec.max_new_tokens``;
* ``token_ids`` include the stop token when generation stopped on one
  (``finish_reason == "stop"``), as vLLM does; otherwise ``finish_reason == "length"``;
* ``log_probs[t] = log_softmax(logits_t / T)[token_ids[t]]`` where ``logits_t`` are the model's
  raw next-token logits and ``T`` the sampling temperature (``T = 1`` for greedy requests).
  That is exactly how verl's trainer computes old log-probs (``logits / temperature``, then
  ``log_softmax``, no top-k/top-p/repetition processing), so rollout and trainer log-probs of
  the same weights agree up to float rounding. Sampling itself does apply top-k / top-p /
  repetition penalty;
* a vision-language model never emits its vision special tokens (:func:`vision_token_ids`:
  image / video pad, vision start / end), greedy or sampled. They stand for image slots: verl's
  agent loop recomputes the M-RoPE positions of prompt + response with the processor's
  ``get_rope_index``, which fails on a response holding them, and the sample is lost. A trained
  checkpoint practically never writes them; a small or randomly initialised one does. Like
  top-k, this shapes only the sampling: ``log_probs`` still come from the full softmax.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, PreTrainedModel
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

__all__ = ["SamplingSpec", "GenerationResult", "HFGenerator", "load_hf_model", "vision_token_ids"]

logger = logging.getLogger(__name__)

FinishReason = Literal["stop", "length"]

# Keys of verl's sampling_params dict that the hf backend understands. Anything else is ignored
# with a warning (once per key) rather than silently changing the sampling distribution.
_KNOWN_SAMPLING_KEYS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "repetition_penalty",
        "max_tokens",
        "max_new_tokens",
        "logprobs",
        "ignore_eos",
        "stop_token_ids",
        "seed",
    }
)
_warned_keys: set[str] = set()


#: Attributes of a vision-language model's config (Qwen2/2.5/3-VL) naming its vision special tokens.
VISION_TOKEN_ATTRS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")


def vision_token_ids(config: Any) -> frozenset[int]:
    """Ids of the vision special tokens of a model ``config`` (:data:`VISION_TOKEN_ATTRS`).

    Empty for a text-only model (no ``vision_config``): its tokenizer may know the same
    strings, but nothing downstream gives them a meaning.
    """
    if getattr(config, "vision_config", None) is None:
        return frozenset()
    return frozenset(int(v) for v in (getattr(config, attr, None) for attr in VISION_TOKEN_ATTRS) if v is not None)


@dataclass(frozen=True)
class SamplingSpec:
    """Validated sampling parameters for one request.

    ``temperature == 0`` means greedy decoding (top-k/top-p are then irrelevant).
    ``top_k == 0`` disables top-k (verl and vLLM use -1 for that; :meth:`from_verl` maps it).
    ``top_p == 1`` disables nucleus sampling.
    """

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()
    return_log_probs: bool = True
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = disabled), got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def logprob_temperature(self) -> float:
        """Temperature the returned log-probs are computed at (1 for greedy requests)."""
        return 1.0 if self.greedy else self.temperature

    @classmethod
    def from_verl(cls, params: Mapping[str, Any], default_max_tokens: int) -> SamplingSpec:
        """Build a spec from the ``sampling_params`` dict verl's agent loop sends.

        verl sends ``temperature, top_p, top_k (-1 = off), repetition_penalty, logprobs (bool)``
        and, from its resuming client, ``max_tokens`` (or sglang-style ``max_new_tokens``).
        ``default_max_tokens`` is used when neither is present.
        """
        for key in params:
            if key not in _KNOWN_SAMPLING_KEYS and key not in _warned_keys:
                _warned_keys.add(key)
                logger.warning("hf rollout ignores unsupported sampling parameter %r", key)
        if params.get("max_tokens") is not None:
            max_tokens = int(params["max_tokens"])
        elif params.get("max_new_tokens") is not None:
            max_tokens = int(params["max_new_tokens"])
        else:
            max_tokens = int(default_max_tokens)
        top_k = params.get("top_k")
        top_k = 0 if top_k is None or int(top_k) <= 0 else int(top_k)
        temperature = params.get("temperature")
        top_p = params.get("top_p")
        repetition_penalty = params.get("repetition_penalty")
        return cls(
            max_new_tokens=max_tokens,
            temperature=1.0 if temperature is None else float(temperature),
            top_p=1.0 if top_p is None else float(top_p),
            top_k=top_k,
            repetition_penalty=1.0 if repetition_penalty is None else float(repetition_penalty),
            ignore_eos=bool(params.get("ignore_eos", False)),
            stop_token_ids=tuple(int(t) for t in (params.get("stop_token_ids") or ())),
            return_log_probs=bool(params.get("logprobs", True)),
            seed=None if params.get("seed") is None else int(params["seed"]),
        )


@dataclass
class GenerationResult:
    """Response of one request; see the module docstring for the guarantees."""

    token_ids: list[int]
    log_probs: list[float] | None
    finish_reason: FinishReason
    extra: dict[str, Any] = field(default_factory=dict)


def load_hf_model(
    path: str,
    *,
    dtype: torch.dtype = torch.float32,
    hf_config: Any = None,
    random_init: bool = False,
) -> PreTrainedModel:
    """Load (or, with ``random_init``, only build) the HF model at ``path`` for generation.

    ``hf_config`` lets the caller pass verl's already-patched config (attention implementation,
    token-id overrides) so the rollout model is configured like the trainer's.
    ``random_init`` mirrors vLLM's ``load_format=dummy``: real weights arrive with the first
    weight sync, so reading them from disk is wasted work.

    The model's own ``generation_config`` is replaced by an empty one: checkpoints ship sampling
    defaults (e.g. ``top_k=20, temperature=0.7``) that HF ``generate`` would silently apply to
    any parameter a request leaves unset, while verl expects exactly the requested sampling.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    config = hf_config if hf_config is not None else AutoConfig.from_pretrained(path)
    model_cls = AutoModelForCausalLM
    if getattr(config, "vision_config", None) is not None:
        # Vision-language checkpoints (Qwen2/2.5/3-VL, ...) are image-text-to-text models.
        from transformers import AutoModelForImageTextToText

        model_cls = AutoModelForImageTextToText
    if random_init:
        model = model_cls.from_config(config, dtype=dtype)
    else:
        model = model_cls.from_pretrained(path, config=config, dtype=dtype)
    model.eval()
    model.generation_config = GenerationConfig()
    return model


class HFGenerator:
    """A HF model plus the token ids that end a response; generates one prompt at a time.

    Not thread-safe: callers serialize :meth:`generate` and :meth:`load_weights` (the Ray
    server does so with a lock, so weights never change in the middle of a response).

    Args:
        model: a causal LM (or image-text-to-text model) in eval mode.
        eos_token_ids: token ids that end a response (tokenizer EOS plus the generation
            config's EOS ids, as vLLM uses).
        pad_token_id: padding id handed to HF ``generate`` (unused for a single prompt, but
            HF warns without it). Defaults to the first EOS id.
        processor: optional HF processor; needed only for image/video inputs.

    The model's vision special tokens (:func:`vision_token_ids` of its config) are never
    generated (see the module docstring).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        eos_token_ids: Iterable[int],
        pad_token_id: int | None = None,
        processor: Any = None,
    ) -> None:
        self.model = model
        self.eos_token_ids = frozenset(int(t) for t in eos_token_ids)
        if not self.eos_token_ids:
            raise ValueError("HFGenerator needs at least one EOS token id")
        self.pad_token_id = pad_token_id if pad_token_id is not None else min(self.eos_token_ids)
        self.processor = processor
        self.suppressed_token_ids = vision_token_ids(model.config)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------------------------------
    # weights
    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Copy ``(name, tensor)`` pairs into the model in place; return how many were copied.

        Names are HF state-dict keys (what verl's ``get_per_tensor_param`` yields). Tensors are
        cast to the parameter's dtype. Raises ``KeyError`` for an unknown name, ``ValueError`` for
        a shape mismatch or when the update leaves some parameter storage untouched (a partial
        sync would silently keep stale weights). Tied parameters count as covered when any of
        their aliases is sent.
        """
        targets = self.model.state_dict(keep_vars=True)
        loaded_storage: set[int] = set()
        count = 0
        for name, tensor in named_tensors:
            if name not in targets:
                raise KeyError(f"weight {name!r} does not exist in the rollout model (e.g. {next(iter(targets))!r})")
            target = targets[name]
            if tuple(target.shape) != tuple(tensor.shape):
                raise ValueError(f"weight {name!r}: shape {tuple(tensor.shape)} != model {tuple(target.shape)}")
            target.data.copy_(tensor.detach().to(device=target.device, dtype=target.dtype))
            loaded_storage.add(target.data_ptr())
            count += 1
        stale = [n for n, p in self.model.named_parameters() if p.data_ptr() not in loaded_storage]
        if stale:
            raise ValueError(f"weight update left {len(stale)} parameters unchanged, e.g. {stale[:3]}")
        return count

    # ------------------------------------------------------------------------------------------
    # multi-modal inputs
    # ------------------------------------------------------------------------------------------
    def multi_modal_inputs(
        self,
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Model inputs (``pixel_values``, ``image_grid_thw``, ...) for a request's images/videos.

        verl's agent loop has already expanded the image placeholders in ``prompt_ids`` with
        the same processor, so only the vision features are computed here. Returns ``{}`` for
        a text-only request; raises ``ValueError`` when media arrive but there is no processor
        to encode them (a text-only model cannot see images, and dropping them silently would
        train on the wrong inputs).
        """
        has_images = bool(image_data)
        has_videos = bool(video_data)
        if not (has_images or has_videos):
            return {}
        if self.processor is None:
            raise ValueError("hf rollout got image/video inputs but the model has no multi-modal processor")
        kwargs = dict(mm_processor_kwargs or {})
        inputs: dict[str, torch.Tensor] = {}
        if has_images:
            image_processor = getattr(self.processor, "image_processor", None)
            if image_processor is None:
                raise ValueError("hf rollout got images but the processor has no image_processor")
            inputs.update(image_processor(images=image_data, return_tensors="pt", **kwargs))
        if has_videos:
            video_processor = getattr(self.processor, "video_processor", None)
            if video_processor is None:
                raise ValueError("hf rollout got videos but the processor has no video_processor")
            inputs.update(video_processor(videos=video_data, return_tensors="pt", **kwargs))
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}

    def _with_token_types(self, input_ids: torch.Tensor, mm_inputs: dict[str, Any] | None) -> dict[str, Any]:
        """``mm_inputs`` plus ``mm_token_type_ids`` (text 0, image 1, video 2) when the model needs them.

        Qwen3-VL (transformers 5) places its M-RoPE positions from ``mm_token_type_ids``; without
        them ``generate`` falls back to 1-D positions and its log-probs no longer match verl's
        trainer, which computes the M-RoPE positions with the processor's ``get_rope_index``.
        The ids are derived from the placeholder tokens of the prompt (``image_token_id`` /
        ``video_token_id`` of the model config), exactly as verl's agent loop derives them.
        """
        out = dict(mm_inputs or {})
        has_media = out.get("image_grid_thw") is not None or out.get("video_grid_thw") is not None
        if not has_media or "mm_token_type_ids" in out:
            return out
        config = self.model.config
        image_id, video_id = getattr(config, "image_token_id", None), getattr(config, "video_token_id", None)
        if image_id is None and video_id is None:
            return out
        types = torch.zeros_like(input_ids, dtype=torch.int)
        if image_id is not None:
            types[input_ids == image_id] = 1
        if video_id is not None:
            types[input_ids == video_id] = 2
        out["mm_token_type_ids"] = types
        return out

    # ------------------------------------------------------------------------------------------
    # generation
    # ------------------------------------------------------------------------------------------
    def _generation_config(self, spec: SamplingSpec) -> GenerationConfig:
        stop_ids = sorted(self.eos_token_ids | set(spec.stop_token_ids))
        kwargs: dict[str, Any] = dict(
            max_new_tokens=spec.max_new_tokens,
            num_beams=1,
            # Sampling happens in _RowSampler (per-row generators): generate() then takes the
            # argmax of its one-hot output, and adds no warpers of its own.
            do_sample=False,
            repetition_penalty=spec.repetition_penalty,
            # ignore_eos: a token id nothing can produce is not available, so EOS stays a
            # normal token by giving generate() no stop id at all.
            eos_token_id=None if spec.ignore_eos else stop_ids,
            pad_token_id=self.pad_token_id,
            # HF's suppression runs before the custom _RowSampler, so it holds for sampling too
            suppress_tokens=sorted(self.suppressed_token_ids) or None,
            return_dict_in_generate=True,
            output_logits=True,
            use_cache=True,
        )
        return GenerationConfig(**kwargs)

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: list[int],
        spec: SamplingSpec,
        multi_modal_inputs: dict[str, Any] | None = None,
    ) -> GenerationResult:
        """Generate one response for ``prompt_ids``; see the module docstring for the contract."""
        return self.generate_batch([prompt_ids], spec, [multi_modal_inputs or {}])[0]

    @torch.no_grad()
    def generate_batch(
        self,
        prompts: list[list[int]],
        spec: SamplingSpec,
        multi_modal_inputs: list[dict[str, Any]] | None = None,
        seeds: list[int | None] | None = None,
    ) -> list[GenerationResult]:
        """Generate one response per prompt in one batched ``generate()`` call.

        Prompts are left-padded with ``pad_token_id`` (masked out), so each row's positions and
        attention are those of the prompt alone and every result meets the single-prompt
        contract of the module docstring. ``multi_modal_inputs[i]`` holds row ``i``'s vision
        features (``pixel_values``, ``image_grid_thw``, ...; ``{}`` for none); they are
        concatenated along dim 0 in row order, which is how Qwen-VL models take a batch.
        ``seeds[i]`` seeds row ``i``'s own generator (default: ``spec.seed`` for every row); a
        row without a seed gets one drawn from torch's global generator. A seeded row's tokens
        depend only on its seed, prompt and the weights (see the module docstring).
        """
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt must have at least one token")
        mm_list = list(multi_modal_inputs) if multi_modal_inputs is not None else [{} for _ in prompts]
        if len(mm_list) != len(prompts):
            raise ValueError(f"got {len(mm_list)} multi-modal inputs for {len(prompts)} prompts")
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long, device=self.device)
        attention_mask = torch.zeros_like(input_ids)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention_mask[row, width - len(prompt) :] = 1
        mm_inputs = self._with_token_types(input_ids, _concat_rows(mm_list))
        if "mm_token_type_ids" in mm_inputs:
            # padding is text (0) whatever its id; the processor's ids are per prompt, unpadded
            mm_inputs["mm_token_type_ids"] = mm_inputs["mm_token_type_ids"] * attention_mask.to(torch.int)
        row_seeds = list(seeds) if seeds is not None else [spec.seed] * len(prompts)
        if len(row_seeds) != len(prompts):
            raise ValueError(f"got {len(row_seeds)} seeds for {len(prompts)} prompts")
        processors = LogitsProcessorList()
        if not spec.greedy:
            processors.append(_RowSampler(spec, row_seeds))
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=self._generation_config(spec),
            logits_processor=processors,
            **mm_inputs,
        )
        steps = len(out.logits)
        responses = out.sequences[:, width : width + steps].tolist()
        stop_ids = set() if spec.ignore_eos else self.eos_token_ids | set(spec.stop_token_ids)
        logp = None
        if spec.return_log_probs:
            # (steps, B, vocab) raw logits -> temperature-scaled log-softmax, as verl's trainer.
            logits = torch.stack([step_logits.float() for step_logits in out.logits], dim=0)
            logp = torch.log_softmax(logits / spec.logprob_temperature, dim=-1)
        results = []
        for row, response in enumerate(responses):
            # generate() pads rows that stopped early; a response ends at its first stop token.
            end = next((t + 1 for t, tok in enumerate(response) if tok in stop_ids), len(response))
            tokens = response[:end]
            finish_reason: FinishReason = "stop" if tokens and tokens[-1] in stop_ids else "length"
            log_probs = None
            if logp is not None:
                index = torch.tensor(tokens, dtype=torch.long, device=logp.device)
                log_probs = logp[torch.arange(len(tokens)), row, index].tolist()
            results.append(GenerationResult(token_ids=tokens, log_probs=log_probs, finish_reason=finish_reason))
        return results


class _RowSampler(LogitsProcessor):
    """Samples every row of a batch from its own generator; returns a one-hot score matrix.

    HF ``generate()`` applies the repetition penalty before custom processors; this one then
    applies temperature, top-k and top-p with HF's own warpers (the order HF samples in), and
    draws row ``b``'s next token as ``argmax(log_softmax(warped_b) + Gumbel_b)`` with Gumbel
    noise from ``generators[b]``: a draw from ``softmax(warped_b)`` that uses exactly one
    ``(vocab,)`` uniform vector of the row's stream per step, whatever the batch. The output
    is 0 at the drawn token and ``-inf`` elsewhere, so greedy decoding picks it.
    """

    def __init__(self, spec: SamplingSpec, seeds: list[int | None]) -> None:
        self.warpers = LogitsProcessorList([TemperatureLogitsWarper(spec.temperature)])
        if spec.top_k > 0:
            self.warpers.append(TopKLogitsWarper(spec.top_k))
        if spec.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(spec.top_p))
        self.generators = []
        for seed in seeds:
            if seed is None:  # unseeded: a seed from torch's global generator
                seed = int(torch.randint(0, 2**62, (1,)).item())
            self.generators.append(torch.Generator().manual_seed(int(seed)))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """``scores``: (B, vocab) processed logits of the next position -> (B, vocab) one-hot."""
        log_probs = torch.log_softmax(self.warpers(input_ids, scores).float(), dim=-1)
        vocab = scores.shape[-1]
        uniform = torch.stack([torch.rand(vocab, generator=g) for g in self.generators]).to(scores.device)
        gumbel = -torch.log(-torch.log(uniform))  # uniform 0 -> -inf: never chosen
        chosen = (log_probs + gumbel).argmax(dim=-1)
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(scores.shape[0], device=scores.device), chosen] = 0.0
        return out


def _concat_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-row vision inputs -> one batch: tensors concatenated along dim 0 in row order."""
    keys = [k for row in rows for k in row]
    out: dict[str, Any] = {}
    for key in dict.fromkeys(keys):
        values = [row[key] for row in rows if key in row and row[key] is not None]
        if not values:
            continue
        if all(isinstance(v, torch.Tensor) for v in values):
            out[key] = values[0] if len(values) == 1 else torch.cat(values, dim=0)
        elif len(values) == 1:
            out[key] = values[0]
        else:
            raise ValueError(f"cannot batch multi-modal input {key!r} of type {type(values[0]).__name__}")
    return out


def eos_token_ids(tokenizer, *configs) -> set[int]:
    """The tokenizer's EOS id plus every ``eos_token_id`` (int or list) of ``configs`` (None skipped)."""
    ids: set[int] = set()
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    for source in configs:
        eos = getattr(source, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, (list, tuple)):
            ids.update(int(t) for t in eos)
    return ids
