"""verl parquet rows -> :class:`EvalPrompt`, built exactly as training built them.

Training builds a prompt in two places, and so does this module, with the same code:

1. verl's dataset class (the run's ``data.custom_cls``, see :mod:`.run_config`) turns a row's
   ``prompt`` into chat messages, each ``<image>`` becoming an image part
   (``RLHFDataset.__getitem__`` -> ``raw_prompt``), and extracts the images
   (``process_multi_modal_info``);
2. verl's agent loop renders the messages with the model's chat template and expands each image
   into its placeholder tokens through the processor: verl's Continuous Token builder for the
   model family (``create_continuous_token_builder(...).build_initial_tokens``).

Rows stay in file order (``shuffle=False``) and none is dropped for length.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from g2rpo_verl.evaluation.predictions import EvalPrompt
from g2rpo_verl.evaluation.run_config import RunConfig

__all__ = ["PromptBuilder", "read_rows"]


def read_rows(path: str | os.PathLike) -> int:
    """Number of rows of a parquet data file (without reading its images)."""
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--data {path}: no such file")
    if p.suffix != ".parquet":
        raise ValueError(f"--data {path}: expected a verl .parquet file (g2rpo-data convert writes them)")
    return pq.ParquetFile(p).metadata.num_rows


class PromptBuilder:
    """Tokenizer, processor, verl's dataset class and token builder of one model (see module doc).

    Args:
        model_dir: HF model directory (tokenizer, processor, chat template, ``config.json``).
        run: the run's config (data section, task key).
    """

    def __init__(self, model_dir: str | os.PathLike, run: RunConfig) -> None:
        from transformers import AutoConfig
        from verl.utils.dataset.rl_dataset import get_dataset_class
        from verl.utils.tokenizer import hf_processor, hf_tokenizer
        from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

        self.model_dir = str(model_dir)
        self.run = run
        self.tokenizer = hf_tokenizer(self.model_dir, trust_remote_code=True)
        self.processor = hf_processor(self.model_dir, trust_remote_code=True)
        self.data_config = run.data_config()
        with contextlib.redirect_stdout(io.StringIO()):  # verl prints the class name
            self.dataset_cls = get_dataset_class(self.data_config)
        model_type = AutoConfig.from_pretrained(self.model_dir, trust_remote_code=True).model_type
        self.builder = create_continuous_token_builder(
            self.tokenizer,
            hf_model_type=model_type,
            chat_template_kwargs=dict(self.data_config.get("apply_chat_template_kwargs") or {}),
            mm_processor_kwargs=dict(self.data_config.get("mm_processor_kwargs") or {}),
            processor=self.processor,
        )
        self.image_patch_size = getattr(getattr(self.processor, "image_processor", None), "patch_size", 14)

    def dataset(self, path: str | os.PathLike):
        """verl's dataset (the run's class) over one file."""
        with contextlib.redirect_stdout(io.StringIO()):  # verl prints the row count of every file
            return self.dataset_cls(
                data_files=[str(path)], tokenizer=self.tokenizer, config=self.data_config, processor=self.processor
            )

    def prompts(self, path: str | os.PathLike, rows: list[int], dataset=None) -> Iterator[EvalPrompt]:
        """:class:`EvalPrompt` of each of ``rows`` of ``path``, in the given order."""
        dataset = self.dataset(path) if dataset is None else dataset
        prompt_key = self.data_config.get("prompt_key", "prompt")
        for row in rows:
            item = dataset[row]
            raw = dataset.dataframe[row]  # the stored row: the prompt with its <image> placeholders
            messages = item["raw_prompt"]
            mm = asyncio.run(
                self.dataset_cls.process_multi_modal_info(
                    messages, image_patch_size=self.image_patch_size, config=self.data_config
                )
            )
            images, videos = mm[0], mm[1]
            if videos:
                raise ValueError(f"{path} row {row}: video inputs are not supported by g2rpo-eval")
            prompt_ids = self.builder.build_initial_tokens(messages, images=images)
            extra = dict(item.get("extra_info") or {})
            reward_model = item.get("reward_model") or {}
            if "ground_truth" not in reward_model:
                raise ValueError(f"{path} row {row}: no reward_model.ground_truth")
            yield EvalPrompt(
                file=str(Path(path).resolve()),
                row=row,
                id=extra.get("index", row),
                data_source=str(item.get("data_source", "")),
                prompt=_plain(raw[prompt_key]),
                prompt_ids=[int(t) for t in prompt_ids],
                images=list(images or []),
                ground_truth=reward_model["ground_truth"],
                extra_info=extra,
                columns={k: v for k, v in raw.items() if isinstance(v, (str, int, float, bool))},
            )


def _plain(value: Any) -> Any:
    """A stored prompt as JSON-friendly lists/dicts (HF datasets returns them already plain)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if not hasattr(v, "save")}  # drop PIL images
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
