"""Write the demo tasks as verl parquet: one training file, one validation file per task.

verl reports validation per ``data_source`` (``val-core/<data_source>/...``), so each task has
its own data_source and its own validation file; the training file interleaves the tasks row
by row (every training batch of >= 5 prompts holds every task).

Row schema (verl's RL dataset):

* ``data_source``: ``demo_<task>``;
* ``prompt``: ``[{"role": "user", "content": "<image>question..."}]``;
* ``images``: ``[{"bytes": PNG}]`` (verl's dataset turns ``<image>`` into an image part);
* ``ability``: the task type; ``reward_model``: ``{"style": "rule", "ground_truth": answer}``;
* ``extra_info``: ``split, index, problem_type, task_type, options`` (options: the choice list
  for multiple choice, else an empty list; the reward function reads it).

Everything is a pure function of ``seed``: the same seed writes identical files. Train and
validation use disjoint seed streams (and the model's warm start a third one).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from g2rpo_verl.demo.tasks import TASKS, VisualSample, make_sample, png_bytes

__all__ = ["N_VAL_STEP_PER_TASK", "DemoData", "sample_row", "write_demo_data", "find_demo_data", "data_paths"]

_VAL_SEED_OFFSET = 1_000_003


#: Prompts per task of the validation during training: the first ones of each validation file.
#: Validation runs several times a run, the greedy base-vs-trained table once on every prompt.
N_VAL_STEP_PER_TASK = 16


@dataclass(frozen=True)
class DemoData:
    """Paths of a written dataset: ``train``, ``val[data_source]`` (every validation prompt: the
    greedy base-vs-trained table) and ``val_step[data_source]`` (the first
    :data:`N_VAL_STEP_PER_TASK` of them: verl's validation during training)."""

    train: Path
    val: dict[str, Path]
    val_step: dict[str, Path]

    @property
    def val_files(self) -> list[Path]:
        return [self.val[source] for source in TASKS]

    @property
    def val_step_files(self) -> list[Path]:
        return [self.val_step[source] for source in TASKS]


def sample_row(sample: VisualSample, split: str, index: int) -> dict:
    """One verl dataset row of ``sample`` (see the module docstring for the schema)."""
    return {
        "data_source": sample.data_source,
        "prompt": [{"role": "user", "content": sample.question}],
        "images": [{"bytes": png_bytes(sample.image)}],
        "ability": sample.task_type,
        "reward_model": {"style": "rule", "ground_truth": sample.answer},
        "extra_info": {
            "split": split,
            "index": index,
            "problem_type": sample.problem_type,
            "task_type": sample.task_type,
            "options": list(sample.options or []),
        },
    }


def data_paths(out: Path) -> DemoData:
    """Where :func:`write_demo_data` puts the files in ``out`` (they need not exist)."""
    return DemoData(
        train=out / "train.parquet",
        val={s: out / f"val_{s}.parquet" for s in TASKS},
        val_step={s: out / f"val_step_{s}.parquet" for s in TASKS},
    )


def write_demo_data(out_dir: str | os.PathLike, n_train: int, n_val_per_task: int, seed: int = 0) -> DemoData:
    """Write ``train.parquet`` (``n_train`` rows, tasks interleaved) and ``val_<source>.parquet``.

    Each validation file holds ``n_val_per_task`` rows of its task, each ``val_step_<source>``
    file its first ``min(n_val_per_task, N_VAL_STEP_PER_TASK)``. Files are written under a
    temporary name and renamed, so a reader never sees a partial file.
    """
    import pandas as pd

    if n_train < len(TASKS) or n_val_per_task < 1:
        raise ValueError(f"need n_train >= {len(TASKS)} and n_val_per_task >= 1, got {n_train}, {n_val_per_task}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = data_paths(out)
    sources = list(TASKS)

    rng = random.Random(seed)
    train = [sample_row(make_sample(sources[i % len(sources)], rng), "train", i) for i in range(n_train)]
    _write(pd.DataFrame(train), paths.train)
    for k, source in enumerate(sources):
        rng = random.Random((seed + _VAL_SEED_OFFSET) * 31 + k)
        rows = [sample_row(make_sample(source, rng), "val", i) for i in range(n_val_per_task)]
        _write(pd.DataFrame(rows), paths.val[source])
        _write(pd.DataFrame(rows[:N_VAL_STEP_PER_TASK]), paths.val_step[source])
    return paths


def _write(frame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


def find_demo_data(out_dir: str | os.PathLike) -> DemoData | None:
    """The dataset in ``out_dir`` if every file exists, else None."""
    paths = data_paths(Path(out_dir))
    if paths.train.is_file() and all(p.is_file() for p in [*paths.val_files, *paths.val_step_files]):
        return paths
    return None
