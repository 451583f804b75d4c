"""``g2rpo-compare``: the same demo run per (estimator or arm, seed), then one report.

::

    g2rpo-compare --estimators grpo gs_grpo ema_grpo --seeds 0 1 2 --workdir W [hydra overrides ...]
    g2rpo-compare --arm shaped="g2rpo.length.enable=true" --arm plain="g2rpo.length.enable=false" ...

Each estimator ``E`` is the arm ``E`` with the override ``algorithm.adv_estimator=E``; each
``--arm NAME=OVERRIDES`` adds an arm with those (space-separated) Hydra overrides. Overrides
after the options apply to every arm (e.g. ``trainer.total_training_steps=20``). The first arm
is the baseline of the paired differences.

Run ``(arm, seed)`` is ``g2rpo-train --workdir W/<arm>_seed<s> --seed s --no-plots [common]
[arm] data.seed=s actor_rollout_ref.rollout.seed=s``: the seed sets the model's initialisation
and warm start, the generated data, the data order and every rollout's sampling seed. All arms
of one seed start from the same model and data (built once in ``W/_base_seed<s>`` and copied),
so their differences are paired. A run that reached its last step is skipped; an interrupted
one resumes from its checkpoint. Then ``W/summary.json``, ``W/report.md`` and ``W/plots/`` are
written (:mod:`g2rpo_verl.compare.comparison_report`).

``--profile NAME`` (:mod:`g2rpo_verl.compare.profiles`) adds a profile's overrides before the
command line's and its seeds unless ``--seeds`` is given; ``cheap`` is the grid's.

``--only RUN`` (repeatable) runs just those runs (e.g. one per shared-machine lock), and
``--report-only`` writes the report from whatever runs exist.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from g2rpo_verl.compare.comparison_report import Arm, run_dir_name, summarize, write_report
from g2rpo_verl.compare.profiles import PROFILES

__all__ = ["main", "parse_arms", "run_command", "total_steps", "arm_problems"]

_RUN_RECORD = "compare_run.json"


def parse_arms(estimators: Sequence[str], arm_specs: Sequence[str]) -> list[Arm]:
    """Estimator arms, then ``NAME=OVERRIDES`` arms; names must be unique path-safe words."""
    arms = [Arm(e, (f"algorithm.adv_estimator={e}",)) for e in estimators]
    for spec in arm_specs:
        name, sep, rest = spec.partition("=")
        if not sep or not name:
            raise ValueError(f"--arm {spec!r}: expected NAME=OVERRIDES, e.g. --arm nolen='g2rpo.length.enable=false'")
        arms.append(Arm(name, tuple(shlex.split(rest))))
    names = [a.name for a in arms]
    for name in names:
        if not name.replace("-", "_").replace(".", "_").isidentifier():
            raise ValueError(f"arm name {name!r} must be a word (letters, digits, _ . -): it names a directory")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"arm names must be unique, got {duplicates} more than once")
    if not arms:
        raise ValueError("nothing to compare: give --estimators and/or --arm")
    return arms


def run_command(run_dir: Path, seed: int, common: Sequence[str], arm: Arm, config: Path | None = None) -> list[str]:
    """The ``g2rpo-train`` command of one run (see the module docstring)."""
    # the report reads the runs' validation metrics only: no export and greedy table per run
    cmd = [
        sys.executable,
        "-m",
        "g2rpo_verl.demo",
        "--workdir",
        str(run_dir),
        "--seed",
        str(seed),
        "--no-plots",
        "--no-eval",
    ]
    if config is not None:
        cmd += ["--config", str(config)]
    return cmd + [*common, *arm.overrides, f"data.seed={seed}", f"actor_rollout_ref.rollout.seed={seed}"]


def total_steps(overrides: Sequence[str], config: Path | None = None) -> int:
    """``trainer.total_training_steps`` the runs will use (overrides over the demo YAML)."""
    from g2rpo_verl.demo.overrides import DEFAULT_CONFIG, flatten, load_config, override_value

    base = flatten(load_config(config or DEFAULT_CONFIG))
    return int(float(override_value([*base, *overrides], "trainer.total_training_steps", "0") or 0))


def arm_problems(workdir: Path, arms: Sequence[Arm], common: Sequence[str], config: Path | None = None) -> list[str]:
    """Every arm's run config composed and checked as ``g2rpo-train`` will, before anything is built.

    One message per arm that does not compose (an override Hydra rejects) or fails the plugin's
    checks (:func:`g2rpo_verl.verl_hooks.checks.validate_run_config`), naming the arm.
    """
    from g2rpo_verl.demo.data import data_paths
    from g2rpo_verl.demo.overrides import DEFAULT_CONFIG, demo_overrides
    from g2rpo_verl.demo.run import check_run_config

    problems = []
    for arm in arms:
        run_dir = workdir / run_dir_name(arm.name, 0)
        user = [*common, *arm.overrides]
        try:
            overrides = demo_overrides(
                run_dir, run_dir / "model", data_paths(run_dir / "data"), user, config or DEFAULT_CONFIG
            )
            check_run_config(overrides)
        except Exception as err:  # G2RPOConfigError, Hydra's errors, a missing --config
            text = " ".join(str(err).split())
            problems.append(f"arm {arm.name} ({shlex.join(user) or 'no overrides'}): {text}")
    return problems


def _finished(run_dir: Path, steps: int) -> bool:
    from g2rpo_verl.demo.run import last_checkpoint_step

    done = last_checkpoint_step(run_dir / "checkpoints")
    return done is not None and done >= steps and (run_dir / "metrics.jsonl").is_file()


def _prepare_base(workdir: Path, seed: int, config: Path | None, warm_start_steps: int | None) -> Path:
    """Build (once) the model and data every arm of ``seed`` starts from, in ``W/_base_seed<s>``."""
    base = workdir / f"_base_seed{seed}"
    if (base / "model").is_dir() and (base / "data").is_dir() and (base / ".ready").is_file():
        return base
    cmd = [sys.executable, "-m", "g2rpo_verl.demo", "--workdir", str(base), "--seed", str(seed), "--dry-run"]
    if config is not None:
        cmd += ["--config", str(config)]
    if warm_start_steps is not None:
        cmd += ["--warm-start-steps", str(warm_start_steps)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"building the seed-{seed} model and data failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    (base / ".ready").write_text("model and data complete\n")
    return base


def _seed_run_dir(run_dir: Path, base: Path) -> None:
    for name in ("model", "data"):
        if not (run_dir / name).exists():
            shutil.copytree(base / name, run_dir / name)


def _wall_times(workdir: Path, names: Sequence[str]) -> dict[str, float]:
    out = {}
    for name in names:
        try:
            out[name] = float(json.loads((workdir / name / _RUN_RECORD).read_text())["wall_s"])
        except (OSError, ValueError, KeyError):
            continue
    return out


def _parser() -> argparse.ArgumentParser:
    from g2rpo_verl.cli import HelpFormatter, add_version

    p = argparse.ArgumentParser(
        prog="g2rpo-compare",
        description="Run the demo once per (estimator or arm, seed) and report per-task results with 95 % intervals.\n"
        "Every arm is composed and checked first. Exit status: 0 done, 1 a run failed, 2 a usage or config error.",
        formatter_class=HelpFormatter,
    )
    add_version(p)
    p.add_argument("--estimators", nargs="*", default=[], help="estimators to compare (algorithm.adv_estimator values)")
    p.add_argument(
        "--arm",
        action="append",
        default=[],
        metavar="NAME=OVERRIDES",
        help="an arm defined by Hydra overrides (repeatable), e.g. nolen='g2rpo.length.enable=false'",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds (default 0 1 2, or the profile's)")
    p.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default=None,
        help="a comparison profile: its overrides and seeds (g2rpo_verl/compare/profiles.py)",
    )
    p.add_argument(
        "--workdir", type=Path, required=True, help="runs go to WORKDIR/<arm>_seed<s>/, the report to WORKDIR"
    )
    p.add_argument("--config", type=Path, default=None, help="demo config YAML (default configs/demo_cpu.yaml)")
    p.add_argument(
        "--warm-start-steps", type=int, default=None, help="supervised warm-start steps of each seed's model"
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="RUN",
        help="run only this run (e.g. gs_grpo_seed0; repeatable), then report",
    )
    p.add_argument("--report-only", action="store_true", help="run nothing; write the report from the existing runs")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_intermixed_args(argv)
    try:
        arms = parse_arms(args.estimators, args.arm)
    except ValueError as err:
        print(f"g2rpo-compare: {err}", file=sys.stderr)
        return 2
    workdir = args.workdir.expanduser().resolve()
    profile = PROFILES[args.profile] if args.profile else None
    if profile is not None:
        args.overrides = [*profile.overrides, *args.overrides]
    problems = arm_problems(workdir, arms, args.overrides, args.config)
    if problems:
        for problem in problems:
            print(f"g2rpo-compare: error: {problem}", file=sys.stderr)
        print("g2rpo-compare: nothing was built, run or written; fix the arm(s) above", file=sys.stderr)
        return 2
    workdir.mkdir(parents=True, exist_ok=True)
    seeds = list(dict.fromkeys(args.seeds if args.seeds is not None else (profile.seeds if profile else (0, 1, 2))))
    plan = [(arm, seed, workdir / run_dir_name(arm.name, seed)) for seed in seeds for arm in arms]
    known = {run_dir_name(a.name, s) for a, s, _ in plan}
    unknown = [r for r in args.only if r not in known]
    if unknown:
        print(f"g2rpo-compare: --only {unknown} is not one of the runs {sorted(known)}", file=sys.stderr)
        return 2
    steps = total_steps(args.overrides, args.config)
    failed = []
    if not args.report_only:
        for arm, seed, run_dir in plan:
            if args.only and run_dir.name not in args.only:
                continue
            if _finished(run_dir, steps):
                print(f"[compare] {run_dir.name}: finished (step {steps}), skipped", flush=True)
                continue
            run_dir.mkdir(parents=True, exist_ok=True)
            _seed_run_dir(run_dir, _prepare_base(workdir, seed, args.config, args.warm_start_steps))
            cmd = run_command(run_dir, seed, args.overrides, arm, args.config)
            print(f"[compare] {run_dir.name}: {shlex.join(cmd)}", flush=True)
            started = time.monotonic()
            with open(run_dir / "compare.log", "a", encoding="utf-8") as log:
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
            wall = time.monotonic() - started
            record = {"command": cmd, "returncode": rc, "wall_s": wall}
            (run_dir / _RUN_RECORD).write_text(json.dumps(record, indent=1))
            print(
                f"[compare] {run_dir.name}: exit {rc} after {wall:.0f} s (log: {run_dir / 'compare.log'})", flush=True
            )
            if rc != 0:
                failed.append(run_dir.name)
    names = [r.name for _, _, r in plan]
    summary = summarize(workdir, arms, seeds, _wall_times(workdir, names))
    command = shlex.join(["g2rpo-compare", *(sys.argv[1:] if argv is None else argv)])
    for path in write_report(workdir, summary, command=command, plots=not args.no_plots):
        print(f"[compare] wrote {path}", flush=True)
    if failed:
        print(f"[compare] failed runs: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
