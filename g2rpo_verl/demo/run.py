"""``g2rpo-train`` / ``python -m g2rpo_verl.demo``: the embedded default, end to end.

::

    g2rpo-train [--workdir runs/demo] [--seed 0] [--verbose] [hydra overrides ...]

0. composes the run's verl config and runs the plugin's checks
   (:func:`g2rpo_verl.verl_hooks.checks.validate_run_config`) — a typo in an override stops
   here, in seconds, before anything is built or started;
1. builds (once per work directory) the tiny Qwen3-VL (:mod:`g2rpo_verl.demo.model`) and the
   six-task visual dataset (:mod:`g2rpo_verl.demo.data`);
2. runs the real ``python -m verl.trainer.main_ppo`` (Ray, TransferQueue, FSDP2 on gloo, the
   hf rollout, reward workers, per-task validation) with the CPU backend's overrides,
   ``configs/demo_cpu.yaml`` and the user's overrides (which win), showing a progress bar;
3. merges the run's metrics into ``DIR/metrics.jsonl`` and draws ``DIR/plots/*.png``;
4. exports the trained policy to ``DIR/hf`` and prints a greedy base-vs-trained table
   (:mod:`g2rpo_verl.demo.base_vs_trained`).

Re-running the same command continues from verl's last checkpoint in ``DIR/checkpoints``
(``trainer.resume_mode=auto``); the metrics of every run are merged per step. A run that has
reached ``trainer.total_training_steps`` is not started again (the command only redraws the
plots); ``--rebuild`` starts over. Everything the run writes stays under the work directory::

    DIR/model/          tokenizer, processor, weights (the warm-started starting point)
    DIR/data/           train.parquet, val_<task>.parquet
    DIR/logs/           demo.log (this command), trainer_<k>.log, metrics_<k>.jsonl (per run)
    DIR/metrics.jsonl   every step's metrics, all runs merged
    DIR/rollouts/       one JSONL of generations per training step (verl's rollout dump)
    DIR/checkpoints/    verl checkpoints (+ the length-shaping state)
    DIR/plots/          training_curves.png, advantages.png
    DIR/hf/             the trained policy as an HF model (verl's model_merger), then
    DIR/eval/           base vs trained, greedy, on the validation files (base_vs_trained.md)
    DIR/handoff/        VLMEvalKit / lmms-eval configs for DIR/hf
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "prepare", "trainer_environment", "wandb_configured"]

logger = logging.getLogger("g2rpo_verl.demo")

#: Data sizes: plenty of training prompts (a 40-step run uses 400), 32 validation prompts per task.
N_TRAIN = 2000
N_VAL_PER_TASK = 32


def _setup_logging(log_path: Path) -> None:
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    logger.propagate = False
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    file = logging.FileHandler(log_path, encoding="utf-8")
    file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(console)
    logger.addHandler(file)


def prepare(workdir: Path, seed: int, rebuild: bool = False, warm_start_steps: int | None = None):
    """Build or reuse ``workdir/model`` and ``workdir/data``; returns ``(model_dir, DemoData)``."""
    from g2rpo_verl.demo.data import find_demo_data, write_demo_data
    from g2rpo_verl.demo.model import WARM_START_STEPS, build_demo_model

    model_dir = workdir / "model"
    start = time.monotonic()
    steps = WARM_START_STEPS if warm_start_steps is None else warm_start_steps
    build_demo_model(model_dir, seed=seed, warm_start_steps=steps, overwrite=rebuild, log=logger.info)
    data = None if rebuild else find_demo_data(workdir / "data")
    if data is None:
        data = write_demo_data(workdir / "data", n_train=N_TRAIN, n_val_per_task=N_VAL_PER_TASK, seed=seed)
    logger.info("model and data ready in %s (%.0f s)", workdir, time.monotonic() - start)
    return model_dir, data


def check_run_config(overrides: Sequence[str]):
    """Compose the verl config of ``overrides`` and validate it; returns ``(config, g2rpo section)``.

    Raises :class:`~g2rpo_verl.verl_hooks.checks.G2RPOConfigError` (or Hydra's error for an
    override that does not parse). verl's import-time warnings are kept off the console.
    """
    import contextlib
    import io
    import warnings

    from g2rpo_verl.demo.overrides import compose_config
    from g2rpo_verl.verl_hooks.checks import validate_run_config

    config = compose_config(overrides)
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        return config, validate_run_config(config)


def wandb_configured(env: dict[str, str] | None = None) -> bool:
    """True when the user has W&B set up: ``WANDB_API_KEY`` or a stored ``wandb login``.

    Only credentials *presence* is checked (nothing is contacted); ``WANDB_MODE=disabled``
    wins.
    """
    env = dict(os.environ) if env is None else env
    if env.get("WANDB_MODE", "").lower() == "disabled":
        return False
    if env.get("WANDB_API_KEY"):
        return True
    netrc = Path(env.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def trainer_environment(workdir: Path, metrics_path: Path, use_wandb: bool) -> dict[str, str]:
    """This process's environment + the CPU backend's + the metrics file; W&B left on if used."""
    from g2rpo_verl.demo.smoke import trainer_env

    env = trainer_env(workdir)
    env["VERL_FILE_LOGGER_PATH"] = str(metrics_path)
    if use_wandb:
        # CPU_ENV disables W&B for smoke runs; the demo keeps the user's own setting.
        if "WANDB_MODE" in os.environ:
            env["WANDB_MODE"] = os.environ["WANDB_MODE"]
        else:
            env.pop("WANDB_MODE", None)
    return env


def _next_run_index(logs: Path) -> int:
    existing = [int(p.stem.split("_")[-1]) for p in logs.glob("metrics_*.jsonl") if p.stem.split("_")[-1].isdigit()]
    return max(existing, default=0) + 1


def _parser() -> argparse.ArgumentParser:
    from g2rpo_verl.cli import HelpFormatter, add_version

    parser = argparse.ArgumentParser(
        prog="g2rpo-train",
        description=(
            "G²RPO end to end on CPU: a tiny local Qwen3-VL, generated visual tasks, the real "
            "verl.trainer.main_ppo, per-task validation and plots. Extra arguments are Hydra "
            "overrides for verl (they win over configs/demo_cpu.yaml).\n"
            "Re-running the same command resumes from the last checkpoint in WORKDIR/checkpoints "
            "(a finished run only redraws its plots); --rebuild starts over.\n"
            "Exit status: 0 done, 1 the trainer failed, 2 a usage or config error (nothing built or "
            "started), 130 interrupted (run again to resume)."
        ),
        formatter_class=HelpFormatter,
    )
    add_version(parser)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("runs/demo"),
        help="everything goes here, and a rerun resumes from here (default runs/demo)",
    )
    parser.add_argument("--config", type=Path, default=None, help="demo config YAML (default configs/demo_cpu.yaml)")
    parser.add_argument("--seed", type=int, default=0, help="seed of model, warm start and data (when built)")
    parser.add_argument("--warm-start-steps", type=int, default=None, help="supervised warm-start steps (when built)")
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="start over: rebuild model and data, delete earlier checkpoints, logs, metrics, plots",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show the trainer's raw output instead of a progress bar"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--no-eval",
        action="store_true",
        help="skip step 4: the export to DIR/hf and the greedy base-vs-trained table (g2rpo-compare's runs)",
    )
    parser.add_argument("--dry-run", action="store_true", help="build model and data, print the trainer command, stop")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for verl.trainer.main_ppo")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from g2rpo_verl.demo.data import data_paths
    from g2rpo_verl.demo.overrides import DEFAULT_CONFIG, demo_overrides
    from g2rpo_verl.demo.run_metrics import merge_run_metrics
    from g2rpo_verl.demo.smoke import trainer_command
    from g2rpo_verl.demo.trainer_process import run_trainer

    # intermixed: flags may come after Hydra overrides (`make demo ARGS="x=1 --verbose"`)
    args = _parser().parse_intermixed_args(argv)
    started = time.monotonic()
    workdir = args.workdir.expanduser().resolve()
    logs = workdir / "logs"
    if args.rebuild:
        _clear_run_outputs(workdir)
    logs.mkdir(parents=True, exist_ok=True)
    _setup_logging(logs / "demo.log")

    use_wandb = wandb_configured()
    extra = ["++trainer.logger=[console,file,wandb]"] if use_wandb else []
    model_dir, data_dir = workdir / "model", workdir / "data"
    overrides = demo_overrides(
        workdir, model_dir, data_paths(data_dir), args.overrides, args.config or DEFAULT_CONFIG, extra
    )
    try:
        config, g2rpo = check_run_config(overrides)
    except Exception as err:  # G2RPOConfigError, or Hydra's for an override that does not parse
        logger.error("%s", err)
        logger.error("nothing was built or started; fix the override(s) and run the command again")
        return 2
    from g2rpo_verl.verl_hooks.checks import data_files

    # files the demo does not build itself (a data.train_files / val_files override) must exist now
    absent = [
        f"{key}: {path} does not exist (fix the path, or drop the override to use the demo's own data)"
        for key, path in data_files(config)
        if not Path(path).is_file() and data_dir.resolve() not in Path(path).resolve().parents
    ]
    if absent:
        for line in absent:
            logger.error("%s", line)
        logger.error("nothing was built or started; fix the override(s) and run the command again")
        return 2
    model_dir, data = prepare(workdir, args.seed, args.rebuild, args.warm_start_steps)
    cmd = trainer_command(overrides)
    if args.dry_run:
        print(" ".join(cmd))
        return 0

    total_steps = int(config.trainer.total_training_steps or 0)
    estimator = str(config.algorithm.adv_estimator)
    done = last_checkpoint_step(workdir / "checkpoints")
    resuming = config.trainer.resume_mode == "auto"
    if resuming and done is not None and done >= total_steps:
        # verl would only re-run validation (sampled: a second, noisier reading of the same weights)
        logger.info(
            "already trained to step %d (%s); nothing to train. Raise trainer.total_training_steps to "
            "continue, or pass --rebuild to start over.",
            done,
            workdir / "checkpoints",
        )
        return _finish(workdir, logs, g2rpo, estimator, started, plots=not args.no_plots, evaluate=not args.no_eval)

    run_index = _next_run_index(logs)
    metrics_path = logs / f"metrics_{run_index}.jsonl"
    log_path = logs / f"trainer_{run_index}.log"
    logger.info(
        "training: verl.trainer.main_ppo, adv_estimator=%s, %d steps%s; trainer output -> %s",
        estimator,
        total_steps,
        ", W&B on" if use_wandb else "",
        log_path,
    )
    try:
        run = run_trainer(
            cmd,
            trainer_environment(workdir, metrics_path, use_wandb),
            workdir,
            log_path,
            total_steps,
            verbose=args.verbose,
        )
    except KeyboardInterrupt:
        merge_run_metrics(sorted(logs.glob("metrics_*.jsonl")), workdir / "metrics.jsonl")
        saved = last_checkpoint_step(workdir / "checkpoints")
        where = "from the start (no checkpoint yet)" if saved is None else f"from step {saved}"
        logger.warning("interrupted; run the same command again to continue %s", where)
        return 130
    if run.returncode != 0:
        merge_run_metrics(sorted(logs.glob("metrics_*.jsonl")), workdir / "metrics.jsonl")
        if run.error:
            logger.error("the trainer failed (exit code %d) with:\n%s", run.returncode, "\n".join(run.error))
        else:
            logger.error("the trainer failed (exit code %d); its last lines:\n%s", run.returncode, "\n".join(run.tail))
        logger.error("full output: %s", log_path)
        return run.returncode or 1
    return _finish(workdir, logs, g2rpo, estimator, started, plots=not args.no_plots, evaluate=not args.no_eval)


def _finish(
    workdir: Path, logs: Path, g2rpo, estimator: str, started: float, plots: bool = True, evaluate: bool = True
) -> int:
    """Merge every run's metrics, draw the plots, print the validation and shaping summaries.

    ``g2rpo`` is the run's validated :class:`~g2rpo_verl.config.G2RPOConfig` (the entropy band
    drawn on the plots when the metrics carry none is its default band).
    """
    from g2rpo_verl.demo.run_metrics import merge_run_metrics, replay_bands, shaping_summary, validation_summary

    merged = merge_run_metrics(sorted(logs.glob("metrics_*.jsonl")), workdir / "metrics.jsonl")
    if not g2rpo.entropy.enable:
        # shaping off: judge (and draw) each task against the band the configured rule would
        # have set from the run's own entropies, so on and off runs compare on the same band
        merged = replay_bands(merged, g2rpo.entropy)
        logger.info("entropy shaping off: 'in band' below is the band g2rpo.entropy's rule would have set")
    if plots:
        from g2rpo_verl.demo.plots import draw_all

        band = g2rpo.entropy.band() if g2rpo.entropy.band_rule == "fixed" else None
        for path in draw_all(workdir, merged, logger=logger, entropy_band=band, estimator=estimator):
            logger.info("plot: %s", path)
    for line in validation_summary(merged) + shaping_summary(merged):
        logger.info(line)
    if evaluate:
        from g2rpo_verl.demo.base_vs_trained import export_and_evaluate

        for line in export_and_evaluate(workdir, log=logger.info):
            logger.info(line)
    logger.info("done in %.0f s (metrics: %s)", time.monotonic() - started, workdir / "metrics.jsonl")
    return 0


def last_checkpoint_step(checkpoints: Path) -> int | None:
    """The step of verl's latest checkpoint in ``checkpoints`` (its tracker file), else None.

    The file name is verl's ``get_checkpoint_tracker_filename`` (:data:`g2rpo_verl.verl_compat.api.TRACKER_FILE`).
    """
    from g2rpo_verl.verl_compat.api import TRACKER_FILE

    try:
        return int((checkpoints / TRACKER_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def _clear_run_outputs(workdir: Path) -> None:
    """``--rebuild``: forget earlier runs (checkpoints of the old model must not be resumed)."""
    for name in ("checkpoints", "rollouts", "plots", "logs"):
        shutil.rmtree(workdir / name, ignore_errors=True)
    (workdir / "metrics.jsonl").unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
