"""The demo's real pipeline (``g2rpo-train``: tiny Qwen3-VL, gs_grpo, length and entropy shaping,
the KL loss, band group filtering) with ``trainer.n_gpus_per_node=2``: two FSDP ranks on gloo and
two hf rollout replicas, the critic on too (``critic.enable=true``: the Qwen3-VL value head built,
fed the images and trained on both ranks; the advantages stay gs_grpo's). The exactness of the
two-rank update itself is tests/verl_hooks/test_data_parallel.py."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def _demo_tasks() -> list[str]:
    from g2rpo_verl.demo.tasks import TASKS
    from g2rpo_verl.verl_hooks.samples import metric_prefix

    return [metric_prefix(spec.problem_type) for spec in TASKS.values()]


def _demo_rows() -> int:
    """Rows of a demo step after refills: data.train_batch_size x rollout.n of configs/demo_cpu.yaml."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).resolve().parents[2] / "configs" / "demo_cpu.yaml")
    return cfg.data.train_batch_size * cfg.actor_rollout_ref.rollout.n


def test_demo_pipeline_trains_with_two_data_parallel_ranks(tmp_path):
    from g2rpo_verl.demo.run_metrics import load_metrics

    cmd = [
        sys.executable,
        "-m",
        "g2rpo_verl.demo",
        "--workdir",
        str(tmp_path),
        "--warm-start-steps",
        "30",
        "--no-plots",
        # two fake GPU units: two FSDP ranks on gloo and two hf rollout replicas
        "trainer.n_gpus_per_node=2",
        "trainer.total_training_steps=2",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        # the reference model and the KL loss, next to the demo's length and entropy shaping
        "actor_rollout_ref.actor.use_kl_loss=true",
        "actor_rollout_ref.actor.kl_loss_coef=0.01",
        # and the critic (the demo's VL value head) in the same run; `gae` would build the same one
        "critic.enable=true",
        # band group filtering on verl's own replay buffer (the demo's fast-poll sampler has none)
        "algorithm.filter_groups.enable=true",
        "algorithm.filter_groups.metric=accuracy",
        "algorithm.filter_groups.max_num_gen_batches=2",
        "++trainer.v1.sampler.sampler_kwargs.filter_band={low:0.01,high:0.99}",
        "trainer.v1.sampler.custom_sampler.path=null",
        "trainer.v1.sampler.custom_sampler.name=null",
    ]
    env = {k: v for k, v in os.environ.items() if k != "VERL_FILE_LOGGER_PATH"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    log = "".join(p.read_text() for p in sorted((tmp_path / "logs").glob("trainer_*.log")))
    assert proc.returncode == 0, proc.stdout[-3000:] + log[-6000:]
    # verl placed two training ranks: its FSDP engine reports a data-parallel mesh of 2
    assert "num_gpus': 2" in log or "'num_gpus': 2" in log, log[:3000]

    metrics = load_metrics([tmp_path / "metrics.jsonl"])
    assert sorted(metrics) == [1, 2]
    demo_tasks = _demo_tasks()
    for step, data in metrics.items():
        for task in demo_tasks:
            for name in ("reward/total", "advantage/std", "length/mean", "entropy", "entropy/coef"):
                assert math.isfinite(data[f"{task}/{name}"]), (step, task, name)
        assert sum(data[f"{task}/count"] for task in demo_tasks) == _demo_rows()
        assert math.isfinite(data["actor/kl_loss"]) and data["actor/kl_loss"] >= 0
        assert data["actor/entropy_shaping_loss"] >= 0
        # the critic computed values on the images and took a gradient step
        assert math.isfinite(data["critic/vf_loss"]) and math.isfinite(data["critic/values/mean"])
        assert math.isfinite(data["critic/grad_norm"]) and data["critic/grad_norm"] > 0
        # both rollout replicas got the trainer's weights
        assert data["training/rollout_probs_diff_max"] < 1e-3
        evicted = data.get("training/filter_groups/evicted_samples", 0)
        filtered = sum(v for k, v in data.items() if k.endswith("/filtered_groups"))
        assert filtered == evicted
