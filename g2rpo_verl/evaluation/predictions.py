"""The values an evaluation passes around, and ``predictions.jsonl``: appended per batch, resumable.

One line of ``predictions.jsonl`` is one response (``n`` lines per prompt)::

    {"key": "val_demo_ocr.parquet:3#0",   # file name : row # sample -- unique, the resume key
     "file": "/abs/val_demo_ocr.parquet", "row": 3, "sample": 0,
     "id": 3,                              # extra_info["index"] when the row has one, else row
     "data_source": "demo_ocr", "task": "OCR",
     "prompt": [{"role": "user", "content": "<image>Read the word ..."}],
     "response": "<think>...</think><answer>cat</answer>",
     "response_tokens": 12, "finish_reason": "stop",     # "length": cut at max_new_tokens
     "ground_truth": "cat", "extra_info": {...},
     "reward": {"score": 1.5, "accuracy": 1.0, "format": 1.0, "structure": 0.5, ...}}

``reward`` holds every key the reward function returned (a bare number becomes
``{"score": x}``). Guarantees of :class:`PredictionStore`: a batch is appended with one
``write`` followed by ``fsync``; a line cut short by a crash is dropped (and the file truncated
to its last complete line) when the store is opened again, so readers never see half a record
and a rerun regenerates exactly the missing responses.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EvalPrompt", "Prediction", "PredictionStore", "group_by", "json_safe", "prediction_key"]


def prediction_key(file: str | os.PathLike, row: int, sample: int) -> str:
    """``<file name>:<row>#<sample>``: one response's identity across reruns."""
    return f"{Path(file).name}:{row}#{sample}"


@dataclass
class EvalPrompt:
    """One dataset row, ready to generate from.

    Attributes:
        file, row: where it came from (row = position in the file, 0-based).
        id: ``extra_info["index"]`` when present, else ``row``.
        prompt: the row's chat ``prompt`` as stored (``<image>`` placeholders kept).
        prompt_ids: token ids of the chat-formatted prompt, image placeholders expanded, shape (P,).
        images: the row's images (PIL, RGB), in placeholder order; empty for text-only rows.
        columns: the row's scalar top-level columns (``data_source``, ``ability``, ...), where
            the task key is looked up first, as in training.
    """

    file: str
    row: int
    id: Any
    data_source: str
    prompt: Any
    prompt_ids: list[int]
    images: list[Any]
    ground_truth: Any
    extra_info: dict[str, Any]
    columns: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prediction:
    """One scored response; :meth:`to_json` is a line of ``predictions.jsonl`` (module docstring)."""

    file: str
    row: int
    sample: int
    id: Any
    data_source: str
    task: str
    prompt: Any
    response: str
    response_tokens: int
    finish_reason: str
    ground_truth: Any
    extra_info: dict[str, Any]
    reward: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return prediction_key(self.file, self.row, self.sample)

    def to_json(self) -> dict[str, Any]:
        return json_safe(
            {
                "key": self.key,
                "file": self.file,
                "row": self.row,
                "sample": self.sample,
                "id": self.id,
                "data_source": self.data_source,
                "task": self.task,
                "prompt": self.prompt,
                "response": self.response,
                "response_tokens": self.response_tokens,
                "finish_reason": self.finish_reason,
                "ground_truth": self.ground_truth,
                "extra_info": self.extra_info,
                "reward": self.reward,
            }
        )


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, tuples and non-finite floats made JSON-safe (NaN -> None)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if hasattr(value, "tolist") and not isinstance(value, (str, int, float, bool)):
        return json_safe(value.tolist())  # numpy arrays and scalars
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class PredictionStore:
    """``predictions.jsonl`` of one evaluation (see the module docstring for the guarantees)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def load(self) -> list[dict[str, Any]]:
        """Every complete record; a trailing partial line is cut off the file first.

        Raises ``ValueError`` naming the line for a complete line that is not a JSON object
        (the file was edited by hand or belongs to something else).
        """
        if not self.path.is_file():
            return []
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a crash mid-write left a partial last line
            with self.path.open("r+b") as f:
                f.truncate(end)
        records = []
        for number, line in enumerate(data[:end].decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{self.path}:{number}: not a JSON line ({err}); move the file away to start over"
                ) from None
            if not isinstance(record, dict) or "key" not in record:
                raise ValueError(f"{self.path}:{number}: not a prediction record (no 'key')")
            records.append(record)
        return records

    def done_keys(self) -> set[str]:
        return {r["key"] for r in self.load()}

    def append(self, predictions: Iterable[Prediction | Mapping[str, Any]]) -> int:
        """Append one batch atomically (one write + fsync); returns the number of records."""
        lines = []
        for p in predictions:
            record = p.to_json() if isinstance(p, Prediction) else json_safe(dict(p))
            lines.append(json.dumps(record, ensure_ascii=False, sort_keys=False))
        if not lines:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = ("\n".join(lines) + "\n").encode("utf-8")
        with self.path.open("ab") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        return len(lines)


def group_by(records: Sequence[Mapping[str, Any]], key: str) -> dict[str, list[Mapping[str, Any]]]:
    """``records`` split by ``record[key]`` (insertion order of first appearance)."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        out.setdefault(str(r[key]), []).append(r)
    return out
