"""Mistakes stop before anything heavy: the config check, where it runs, and what the user sees.

The check (:func:`g2rpo_verl.verl_hooks.checks.validate_run_config`) runs at the top of the
trainer's ``__init__`` (in verl's TaskRunner, before the replay buffer, workers or models), in
the guard in front of verl's V0 trainer, in ``g2rpo-train`` before it builds anything and in
``g2rpo-preflight``. Configs here are verl's own ``ppo_trainer`` composed with overrides.
"""

import time

import pytest

from g2rpo_verl.demo.overrides import compose_config
from g2rpo_verl.verl_hooks.checks import G2RPOConfigError, config_problems, estimator_problem, validate_run_config


def config(*overrides):
    return compose_config(list(overrides))


def problems(*overrides, trainer=None):
    return config_problems(config(*overrides), trainer)[0]


# ------------------------------------------------------------------ what is checked


def test_a_valid_config_passes_and_returns_the_g2rpo_section():
    g2rpo = validate_run_config(config("algorithm.adv_estimator=gs_grpo", "+g2rpo.task_key=data_source"))
    assert g2rpo.task_key == "data_source"


def test_an_estimator_typo_names_the_key_and_the_nearest_names():
    (message,) = problems("algorithm.adv_estimator=gs_grp0")
    assert "algorithm.adv_estimator='gs_grp0' is not a registered advantage estimator" in message
    assert "did you mean 'gs_grpo'" in message and "grpo" in message


def test_estimator_problem_without_a_close_name_lists_the_known_ones():
    assert estimator_problem("grpo", ["grpo"]) is None
    message = estimator_problem("ppo_with_value", ["grpo", "gae"])
    assert "did you mean" not in message and "(known: gae, grpo)" in message


def test_gs_gdpo_with_kl_in_reward_is_refused_because_the_penalty_would_be_dropped():
    (message,) = problems("algorithm.adv_estimator=gs_gdpo", "algorithm.use_kl_in_reward=true")
    assert "algorithm.use_kl_in_reward=true with algorithm.adv_estimator=gs_gdpo" in message
    assert "use_kl_loss" in message
    assert problems("algorithm.adv_estimator=gs_grpo", "algorithm.use_kl_in_reward=true") == []


def test_gs_estimators_on_the_v0_trainer_are_refused():
    (message,) = problems("algorithm.adv_estimator=gs_grpo", "trainer.use_v1=false")
    assert "needs verl's V1 trainer (trainer.use_v1=true" in message
    assert problems("algorithm.adv_estimator=grpo", "trainer.use_v1=false") == []


def test_an_unknown_g2rpo_key_is_named_with_its_nearest_key():
    (message,) = problems("+g2rpo.entropy.hgih=0.7")
    assert "unknown key 'g2rpo.entropy.hgih'; did you mean 'g2rpo.entropy.high'?" in message


EVERYTHING_WRONG = (
    "algorithm.adv_estimator=gs_gdpo",
    "algorithm.use_kl_in_reward=true",
    "+g2rpo.tasks_key=x",
    "+trainer.v1.sampler.sampler_kwargs.filter_band={low:0.1,high:0.9}",  # filtering is off
    "reward.custom_reward_function.path=pkg://g2rpo_verl.rewards",
    "+reward.custom_reward_function.reward_kwargs.math_timeout_s=-1",
)


def test_every_problem_is_reported_at_once():
    found = problems(*EVERYTHING_WRONG)
    joined = "\n".join(found)
    assert len(found) == 4, joined
    for key in ("use_kl_in_reward", "g2rpo.tasks_key", "filter_band", "reward_kwargs.math_timeout_s"):
        assert key in joined, key
    with pytest.raises(G2RPOConfigError, match="4 problem"):
        validate_run_config(config(*EVERYTHING_WRONG))


def test_shaping_that_the_rest_of_the_config_turns_off_is_refused():
    (message,) = problems("+g2rpo.entropy.enable=true", "algorithm.rollout_correction.bypass_mode=true")
    assert "bypass_mode" in message
    (message,) = problems(
        "algorithm.adv_estimator=gs_grpo", "+g2rpo.length.enable=true", "+g2rpo.length.mode=component"
    )
    assert "g2rpo.length.mode=component needs algorithm.adv_estimator=gs_gdpo" in message


# ------------------------------------------------------------------ where it runs: before anything starts


