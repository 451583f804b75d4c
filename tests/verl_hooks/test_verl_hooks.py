"""The verl wiring: registration in a fresh process, the per-task channel, config and errors."""

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from g2rpo_verl import gs_gdpo_advantages, gs_grpo_advantages
from g2rpo_verl.config import DEFAULT_GDPO_COMPONENTS, gdpo_components, load_g2rpo_config
from g2rpo_verl.verl_hooks.advantages import build_task_batch, task_batch
from g2rpo_verl.verl_hooks.samples import SampleInfo, TokenRows, resolve_task_keys
from g2rpo_verl.verl_hooks.task_metrics import task_entropy_metrics, task_step_metrics


def sample_info(uids, tasks, reward_infos):
    return SampleInfo.build(uids, tasks, reward_infos)


def run_fresh(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=120
    )


def test_import_verl_registers_estimators_and_trainer_mixin_in_a_fresh_process():
    proc = run_fresh(
        """
        import sys
        import verl
        assert "g2rpo_verl.verl_hooks.autoload" in sys.modules, "entry point not loaded by import verl"
        from verl.trainer.ppo.core_algos import get_adv_estimator_fn
        for name in ("gs_grpo", "gs_gdpo", "ema_grpo"):
            print(name, get_adv_estimator_fn(name).__module__)
        from verl.trainer.ppo.v1 import get_trainer_cls
        from g2rpo_verl.verl_hooks.trainer import G2RPOTrainerMixin
        print("sync-mixin", issubclass(get_trainer_cls("sync"), G2RPOTrainerMixin))
        from g2rpo_verl.verl_hooks import check_registered
        check_registered()
        print("checked")
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("gs_grpo", "gs_gdpo", "ema_grpo"):
        assert f"{name} g2rpo_verl.verl_hooks.advantages" in proc.stdout
    assert "sync-mixin True" in proc.stdout
    assert "checked" in proc.stdout


def test_plain_import_verl_does_not_import_the_trainer():
    # Rollout servers and reward workers import verl too; they must not pay for the trainer.
    proc = run_fresh(
        """
        import sys, verl
        print("core_algos" , "verl.trainer.ppo.core_algos" in sys.modules)
        print("trainer_v1", "verl.trainer.ppo.v1" in sys.modules)
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trainer_v1 False" in proc.stdout


def test_a_failing_registration_is_loud_and_stops_the_import():
    proc = run_fresh(
        """
        import verl
        from g2rpo_verl import verl_hooks
        def broken(module):
            raise RuntimeError("simulated registration failure")
        verl_hooks._AFTER_IMPORT[verl_hooks.CORE_ALGOS] = broken
        import verl.trainer.ppo.core_algos
        """
    )
    assert proc.returncode != 0
    assert "could not register with verl.trainer.ppo.core_algos" in proc.stderr
    assert "simulated registration failure" in proc.stderr


# ------------------------------------------------------------ estimator adapters


def verl_batch():
    uids = np.array(["p0"] * 4 + ["p1"] * 4 + ["p2"] * 4, dtype=object)
    scores = torch.tensor([0, 0, 1, 1, 0.2, 0.9, 0.9, 0.1, 1, 1, 1, 0], dtype=torch.float32)
    mask = torch.ones(12, 5)
    mask[::3, 3:] = 0  # some shorter responses
    rewards = torch.zeros(12, 5)
    rewards[torch.arange(12), mask.sum(-1).long() - 1] = scores
    tasks = ["math"] * 4 + ["grounding"] * 4 + ["math"] * 4
    infos = [
        {"accuracy": float(s), "format": 1.0, "structure": None if i % 4 == 0 else 0.5} for i, s in enumerate(scores)
    ]
    return uids, scores, mask, rewards, tasks, infos


def test_registered_gs_grpo_reads_task_ids_from_the_trainer_context():
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    uids, scores, mask, rewards, tasks, infos = verl_batch()
    side = build_task_batch(sample_info(uids, tasks, infos))
    with task_batch(side):
        adv, ret = get_adv_estimator_fn("gs_grpo")(
            token_level_rewards=rewards, response_mask=mask, index=uids, config=None
        )
    groups = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    expected = gs_grpo_advantages(scores, groups, side.task_ids)
    assert torch.allclose(adv, expected.unsqueeze(-1) * mask)
    assert torch.equal(adv, ret)
    assert torch.equal(adv[mask == 0], torch.zeros(int((mask == 0).sum())))


@pytest.mark.parametrize(
    "overrides",
    [{}, {"decay": 0.5, "floor": 0.3, "guard": 1.0, "eps": 1e-3}],  # OneThinker's constants, and others
)
def test_registered_ema_grpo_carries_the_trainers_task_moments_and_its_configured_constants(overrides):
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    from g2rpo_verl.algorithms.ema_grpo import EmaStdState, TaskMoments, ema_grpo_advantages
    from g2rpo_verl.config import EmaGrpoConfig, G2RPOConfig
    from g2rpo_verl.estimators import EMA_GRPO
    from g2rpo_verl.verl_hooks.task_metrics import estimator_metrics

    cfg = EmaGrpoConfig(**overrides)
    uids, scores, mask, rewards, tasks, infos = verl_batch()
    prior = {"math": TaskMoments(0.4, 0.3), "ocr": TaskMoments(0.5, 0.5)}
    g2rpo = G2RPOConfig(ema_grpo=cfg)
    side = build_task_batch(sample_info(uids, tasks, infos), state=EmaStdState(dict(prior)), g2rpo=g2rpo)
    with task_batch(side):
        adv, ret = get_adv_estimator_fn("ema_grpo")(
            token_level_rewards=rewards, response_mask=mask, index=uids, config=None
        )
    groups = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    constants = {"decay": cfg.decay, "floor": cfg.floor, "guard": cfg.guard, "eps": cfg.eps}
    expected = ema_grpo_advantages(scores.double(), groups, side.task_ids, list(side.task_names), prior, **constants)
    assert torch.allclose(adv, expected.advantages.float().unsqueeze(-1) * mask)
    assert torch.equal(adv, ret)
    default = ema_grpo_advantages(scores.double(), groups, side.task_ids, list(side.task_names), prior)
    assert torch.equal(expected.advantages, default.advantages) == (not overrides)
    # the trainer's state advanced by one step; a task absent here keeps its moments
    assert side.state.moments == expected.moments and side.state.moments["ocr"] == prior["ocr"]
    assert side.state.moments["math"] != prior["math"]
    metrics = estimator_metrics(EMA_GRPO.step_metrics(side.state, g2rpo))
    assert metrics["task_grounding/ema/std"] == pytest.approx(side.state.moments["grounding"].std(cfg.floor))
    assert set(metrics) >= {"task_math/ema/fallback_groups", "task_grounding/ema/fallback_groups"}
    with task_batch(build_task_batch(sample_info(uids, tasks, infos))), pytest.raises(RuntimeError, match="EMA state"):
        get_adv_estimator_fn("ema_grpo")(token_level_rewards=rewards, response_mask=mask, index=uids, config=None)


def test_ema_grpo_constants_are_config_keys_validated_at_load():
    from omegaconf import OmegaConf

    from g2rpo_verl.algorithms.ema_grpo import DECAY, EPS, FLOOR, GUARD
    from g2rpo_verl.config import load_g2rpo_config

    cfg = load_g2rpo_config(OmegaConf.create({})).ema_grpo
    assert (cfg.decay, cfg.floor, cfg.guard, cfg.eps) == (DECAY, FLOOR, GUARD, EPS) == (0.99, 1e-3, 5.0, 1e-6)
    assert load_g2rpo_config(OmegaConf.create({"g2rpo": {"ema_grpo": {"guard": 3}}})).ema_grpo.guard == 3.0
    for key, bad in (("decay", 1.0), ("decay", -0.1), ("floor", 0.0), ("guard", -5), ("eps", float("nan"))):
        with pytest.raises(ValueError, match=f"g2rpo.ema_grpo.{key} must be"):
            load_g2rpo_config(OmegaConf.create({"g2rpo": {"ema_grpo": {key: bad}}}))
    with pytest.raises(ValueError, match="did you mean 'g2rpo.ema_grpo.decay'"):
        load_g2rpo_config(OmegaConf.create({"g2rpo": {"ema_grpo": {"decy": 0.9}}}))


def test_per_task_step_metrics():
    tasks = ["math", "math", "OCR task", "math"]
    infos = [
        {"accuracy": 1.0, "format": 1, "problem_type": "math"},
        {"accuracy": 0.0, "format": None},
        {"accuracy": 0.5},
        {"accuracy": 1.0, "format": 0, "junk": float("nan")},
    ]
    m = task_step_metrics(
        tasks,
        infos,
        rewards=torch.tensor([1.0, 0.0, 0.5, 1.0]),
        advantages=torch.tensor([1.0, -2.0, 0.0, 1.0]),
        lengths=torch.tensor([10, 20, 5, 30]),
        truncated=torch.tensor([False, True, False, False]),
    )
    assert m["task_math/count"] == 3 and m["task_OCR_task/count"] == 1
    assert m["task_math/advantage/mean"] == 0.0 and m["task_math/advantage/min"] == -2.0
    assert m["task_math/reward/accuracy"] == pytest.approx(2 / 3)
    assert m["task_math/reward/format"] == 0.5  # None = not applicable: left out of the mean
    assert "task_math/reward/problem_type" not in m and "task_math/reward/junk" not in m
    assert m["task_math/length/mean"] == 20 and m["task_math/length/truncation_rate"] == pytest.approx(1 / 3)
    assert m["task_OCR_task/reward/total"] == 0.5
    # math advantages (1, -2, 1): mean 0, population sd sqrt(2), skew = mean(z^3) = -1/sqrt(2)
    assert m["task_math/advantage/skew"] == pytest.approx(-1 / math.sqrt(2))
    assert m["task_OCR_task/advantage/skew"] == 0.0  # one sample: no spread, no skew


def test_per_task_entropy_is_a_token_mean_not_a_mean_of_row_means():
    entropy = torch.tensor([[1.0, 1.0, 1.0, 9.0], [4.0, 9.0, 9.0, 9.0], [2.0, 2.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    rows = TokenRows.of(mask)
    m = task_entropy_metrics(["a", "b"], torch.tensor([0, 0, 1]), rows.sum(entropy), rows.counts)
    assert m == {"task_a/entropy": pytest.approx(7 / 4)}  # task b has no tokens: nothing logged


def test_registered_gs_gdpo_uses_reward_components_with_missing_ones_neutral():
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    uids, scores, mask, rewards, tasks, infos = verl_batch()
    names, weights = gdpo_components(OmegaConf.create({"gdpo_reward_keys": None}))
    side = build_task_batch(sample_info(uids, tasks, infos), (names, weights))
    assert side.present[:, 2].tolist() == [i % 4 != 0 for i in range(12)]
    with task_batch(side):
        adv, _ = get_adv_estimator_fn("gs_gdpo")(token_level_rewards=rewards, response_mask=mask, index=uids)
    groups = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    expected = gs_gdpo_advantages(side.components, groups, side.task_ids, weights, side.present)
    assert torch.allclose(adv, expected.float().unsqueeze(-1) * mask)


def test_estimator_without_task_context_explains_what_is_missing():
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    uids, _, mask, rewards, _, _ = verl_batch()
    with pytest.raises(RuntimeError, match="needs each sample's task key"):
        get_adv_estimator_fn("gs_grpo")(token_level_rewards=rewards, response_mask=mask, index=uids)


def test_context_rows_must_match_the_batch_rows():
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    uids, _, mask, rewards, tasks, infos = verl_batch()
    side = build_task_batch(sample_info(uids[::-1], tasks, infos))
    with task_batch(side), pytest.raises(RuntimeError, match="uid mismatch"):
        get_adv_estimator_fn("gs_grpo")(token_level_rewards=rewards, response_mask=mask, index=uids)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_reward_is_an_error_naming_the_sample(bad):
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    uids, _, mask, rewards, tasks, infos = verl_batch()
    rewards[5, 0] = bad
    with (
        task_batch(build_task_batch(sample_info(uids, tasks, infos))),
        pytest.raises(ValueError, match="sample 5 of 12"),
    ):
        get_adv_estimator_fn("gs_grpo")(token_level_rewards=rewards, response_mask=mask, index=uids)


# ------------------------------------------------------------ task keys and components


def test_task_key_lookup_order_column_then_extra_info_then_reward_dict():
    columns = {"uid": ["a", "b"], "data_source": ["geo3k", "chartqa"]}
    extra = [{"problem_type": "math", "task_type": "math_reasoning"}, {"task_type": "chart"}]
    reward = [{"problem_type": "ignored"}, {"problem_type": "numerical"}]
    assert resolve_task_keys("data_source", columns, extra, reward) == ["geo3k", "chartqa"]
    assert resolve_task_keys("problem_type", columns, extra, reward) == ["math", "numerical"]
    assert resolve_task_keys("task_type", columns, extra, reward) == ["math_reasoning", "chart"]


def test_missing_task_key_names_the_key_the_sample_and_where_it_looked():
    columns = {"uid": ["a", "b"], "data_source": ["geo3k", "chartqa"]}
    with pytest.raises(
        ValueError,
        match=r"task_key='problem_type' is missing for 1 of 2 samples \(first: sample 1, data_source='chartqa'\)",
    ):
        resolve_task_keys(
            "problem_type", columns, [{"problem_type": "math"}, {"task_type": "x"}], [None, {"score": 1.0}]
        )


def test_unknown_or_non_numeric_component_is_an_error():
    uids = ["a", "a"]
    with pytest.raises(ValueError, match=r"\['format'\].*returned for no sample.*\['accuracy', 'score'\]"):
        build_task_batch(
            sample_info(uids, ["t", "t"], [{"accuracy": 1.0, "score": 1.0}] * 2), (["accuracy", "format"], [1.0, 1.0])
        )
    with pytest.raises(ValueError, match="component 'accuracy' of sample 1 is 'yes'"):
        build_task_batch(sample_info(uids, ["t", "t"], [{"accuracy": 1.0}, {"accuracy": "yes"}]), (["accuracy"], [1.0]))


def test_config_defaults_and_validation():
    assert load_g2rpo_config(OmegaConf.create({})).task_key == "problem_type"
    assert load_g2rpo_config(OmegaConf.create({"g2rpo": {"task_key": "data_source"}})).task_key == "data_source"
    with pytest.raises(ValueError, match="invalid 'g2rpo' config section.*tasks_key"):
        load_g2rpo_config(OmegaConf.create({"g2rpo": {"tasks_key": "x"}}))
    assert gdpo_components(OmegaConf.create({})) == (list(DEFAULT_GDPO_COMPONENTS), [1.0, 1.0, 1.0])
    assert gdpo_components(OmegaConf.create({"gdpo_reward_keys": ["acc"], "gdpo_reward_weights": [2]})) == (
        ["acc"],
        [2.0],
    )
    with pytest.raises(ValueError, match="gdpo_reward_weights has 1 entries"):
        gdpo_components(OmegaConf.create({"gdpo_reward_keys": ["a", "b"], "gdpo_reward_weights": [1.0]}))


# ------------------------------------------------------------ trainer-side state next to verl's checkpoints


class _Counter:
    def __init__(self):
        self.n = 0

    def state_dict(self):
        return {"n": self.n}

    def load_state_dict(self, state):
        self.n = state["n"]


def _stateful_trainer(tmp_path, parts_of):
    from g2rpo_verl.verl_hooks.base import G2RPOBase

    class VerlTrainer:  # what verl's PPOTrainer does around the plugin's hooks
        def _save_checkpoint(self):  # saves the models, then points its tracker at the step
            folder = os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")
            os.makedirs(folder, exist_ok=True)
            self.state_before_tracker = os.path.exists(os.path.join(folder, "g2rpo_state.json"))

        def _load_checkpoint(self):
            pass

    class Trainer(G2RPOBase, VerlTrainer):
        def __init__(self):  # no config check: only the state mechanism is under test
            self.config = OmegaConf.create({"trainer": {"default_local_dir": str(tmp_path), "resume_mode": "auto"}})
            self.global_steps = 3
            self.parts = parts_of()

        def g2rpo_state_parts(self):
            return {**super().g2rpo_state_parts(), **self.parts}

    return Trainer()


def test_every_state_part_is_saved_with_verls_checkpoint_and_restored(tmp_path):
    saved = _stateful_trainer(tmp_path, lambda: {"length": _Counter(), "ema": _Counter()})
    saved.parts["length"].n, saved.parts["ema"].n = 5, 7
    saved._save_checkpoint()
    assert sorted(os.listdir(tmp_path / "global_step_3")) == ["g2rpo_state.json"]
    # written before verl's tracker points at the step: a run lost in between resumes with it
    assert saved.state_before_tracker

    resumed = _stateful_trainer(tmp_path, lambda: {"length": _Counter(), "ema": _Counter(), "new": _Counter()})
    resumed._load_checkpoint()
    assert (resumed.parts["length"].n, resumed.parts["ema"].n, resumed.parts["new"].n) == (5, 7, 0)


def test_without_state_parts_nothing_is_written(tmp_path):
    trainer = _stateful_trainer(tmp_path, dict)
    trainer._save_checkpoint()
    assert os.listdir(tmp_path / "global_step_3") == []


def test_sample_info_is_read_once_per_batch_and_a_data_source_fallback_never_serves_a_strict_request(monkeypatch):
    from types import SimpleNamespace

    from g2rpo_verl.config import G2RPOConfig
    from g2rpo_verl.verl_hooks import base

    reads = []

    def read(batch, task_key, fallback_to_data_source=False):
        reads.append(fallback_to_data_source)
        if batch.has_key or fallback_to_data_source:
            return SampleInfo.build(["u0"], ["t" if batch.has_key else "ds"], [None])
        raise ValueError("missing")

    monkeypatch.setattr(base, "read_sample_info", read)
    trainer = object.__new__(base.G2RPOBase)
    trainer._g2rpo_config = G2RPOConfig()
    with_key = SimpleNamespace(keys=["k0"], has_key=True)
    strict = trainer.sample_info(with_key)
    assert trainer.sample_info(with_key, fallback_to_data_source=True) is strict and reads == [False]
    without_key = SimpleNamespace(keys=["k1"], has_key=False)
    assert trainer.sample_info(without_key, fallback_to_data_source=True).tasks == ("ds",)
    with pytest.raises(ValueError, match="missing"):
        trainer.sample_info(without_key)
