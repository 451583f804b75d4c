"""A tiny Qwen3-VL built locally: tokenizer, processor, model, supervised warm start, save.

Nothing is downloaded; each piece mirrors the real Qwen3-VL checkpoint's layout closely enough
that verl treats it as one (``model_type == "qwen3_vl"``: verl's Qwen3-VL monkey patch, M-RoPE
position ids from the processor's ``get_rope_index``, the Qwen-VL continuous-token builder).

* :func:`build_vl_tokenizer` - byte-level BPE (:func:`g2rpo_verl.demo.tiny.build_tokenizer`) on a
  caller-given corpus, with Qwen-VL's special tokens ``<|vision_start|> <|vision_end|>
  <|image_pad|> <|video_pad|>`` and :data:`VL_CHAT_TEMPLATE`, which renders an image content
  part as ``<|vision_start|><|image_pad|><|vision_end|>`` as Qwen's template does.
* :func:`build_vl_processor` - :class:`g2rpo_verl.cpu.vl_processor.Qwen3VLProcessor` (no
  torchvision) over ``Qwen2VLImageProcessorPil`` with Qwen3-VL's geometry: 16-pixel patches,
  2x2 merge, 2 temporal frames; an ``S`` x ``S`` image (S a multiple of 32) becomes
  ``(S/32)**2`` image tokens.
* :func:`build_tiny_qwen3_vl` - a random float32 ``Qwen3VLForConditionalGeneration`` (text and
  vision towers of width ``hidden_size``; interleaved M-RoPE sections scaled to the head size).
* :func:`vl_warm_start` - supervised steps on ``(messages, images, response)`` examples so the
  model starts with the answer format and some accuracy (RL on a random model has zero reward
  variance: nothing to learn from).
* :func:`save_vl_model` - ``save_pretrained`` of all three plus the processor's remote-code
  pointer, into a directory built aside and renamed into place.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from g2rpo_verl.demo.tiny import IM_END, build_tokenizer, pad_sft_rows, sft_steps, staged_dir
from g2rpo_verl.cpu.vl_processor import Qwen3VLProcessor, write_processor_remote_code

__all__ = [
    "VL_SPECIAL_TOKENS",
    "VL_CHAT_TEMPLATE",
    "VLExample",
    "build_vl_tokenizer",
    "build_vl_processor",
    "build_tiny_qwen3_vl",
    "sft_batch",
    "vl_warm_start",
    "save_vl_model",
    "is_vl_model_dir",
]

#: Qwen-VL's vision special tokens, in the order they get ids after the ChatML ones.
VL_SPECIAL_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")

#: ChatML with Qwen-VL's rendering of media parts (no default system prompt, no tools): an
#: image part (``{"type": "image", ...}``, or any part with an ``image`` key) renders as
#: ``<|vision_start|><|image_pad|><|vision_end|>``, which the processor expands to one
#: ``<|image_pad|>`` per merged patch; a video part likewise with ``<|video_pad|>``.
VL_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in part -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)

PATCH_SIZE = 16
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2


@dataclass
class VLExample:
    """One supervised example: chat ``messages`` (image parts in place), their ``images``, the response."""

    messages: list[dict]
    images: list[Any]
    response: str


def build_vl_tokenizer(corpus: Iterable[str], vocab_size: int = 640):
    """BPE tokenizer trained on ``corpus`` with Qwen-VL's special tokens and :data:`VL_CHAT_TEMPLATE`."""
    return build_tokenizer(
        vocab_size=vocab_size, corpus=corpus, special_tokens=VL_SPECIAL_TOKENS, chat_template=VL_CHAT_TEMPLATE
    )


def build_vl_processor(tokenizer, min_pixels: int = 32 * 32, max_pixels: int = 128 * 128) -> Qwen3VLProcessor:
    """Qwen3-VL processor over ``tokenizer``; images are resized into ``[min_pixels, max_pixels]``.

    Normalisation is Qwen3-VL's (mean = std = 0.5). Images whose sides are multiples of 32
    inside the pixel range keep their size.
    """
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    image_processor = Qwen2VLImageProcessorPil(
        patch_size=PATCH_SIZE,
        merge_size=MERGE_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
    )
    return Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=VL_CHAT_TEMPLATE)


