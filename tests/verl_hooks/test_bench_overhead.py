"""scripts/bench_overhead.py at a tiny size: every part runs the plugin's real code and its tables
have every row (no timing is asserted: the figures are docs/production.md's, from the full run)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_overhead  # noqa: E402


@pytest.fixture(scope="module")
def result():
    return bench_overhead.main(
        [
            "--sizes", "64", "128",
            "--repeat", "1",
            "--tokens", "64",
            "--vocab", "512",
            "--actor-repeat", "1",
            "--compile-backend", "eager",
            "--reward-samples", "4",
        ]
    )  # fmt: skip


def test_trainer_table_has_a_row_per_size_and_the_fitted_exponent(result):
    table = result["trainer_table"]
    assert [line.split("|")[1].strip() for line in table[2:]] == ["64", "128", "fitted exponent"]
    for row in result["trainer"]:
        assert set(row["seconds"]) == {"plugin", "verl"}
        # the plugin's path is the real one: it reads the sample info and writes the actor plan
        # (more TransferQueue round trips than verl's one get and one put) and logs per-task metrics
        assert row["round_trips"]["verl"] == (1, 1)
        assert row["round_trips"]["plugin"][0] > 1 and row["round_trips"]["plugin"][1] > 1
        assert row["metrics"]["plugin"] > row["metrics"]["verl"]


def test_the_plugin_step_hands_the_actor_its_weights_and_every_tasks_metrics():
    from transfer_queue import KVBatchMeta

    from g2rpo_verl.verl_hooks.actor_loss import WEIGHT_FIELD
    from g2rpo_verl.verl_hooks.samples import metric_prefix

    batch = bench_overhead.draw_batch(64)
    plugin_cls, _ = bench_overhead.trainer_classes()
    trainer = bench_overhead.make_trainer(plugin_cls, bench_overhead.production_config("g2rpo_qwen3vl8b", 64), 8)
    store = bench_overhead.MemoryTQ(batch)
    meta = KVBatchMeta(keys=list(batch.keys), tags=[{}] * 64, partition_id="train", fields=list(store.fields))
    with bench_overhead.memory_tq(store):
        metrics = bench_overhead.trainer_step(trainer, meta)
    assert WEIGHT_FIELD in store.fields and "advantages" in store.fields
    for task in set(batch.tasks):
        prefix = metric_prefix(task)
        assert f"{prefix}/advantage/mean" in metrics and f"{prefix}/entropy_estimate" in metrics
        assert f"{prefix}/length/score" in metrics


def test_actor_table_has_verls_loss_and_every_plugin_case(result):
    names = [line.split("|")[1].strip() for line in result["actor_table"][2:]]
    assert names[0] == "verl ppo_loss" and len(names) == 6
    assert {"plugin, estimator=sampled", "plugin, exact, compiled (verl's default)"} <= set(names)


def test_reward_table_has_every_problem_type(result):
    names = [line.split("|")[1].strip() for line in result["reward_table"][2:]]
    assert names == list(bench_overhead.TASK_MIX)
    for row in result["rewards"].values():
        assert row["sequential"] > 0 and row["threads"] > 0 and row["worst_s"] > 0