def test_the_v1_trainer_refuses_a_bad_config_before_verl_builds_anything(monkeypatch):
    from verl.trainer.ppo.v1 import get_trainer_cls
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    started = []
    monkeypatch.setattr(PPOTrainer, "__init__", lambda self, config: started.append(config))
    cls = get_trainer_cls("sync")
    for overrides in (
        ["algorithm.adv_estimator=gs_grp0"],
        ["algorithm.adv_estimator=gs_gdpo", "algorithm.use_kl_in_reward=true"],
        ["+g2rpo.tasks_key=x"],
    ):
        with pytest.raises(G2RPOConfigError):
            cls(config=config(*overrides))
    assert started == []  # verl's __init__ (replay buffer; then workers, models) never ran
    cls(config=config("algorithm.adv_estimator=gs_grpo"))
    assert len(started) == 1


def test_the_v0_trainer_guard_refuses_gs_estimators_before_any_worker(monkeypatch):
    from verl.trainer.ppo import ray_trainer

    assert ray_trainer.RayPPOTrainer._g2rpo_guarded
    with pytest.raises(G2RPOConfigError, match="needs verl's V1 trainer"):
        ray_trainer.RayPPOTrainer(
            config=config("algorithm.adv_estimator=gs_grpo", "trainer.use_v1=false"),
            tokenizer=None,
            role_worker_mapping={},
            resource_pool_manager=None,
        )


def test_g2rpo_train_stops_on_a_typo_before_building_anything(tmp_path, capsys):
    from g2rpo_verl.demo.run import main

    start = time.monotonic()
    assert main(["--workdir", str(tmp_path), "algorithm.adv_estimator=gs_grp0"]) == 2
    assert time.monotonic() - start < 120  # seconds, not the minutes of a model build (no timing target here)
    out = capsys.readouterr().out
    assert "did you mean 'gs_grpo'" in out and "nothing was built or started" in out
    assert not (tmp_path / "model").exists() and not (tmp_path / "data").exists()


def test_preflight_reports_each_problem():
    from g2rpo_verl.launch.preflight import check_config

    micro = [
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2",
    ]  # verl's own validate_config passes
    findings = check_config(
        config(*micro, "algorithm.adv_estimator=gs_gdpo", "algorithm.use_kl_in_reward=true", "+g2rpo.x=1")
    )
    assert [f.level for f in findings] == ["fail", "fail"]
    assert any("use_kl_in_reward" in f.message for f in findings)


# ------------------------------------------------------------------ what g2rpo-train shows when the trainer fails

RAY_FAILURE = """\
step:0 - val-core/demo_ocr/acc/mean@2:0.25 - val-core/demo_counting/acc/mean@2:0.5
(TaskRunnerV1 pid=4242) some trainer log line
Error executing job with overrides: ['algorithm.adv_estimator=gs_grpo']
Traceback (most recent call last):
  File "/venv/verl/trainer/main_ppo.py", line 183, in main
    run_ppo(config, task_runner_class=TaskRunnerV1)
  File "/venv/ray/_private/worker.py", line 2961, in get
    raise value.as_instanceof_cause()
ray.exceptions.RayTaskError(MiniBatchMismatch): ray::TaskRunnerV1.run() (pid=4242, ip=10.0.0.1)
  File "/venv/verl/trainer/main_ppo.py", line 155, in run
    self.trainer.fit(self.agent_loop_manager)
    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/src/g2rpo_verl/verl_hooks/minibatch.py", line 300, in check
    raise MiniBatchMismatch(
g2rpo_verl.verl_hooks.minibatch.MiniBatchMismatch: g2rpo.entropy: verl's mini-batch has 40 response tokens
  but the trainer predicted [42]

Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.
"""


def test_the_innermost_exception_is_what_the_user_sees():
    from g2rpo_verl.demo.trainer_process import last_exception

    assert last_exception(RAY_FAILURE.splitlines()) == [
        "g2rpo_verl.verl_hooks.minibatch.MiniBatchMismatch: g2rpo.entropy: verl's mini-batch has 40 response tokens",
        "  but the trainer predicted [42]",
    ]
    assert last_exception(["step:1 - a:1", "done"]) == []


def test_run_trainer_keeps_the_exception_of_a_failing_trainer(tmp_path):
    import sys

    from g2rpo_verl.demo.trainer_process import run_trainer

    script = "print('step:1 - training/global_step:1', flush=True); raise ValueError('g2rpo.task_key missing')"
    run = run_trainer([sys.executable, "-c", script], {}, tmp_path, tmp_path / "log.txt", 2, verbose=True)
    assert run.returncode == 1
    assert run.error == ["ValueError: g2rpo.task_key missing"]
