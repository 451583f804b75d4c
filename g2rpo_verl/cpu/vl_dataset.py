"""verl's RL dataset with image extraction that does not need ``qwen_vl_utils`` (torchvision).

verl 0.9.1 pulls images out of a prompt's messages with ``qwen_vl_utils.process_vision_info``
in two places: ``RLHFDataset._process_multi_modal_info`` (prompt-length filter at load time)
and ``RLHFDataset.process_multi_modal_info`` (called by the agent loop for every rollout).
``qwen_vl_utils`` imports torchvision at module level, which has no CPU build on the package
registry. For images it only opens the file / bytes, converts to RGB and rounds the size to
the patch grid -- and the HF image processor rounds the size itself (``smart_resize`` between
its ``min_pixels`` and ``max_pixels``), so the prompt's placeholder count and the pixel values
stay consistent with one another.

Select it with ``data.custom_cls.path=pkg://g2rpo_verl.cpu.vl_dataset`` and
``data.custom_cls.name=VisionRLHFDataset``; verl's agent loop uses the same class
(``get_dataset_class(config.data)``) for the rollout-time extraction.

Images may be given the ways verl's dataset accepts them (a PIL image, ``{"bytes": ...}``,
``{"image": PIL or path}``, a path or ``file://`` URL). Videos are not supported (they need
torchvision's decoders) and raise ``ValueError``.
"""

from __future__ import annotations

import asyncio
import os
from io import BytesIO
from typing import Any

from PIL import Image
from verl.utils.dataset.rl_dataset import RLHFDataset

__all__ = ["VisionRLHFDataset", "extract_images", "load_image"]


def load_image(ref: Any) -> Image.Image:
    """An RGB PIL image from any image reference verl's dataset produces (see module doc)."""
    if isinstance(ref, Image.Image):
        return ref.convert("RGB")
    if isinstance(ref, dict):
        if ref.get("image") is not None:
            return load_image(ref["image"])
        if ref.get("bytes") is not None:
            return load_image(ref["bytes"])
        if ref.get("path"):
            return load_image(ref["path"])
        raise ValueError(f"image dict without 'image', 'bytes' or 'path': keys {sorted(ref)}")
    if isinstance(ref, (bytes, bytearray)):
        return Image.open(BytesIO(ref)).convert("RGB")
    if isinstance(ref, (str, os.PathLike)):
        path = os.fspath(ref)
        if path.startswith("file://"):
            path = path[len("file://") :]
        if "://" in path:
            raise ValueError(f"only local images are supported, got {path!r}")
        with Image.open(path) as image:
            return image.convert("RGB")
    raise TypeError(f"unsupported image reference of type {type(ref).__name__}")


def extract_images(messages: list[dict]) -> list[Image.Image] | None:
    """RGB images of every ``{"type": "image", ...}`` content part, in message order; None if none.

    Raises ``ValueError`` for video parts.
    """
    images: list[Image.Image] = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind == "video" or "video" in part:
                raise ValueError("VisionRLHFDataset supports images only (videos need torchvision)")
            if kind in ("image", "image_url") or "image" in part:
                ref = part.get("image")
                if ref is None and "image_url" in part:
                    url = part["image_url"]
                    ref = url.get("url") if isinstance(url, dict) else url
                if ref is None and "bytes" in part:
                    ref = part["bytes"]
                images.append(load_image(ref))
    return images or None


class VisionRLHFDataset(RLHFDataset):
    """:class:`verl.utils.dataset.rl_dataset.RLHFDataset` without ``qwen_vl_utils`` (see module doc)."""

    @classmethod
    def _process_multi_modal_info(cls, messages: list[dict], image_patch_size, config) -> tuple[Any, Any, Any]:
        return extract_images(messages), None, cls._extract_audio_info(messages)

    @classmethod
    async def process_vision_info(cls, messages: list[dict], image_patch_size, config) -> tuple[Any, Any]:
        images, _, _ = cls._process_multi_modal_info(messages, image_patch_size, config)
        return images, None

    @classmethod
    async def process_multi_modal_info(cls, messages: list[dict], image_patch_size, config) -> tuple[Any, Any, Any]:
        # Decoding PNGs is CPU work; keep the agent loop's event loop free, as verl does.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, lambda: cls._process_multi_modal_info(messages, image_patch_size, config)
        )
