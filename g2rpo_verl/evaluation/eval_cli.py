"""``g2rpo-eval``: evaluate a model or checkpoint per task, compare two evaluations, write hand-off configs.

::

    g2rpo-eval --model M --data FILE [FILE ...] --out O [--n N] [--temperature T] [--top-p P]
               [--max-new-tokens K] [--config RUN.yaml] [--backend auto|hf|vllm]
               [--batch-size B] [--limit L] [--export-dir D] [--seed S] [--overwrite]
    g2rpo-eval --compare O1 O2
    g2rpo-eval --handoff MODEL_DIR --out O

``M`` is an HF model directory or a verl checkpoint (``global_step_N/actor``, ``global_step_N``
or the checkpoint root); a checkpoint is merged with verl's model_merger into ``--export-dir``
(default ``<global_step_N>/hf``, reused while the checkpoint is unchanged). The reward function,
its kwargs, the data settings and the task key come from the run's config: ``--config``, else
the run's ``.hydra/config.yaml`` found next to the checkpoint or the HF export (the demo's
``DIR/hf`` and ``DIR/model`` find ``DIR/hydra``); when none is found it refuses and says so —
``--config defaults`` scores with the project's defaults on purpose. ``--max-new-tokens``
defaults to the run's ``data.max_response_length``. Input errors (a missing file, a parquet
without verl's columns) name the file and the column and stop before ``--out`` is created.
Exit status: 0 done, 1 nothing evaluated, 2 a usage or input error. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

#: ``--max-new-tokens`` when neither the flag nor a run config gives one
DEFAULT_MAX_NEW_TOKENS = 2048
#: ``--config`` value that asks for the project's defaults instead of a run's config
DEFAULTS = "defaults"
#: Columns of verl's RL parquet the evaluation reads (the prompt column is ``data.prompt_key``).
REQUIRED_COLUMNS = ("data_source", "reward_model")


def _parser() -> argparse.ArgumentParser:
    from g2rpo_verl.cli import HelpFormatter, add_version

    p = argparse.ArgumentParser(
        prog="g2rpo-eval",
        description="Evaluate an HF model or a verl checkpoint on verl parquet files, per task, scored by the training reward.\n"
        "Exit status: 0 done, 1 nothing evaluated, 2 a usage or input error.",
        formatter_class=HelpFormatter,
    )
    add_version(p)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--model", help="HF model directory or verl checkpoint (global_step_N[/actor] or the checkpoint root)"
    )
    mode.add_argument(
        "--compare", nargs=2, metavar=("O1", "O2"), help="per-task deltas O2 - O1 of two evaluation directories"
    )
    mode.add_argument(
        "--handoff",
        metavar="MODEL_DIR",
        help="write VLMEvalKit and lmms-eval configs for an HF model directory into --out",
    )
    p.add_argument(
        "--data",
        nargs="+",
        help="verl parquet files (prompt, images, data_source, reward_model.ground_truth, extra_info)",
    )
    p.add_argument("--out", type=Path, help="output directory")
    p.add_argument("--n", type=int, default=1, help="responses per prompt (default 1; > 1 needs --temperature > 0)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (sampled decoding only)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the run's data.max_response_length")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (sampled decoding only)")
    p.add_argument(
        "--config",
        default=None,
        help="the training run's config YAML (its .hydra/config.yaml); default: found next to the model, else an "
        f"error; '{DEFAULTS}' = the project's defaults on purpose",
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "hf", "vllm"),
        help="auto: vLLM when installed and a GPU is visible, else HF",
    )
    p.add_argument("--batch-size", type=int, default=16, help="prompts per generate() call")
    p.add_argument("--limit", type=int, default=None, help="only the first L rows of each file")
    p.add_argument(
        "--export-dir", type=Path, default=None, help="where a checkpoint is merged (default <global_step_N>/hf)"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="discard an earlier evaluation in --out instead of resuming it"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.compare:
            return _compare(args)
        if args.handoff:
            return _handoff(args)
        return _evaluate(args)
    except (FileNotFoundError, ValueError, RuntimeError) as err:  # each names the option or file
        print(f"g2rpo-eval: error: {err}", file=sys.stderr)
        return 2


def _compare(args) -> int:
    from g2rpo_verl.evaluation.paired import compare_dirs
    from g2rpo_verl.evaluation.tables import comparison_table

    a, b = args.compare
    rows = compare_dirs(a, b)
    print(f"{b} minus {a}: mean over paired prompts, 95% paired bootstrap interval (10 000 resamples)")
    print("\n".join(comparison_table(rows, "1", "2")))
    return 0


def _handoff(args) -> int:
    from g2rpo_verl.evaluation.handoff import write_handoff

    if args.out is None:
        raise ValueError("--handoff needs --out")
    for path in write_handoff(args.handoff, args.out).values():
        print(path)
    return 0


def _evaluate(args) -> int:
    from g2rpo_verl.evaluation.checkpoint import export_checkpoint, find_run_config, resolve_model
    from g2rpo_verl.evaluation.eval_loop import EvalSettings, evaluate
    from g2rpo_verl.evaluation.generation import Decoding, select_backend
    from g2rpo_verl.evaluation.prompts import read_rows
    from g2rpo_verl.evaluation.run_config import load_run_config

    if not args.data or args.out is None:
        raise ValueError("--model needs --data FILE... and --out DIR")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")

    data = tuple(str(Path(d).expanduser().resolve()) for d in args.data)
    for d in data:
        read_rows(d)  # missing or non-parquet files fail here, before any model loads
    source = resolve_model(args.model)
    if args.config == DEFAULTS:
        config_path = None
    elif args.config is not None:
        config_path = Path(args.config)
    else:
        config_path = find_run_config(source)
        if config_path is None:
            raise ValueError(
                f"--model {args.model}: no run config found (looked for .hydra/config.yaml and "
                "hydra/.hydra/config.yaml in it and 4 directories up, belonging to the run that wrote it); the "
                "reward kwargs, max_response_length and task key come from it. Pass --config RUN/.hydra/config.yaml, "
                f"or --config {DEFAULTS} to score with the project's defaults"
            )
    run = load_run_config(config_path)
    for d in data:
        _check_columns(d, str(run.data.get("prompt_key") or "prompt"))
    described = run.describe()
    logging.info(
        "g2rpo-eval: reward %s:%s with kwargs %s (from %s)",
        described["path"],
        described["name"],
        described["kwargs"],
        described["source"],
    )
    max_new = args.max_new_tokens or run.data.get("max_response_length") or DEFAULT_MAX_NEW_TOKENS
    decoding = Decoding(
        max_new_tokens=int(max_new), n=args.n, temperature=args.temperature, top_p=args.top_p, seed=args.seed
    )
    select_backend(args.backend)  # vLLM asked for and missing: fail before the export
    if source.kind == "checkpoint":
        target = args.export_dir or source.path.parent / "hf"
        model_dir = export_checkpoint(source.path, target, log=logging.info)
    else:
        model_dir = source.path
    settings = EvalSettings(
        model=str(source.path),
        model_dir=str(model_dir),
        data=data,
        decoding=decoding,
        run=run,
        backend=args.backend,
        batch_size=args.batch_size,
        limit=args.limit,
    )
    metrics = evaluate(settings, args.out, overwrite=args.overwrite, progress=not args.no_progress, log=logging.info)
    print((Path(args.out) / "report.md").read_text())
    return 0 if metrics else 1


def _check_columns(path: str, prompt_key: str) -> None:
    """Raise ``ValueError`` naming ``path`` and the columns it lacks (before anything is written)."""
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    missing = [c for c in (prompt_key, *REQUIRED_COLUMNS) if c not in names]
    if missing:
        raise ValueError(
            f"--data {path}: no column {', '.join(repr(c) for c in missing)} (it has {', '.join(names)}); "
            "g2rpo-eval reads verl's RL parquet (prompt, data_source, reward_model.ground_truth), as "
            "g2rpo-data convert writes it; nothing was written"
        )


if __name__ == "__main__":
    sys.exit(main())
