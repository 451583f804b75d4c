"""Specification of ``ema_grpo`` (OneThinker's per-task EMA-std GRPO, g2rpo_verl.algorithms.ema_grpo)."""

import math
import random

import pytest
import torch

from g2rpo_verl.algorithms.ema_grpo import TaskMoments, ema_grpo_advantages
from support.reference_impl import ema_grpo_loop


def _run(steps, **kw):
    """Feed ``steps`` through ema_grpo_advantages, carrying the moments like the trainer does."""
    moments, outs = {}, []
    for rewards, groups, tasks in steps:
        names = sorted(set(tasks))
        result = ema_grpo_advantages(
            torch.tensor(rewards, dtype=torch.float64),
            torch.tensor(groups),
            torch.tensor([names.index(t) for t in tasks]),
            names,
            moments,
            **kw,
        )
        moments = result.moments
        outs.append(result)
    return outs


def _random_steps(rng: random.Random, n_steps: int):
    steps = []
    for _ in range(n_steps):
        rewards, groups, tasks = [], [], []
        for g in range(rng.randint(1, 12)):
            task = rng.choice(["binary", "iou", "heavy"])
            for _ in range(rng.randint(1, 8)):
                if task == "binary":
                    r = float(rng.random() < 0.3)
                elif task == "iou":
                    r = round(rng.random(), 3)
                else:  # heavy-tailed: an occasional huge value drives the guard
                    r = rng.paretovariate(1.2) * (100 if rng.random() < 0.05 else 1)
                rewards.append(r)
                groups.append(g)
                tasks.append(task)
        steps.append((rewards, groups, tasks))
    return steps


@pytest.mark.parametrize("seed", range(40))
def test_equals_the_loop_reference_over_several_steps(seed):
    steps = _random_steps(random.Random(seed), n_steps=4)
    got = _run(steps)
    want = ema_grpo_loop(steps)
    for result, expected in zip(got, want, strict=True):
        assert torch.allclose(result.advantages, torch.tensor(expected, dtype=torch.float64), atol=1e-9, rtol=1e-9)


def test_worked_example_first_step_uses_the_batch_moments():
    # one binary task, two groups of 4: moments m1 = 3/8, m2 = 3/8 -> σ = sqrt(3/8 - 9/64) = sqrt(15)/8
    rewards = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    (result,) = _run([(rewards, [0, 0, 0, 0, 1, 1, 1, 1], ["b"] * 8)])
    sigma = math.sqrt(15) / 8
    expected = [0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5]
    assert result.advantages.tolist() == pytest.approx([e / (sigma + 1e-6) for e in expected])
    assert result.moments["b"] == TaskMoments(3 / 8, 3 / 8)
    assert result.fallback_groups == {"b": 0}


def test_the_moments_move_by_one_minus_decay_and_absent_tasks_keep_theirs():
    first, second = _run([([0.0, 1.0], [0, 0], ["a"] * 2), ([1.0, 1.0, 5.0, 7.0], [0, 0, 1, 1], ["a", "a", "b", "b"])])
    a = second.moments["a"]
    assert a.m1 == pytest.approx(0.99 * 0.5 + 0.01 * 1.0) and a.m2 == pytest.approx(0.99 * 0.5 + 0.01 * 1.0)
    assert second.moments["b"] == TaskMoments(6.0, 37.0)  # first sight: the batch's own moments
    # a task missing from a batch keeps its moments
    (third,) = _run([([2.0, 3.0], [0, 0], ["c"] * 2)])
    assert "a" not in third.moments


def test_a_group_far_outside_the_task_scale_falls_back_to_its_own_std():
    # the task's EMA scale was set by tiny rewards; a later group with a big spread would reach
    # |A| >> 5 with the task std, so it is divided by its own std: ±1
    steps = [([0.0, 0.01] * 4, [0, 0, 1, 1, 2, 2, 3, 3], ["t"] * 8), ([0.0, 10.0, 0.0, 0.01], [0, 0, 1, 1], ["t"] * 4)]
    _, second = _run(steps)
    assert second.fallback_groups == {"t": 1}
    assert second.advantages[:2].tolist() == pytest.approx([-1.0, 1.0], abs=1e-6)
    # the other group keeps the task scale
    sigma = second.moments["t"].std()
    assert second.advantages[3].item() == pytest.approx(0.005 / (sigma + 1e-6))


def test_tied_group_and_singleton_get_zero_and_the_floor_bounds_sigma():
    (result,) = _run([([0.5, 0.5, 0.5, 2.0], [0, 0, 0, 1], ["t"] * 4)])
    assert result.advantages.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert TaskMoments(1.0, 1.0).std() == 1e-3  # zero variance: the floor


def test_bad_ids_are_refused():
    with pytest.raises(ValueError, match="group_ids"):
        ema_grpo_advantages(
            torch.zeros(3), torch.zeros(2, dtype=torch.long), torch.zeros(3, dtype=torch.long), ["t"], {}
        )
    with pytest.raises(ValueError, match="task names"):
        ema_grpo_advantages(
            torch.zeros(2), torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long), ["t"], {}
        )


def test_state_round_trips_through_json():
    import json

    from g2rpo_verl.algorithms.ema_grpo import EmaStdState

    (result,) = _run([([0.0, 1.0, 0.5, 0.5], [0, 0, 1, 1], ["a", "a", "b", "b"])])
    state = EmaStdState(result.moments)
    restored = EmaStdState()
    restored.load_state_dict(json.loads(json.dumps(state.state_dict())))
    assert restored.moments == result.moments