def build_tiny_qwen3_vl(
    tokenizer,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    vision_depth: int = 2,
    num_heads: int = 4,
    initializer_range: float = 0.02,
):
    """A random float32 ``Qwen3VLForConditionalGeneration`` over ``tokenizer``'s vocabulary.

    Text: ``num_layers`` decoder layers of width ``hidden_size``, ``num_heads`` query heads,
    half as many KV heads, tied embeddings. Vision: ``vision_depth`` blocks of the same width,
    16-pixel patches, 2x2 merge into ``hidden_size``, DeepStack injection from the first block.
    M-RoPE: Qwen3-VL's interleaved (t, h, w) sections scaled from ``[24, 20, 20]`` / 64 to
    ``head_dim / 2`` rotary frequencies. ``initializer_range``: std of the normal init (both towers).
    """
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    head_dim = hidden_size // num_heads
    half = head_dim // 2
    h_w = max(1, round(half * 20 / 64))
    mrope_section = [half - 2 * h_w, h_w, h_w]
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in VL_SPECIAL_TOKENS}
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=max(1, num_heads // 2),
            head_dim=head_dim,
            max_position_embeddings=1024,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": mrope_section,
                "mrope_interleaved": True,
            },
            tie_word_embeddings=True,
            initializer_range=initializer_range,
            bos_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            depth=vision_depth,
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_heads=num_heads,
            patch_size=PATCH_SIZE,
            spatial_merge_size=MERGE_SIZE,
            temporal_patch_size=TEMPORAL_PATCH_SIZE,
            out_hidden_size=hidden_size,
            num_position_embeddings=64,  # an 8 x 8 learned grid, interpolated to the image grid
            deepstack_visual_indexes=[0],
            initializer_range=initializer_range,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    config.architectures = ["Qwen3VLForConditionalGeneration"]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen3VLForConditionalGeneration(config)
    return model.to(torch.float32).eval()


def sft_batch(processor, examples: Sequence[VLExample]) -> dict[str, torch.Tensor]:
    """Model inputs + ``labels`` for a batch; loss only on response tokens and the closing EOS.

    Returns right-padded ``input_ids``/``attention_mask``/``labels``/``mm_token_type_ids``
    (B, T) and the concatenated ``pixel_values`` (sum of patches, C*t*p*p) with
    ``image_grid_thw`` (num_images, 3).
    """
    tokenizer = processor.tokenizer
    prompts = [
        processor.apply_chat_template(ex.messages, add_generation_prompt=True, tokenize=False) for ex in examples
    ]
    images = [image for ex in examples for image in ex.images]
    # One processor call expands every image placeholder; prompts are then re-split per row.
    encoded = processor(text=prompts, images=images or None, return_tensors="pt", padding=True, padding_side="right")
    rows, targets = [], []
    for i, ex in enumerate(examples):
        prompt_ids = encoded["input_ids"][i][encoded["attention_mask"][i].bool()].tolist()
        response_ids = tokenizer(ex.response + IM_END, add_special_tokens=False)["input_ids"]
        rows.append(prompt_ids + response_ids)
        targets.append([-100] * len(prompt_ids) + response_ids)
    input_ids, mask, labels = pad_sft_rows(rows, targets, tokenizer.pad_token_id)
    token_types = torch.zeros_like(input_ids, dtype=torch.int)
    token_types[input_ids == processor.image_token_id] = 1
    out = {"input_ids": input_ids, "attention_mask": mask, "labels": labels, "mm_token_type_ids": token_types}
    if images:
        out["pixel_values"] = encoded["pixel_values"]
        out["image_grid_thw"] = encoded["image_grid_thw"]
    return out


def vl_warm_start(
    model,
    processor,
    examples: Callable[[int], Sequence[VLExample]],
    steps: int,
    lr: float = 3e-3,
    seed: int = 0,
    log_every: int = 0,
    log: Callable[[str], None] = print,
):
    """``steps`` AdamW steps on batches ``examples(step)``; returns the model in eval mode.

    ``examples(step)`` returns the batch of step ``step`` (the caller controls the data and its
    seed). Linear warm-up over the first 10% of steps, gradient norm clipped to 1; the loop is
    :func:`g2rpo_verl.demo.tiny.sft_steps` (one thread, forked RNG).
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))

    def report(step: int, loss: torch.Tensor) -> None:
        if log_every and (step + 1) % log_every == 0:
            log(f"warm start step {step + 1}/{steps}: loss {loss.item():.3f}")

    return sft_steps(
        model,
        lambda step: sft_batch(processor, examples(step)),
        steps,
        optimizer,
        seed,
        scheduler=scheduler,
        clip_norm=1.0,
        on_loss=report,
    )


def save_vl_model(out_dir: str | os.PathLike, model, processor) -> Path:
    """Save model, tokenizer, processor (+ remote-code pointer) and generation config to ``out_dir``.

    Built in a temporary sibling and renamed into place: an interrupted save never leaves a
    directory that :func:`is_vl_model_dir` accepts. An existing ``out_dir`` is replaced.
    """
    from transformers import GenerationConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" bars would clutter the demo's console
    out = Path(out_dir)
    with staged_dir(out) as tmp:
        tokenizer = processor.tokenizer
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)  # also writes the tokenizer files
        write_processor_remote_code(tmp)
        GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id).save_pretrained(tmp)
    return out


def is_vl_model_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a saved VL model: config, weights, tokenizer and processor."""
    p = Path(path)
    return (
        (p / "config.json").is_file()
        and (p / "tokenizer.json").is_file()
        and (p / "processor_config.json").is_file()
        and any(p.glob("*.safetensors"))
    )
