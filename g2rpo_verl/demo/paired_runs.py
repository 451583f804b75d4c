"""Two demo variants over several seeds, paired per prompt: ``python -m g2rpo_verl.demo.paired_runs``.

::

    python -m g2rpo_verl.demo.paired_runs --a runs/on_s0 runs/on_s1 runs/on_s2 \\
        --b runs/off_s0 runs/off_s1 runs/off_s2 [--names on off] [--stage trained]

The k-th directory of ``--a`` is paired with the k-th of ``--b`` (same seed, so the same
validation prompts); each demo work directory holds its greedy evaluation in
``DIR/eval/<stage>/predictions.jsonl`` (:mod:`g2rpo_verl.demo.base_vs_trained`). The prompts
of all pairs are pooled (a prompt is named by its pair as well as by its file and row) and
the table is :func:`g2rpo_verl.evaluation.paired.compare_records`'s: per task and over all,
the mean of ``b - a`` per prompt with its 95 % paired bootstrap interval.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "pooled_records"]


def pooled_records(dirs: Sequence[Path], stage: str) -> list[dict]:
    """Every prediction record of ``DIR/eval/<stage>`` for each of ``dirs``, its file named by the pair index."""
    from g2rpo_verl.evaluation.predictions import PredictionStore

    out = []
    for k, d in enumerate(dirs):
        path = Path(d) / "eval" / stage / "predictions.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {d} is not a finished demo work directory")
        for record in PredictionStore(path).load():
            out.append({**record, "file": f"pair{k}_{Path(record['file']).name}"})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from g2rpo_verl.evaluation.paired import compare_records
    from g2rpo_verl.evaluation.tables import comparison_table

    p = argparse.ArgumentParser(prog="python -m g2rpo_verl.demo.paired_runs", description=__doc__.split("\n")[0])
    p.add_argument("--a", nargs="+", type=Path, required=True, help="work directories of variant A, one per seed")
    p.add_argument("--b", nargs="+", type=Path, required=True, help="work directories of variant B, same seeds")
    p.add_argument("--names", nargs=2, default=("A", "B"), help="column names of the two variants")
    p.add_argument("--stage", default="trained", choices=("trained", "base"), help="which evaluation to pair")
    args = p.parse_args(argv)
    if len(args.a) != len(args.b):
        p.error(f"--a has {len(args.a)} directories, --b {len(args.b)}: pair them one to one (same seeds)")
    rows = compare_records(pooled_records(args.a, args.stage), pooled_records(args.b, args.stage))
    print(f"{args.names[1]} - {args.names[0]}, greedy, {len(args.a)} pair(s) of runs pooled per prompt:")
    print("\n".join(comparison_table(rows, *args.names)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
