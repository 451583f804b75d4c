"""The real ``python -m verl.trainer.main_ppo`` on CPU with gs_grpo / gs_gdpo (no mocks).

Proves the whole chain: the entry point loads the plugin in verl's processes, the trainer
mixin reads each sample's task key from TransferQueue, the estimator ranks per task, and the
per-task advantage statistics it logs reach verl's file logger.
"""

import math

import pytest

from g2rpo_verl.demo.fixtures.toy_reward import TOY_TASKS
from support.smoke_runs import run_smoke

pytestmark = pytest.mark.e2e


def task_metric(task: str, name: str) -> str:
    return "task_" + task.replace(" ", "_") + "/" + name


PROBLEM_TYPES = [pt for pt, _ in TOY_TASKS.values()]


FILTER_OVERRIDES = [
    "algorithm.filter_groups.enable=true",
    "algorithm.filter_groups.metric=accuracy",
    "algorithm.filter_groups.max_num_gen_batches=2",
    "+trainer.v1.sampler.sampler_kwargs.filter_band={low:0.01,high:0.99}",
]
ENTROPY_SHAPING_OVERRIDES = [
    "++g2rpo.entropy.enable=true",
    "++g2rpo.entropy.estimator=exact",
    # the KL loss on: a reference model runs next to the actor, and the term is added to
    # verl's loss with the KL term in it (as checked against verl's ppo_loss in the unit tests)
    "actor_rollout_ref.actor.use_kl_loss=true",
    "actor_rollout_ref.actor.kl_loss_coef=0.1",
    # two mini-batches in two micro-batches each, two epochs with shuffling: rows change
    # mini-batch between epochs, the hardest case for the per-row weights
    "actor_rollout_ref.actor.ppo_mini_batch_size=2",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.actor.ppo_epochs=2",
    "actor_rollout_ref.actor.shuffle=True",
]


@pytest.mark.parametrize(
    "estimator, extra, tasks",
    [
        # default task key: problem_type; per-task gradient diagnostics every step; the
        # reference's online group filtering (band on verl's own replay buffer)
        ("gs_grpo", ["++g2rpo.diagnostics.grad_every=1", *FILTER_OVERRIDES], PROBLEM_TYPES),
        # data_source as task key; length as a fourth GS-GDPO component; the exact-entropy
        # shaping in verl's loss with the KL loss on, over shuffled mini-batches
        (
            "gs_gdpo",
            [
                "++g2rpo.task_key=data_source",
                "+algorithm.gdpo_reward_keys=[accuracy,format,structure,length]",
                "++g2rpo.length.enable=true",
                "++g2rpo.length.mode=component",
                *ENTROPY_SHAPING_OVERRIDES,
            ],
            list(TOY_TASKS),
        ),
        # verl's own estimator gets the per-task metrics too; scored by the project's reward
        # function in verl's reward workers (the toy data's problem types are real ones); the
        # task-balanced loss aggregation in verl's real actor, its gradient diagnosed
        (
            "grpo",
            [
                "reward.custom_reward_function.path=pkg://g2rpo_verl.rewards",
                "++g2rpo.loss_agg.mode=task_mean",
                "++g2rpo.diagnostics.grad_every=1",
            ],
            PROBLEM_TYPES,
        ),
    ],
)
def test_real_verl_run_logs_per_task_metrics_from_the_estimator(tmp_path, estimator, extra, tasks):
    prompts, rollouts = 4, 4
    overrides = [
        f"algorithm.adv_estimator={estimator}",
        "trainer.total_training_steps=2",
        f"data.train_batch_size={prompts}",
        f"actor_rollout_ref.rollout.n={rollouts}",
        *extra,
    ]
    metrics = run_smoke(tmp_path, *overrides)
    assert sorted(metrics) == [1, 2]
    for step, data in metrics.items():
        counted = 0
        for task in tasks:
            count = data.get(task_metric(task, "count"))
            if count is None:  # a task may be absent from a 4-prompt batch
                continue
            counted += count
            mean, std = data[task_metric(task, "advantage/mean")], data[task_metric(task, "advantage/std")]
            assert math.isfinite(mean) and math.isfinite(std)
            assert abs(mean) < 1e-5, f"step {step}: task {task} advantages are not zero-sum"
            lo, hi = data[task_metric(task, "advantage/min")], data[task_metric(task, "advantage/max")]
            assert lo <= mean <= hi and max(-lo, hi) < 3.0
            for name in (
                "reward/total",
                "reward/accuracy",
                "reward/format",
                "length/mean",
                "length/truncation_rate",
                "entropy",
            ):
                assert math.isfinite(data[task_metric(task, name)]), name
            if estimator == "grpo":
                assert data[task_metric(task, "reward/reward_failure")] == 0.0
            if "++g2rpo.length.enable=true" in extra:
                assert 0 <= data[task_metric(task, "length/score")] <= 1
        # every sample of the step was assigned to one of the toy tasks, under the chosen key
        assert counted == prompts * rollouts, sorted(k for k in data if k.startswith("task_"))
        present = [t for t in tasks if task_metric(t, "count") in data]
        if "++g2rpo.diagnostics.grad_every=1" in extra:
            check_grad_diagnostics(data, present)
        else:
            assert not any("/grad/" in k or k.startswith("grad/") for k in data)
        if FILTER_OVERRIDES[0] in extra:
            check_filtering(data)
        if ENTROPY_SHAPING_OVERRIDES[0] in extra:
            check_entropy_shaping(data, present)
        if "++g2rpo.loss_agg.mode=task_mean" in extra:
            # one mini-batch a step: each present task weighs 1/T, whatever its share of the tokens
            weights = [data[task_metric(t, "loss_agg/weight")] for t in present]
            assert weights == pytest.approx([1 / len(present)] * len(present))
            assert sum(data[task_metric(t, "loss_agg/token_share")] for t in present) == pytest.approx(1.0)
        else:
            assert not any("/loss_agg/" in k for k in data)

    if ENTROPY_SHAPING_OVERRIDES[0] in extra:
        # KL(actor || ref) > 0 once the actor has moved away from the reference (step 2 trains
        # on updated weights); the tiny model's entropy is above the default band for some task
        assert metrics[2]["actor/kl_loss"] > 0
        assert (
            max(
                data[task_metric(t, "entropy_penalty")]
                for data in metrics.values()
                for t in tasks
                if task_metric(t, "entropy_penalty") in data
            )
            > 0
        )


