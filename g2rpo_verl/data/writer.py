"""Train / validation split per task, and atomic parquet output.

Guarantees: either every output file of a conversion is written completely, or none is
replaced — each file is written to a temporary name in the output directory first, and all
are renamed into place (``os.replace``, atomic on one filesystem) only after every one was
written. A failed or interrupted run leaves no ``*.parquet`` it did not finish.
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["split_per_task", "task_file_name", "write_outputs"]


def task_file_name(task: str) -> str:
    """``val_<task>.parquet`` with the task made file-name safe (``spatial grounding`` -> ``spatial_grounding``)."""
    return "val_" + (re.sub(r"[^0-9A-Za-z_.-]+", "_", task).strip("_") or "empty") + ".parquet"


def split_per_task(
    rows: Sequence[dict[str, Any]], task_of, fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Hold out ``round(fraction · n_task)`` rows of each task (at least 1 when fraction > 0
    and the task has >= 2 rows), chosen with ``seed``; order within each split is kept."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"--val-fraction must be in [0, 1), got {fraction}")
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_task[task_of(row)].append(i)
    rng = random.Random(seed)
    held: set[int] = set()
    for task in sorted(by_task):
        idx = by_task[task]
        k = round(fraction * len(idx))
        if fraction > 0 and k == 0 and len(idx) >= 2:
            k = 1
        held.update(rng.sample(idx, k))
    train = [r for i, r in enumerate(rows) if i not in held]
    val = [r for i, r in enumerate(rows) if i in held]
    return train, val


def _write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    import pandas as pd

    pd.DataFrame(rows).to_parquet(path, index=False)


def write_outputs(out_dir: Path, files: dict[str, list[dict[str, Any]]], manifest: dict[str, Any]) -> list[Path]:
    """Write ``{file name: rows}`` and ``manifest.json`` into ``out_dir`` atomically (see module doc)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for name, rows in files.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out_dir)
            os.close(fd)
            staged.append((Path(tmp), out_dir / name))
            _write_parquet(rows, Path(tmp))
        fd, tmp = tempfile.mkstemp(prefix=".manifest.json.", suffix=".tmp", dir=out_dir)
        staged.append((Path(tmp), out_dir / "manifest.json"))
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in staged:
        os.replace(tmp, final)
    return [final for _, final in staged]
