"""Responses for a batch of prompts: HF ``generate`` (CPU) or vLLM (GPU).

Backends (``--backend``):

* ``hf``: the engine of the CPU backend's ``hf`` rollout
  (:class:`g2rpo_verl.cpu.hf_generation.HFGenerator`): left-padded batched ``generate()``,
  vision features from the model's processor, stop on the tokenizer's and the generation
  config's EOS ids, float32. Greedy responses of a batch equal the one-prompt responses
  (the generator's contract).
* ``vllm``: ``vllm.LLM`` with the prompt token ids and images, as verl's vLLM rollout sends
  them (``TokensPrompt(prompt_token_ids=..., multi_modal_data={"image": [...]})``). It cannot
  run on the CPU machines this project is tested on: it is written against vLLM's documented
  offline API and is **untested here**; ``--backend vllm`` without vLLM installed fails before
  any model is loaded.
* ``auto`` (default): ``vllm`` when it is installed and a CUDA device is visible, else ``hf``.

Decoding (:class:`Decoding`): greedy when ``temperature == 0`` (the default, one response per
prompt); ``n > 1`` needs ``temperature > 0``. Responses are decoded with
``skip_special_tokens=True``, as verl's reward manager decodes them.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any, Protocol

from g2rpo_verl.evaluation.predictions import EvalPrompt

__all__ = ["BACKENDS", "Decoding", "GeneratedResponse", "HFBackend", "VLLMBackend", "make_backend", "select_backend"]

BACKENDS = ("auto", "hf", "vllm")


@dataclass(frozen=True)
class Decoding:
    """``n`` responses per prompt; greedy iff ``temperature == 0``; ``seed`` seeds sampling."""

    max_new_tokens: int
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        if self.n < 1:
            raise ValueError(f"--n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"--temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.n > 1 and self.temperature == 0:
            raise ValueError("--n > 1 needs --temperature > 0 (greedy decoding gives n identical responses)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class GeneratedResponse:
    """One response: decoded ``text``, its length in ``tokens``, ``finish_reason`` "stop" or "length"."""

    text: str
    tokens: int
    finish_reason: str


class Backend(Protocol):
    def generate(
        self, prompts: list[EvalPrompt], decoding: Decoding, batch_index: int
    ) -> list[list[GeneratedResponse]]:
        """``n`` responses for each prompt, in prompt order."""


def select_backend(name: str) -> str:
    """``hf`` or ``vllm`` for ``--backend name``; raises when vLLM is asked for and missing."""
    if name not in BACKENDS:
        raise ValueError(f"--backend must be one of {BACKENDS}, got {name!r}")
    has_vllm = importlib.util.find_spec("vllm") is not None
    if name == "vllm":
        if not has_vllm:
            raise RuntimeError(
                "--backend vllm: vllm is not installed (GPU machines: pip install -e '.[gpu]'); use --backend hf"
            )
        return "vllm"
    if name == "auto":
        import torch

        return "vllm" if has_vllm and torch.cuda.is_available() else "hf"
    return "hf"


def eos_token_ids(model_dir: str, tokenizer: Any) -> set[int]:
    """Tokenizer EOS plus the generation config's and model config's EOS ids (the ``hf`` rollout's set)."""
    from transformers import AutoConfig, GenerationConfig

    from g2rpo_verl.cpu import hf_generation

    sources: list[Any] = [AutoConfig.from_pretrained(model_dir, trust_remote_code=True)]
    if os.path.isfile(os.path.join(model_dir, "generation_config.json")):
        sources.append(GenerationConfig.from_pretrained(model_dir))
    return hf_generation.eos_token_ids(tokenizer, *sources)


class HFBackend:
    """HF ``generate`` through :class:`~g2rpo_verl.cpu.hf_generation.HFGenerator` (float32)."""

    def __init__(self, model_dir: str, tokenizer: Any, processor: Any) -> None:
        import torch

        from g2rpo_verl.cpu.hf_generation import HFGenerator, load_hf_model

        model = load_hf_model(model_dir, dtype=torch.float32)
        self.tokenizer = tokenizer
        self.generator = HFGenerator(
            model, eos_token_ids(model_dir, tokenizer), pad_token_id=tokenizer.pad_token_id, processor=processor
        )

    def generate(
        self, prompts: list[EvalPrompt], decoding: Decoding, batch_index: int
    ) -> list[list[GeneratedResponse]]:
        from g2rpo_verl.cpu.hf_generation import SamplingSpec

        rows = [p for p in prompts for _ in range(decoding.n)]
        spec = SamplingSpec(
            max_new_tokens=decoding.max_new_tokens,
            temperature=decoding.temperature,
            top_p=decoding.top_p,
            return_log_probs=False,
            # one seed per batch (HF samples from torch's global generator): an uninterrupted run
            # with the same data, batch size and seed draws the same responses
            seed=None if decoding.greedy else decoding.seed * 1_000_003 + batch_index,
        )
        mm = [self.generator.multi_modal_inputs(image_data=p.images or None) for p in rows]
        results = self.generator.generate_batch([p.prompt_ids for p in rows], spec, mm)
        flat = [
            GeneratedResponse(
                self.tokenizer.decode(r.token_ids, skip_special_tokens=True), len(r.token_ids), r.finish_reason
            )
            for r in results
        ]
        return [flat[i * decoding.n : (i + 1) * decoding.n] for i in range(len(prompts))]


class VLLMBackend:
    """vLLM offline generation (GPU); untested on this project's CPU machines (module docstring)."""

    def __init__(self, model_dir: str, tokenizer: Any, max_images: int = 16) -> None:
        from vllm import LLM

        self.tokenizer = tokenizer
        self.llm = LLM(model=model_dir, trust_remote_code=True, limit_mm_per_prompt={"image": max_images})

    def generate(
        self, prompts: list[EvalPrompt], decoding: Decoding, batch_index: int
    ) -> list[list[GeneratedResponse]]:
        from vllm import SamplingParams

        params = SamplingParams(
            n=decoding.n,
            temperature=decoding.temperature,
            top_p=decoding.top_p,
            max_tokens=decoding.max_new_tokens,
            seed=None if decoding.greedy else decoding.seed * 1_000_003 + batch_index,
            skip_special_tokens=True,
        )
        requests = []
        for p in prompts:
            request: dict[str, Any] = {"prompt_token_ids": p.prompt_ids}
            if p.images:
                request["multi_modal_data"] = {"image": p.images}
            requests.append(request)
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return [
            [
                GeneratedResponse(c.text, len(c.token_ids), "length" if c.finish_reason == "length" else "stop")
                for c in out.outputs
            ]
            for out in outputs
        ]


def make_backend(name: str, model_dir: str, tokenizer: Any, processor: Any) -> Backend:
    """The backend :func:`select_backend` chose, loaded."""
    if name == "vllm":
        return VLLMBackend(model_dir, tokenizer)
    if name == "hf":
        return HFBackend(model_dir, tokenizer, processor)
    raise ValueError(f"unknown backend {name!r} (resolve it with select_backend first)")
