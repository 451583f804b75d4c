"""How many prompt tokens an image costs a Qwen-VL model (no model files, no torchvision).

Qwen2-VL / Qwen2.5-VL cut an image into 14-px patches, Qwen3-VL into 16-px patches; the
vision merger joins 2×2 patches into one LLM token. qwen-vl-utils first resizes each image so
both sides are multiples of ``factor = patch × merge`` and its area lies in ``[min_pixels,
max_pixels]`` (:func:`smart_resize`, the same arithmetic as ``qwen_vl_utils.smart_resize``),
so an image costs ``(h / factor) · (w / factor)`` tokens plus 2 (``<|vision_start|>`` /
``<|vision_end|>``), at most ``max_pixels // factor²`` + 2.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["VisionFamily", "FAMILIES", "detect_family", "smart_resize", "image_tokens", "max_image_tokens"]

MERGE = 2
VISION_MARKERS = 2  # <|vision_start|> and <|vision_end|> around each image's pad tokens
# qwen-vl-utils' defaults when an image entry has no bounds: 4 .. 16384 tokens
DEFAULT_MIN_TOKENS, DEFAULT_MAX_TOKENS = 4, 16384


@dataclass(frozen=True)
class VisionFamily:
    name: str
    patch_size: int
    merge_size: int = MERGE

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size


FAMILIES = {
    "qwen2-vl": VisionFamily("qwen2-vl", 14),
    "qwen2.5-vl": VisionFamily("qwen2.5-vl", 14),
    "qwen3-vl": VisionFamily("qwen3-vl", 16),
}
_MODEL_TYPES = {"qwen2_vl": "qwen2-vl", "qwen2_5_vl": "qwen2.5-vl", "qwen3_vl": "qwen3-vl", "qwen3_vl_moe": "qwen3-vl"}
_NAME_PATTERNS = [
    (re.compile(r"qwen3[-_.]?vl", re.I), "qwen3-vl"),
    (re.compile(r"qwen2\.5[-_.]?vl|qwen2_5[-_]?vl", re.I), "qwen2.5-vl"),
    (re.compile(r"qwen2[-_.]?vl", re.I), "qwen2-vl"),
]


def detect_family(model_path: str) -> VisionFamily | None:
    """The family of ``model_path``: ``config.json``'s ``model_type`` for a local model
    directory, else the name (``Qwen/Qwen3-VL-8B-Instruct``); ``None`` when neither tells."""
    config = Path(str(model_path)).expanduser() / "config.json"
    if config.is_file():
        try:
            model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError):
            model_type = None
        if model_type in _MODEL_TYPES:
            return FAMILIES[_MODEL_TYPES[model_type]]
    for pattern, name in _NAME_PATTERNS:
        if pattern.search(str(model_path)):
            return FAMILIES[name]
    return None


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """qwen-vl-utils' resize: sides multiples of ``factor``, area in ``[min_pixels, max_pixels]``."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def image_tokens(height: int, width: int, family: VisionFamily, min_pixels: int | None, max_pixels: int | None) -> int:
    """Prompt tokens of one ``height × width`` image, markers included."""
    f = family.factor
    lo = min_pixels if min_pixels is not None else DEFAULT_MIN_TOKENS * f * f
    hi = max_pixels if max_pixels is not None else DEFAULT_MAX_TOKENS * f * f
    h, w = smart_resize(height, width, f, lo, hi)
    return (h // f) * (w // f) + VISION_MARKERS


def max_image_tokens(family: VisionFamily, max_pixels: int | None) -> int:
    """Upper bound of :func:`image_tokens` over all image sizes."""
    f = family.factor
    hi = max_pixels if max_pixels is not None else DEFAULT_MAX_TOKENS * f * f
    return hi // (f * f) + VISION_MARKERS
