"""One OneThinker / OpenVLThinker record -> one row of verl's multimodal RL dataset.

Input record (docs/method.md, "Data")::

    {problem_id, problem: "<image> ...", data_type: "image", problem_type, task_type,
     options: [...], data_source, answer: "<answer>...</answer>", images: [path, ...]}

Output row (what ``verl.utils.dataset.rl_dataset.RLHFDataset`` reads):

* ``prompt``: ``[{"role": "user", "content": "<image> ... <instruction>"}]`` (the instruction:
  :func:`format_prompt` of the record's problem type) — verl splits the
  content on ``<image>`` and puts the i-th entry of ``images`` at the i-th placeholder, so
  their counts must match (checked here, not at step 300 of a run);
* ``images``: ``[{"image": "/abs/path.png" | "bytes": b"...", "min_pixels": .., "max_pixels": ..}]``
  — qwen-vl-utils resizes each image into ``[min_pixels, max_pixels]`` (verl 0.9.1 has no
  config key for the bounds, so they travel with the data);
* ``data_source``, ``ability`` (= ``task_type``), ``reward_model: {style: rule, ground_truth}``
  (the answer without its ``<answer>`` tags), ``extra_info: {problem_id, problem_type,
  task_type, options, data_type, index, split}`` — ``problem_type`` in the reward's canonical
  spelling, the default ``g2rpo.task_key``.

Every problem is reported as a :class:`RecordError` naming the record (index and
``problem_id``) and the field; nothing is guessed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from g2rpo_verl.rewards.accuracy import (
    FREE_FORM,
    GROUNDING,
    MATH,
    MULTIPLE_CHOICE,
    NUMERICAL,
    OCR,
    PROBLEM_TYPES,
    REGRESSION,
    canonical_problem_type,
)
from g2rpo_verl.rewards.answers import strip_answer_tags
from g2rpo_verl.rewards.settings import preset_settings, settings_from_kwargs

__all__ = [
    "ANSWER_FORMS",
    "DEFAULT_PRESET",
    "ConvertOptions",
    "RecordError",
    "convert_record",
    "format_prompt",
    "IMAGE_PLACEHOLDER",
]

IMAGE_PLACEHOLDER = "<image>"
_EMPTY_ANSWER = re.compile(r"\s*<answer>\s*</answer>\s*")

#: The reward preset whose tags the prompts ask for by default: ``reference``, the rules the
#: Qwen3-VL-8B configs train with (Qwen3-VL *Instruct* follows ``<thinking>``; it does not
#: reliably write ``<think>`` even when asked: Qwen3-VL #1663, EasyR1 #597).
DEFAULT_PRESET = "reference"

#: What each problem type's answer block must hold, with an example answer. The same requests
#: as the authors' per-type prompts (grounding: JSON with the ``boxes`` key, which the
#: ``reference`` reward reads), in this project's words.
ANSWER_FORMS: dict[str, tuple[str, str]] = {
    MULTIPLE_CHOICE: ("only the letter of the correct option", "C"),
    NUMERICAL: ("only the number", "12.5"),
    REGRESSION: ("only the number", "0.75"),
    OCR: ("only the text, exactly as it is written", "OPEN 24 HOURS"),
    MATH: ("only the final result, a number or a LaTeX expression", "\\frac{3}{4}"),
    GROUNDING: (
        'only the bounding box [x1, y1, x2, y2] as JSON with the key "boxes"',
        '{"boxes": [120, 40, 560, 910]}',
    ),
    FREE_FORM: ("only the short final answer", "a red bicycle"),
}


def format_prompt(problem_type: str, think_tag: str, answer_tag: str = "answer") -> str:
    """The instruction appended to a question of ``problem_type`` (canonical name).

    It asks for the reasoning in ``<think_tag>`` and the answer in ``<answer_tag>`` tags — the
    reward's format — and for the answer in the shape its problem type is scored on.
    """
    what, example = ANSWER_FORMS[problem_type]
    t, a = think_tag, answer_tag
    return (
        f"Reason about the question step by step inside <{t}> </{t}> tags, then give the final "
        f"answer inside <{a}> </{a}> tags. The answer tags hold {what}, for example: <{a}>{example}</{a}>"
    )


class RecordError(ValueError):
    """A record that cannot be converted; the message names the record and the field."""

    def __init__(self, index: int, problem_id: Any, field: str, message: str):
        self.index, self.problem_id, self.field = index, problem_id, field
        super().__init__(f"record {index} (problem_id={problem_id!r}), field '{field}': {message}")


@dataclass(frozen=True)
class ConvertOptions:
    """How records are turned into rows.

    Attributes:
        image_root: relative image paths are resolved against it.
        embed_images: store the image bytes in the parquet (self-contained, large) instead of
            absolute paths (small; every node must see the same files).
        min_pixels / max_pixels: per-image resize bounds for qwen-vl-utils (reference 3136 /
            1048576 = 4 / 1024 merged 32-px tokens of Qwen3-VL).
        preset: the reward preset (``reference`` or ``strict``) whose think tag the default
            prompts ask for.
        think_tag: the think tag the default prompts ask for (default: the preset's).
        format_prompt: ``None``: :func:`format_prompt` of each record's problem type, appended
            after a blank line; a string: this text for every record instead ("" = nothing).
        append_options: add the ``options`` list to the question when the question does not
            already contain the first option.
    """

    image_root: Path = Path(".")
    embed_images: bool = False
    min_pixels: int = 3136
    max_pixels: int = 1048576
    preset: str = DEFAULT_PRESET
    think_tag: str | None = None
    format_prompt: str | None = None
    append_options: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(f"need 0 < min_pixels <= max_pixels, got {self.min_pixels}, {self.max_pixels}")
        # ValueError naming the valid presets / a bad tag
        settings_from_kwargs({"preset": self.preset, **({"think_tag": self.think_tag} if self.think_tag else {})})

    @property
    def prompt_think_tag(self) -> str:
        """The think tag the default prompts ask for."""
        return self.think_tag or preset_settings(self.preset).think_tag

    def instruction(self, problem_type: str) -> str:
        """What is appended to a question of ``problem_type``."""
        if self.format_prompt is not None:
            return self.format_prompt
        return format_prompt(problem_type, self.prompt_think_tag)


def _text(record: Mapping, field: str, err) -> str:
    value = record.get(field)
    if not isinstance(value, str) or not value.strip():
        raise err(field, f"must be a non-empty string, got {value!r}")
    return value


def _image_entry(path_value: Any, options: ConvertOptions, err, i: int) -> dict[str, Any]:
    field = f"images[{i}]"
    if not isinstance(path_value, str) or not path_value:
        raise err(field, f"must be an image path, got {path_value!r}")
    path = Path(path_value).expanduser()
    if not path.is_absolute():
        path = options.image_root / path
    if not path.is_file():
        raise err(field, f"image file not found: {path}")
    entry: dict[str, Any] = {"min_pixels": options.min_pixels, "max_pixels": options.max_pixels}
    if options.embed_images:
        entry["bytes"] = path.read_bytes()
    else:
        entry["image"] = os.fspath(path.resolve())
    return entry


def _question(problem: str, opts: list[str], options: ConvertOptions, problem_type: str) -> str:
    text = problem.strip()
    if opts and options.append_options and opts[0].strip() not in text:
        text += "\nOptions:\n" + "\n".join(opts)
    instruction = options.instruction(problem_type)
    if instruction:
        text += "\n\n" + instruction
    return text


def convert_record(record: Any, index: int, split: str, options: ConvertOptions) -> dict[str, Any]:
    """The verl row of ``record`` (see the module docstring); raises :class:`RecordError`."""
    problem_id = record.get("problem_id") if isinstance(record, Mapping) else None

    def err(field: str, message: str) -> RecordError:
        return RecordError(index, problem_id, field, message)

    if not isinstance(record, Mapping):
        raise err("<record>", f"must be a JSON object, got {type(record).__name__}")
    problem = _text(record, "problem", err)
    raw_type = _text(record, "problem_type", err)
    problem_type = canonical_problem_type(raw_type)
    if problem_type is None:
        raise err("problem_type", f"unknown problem type {raw_type!r}; the reward knows {list(PROBLEM_TYPES)}")
    task_type = _text(record, "task_type", err)
    data_source = _text(record, "data_source", err)
    answer = record.get("answer")
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        raise err("answer", "is missing or empty")
    if isinstance(answer, str) and _EMPTY_ANSWER.fullmatch(answer):
        raise err("answer", f"has an empty <answer> block: {answer!r}")
    truth = strip_answer_tags(answer)

    opts = record.get("options") or []
    if not isinstance(opts, list) or not all(isinstance(o, str) for o in opts):
        raise err("options", f"must be a list of strings, got {opts!r}")

    images = record.get("images") or []
    if not isinstance(images, list):
        raise err("images", f"must be a list of paths, got {images!r}")
    placeholders = problem.count(IMAGE_PLACEHOLDER)
    if placeholders != len(images):
        what = "no <image> placeholder" if placeholders == 0 else f"{placeholders} <image> placeholder(s)"
        raise err(
            "problem",
            f"has {what} for {len(images)} image(s); verl puts the i-th image at the i-th "
            f"'{IMAGE_PLACEHOLDER}', so the counts must match",
        )
    image_entries = [_image_entry(p, options, err, i) for i, p in enumerate(images)]

    data_type = record.get("data_type", "image")
    if data_type not in ("image", "text"):
        raise err("data_type", f"only 'image' (or 'text') records are supported, got {data_type!r}")

    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": _question(problem, opts, options, problem_type)}],
        "images": image_entries,
        "ability": task_type,
        "reward_model": {"style": "rule", "ground_truth": truth if isinstance(truth, str) else str(truth)},
        "extra_info": {
            "problem_id": str(problem_id) if problem_id is not None else str(index),
            "problem_type": problem_type,
            "task_type": task_type,
            "options": list(opts),
            "data_type": data_type,
            "index": index,
            "split": split,
        },
    }
