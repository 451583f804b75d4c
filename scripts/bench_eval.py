#!/usr/bin/env python
"""Wall time of ``g2rpo-eval`` on CPU, per 100 prompts, for a few batch sizes side by side.

Runs the evaluation loop (:func:`g2rpo_verl.evaluation.eval_loop.evaluate`: prompts built as
training builds them, HF ``generate``, the run's reward, ``predictions.jsonl``, metrics) on the
given model and parquet files, greedy, once per ``--batch-sizes`` value into fresh output
directories, and prints the seconds per 100 prompts of each (whole invocation: model load,
prompt building, generation, scoring, writing) and the ratio to the largest batch size.

Usage (after ``make demo``, which leaves the model and data in runs/demo):

    python scripts/bench_eval.py --model runs/demo/hf --data runs/demo/data/val_*.parquet \\
        [--config runs/demo/hydra/.hydra/config.yaml] [--batch-sizes 1 8 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from g2rpo_verl.evaluation.eval_loop import EvalSettings, evaluate
from g2rpo_verl.evaluation.generation import Decoding
from g2rpo_verl.evaluation.run_config import load_run_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="HF model directory")
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--config", default=None, help="the run's config YAML (reward, max_response_length)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run = load_run_config(args.config)
    max_new = args.max_new_tokens or int(run.data.get("max_response_length", 32))
    model = str(Path(args.model).resolve())
    data = tuple(str(Path(d).resolve()) for d in args.data)
    print(f"model {model}, {len(data)} files, greedy, max_new_tokens={max_new}, {args.threads} threads")
    timings = {}
    for batch in args.batch_sizes:
        settings = EvalSettings(
            model=model,
            model_dir=model,
            data=data,
            decoding=Decoding(max_new_tokens=max_new),
            run=run,
            backend="hf",
            batch_size=batch,
        )
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = evaluate(settings, out, progress=False, log=lambda _: None)
            wall = time.perf_counter() - start
        prompts = result["overall"]["prompts"]
        timings[batch] = wall / prompts * 100
        print(f"batch {batch:>3}: {prompts} prompts in {wall:6.1f} s = {timings[batch]:6.2f} s per 100 prompts")
    best = timings[max(timings)]
    print("ratio to the largest batch: " + ", ".join(f"batch {b}: {t / best:.1f}x" for b, t in timings.items()))


if __name__ == "__main__":
    main()
