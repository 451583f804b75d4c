"""verl's PPO with a critic on the CPU backend: the smoke CLI (tiny Qwen2, toy tasks) runs two
real ``main_ppo`` steps with ``algorithm.adv_estimator=gae`` — the actor, the critic (value model)
and the hf rollout server on one machine — and validates through the rollout's greedy path."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

_STEP_LINE = re.compile(r"step:(\d+) - (.*)$")


def _console_metrics(output: str) -> dict[int, dict[str, str]]:
    """verl's console logger lines ``step:N - key:value - ...`` -> {N: {key: value}}."""
    steps: dict[int, dict[str, str]] = {}
    for line in output.splitlines():
        match = _STEP_LINE.search(line)
        if match:
            pairs = (item.rsplit(":", 1) for item in match.group(2).split(" - ") if ":" in item)
            steps[int(match.group(1))] = {k.strip(): v.strip() for k, v in pairs}
    return steps


def test_smoke_cli_runs_two_gae_steps_of_real_verl_with_the_critic(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "g2rpo_verl.demo.smoke",
        "--workdir",
        str(tmp_path),
        # verl's PPO with a critic (value model) next to the actor: every FSDP engine kind
        # (actor here, reference in the entropy-shaping test) builds on the CPU backend
        "algorithm.adv_estimator=gae",
        "trainer.total_training_steps=2",
        "trainer.test_freq=2",
        # one request at a time: the seeded run samples the same tokens every time, so the
        # "rewards vary within a group" check below is deterministic (batching is covered by
        # the demo's end-to-end test)
        "actor_rollout_ref.rollout.max_num_seqs=1",
    ]
    env = {k: v for k, v in os.environ.items() if k != "VERL_FILE_LOGGER_PATH"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]

    console = _console_metrics(proc.stdout)
    assert sorted(console) == [1, 2], proc.stdout[-3000:]
    assert console[2]["training/global_step"] == "2"

    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r["data"] for r in records}
    assert sorted(by_step) == [1, 2]
    for step in (1, 2):
        metrics = by_step[step]
        # rollout (hf server) and trainer (FSDP) log-probs of the synced weights agree
        assert metrics["training/rollout_probs_diff_valid"] == 1
        assert metrics["training/rollout_probs_diff_max"] < 1e-4
        assert metrics["critic/score/max"] > 0  # the warm-started model earns format reward
    assert by_step[1]["actor/grad_norm"] > 0  # rewards vary within groups: a real update happened
    for step in (1, 2):  # the critic predicted values and trained on the returns
        metrics = by_step[step]
        assert math.isfinite(metrics["critic/values/mean"]) and math.isfinite(metrics["critic/vf_loss"])
        assert metrics["critic/grad_norm"] > 0
    # validation ran through the rollout's greedy path, per toy task
    assert {"val-core/toy_addition/reward/mean@1", "val-core/toy_choice/reward/mean@1"} <= set(by_step[2])
    assert (tmp_path / "smoke.log").read_text().count("training/global_step") >= 2
