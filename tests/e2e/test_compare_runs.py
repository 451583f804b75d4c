"""``g2rpo-compare`` end to end: two estimators and a repeat of one of them, 2 steps each of the
real demo from one base model; the report carries the runs' own numbers, finished runs are
skipped, the seeds' aggregation holds on copies of the real runs, and the repeat is bitwise the
same run (the determinism check)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from g2rpo_verl.demo.run_metrics import load_metrics
from g2rpo_verl.demo.tasks import TASKS

pytestmark = pytest.mark.e2e

#: two estimators and, for the determinism check, the second one again under another arm name:
#: three runs of seed 0 from one base model (the seeds' aggregation is checked on copies of them)
E2E_ARMS = [
    "--estimators",
    "grpo",
    "ema_grpo",
    "--arm",
    "ema_grpo_again=algorithm.adv_estimator=ema_grpo",
    "--seeds",
    "0",
]
E2E_RUN = ["--warm-start-steps", "30", "trainer.total_training_steps=2", "trainer.test_freq=2", "trainer.save_freq=2"]
#: metrics that measure the machine, not the run (wall time, throughput, memory)
_MACHINE = ("timing_s/", "timing_per_token_ms/", "perf/", "memory")
#: rollout-vs-trainer log-prob diagnostics: they compare the rollout's log-probs, computed from
#: logits of a padded batch whose make-up depends on timing, with the trainer's; equal to float
#: rounding (~1e-7), not bitwise (docs/reproducibility.md)
_ROLLOUT_ROUNDING = ("training/rollout_probs_diff_", "training/rollout_actor_probs_pearson_corr", "rollout_corr/")


def _compare(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "g2rpo_verl.compare", "--workdir", str(workdir), *args]
    env = {k: v for k, v in os.environ.items() if k != "VERL_FILE_LOGGER_PATH"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=2400)
    logs = "".join(p.read_text()[-3000:] for p in sorted(workdir.glob("*/compare.log")))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:] + logs
    return proc


@pytest.fixture(scope="module")
def comparison(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("compare")
    _compare(workdir, *E2E_ARMS, *E2E_RUN)
    return workdir


def _reproducible(metrics: dict) -> dict:
    return {
        step: {k: v for k, v in data.items() if not any(m in k for m in _MACHINE)} for step, data in metrics.items()
    }


def _rounding_only(key: str) -> bool:
    return key.startswith(_ROLLOUT_ROUNDING)


def test_compare_reports_every_task_and_estimator_with_the_runs_own_numbers(comparison, tmp_path):
    summary = json.loads((comparison / "summary.json").read_text())
    report = (comparison / "report.md").read_text()
    runs = ["ema_grpo_again_seed0", "ema_grpo_seed0", "grpo_seed0"]
    assert summary["missing_runs"] == [] and sorted(summary["runs"]) == runs
    assert summary["sources"] == sorted(TASKS)
    for name in [*TASKS, *summary["tasks"], "grpo", "ema_grpo"]:
        assert name in report, name
    assert {spec.problem_type.replace(" ", "_") for spec in TASKS.values()} == set(summary["tasks"])
    finals = {}  # (arm, source, kind) -> the run's own last validation value
    for arm in ("grpo", "ema_grpo"):
        metrics = load_metrics([comparison / f"{arm}_seed0" / "metrics.jsonl"])
        for source in TASKS:
            for kind, key in (
                ("accuracy", f"val-core/{source}/acc/mean@2"),
                ("reward", f"val-aux/{source}/reward/mean@2"),
            ):
                last = metrics[max(step for step in metrics if key in metrics[step])][key]
                finals[arm, source, kind] = last
                assert summary["runs"][f"{arm}_seed0"]["final"][source][kind] == last
                assert summary["final"][arm][source][kind]["values"] == [last]
        for task in summary["tasks"]:
            std = summary["advantage"][arm][task]["std"]["values"]
            assert len(std) == 1 and all(math.isfinite(v) and v >= 0 for v in std)
    diff = summary["paired_vs_baseline"]["ema_grpo"]["demo_counting"]["accuracy"]
    expected = finals["ema_grpo", "demo_counting", "accuracy"] - finals["grpo", "demo_counting", "accuracy"]
    assert diff["values"] == pytest.approx([expected])
    for name in ("validation.png", "final.png"):
        assert (comparison / "plots" / name).stat().st_size > 10_000
    # ema_grpo's per-task moments are checkpointed next to the length-shaping state
    state = json.loads(
        (comparison / "ema_grpo_seed0" / "checkpoints" / "global_step_2" / "g2rpo_state.json").read_text()
    )
    assert set(state["ema_std"]) == {spec.problem_type for spec in TASKS.values()} and "length" in state
    metrics = load_metrics([comparison / "ema_grpo_seed0" / "metrics.jsonl"])
    assert math.isfinite(metrics[2]["task_numerical/ema/std"])

    # finished runs are skipped: a second call only rewrites the report
    proc = _compare(comparison, *E2E_ARMS, *E2E_RUN)
    assert proc.stdout.count("finished (step 2), skipped") == 3

    # two seeds from the real runs' files: seed 1 of each arm is a copy of the other arm's seed 0,
    # so each arm's values are (own, other's), the paired differences ±d and their mean 0
    seeds = tmp_path / "seeds"
    for arm, other in (("grpo", "ema_grpo"), ("ema_grpo", "grpo")):
        shutil.copytree(comparison / f"{arm}_seed0", seeds / f"{arm}_seed0")
        shutil.copytree(comparison / f"{other}_seed0", seeds / f"{arm}_seed1")
    _compare(seeds, "--estimators", "grpo", "ema_grpo", "--seeds", "0", "1", "--report-only", "--no-plots")
    two = json.loads((seeds / "summary.json").read_text())
    for arm, other in (("grpo", "ema_grpo"), ("ema_grpo", "grpo")):
        cell = two["final"][arm]["demo_counting"]["accuracy"]
        own, theirs = finals[arm, "demo_counting", "accuracy"], finals[other, "demo_counting", "accuracy"]
        assert cell["values"] == [own, theirs] and cell["mean"] == pytest.approx((own + theirs) / 2)
    paired = two["paired_vs_baseline"]["ema_grpo"]["demo_counting"]["accuracy"]
    assert paired["values"] == pytest.approx([expected, -expected]) and paired["mean"] == pytest.approx(0, abs=1e-12)
    assert "demo_counting" in (seeds / "report.md").read_text()


def test_same_command_and_seed_give_identical_metrics(comparison):
    # the same (estimator, seed) again, from the same model and data, in another run directory:
    # every logged number but the machine's timings, throughput and memory is identical
    first = _reproducible(load_metrics([comparison / "ema_grpo_seed0" / "metrics.jsonl"]))
    second = _reproducible(load_metrics([comparison / "ema_grpo_again_seed0" / "metrics.jsonl"]))
    assert sorted(first) == sorted(second) == [0, 1, 2]
    assert first[1]["actor/pg_loss"] != 0  # a real update happened
    compared = 0
    for step in first:
        assert set(first[step]) == set(second[step]), step
        for key, value in first[step].items():
            if _rounding_only(key):
                assert second[step][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (step, key)
            else:  # rewards, advantages, losses, gradient norms, entropies, validation: bitwise
                assert second[step][key] == value, (step, key, value, second[step][key])
                compared += 1
    assert compared > 900
