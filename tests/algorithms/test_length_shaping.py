"""Specification of task-level response-length shaping (docs/method.md "Response-length shaping")."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from g2rpo_verl import gs_grpo_advantages
from g2rpo_verl.algorithms.length import LengthShaper, TaskLengthRule, ties_within_groups, trapezoid
from g2rpo_verl.config import LengthShapingConfig, load_g2rpo_config
from g2rpo_verl.verl_hooks.samples import TokenRows, response_stats


@pytest.mark.parametrize(
    "length, expected",
    [(5, 0.0), (10, 0.0), (15, 0.5), (20, 1.0), (25, 1.0), (30, 1.0), (40, 0.5), (50, 0.0), (51, 0.0)],
)
def test_trapezoid_envelope(length, expected):
    assert trapezoid(torch.tensor([length]), 10, 20, 30, 50).item() == pytest.approx(expected)


def test_trapezoid_with_zero_width_ramps_is_a_step_and_bounds_may_differ_per_sample():
    assert trapezoid(torch.tensor([9, 10, 30, 31]), 10, 10, 30, 30).tolist() == [0.0, 1.0, 1.0, 0.0]
    L = torch.tensor([15.0, 15.0])
    out = trapezoid(
        L, torch.tensor([10.0, 0.0]), torch.tensor([20.0, 0.0]), torch.tensor([30.0, 10.0]), torch.tensor([50.0, 20.0])
    )
    assert out.tolist() == [0.5, 0.5]


def test_reasoning_plateau_starts_beyond_successful_length_within_floor_and_ceiling():
    rule = TaskLengthRule("reasoning", floor=500, ceiling=2000, stretch=0.1, width=0.5, ramp=0.5)
    assert rule.bounds(1000) == pytest.approx((550, 1100, 1650, 2475))
    assert rule.bounds(100)[1] == 500  # floor
    assert rule.bounds(5000)[1] == 2000  # ceiling
    assert rule.initial_length() == 500


def test_perception_plateau_ends_short_of_successful_length_within_floor_and_ceiling():
    rule = TaskLengthRule("perception", floor=32, ceiling=128, stretch=0.1, width=1.0, ramp=1.0)
    assert rule.bounds(100) == pytest.approx((0, 0, 90, 180))
    assert rule.bounds(1000)[2] == 128
    assert rule.bounds(10)[2] == 32
    assert rule.initial_length() == 128


def test_neutral_profile_scores_every_length_one():
    shaper = LengthShaper({}, lambda t: TaskLengthRule("neutral"))
    assert shaper.score(torch.tensor([0, 7, 10_000]), ["x"] * 3).tolist() == [1.0, 1.0, 1.0]


def test_config_rules_per_task_profile_defaults_and_errors_name_the_task():
    cfg = load_g2rpo_config(
        OmegaConf.create({"g2rpo": {"length": {"tasks": {"math": {"floor": 100}, "chart": {"profile": "reasoning"}}}}})
    )
    length = cfg.length
    assert length.rule("math") == TaskLengthRule(
        "reasoning", floor=100, ceiling=2048, stretch=0.1, width=0.5, ramp=0.5, rate=0.05
    )
    assert length.rule("chart").profile == "reasoning"
    assert length.rule("spatial grounding").profile == "perception"  # built-in name
    assert length.rule("unknown task").profile == "neutral"
    bad = LengthShapingConfig(tasks={"OCR": {"floor": 200, "ceiling": 100}})
    with pytest.raises(ValueError, match="task 'OCR'.*floor <= ceiling"):
        bad.rule("OCR")
    with pytest.raises(ValueError, match="task 'x'.*unexpected keyword"):
        LengthShapingConfig(tasks={"x": {"flor": 1}}).rule("x")
    with pytest.raises(ValueError, match="truncation"):
        load_g2rpo_config(OmegaConf.create({"g2rpo": {"length": {"truncation": "drop"}}}))


def test_truncation_comes_from_eos_not_from_tensor_width():
    eos, pad = 2, 0
    # ends with EOS; hits the limit without EOS; empty
    rows = [[5, 6, eos], [5, 6, 7, 8], []]
    for width in (4, 9):
        responses = torch.full((3, width), pad)
        mask = torch.zeros(3, width, dtype=torch.long)
        for i, r in enumerate(rows):
            responses[i, : len(r)] = torch.tensor(r, dtype=torch.long) if r else responses[i, :0]
            mask[i, : len(r)] = 1
        lengths, truncated = response_stats(responses, TokenRows.of(mask), {eos})
        assert lengths.tolist() == [3, 4, 0]
        assert truncated.tolist() == [False, True, False]
    # as TransferQueue holds them: jagged rows, no width at all
    nested = torch.nested.as_nested_tensor([torch.tensor(r, dtype=torch.long) for r in rows], layout=torch.jagged)
    ones = torch.nested.as_nested_tensor([torch.ones(len(r), dtype=torch.long) for r in rows], layout=torch.jagged)
    lengths, truncated = response_stats(nested, TokenRows.of(ones), {eos})
    assert lengths.tolist() == [3, 4, 0]
    assert truncated.tolist() == [False, True, False]


def test_running_state_round_trips_so_a_resumed_run_has_the_same_bounds():
    cfg = LengthShapingConfig()
    shaper = LengthShaper({}, cfg.rule, momentum=0.5)
    tasks = ["math"] * 4 + ["OCR"] * 4
    success = torch.tensor([1, 1, 1, 0, 1, 1, 0, 0]).bool()
    assert shaper.bounds("math")[1] == 512 and shaper.bounds("OCR")[2] == 128  # the limits, before any success
    shaper.update(torch.tensor([900, 1000, 1100, 5, 60, 70, 80, 90]), tasks, success)
    # m starts at the mean of the first successes; the edges move at most rate = 5 % toward their targets
    assert shaper.state["math"].running_length == pytest.approx(1000.0)
    assert shaper.bounds("math")[1] == pytest.approx(512 * 1.05)  # target 1.1·m = 1100
    assert shaper.bounds("OCR")[2] == pytest.approx(128 * 0.95)  # target 0.9·m = 58.5
    shaper.update(torch.tensor([560, 560, 560, 5, 40, 40, 80, 90]), tasks, success)
    # later steps: EMA (momentum 0.5) -> m = 780, target 858: the edges again move by 5 %
    assert shaper.state["math"].running_length == pytest.approx(780.0)
    assert shaper.bounds("math")[1] == pytest.approx(512 * 1.05**2)
    assert shaper.bounds("OCR")[2] == pytest.approx(128 * 0.95**2)
    restored = LengthShaper({}, cfg.rule, momentum=0.5)
    restored.load_state_dict(shaper.state_dict())
    for task in ("math", "OCR", "never seen"):
        assert restored.bounds(task) == shaper.bounds(task)
    # a state file without the edge (written before it was kept) restores the edge on its target
    old = shaper.state_dict()
    for saved in old["tasks"].values():
        del saved["edge"]
    restored.load_state_dict(old)
    assert restored.bounds("math")[1] == pytest.approx(858.0)


@pytest.mark.parametrize("profile", ["reasoning", "perception"])
def test_the_edge_moves_only_toward_the_profile_direction_at_a_bounded_rate_and_converges(profile):
    rule = TaskLengthRule(profile, floor=10, ceiling=100, rate=0.05)
    shaper = LengthShaper({"t": rule}, None, momentum=0.5)
    edge_index = 1 if profile == "reasoning" else 2
    assert shaper.bounds("t")[edge_index] == (10 if profile == "reasoning" else 100)  # starts at the limit
    # successful lengths wander up and down; the edge only ever moves one way, by <= 5 % a step
    path = [40, 60, 30, 80, 20, 90, 50, 50, 50, 50] + [50] * 60
    edges = []
    for length in path:
        shaper.update(torch.tensor([float(length)]), ["t"], torch.tensor([True]))
        edges.append(shaper.bounds("t")[edge_index])
    steps = [b / a - 1 for a, b in zip(edges, edges[1:])]
    if profile == "reasoning":
        assert all(0 <= s <= 0.05 + 1e-12 for s in steps)
    else:
        assert all(-0.05 - 1e-12 <= s <= 0 for s in steps)
    # constant successful lengths: the edge settles (monotone and bounded) and stays
    assert edges[-1] == edges[-2] == pytest.approx(rule.step_edge(edges[-1], rule.target_edge(50.0)))
    assert rule.floor <= edges[-1] <= rule.ceiling


def test_the_length_term_is_worth_about_0_02_reward_between_typical_lengths():
    """The pressure the rule puts on a response at the running length m (module docstring)."""
    cfg = LengthShapingConfig()
    m = torch.tensor([1000.0])
    reasoning, perception = cfg.rule("math"), cfg.rule("OCR")
    at_m_r = trapezoid(m, *reasoning.bounds(1000.0)).item()
    at_m_p = trapezoid(m * 0.1, *perception.bounds(100.0)).item()
    assert at_m_r == pytest.approx(0.45 / 0.55)  # 0.82: the plateau starts at 1.1·m
    assert at_m_p == pytest.approx(1 - 0.1 / 0.9)  # 0.89: the plateau ends at 0.9·m
    assert cfg.weight * (1 - at_m_r) < 0.02 and cfg.weight * (1 - at_m_p) < 0.02
    # ... yet among tied group mates it decides G²RPO's ranks in full
    rewards = torch.tensor([1.0] * 4 + [0.0] * 4) + cfg.weight * torch.tensor([at_m_r, 1.0, at_m_r, 1.0] * 2)
    adv = gs_grpo_advantages(rewards, torch.zeros(8, dtype=torch.long), torch.zeros(8, dtype=torch.long))
    assert adv[1] > adv[0] and adv[5] > adv[4] and adv[1] - adv[0] > 0.5


def test_ties_within_groups_mark_the_responses_whose_rank_the_length_term_decides():
    rewards = torch.tensor([1.0, 1.0, 0.5, 1.0, 0.2, 0.3])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    assert ties_within_groups(rewards, groups).tolist() == [True, True, False, False, False, False]


def test_simulated_training_lengthens_reasoning_and_shortens_grounding():
    """Toy policy per task: log-length ~ N(mu, 0.3); accuracy is a coin flip independent of length.

    Rewards = accuracy + 0.1·length score, advantages from gs_grpo, and REINFORCE on mu.
    Only the length term carries information about mu, so any drift is its doing.
    """
    torch.manual_seed(0)
    cfg = LengthShapingConfig(
        momentum=0.8,
        tasks={"math": {"floor": 120, "ceiling": 400}, "spatial grounding": {"floor": 8, "ceiling": 24}},
    )
    shaper = LengthShaper({}, cfg.rule, momentum=cfg.momentum)
    mu = {"math": math.log(40.0), "spatial grounding": math.log(80.0)}
    sigma, lr, prompts, n = 0.3, 0.05, 32, 8
    names = list(mu)
    for _step in range(120):
        tasks = [names[(i // n) % 2] for i in range(prompts * n)]
        log_len = torch.tensor([mu[t] for t in tasks]) + sigma * torch.randn(len(tasks))
        lengths = log_len.exp().round().clamp(min=1)
        accuracy = (torch.rand(len(tasks)) < 0.5).double()
        reward = accuracy + cfg.weight * shaper.score(lengths, tasks)
        groups = torch.arange(len(tasks)) // n
        task_ids = torch.tensor([names.index(t) for t in tasks])
        adv = gs_grpo_advantages(reward, groups, task_ids)
        for t, name in enumerate(names):
            sel = task_ids == t
            mu[name] += lr * (adv[sel] * (log_len[sel] - mu[name]) / sigma).mean().item()
        shaper.update(lengths, tasks, accuracy.bool())
        for name in names:
            a, b, c, d = shaper.bounds(name)
            rule = cfg.rule(name)
            edge = b if rule.profile == "reasoning" else c
            assert rule.floor <= edge <= rule.ceiling and a <= b <= c <= d
    assert math.exp(mu["math"]) > 120  # rose from 40 to the reasoning floor or beyond
    assert math.exp(mu["spatial grounding"]) < 30  # fell from 80 to the perception ceiling or below


@pytest.mark.parametrize(
    "estimator, mode, keys, error",
    [
        ("gs_gdpo", "reward", None, "ignores the summed reward"),
        ("gdpo", "reward", ["accuracy"], "ignores the summed reward"),
        ("gs_grpo", "component", None, "needs algorithm.adv_estimator=gs_gdpo"),
        ("gs_gdpo", "component", ["accuracy"], "'length' in algorithm.gdpo_reward_keys"),
        ("gs_gdpo", "component", ["accuracy", "length"], None),
        ("grpo", "reward", None, None),
    ],
)
def test_length_mode_must_reach_the_estimator(estimator, mode, keys, error):
    from g2rpo_verl.verl_hooks.checks import config_problems

    config = OmegaConf.create(
        {
            "algorithm": {"adv_estimator": estimator, "gdpo_reward_keys": keys},
            "g2rpo": {"length": {"enable": True, "mode": mode}},
        }
    )
    problems, _ = config_problems(config, trainer="v1", known_estimators=["grpo", "gdpo"])
    if error is None:
        assert problems == []
    else:
        assert len(problems) == 1 and error in problems[0]
