"""The demo's model: a tiny Qwen3-VL, its tokenizer and processor, warm-started on the demo tasks.

Built once per work directory (``DIR/model``), in about a minute on 2 CPU cores, from the
seed alone (:mod:`g2rpo_verl.demo.tiny_vl` does the generic work):

1. a BPE tokenizer trained on chat-formatted prompts and responses of the tasks
   (:mod:`g2rpo_verl.demo.tasks`), so answers such as ``{"boxes": [250, 500, 750, 1000]}`` are
   a handful of tokens;
2. a Qwen3-VL processor (64 x 64 images -> 4 image tokens) and a random tiny Qwen3-VL;
3. a supervised warm start (:data:`WARM_START_STEPS` steps, about a minute) on samples drawn
   from a seed stream that the training and validation data never use. It imitates a generic
   chat model: every response has the ``<think>…</think><answer>…</answer>`` format, but
   :data:`FREE_FORM_RATE` of the answers are free-form ("three dots", "blue", "the red square")
   instead of the structure the reward asks for (a number, an option letter, a JSON box).

Why: RL with a few hundred CPU rollouts cannot teach a random model to see -- perception needs
thousands of supervised examples (the warm start's job; a random model never even writes
``<answer>``, so every reward and advantage would be 0). What RL does learn within minutes is
what the reward asks of each task's answers: the structured answers score (structure bonus,
and accuracy for every task but multiple choice) and the free-form ones do not, so the share of
structured answers -- and with it each task's validation reward and accuracy -- rises within
tens of steps, while the perception learned in the warm start keeps being sharpened.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from g2rpo_verl.demo.tiny import IM_END, IM_START
from g2rpo_verl.demo.tiny_vl import (
    VLExample,
    build_tiny_qwen3_vl,
    build_vl_processor,
    build_vl_tokenizer,
    is_vl_model_dir,
    save_vl_model,
    vl_warm_start,
)
from g2rpo_verl.demo.tasks import TASKS, VisualSample, make_sample

__all__ = [
    "FREE_FORM_RATE",
    "MODEL_SIZE",
    "WARM_START_STEPS",
    "build_demo_model",
    "sample_messages",
    "warm_start_examples",
]

#: Width and depth of the tiny model (text and vision towers).
MODEL_SIZE = {"hidden_size": 64, "num_layers": 2, "vision_depth": 2, "num_heads": 4, "initializer_range": 0.05}
WARM_START_STEPS = 1000
#: Share of warm-start answers given free-form (see the module docstring).
FREE_FORM_RATE = 0.5
WARM_START_BATCH = 20
WARM_START_LR = 3e-3
VOCAB_SIZE = 640
# Seed offsets keep the warm-start stream disjoint from the datasets' streams.
_CORPUS_SEED_OFFSET = 7_000_001
_WARM_START_SEED_OFFSET = 9_000_011


def sample_messages(sample: VisualSample) -> list[dict]:
    """Chat messages of a sample as verl's dataset builds them (``<image>`` -> an image part)."""
    parts: list[dict] = []
    text = sample.question
    while "<image>" in text:
        before, text = text.split("<image>", 1)
        if before:
            parts.append({"type": "text", "text": before})
        parts.append({"type": "image", "image": sample.image})
    if text:
        parts.append({"type": "text", "text": text})
    return [{"role": "user", "content": parts}]


def _corpus(seed: int, per_task: int = 400) -> list[str]:
    rng = random.Random(seed + _CORPUS_SEED_OFFSET)
    texts = []
    for _ in range(per_task):
        for source in TASKS:
            sample = make_sample(source, rng)
            question = sample.question.replace("<image>", "")
            texts.append(f"{IM_START}user\n{question}{IM_END}\n{IM_START}assistant\n{sample.response}{IM_END}\n")
    return texts


def warm_start_examples(seed: int, batch_size: int = WARM_START_BATCH, free_form_rate: float = FREE_FORM_RATE):
    """``step -> batch`` of :class:`VLExample`: tasks in turn, drawn from the warm-start stream.

    With probability ``free_form_rate`` an example's response is the sample's free-form answer
    (:attr:`VisualSample.free_response`) instead of the structured one.
    """
    sources = list(TASKS)

    def batch(step: int) -> list[VLExample]:
        rng = random.Random((seed + _WARM_START_SEED_OFFSET) * 100_003 + step)
        out = []
        for i in range(batch_size):
            sample = make_sample(sources[i % len(sources)], rng)
            response = sample.free_response if rng.random() < free_form_rate else sample.response
            out.append(VLExample(sample_messages(sample), [sample.image], response))
        return out

    return batch


def build_demo_model(
    out_dir: str | os.PathLike,
    seed: int = 0,
    warm_start_steps: int = WARM_START_STEPS,
    overwrite: bool = False,
    log=print,
) -> Path:
    """Build (or reuse) the demo model directory ``out_dir``; returns it.

    The directory is what verl loads as ``actor_rollout_ref.model.path``: config, safetensors,
    tokenizer, processor (remote-code pointer, see :mod:`g2rpo_verl.cpu.vl_processor`) and
    generation config.
    """
    out = Path(out_dir)
    if is_vl_model_dir(out) and not overwrite:
        return out
    tokenizer = build_vl_tokenizer(_corpus(seed), vocab_size=VOCAB_SIZE)
    processor = build_vl_processor(tokenizer)
    model = build_tiny_qwen3_vl(tokenizer, seed=seed, **MODEL_SIZE)
    log(
        f"built a tiny Qwen3-VL ({sum(p.numel() for p in model.parameters()) / 1e3:.0f}k parameters, "
        f"vocabulary {len(tokenizer)}); supervised warm start, {warm_start_steps} steps"
    )
    vl_warm_start(
        model,
        processor,
        warm_start_examples(seed),
        steps=warm_start_steps,
        lr=WARM_START_LR,
        seed=seed,
        log_every=max(1, warm_start_steps // 5),
        log=log,
    )
    return save_vl_model(out, model, processor)
