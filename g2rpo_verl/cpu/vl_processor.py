"""A Qwen3-VL processor that works without torchvision (images only).

transformers' ``Qwen3VLProcessor`` (5.x) insists on a ``video_processor``, and every video
processor class requires torchvision, which has no CPU build on the package registry. Images
need nothing of it: ``Qwen2VLImageProcessorPil`` (the image processor Qwen3-VL uses, PIL
backend) resizes, normalises and patchifies with numpy.

:class:`Qwen3VLProcessor` is transformers' class minus the video processor. It keeps the class
*name* on purpose: verl's ``hf_processor`` binds the model's M-RoPE ``get_rope_index`` to the
processor by matching ``processor.__class__.__name__ == "Qwen3VLProcessor"``, and the agent
loop computes the trainer's position ids with it.

A model directory points ``AutoProcessor`` at this class through ``auto_map`` plus a two-line
module file (:func:`write_processor_remote_code`); load it with ``trust_remote_code=True``
(verl: ``data.trust_remote_code=True`` and ``actor_rollout_ref.model.trust_remote_code=True``).
Without it, transformers picks its own class and fails on the missing video processor.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor as _TransformersQwen3VLProcessor

__all__ = ["Qwen3VLProcessor", "REMOTE_CODE_MODULE", "write_processor_remote_code"]

#: module file name written next to the model (``<module>.py``), referenced by ``auto_map``.
REMOTE_CODE_MODULE = "processing_g2rpo_qwen3_vl"


class Qwen3VLProcessor(_TransformersQwen3VLProcessor):
    """``Qwen3VLProcessor`` with sub-processors ``image_processor`` and ``tokenizer`` only.

    ``ProcessorMixin`` derives the sub-processor list from ``__init__``'s parameter names, so
    dropping ``video_processor`` from the signature is what makes save/load skip it. Passing
    videos raises (there is no ``video_processor`` attribute to process them with).
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=chat_template,
            **kwargs,
        )

    def __call__(self, images=None, text=None, videos=None, audio=None, **kwargs):
        if videos is not None:
            raise ValueError("this Qwen3-VL processor is built without a video processor (no torchvision)")
        return super().__call__(images=images, text=text, videos=None, audio=audio, **kwargs)


def write_processor_remote_code(model_dir: str | os.PathLike) -> Path:
    """Make ``AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)`` load :class:`Qwen3VLProcessor`.

    Writes ``<REMOTE_CODE_MODULE>.py`` (re-exports this module's class, so the code lives in the
    installed package) and adds ``auto_map.AutoProcessor`` to ``processor_config.json``, which
    ``save_pretrained`` must have written already. Returns the module file's path.
    """
    out = Path(model_dir)
    config_path = out / "processor_config.json"
    config = json.loads(config_path.read_text())
    config["auto_map"] = {"AutoProcessor": f"{REMOTE_CODE_MODULE}.Qwen3VLProcessor"}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    module = out / f"{REMOTE_CODE_MODULE}.py"
    module.write_text(
        '"""Torchvision-free Qwen3-VL processor (images only); see g2rpo_verl.cpu.vl_processor."""\n\n'
        "from g2rpo_verl.cpu.vl_processor import Qwen3VLProcessor\n\n"
        '__all__ = ["Qwen3VLProcessor"]\n'
    )
    return module
