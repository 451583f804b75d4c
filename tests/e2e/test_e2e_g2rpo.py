"""The real ``python -m verl.trainer.main_ppo`` on CPU with gs_grpo / gs_gdpo (no mocks).

Proves the whole chain: the entry point loads the plugin in verl's processes, the trainer
mixin reads each sample's task key from TransferQueue, the estimator ranks per task, and the
per-task advantage statistics it logs reach verl's file logger.
"""

import json
import math

import pytest

from g2rpo_verl.demo.fixtures.toy_reward import TOY_TASKS
from support.smoke_runs import run_smoke

pytestmark = pytest.mark.e2e


def task_metric(task: str, name: str) -> str:
    return "task_" + task.replace(" ", "_") + "/" + name


PROBLEM_TYPES = [pt for pt, _ in TOY_TASKS.values()]


@pytest.mark.parametrize(
    "estimator, extra, tasks",
    [
        # default task key: problem_type; per-task gradient diagnostics every step
        ("gs_grpo", ["++g2rpo.diagnostics.grad_every=1"], PROBLEM_TYPES),
        # data_source as task key; length as a fourth GS-GDPO component
        (
            "gs_gdpo",
            [
                "++g2rpo.task_key=data_source",
                "+algorithm.gdpo_reward_keys=[accuracy,format,structure,length]",
                "++g2rpo.length.enable=true",
                "++g2rpo.length.mode=component",
            ],
            list(TOY_TASKS),
        ),
        # verl's own estimator gets the per-task metrics too; scored by the project's reward
        # function in verl's reward workers (the toy data's problem types are real ones)
        ("grpo", ["reward.custom_reward_function.path=pkg://g2rpo_verl.rewards"], PROBLEM_TYPES),
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
        if "++g2rpo.diagnostics.grad_every=1" in extra:
            check_grad_diagnostics(data, [t for t in tasks if task_metric(t, "count") in data])
        else:
            assert not any("/grad/" in k or k.startswith("grad/") for k in data)


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


LENGTH_OVERRIDES = [
    "g2rpo.length.enable=true",
    # every non-truncated response counts as a success, so the running statistics must move
    "g2rpo.length.success_threshold=0",
    "g2rpo.length.default_profile=perception",
    "g2rpo.length.profiles.perception.floor=2",
    "g2rpo.length.profiles.perception.ceiling=6",
    "g2rpo.length.tasks.numerical.profile=reasoning",
    "g2rpo.length.tasks.numerical.floor=6",
    "g2rpo.length.tasks.numerical.ceiling=10",
]


# the adaptive entropy controller rides along: its coefficients are saved and restored the same way
ENTROPY_OVERRIDES = ["g2rpo.entropy.enable=true", "g2rpo.entropy.controller=adaptive"]


def test_length_shaping_runs_in_real_verl_and_its_state_survives_a_resume(tmp_path):
    from omegaconf import OmegaConf

    from g2rpo_verl.algorithms.entropy_control import EntropyController
    from g2rpo_verl.algorithms.length import LengthShaper
    from g2rpo_verl.config import load_g2rpo_config

    shaping = LENGTH_OVERRIDES + ENTROPY_OVERRIDES
    common = ["algorithm.adv_estimator=gs_grpo", "trainer.save_freq=1", *("+" + o for o in shaping)]
    first = run_smoke(tmp_path, "trainer.total_training_steps=2", *common)
    tasks = [pt for pt, _ in TOY_TASKS.values()]
    for step, data in first.items():
        for task in tasks:
            for name in ("mean", "score", "truncation_rate", "bound_a", "bound_d", "tied_share", "direction"):
                value = data[task_metric(task, f"length/{name}")]
                assert math.isfinite(value), (step, task, name)
            assert 0 <= data[task_metric(task, "length/truncation_rate")] <= 1
            assert 0 <= data[task_metric(task, "length/tied_share")] <= 1
            assert data[task_metric(task, "entropy/out_of_band")] in (0.0, 1.0)
            assert abs(data[task_metric(task, "entropy/coef")]) <= 1.0
    saved = json.loads((tmp_path / "checkpoints" / "global_step_2" / "g2rpo_state.json").read_text())
    assert set(saved) == {"length", "entropy"}

    # Same command, one more step: verl resumes from global_step_2 and so must the bounds.
    second = run_smoke(tmp_path, "trainer.total_training_steps=3", *common)
    assert sorted(second) == [3], "the second run did not resume from the step-2 checkpoint"
    cfg = load_g2rpo_config(OmegaConf.from_dotlist(LENGTH_OVERRIDES)).length
    restored = LengthShaper({}, cfg.rule, momentum=cfg.momentum)
    restored.load_state_dict(saved["length"])
    fresh = LengthShaper({}, cfg.rule, momentum=cfg.momentum)
    assert any(restored.bounds(t) != fresh.bounds(t) for t in tasks), "statistics never moved: nothing to restore"
    for task in tasks:
        logged = [second[3][task_metric(task, f"length/bound_{k}")] for k in "abcd"]
        assert logged == pytest.approx(list(restored.bounds(task)))
    # step 3's coefficients continue from step 2's multipliers, fed step 3's entropies
    entropy_cfg = load_g2rpo_config(OmegaConf.from_dotlist(shaping)).entropy
    controller = EntropyController(entropy_cfg.adaptive)
    controller.load_state_dict(saved["entropy"])
    assert any(s["y_high"] or s["y_low"] for s in saved["entropy"]["tasks"].values()), "nothing to restore"
    for task in tasks:
        h = second[3][task_metric(task, "entropy_estimate")]
        expected = controller.update(task, h, entropy_cfg.low, entropy_cfg.high)
        assert second[3][task_metric(task, "entropy/coef")] == pytest.approx(expected, abs=1e-9)
