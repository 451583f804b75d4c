"""The demo's model: a tiny Qwen3-VL, its tokenizer and processor, warm-started on the demo tasks.

Built once per work directory (``DIR/model``), in about a minute on 2 CPU cores, from the
seed alone (:mod:`g2rpo_verl.demo.fixtures.tiny_vl` does the generic work):

1. a BPE tokenizer trained on chat-formatted prompts and responses of the tasks
   (:mod:`g2rpo_verl.demo.tasks`), so answers such as ``{"boxes": [250, 500, 750, 1000]}`` are
   a handful of tokens;
2. a Qwen3-VL processor (64 x 64 images -> 4 image tokens) and a random tiny Qwen3-VL;
3. a supervised warm start (:data:`WARM_START_STEPS` steps, about a minute) on samples drawn
   from a seed stream that the training and validation data never use. It imitates a generic
   chat model: every response has the ``<think>…</think><answer>…</answer>`` format, but
   :data:`FREE_FORM_RATE` of the answers are free-form ("three dots", "blue", "the red square")
   instead of the structure the reward asks for (a number, an option letter, a JSON box).
   Its think blocks vary in length the way the paper's length shaping needs (see below).

Why: RL with a few hundred CPU rollouts cannot teach a random model to see -- perception needs
thousands of supervised examples (the warm start's job; a random model never even writes
``<answer>``, so every reward and advantage would be 0). What RL does learn within minutes is
what the reward asks of each task's answers: the structured answers score (structure bonus,
and accuracy for every task but multiple choice) and the free-form ones do not, so the share of
structured answers -- and with it each task's validation reward and accuracy -- rises within
tens of steps, while the perception learned in the warm start keeps being sharpened.

Think blocks, designed for the length shaping (``g2rpo.length``; docs/shaping.md):

* **Perception tasks** (:data:`PERCEPTION_SOURCES`: grounding, OCR, attribute): a share
  :data:`NEEDLESS_THINK_RATE` of the responses open their think block with a needless
  preamble (:data:`NEEDLESS_PREAMBLE`, 7 tokens) before the task's short note. Nothing in the
  reward depends on it, so without shaping nothing removes it; the perception envelope scores
  the shorter response higher, which breaks accuracy ties in its favour.
* **The reasoning task** (math): a share :data:`SKIPPED_WORK_RATE` of the responses skip the
  working (``<think>I know it</think>`` then the value) and the rest read the expression out and
  work it (``<think>I read 7+5, so 7+5=12</think>``, 10 tokens longer). Both answer correctly
  in the warm start; whether writing the working out helps the model is what RL then finds
  out, and the reasoning envelope scores the longer response higher.

So perception responses can get shorter and reasoning ones longer by choosing among behaviours
the model already has, which is what a few dozen RL steps can do.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from g2rpo_verl.demo.fixtures.tiny import IM_END, IM_START
from g2rpo_verl.demo.fixtures.tiny_vl import (
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
    "NEEDLESS_PREAMBLE",
    "NEEDLESS_THINK_RATE",
    "PERCEPTION_SOURCES",
    "SKIPPED_WORK_RATE",
    "WARM_START_STEPS",
    "build_demo_model",
    "response_variants",
    "sample_messages",
    "warm_start_examples",
]

#: Width and depth of the tiny model (text and vision towers).
MODEL_SIZE = {"hidden_size": 64, "num_layers": 2, "vision_depth": 2, "num_heads": 4, "initializer_range": 0.05}
WARM_START_STEPS = 500
#: Share of warm-start answers given free-form (see the module docstring).
FREE_FORM_RATE = 0.6
#: Tasks whose warm-start think block sometimes opens with :data:`NEEDLESS_PREAMBLE`.
PERCEPTION_SOURCES = ("demo_grounding", "demo_ocr", "demo_attribute")
NEEDLESS_PREAMBLE = "I look at the whole image first, then I answer."
NEEDLESS_THINK_RATE = 0.5
#: Share of warm-start math responses that skip the working.
SKIPPED_WORK_RATE = 0.5
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


def _think_variants(sample: VisualSample) -> dict[str, tuple[str, float]]:
    """The sample's think blocks with their warm-start shares (see the module docstring)."""
    if sample.data_source in PERCEPTION_SOURCES:
        return {
            "short": (sample.think, 1 - NEEDLESS_THINK_RATE),
            "needless": (f"{NEEDLESS_PREAMBLE} {sample.think}", NEEDLESS_THINK_RATE),
        }
    if sample.data_source == "demo_math":
        expression = sample.meta["expression"]
        return {
            "skipped": ("I know it", SKIPPED_WORK_RATE),
            "worked": (f"I read {expression}, so {expression}={sample.answer}", 1 - SKIPPED_WORK_RATE),
        }
    return {"short": (sample.think, 1.0)}


def response_variants(sample: VisualSample) -> dict[str, str]:
    """Every warm-start response of ``sample``: ``<think kind>/<structured|free>`` -> text."""
    out = {}
    for kind, (think, _) in _think_variants(sample).items():
        out[f"{kind}/structured"] = f"<think>{think}</think><answer>{sample.answer}</answer>"
        out[f"{kind}/free"] = f"<think>{think}</think><answer>{sample.free_answer}</answer>"
    return out


def _warm_start_response(sample: VisualSample, rng: random.Random, free_form_rate: float) -> str:
    variants = _think_variants(sample)
    kinds = list(variants)
    kind = rng.choices(kinds, weights=[variants[k][1] for k in kinds])[0]
    form = "free" if rng.random() < free_form_rate else "structured"
    return response_variants(sample)[f"{kind}/{form}"]


def _corpus(seed: int, per_task: int = 400) -> list[str]:
    rng = random.Random(seed + _CORPUS_SEED_OFFSET)
    texts = []
    for _ in range(per_task):
        for source in TASKS:
            sample = make_sample(source, rng)
            question = sample.question.replace("<image>", "")
            for response in response_variants(sample).values():
                texts.append(f"{IM_START}user\n{question}{IM_END}\n{IM_START}assistant\n{response}{IM_END}\n")
    return texts


def warm_start_examples(seed: int, batch_size: int = WARM_START_BATCH, free_form_rate: float = FREE_FORM_RATE):
    """``step -> batch`` of :class:`VLExample`: tasks in turn, drawn from the warm-start stream.

    Each example's think block is drawn from the task's variants (:func:`response_variants`,
    shares in the module docstring) and, with probability ``free_form_rate``, its answer is the
    sample's free-form one instead of the structured one.
    """
    sources = list(TASKS)

    def batch(step: int) -> list[VLExample]:
        rng = random.Random((seed + _WARM_START_SEED_OFFSET) * 100_003 + step)
        out = []
        for i in range(batch_size):
            sample = make_sample(sources[i % len(sources)], rng)
            response = _warm_start_response(sample, rng, free_form_rate)
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