def check_filtering(data: dict) -> None:
    """The tiny model mostly fails: groups are filtered and counted per task, and the refill
    budget (max_num_gen_batches=2) ends the step's filtering instead of looping on toy data."""
    filtered = {k: v for k, v in data.items() if k.endswith("/filtered_groups")}
    evicted = data.get("training/filter_groups/evicted_samples", 0)
    assert evicted > 0 and all(k.startswith("task_") for k in filtered), sorted(data)
    assert sum(filtered.values()) == evicted


def check_entropy_shaping(data: dict, tasks: list[str]) -> None:
    """Per-task entropy and penalty logged; the term reached verl's loss on the workers, which
    computed the exact entropy for it; the reference model's log-probs reached the loss."""
    for t in tasks:
        h, pen = data[task_metric(t, "entropy")], data[task_metric(t, "entropy_penalty")]
        assert math.isfinite(h) and h >= 0 and math.isfinite(pen) and pen >= 0
    assert math.isfinite(data["actor/entropy_shaping_loss"]) and math.isfinite(data["actor/entropy_loss"])
    assert math.isfinite(data["actor/kl_loss"]) and data["actor/kl_loss"] >= 0


def check_grad_diagnostics(data: dict, tasks: list[str]) -> None:
    """The per-task gradient parts of a real verl actor update (4 micro-batches of FSDP2) add up
    to verl's own pre-clip gradient norm: ‖Σ g_τ‖² = Σ_τ ‖g_τ‖² + 2 Σ_{τ<σ} ‖g_τ‖‖g_σ‖ cos(τ, σ)."""
    norms = {t: data[task_metric(t, "grad/norm")] for t in tasks}
    assert all(math.isfinite(n) and n >= 0 for n in norms.values()) and max(norms.values()) > 0, norms
    # a task whose groups all tied (advantages 0) has a zero part: share 0, no cosine
    assert sum(data[task_metric(t, "grad/share")] for t in tasks) == pytest.approx(1.0, abs=1e-6)
    by_key = {task_metric(t, "")[len("task_") : -1]: t for t in tasks}  # "multiple_choice" -> "multiple choice"
    keys = sorted(by_key)
    total = sum(n * n for n in norms.values())
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            key = f"grad/cosine/{a}__{b}"
            if norms[by_key[a]] == 0 or norms[by_key[b]] == 0:
                assert key not in data
                continue
            assert -1 - 1e-9 <= data[key] <= 1 + 1e-9
            total += 2 * norms[by_key[a]] * norms[by_key[b]] * data[key]
    assert math.sqrt(total) == pytest.approx(data["actor/grad_norm"], rel=1e-4)


# Length shaping and the adaptive entropy controller in real verl, their state saved with verl's
# checkpoint and restored on resume: tests/e2e/test_multinode.py (a lost node, then the same command).
