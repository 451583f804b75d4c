"""Run the real ``verl.trainer.main_ppo`` on the CPU with a tiny local model and toy data.

Usage::

    python -m g2rpo_verl.demo.smoke --workdir DIR [hydra overrides ...]

1. builds (or reuses) ``DIR/model`` (tiny Qwen2 + tokenizer, :mod:`g2rpo_verl.demo.fixtures.tiny`) and
   ``DIR/data/{train,val}.parquet`` (toy tasks);
2. runs ``python -m verl.trainer.main_ppo`` as a subprocess with :data:`g2rpo_verl.cpu.CPU_ENV`,
   :func:`g2rpo_verl.cpu.cpu_overrides`, the smoke defaults of :func:`smoke_overrides`, and
   finally the user's overrides (which win: an override of the same key replaces ours), e.g.
   ``algorithm.adv_estimator=gs_grpo trainer.total_training_steps=5``;
3. streams the trainer's output to stdout and ``DIR/smoke.log``; metrics also go to
   ``DIR/metrics.jsonl`` (verl's ``file`` logger); exits with the trainer's exit code.

Nothing is downloaded. Two training steps take about a minute on an idle 2-core machine, most
of it process start-up.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from g2rpo_verl.cpu.env import CPU_ENV, cpu_overrides
from g2rpo_verl.demo.fixtures.tiny import build_tiny_qwen2, dataset_paths, is_model_dir, write_toy_dataset

__all__ = ["main", "prepare_workdir", "smoke_overrides", "merge_overrides", "trainer_command"]

#: Response budget of the smoke run; the toy prompts are at most ~60 tokens of the tiny BPE.
MAX_PROMPT_LENGTH = 128
MAX_RESPONSE_LENGTH = 16


def prepare_workdir(
    workdir: Path, seed: int = 0, n_train: int = 64, n_val: int = 16, rebuild: bool = False
) -> tuple[Path, Path, Path]:
    """Build or reuse ``workdir/model`` and ``workdir/data``; return ``(model_dir, train, val)``."""
    model_dir = workdir / "model"
    data_dir = workdir / "data"
    if rebuild or not is_model_dir(model_dir):
        build_tiny_qwen2(model_dir, seed=seed, overwrite=True)
    paths = None if rebuild else dataset_paths(data_dir)
    if paths is None:
        paths = write_toy_dataset(data_dir, n_train=n_train, n_val=n_val, seed=seed)
    return model_dir, paths[0], paths[1]


def smoke_overrides(workdir: Path, model_dir: Path, train: Path, val: Path) -> list[str]:
    """Model, data, sizes and bookkeeping of a smoke run (tiny everything, console+file logs)."""
    return [
        "algorithm.adv_estimator=grpo",
        f"data.train_files={train}",
        f"data.val_files={val}",
        "data.train_batch_size=4",
        f"data.max_prompt_length={MAX_PROMPT_LENGTH}",
        f"data.max_response_length={MAX_RESPONSE_LENGTH}",
        f"actor_rollout_ref.model.path={model_dir}",
        # Recomputing activations buys nothing for a 100k-parameter model.
        "actor_rollout_ref.model.enable_gradient_checkpointing=False",
        # verl's default 1e-6 barely moves a tiny model; 1e-4 makes step 2 roll out with
        # visibly updated weights, so the rollout/trainer log-prob check covers a real sync.
        "actor_rollout_ref.actor.optim.lr=1e-4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.rollout.n=2",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8",
        # the critic (only built for critic-based estimators, e.g. gae): the same tiny model
        f"critic.model.path={model_dir}",
        "critic.model.enable_gradient_checkpointing=False",
        "critic.optim.lr=1e-4",
        "critic.ppo_micro_batch_size_per_gpu=4",
        "reward.custom_reward_function.path=pkg://g2rpo_verl.demo.fixtures.toy_reward",
        "reward.custom_reward_function.name=compute_score",
        "trainer.logger=[console,file]",
        "trainer.project_name=g2rpo_cpu_smoke",
        "trainer.experiment_name=smoke",
        "trainer.total_training_steps=2",
        "trainer.val_before_train=False",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        f"trainer.default_local_dir={workdir / 'checkpoints'}",
        f"hydra.run.dir={workdir / 'hydra'}",
    ]


def _override_key(override: str) -> str:
    """``'++a.b=1'`` -> ``'a.b'``; ``'~a.b'`` -> ``'a.b'``."""
    return override.split("=", 1)[0].lstrip("+~").strip()


def merge_overrides(base: Sequence[str], extra: Sequence[str]) -> list[str]:
    """``base`` then ``extra``, dropping the ``base`` entries of keys ``extra`` sets, but one.

    Kept: our ``++key=...`` when the user's is a plain ``key=value``: Hydra applies overrides in
    order, so theirs wins, and ours puts the key into the config, so the plain form works for a
    key verl's config lacks (every ``g2rpo.*`` key). Otherwise ours is removed (a repeated
    ``+key`` / ``++key`` is an error), keeping the user's form authoritative.
    """
    prefixed = {_override_key(o) for o in extra if o[:1] in "+~"}
    plain = {_override_key(o) for o in extra if o[:1] not in "+~"}

    def kept(o: str) -> bool:
        key = _override_key(o)
        return key not in prefixed and (key not in plain or o.startswith("++"))

    return [o for o in base if kept(o)] + list(extra)


def trainer_command(overrides: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "verl.trainer.main_ppo", *overrides]


def trainer_env(workdir: Path) -> dict[str, str]:
    """This process's environment plus :data:`CPU_ENV` and the metrics-file location."""
    env = dict(os.environ)
    env.update(CPU_ENV)
    env.setdefault("VERL_FILE_LOGGER_PATH", str(workdir / "metrics.jsonl"))
    # A RAY_ADDRESS would attach the run to some other cluster; the smoke wants its own.
    env.pop("RAY_ADDRESS", None)
    return env


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m g2rpo_verl.demo.smoke",
        description="Run verl.trainer.main_ppo on the CPU with a tiny local model and toy data.",
    )
    parser.add_argument("--workdir", required=True, type=Path, help="where model, data, logs and checkpoints go")
    parser.add_argument("--seed", type=int, default=0, help="seed of model, tokenizer and dataset (when built)")
    parser.add_argument("--n-train", type=int, default=64, help="toy training prompts")
    parser.add_argument("--n-val", type=int, default=16, help="toy validation prompts")
    parser.add_argument("--rebuild", action="store_true", help="rebuild model and data even if present")
    parser.add_argument("--dry-run", action="store_true", help="print the trainer command instead of running it")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for verl.trainer.main_ppo (win over ours)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    workdir = args.workdir.expanduser().resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir, train, val = prepare_workdir(workdir, args.seed, args.n_train, args.n_val, args.rebuild)
    overrides = merge_overrides(cpu_overrides() + smoke_overrides(workdir, model_dir, train, val), args.overrides)
    cmd = trainer_command(overrides)
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    from g2rpo_verl.demo.trainer_process import run_trainer

    try:  # the trainer's output goes to the console and to smoke.log
        return run_trainer(cmd, trainer_env(workdir), workdir, workdir / "smoke.log", 0, verbose=True).returncode
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
