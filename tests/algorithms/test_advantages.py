"""Specification of the gs_grpo and gs_gdpo estimators (pure torch, docs/method.md)."""

import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from g2rpo_verl import gs_gdpo_advantages, gs_grpo_advantages
from support.reference_impl import gs_gdpo_loop, gs_grpo_loop


def random_batch(rng: random.Random, n_groups: int, n_tasks: int, max_group: int = 16):
    """Groups of 1..max_group samples; every group belongs to one task; rewards with ties."""
    rewards, groups, tasks = [], [], []
    palettes = [[0.0, 1.0], [0.0, 0.5, 1.0], None]  # binary, ternary, dense
    for g in range(n_groups):
        size = rng.randint(1, max_group)
        task = rng.randrange(n_tasks)
        palette = palettes[task % 3]
        for _ in range(size):
            rewards.append(rng.choice(palette) if palette else round(rng.uniform(-3, 3), 2))
            groups.append(g)
            tasks.append(task)
    return rewards, groups, tasks


def as_tensors(rewards, groups, tasks):
    return torch.tensor(rewards, dtype=torch.float64), torch.tensor(groups), torch.tensor(tasks)


@pytest.mark.parametrize("seed", range(60))
def test_gs_grpo_equals_loop_reference_on_random_batches(seed):
    rng = random.Random(seed)
    batch = random_batch(rng, n_groups=rng.randint(1, 40), n_tasks=rng.randint(1, 6))
    out = gs_grpo_advantages(*as_tensors(*batch))
    assert torch.allclose(out, torch.tensor(gs_grpo_loop(*batch), dtype=torch.float64), atol=1e-9)


def test_task_spanning_one_group_reduces_to_stage_one_rescaled():
    r, g, t = as_tensors([0, 0, 0, 0, 1], [0] * 5, [0] * 5)
    # One group per task: stage 2 re-ranks the stage-1 values, which keep their ranks.
    assert gs_grpo_advantages(r, g, t).numpy().round(2).tolist() == [-0.32, -0.32, -0.32, -0.32, 1.28]


def test_response_mask_broadcast_and_zero_on_masked_tokens():
    r, g, t = as_tensors([0.0, 1.0, 0.5, 0.2], [0, 0, 1, 1], [0, 0, 0, 0])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]])
    adv = gs_grpo_advantages(r, g, t, response_mask=mask)
    per_sample = gs_grpo_advantages(r, g, t)
    assert adv.shape == (4, 3)
    assert torch.equal(adv[mask == 0], torch.zeros(int((mask == 0).sum()), dtype=adv.dtype))
    assert torch.allclose(adv, per_sample.unsqueeze(-1) * mask)


group_batches = st.lists(
    st.tuples(st.integers(0, 7), st.integers(0, 2), st.sampled_from([0.0, 0.3, 1.0, 2.5, -4.0])),
    min_size=1,
    max_size=80,
)


def _unpack(rows):
    # a group belongs to one task: derive the task from the group id
    r = torch.tensor([v for _, _, v in rows], dtype=torch.float64)
    g = torch.tensor([gr for gr, _, _ in rows])
    t = g % 3
    return r, g, t


@settings(max_examples=150, deadline=None)
@given(group_batches)
def test_zero_sum_per_task_and_bound(rows):
    r, g, t = _unpack(rows)
    adv = gs_grpo_advantages(r, g, t)
    for task in t.unique():
        a = adv[t == task]
        assert abs(a.sum().item()) < 1e-9
        assert a.abs().max().item() <= norm.ppf(1 - 0.5 / a.numel()) + 1e-12


@settings(max_examples=150, deadline=None)
@given(group_batches)
def test_stage_one_is_zero_sum_per_group(rows):
    from g2rpo_verl import gaussianize

    r, g, _ = _unpack(rows)
    a = gaussianize(r, g)
    for grp in g.unique():
        assert abs(a[g == grp].sum().item()) < 1e-9


@settings(max_examples=150, deadline=None)
@given(group_batches, st.randoms())
def test_invariant_to_increasing_transforms_and_batch_permutation(rows, rnd):
    r, g, t = _unpack(rows)
    adv = gs_grpo_advantages(r, g, t)
    assert torch.equal(gs_grpo_advantages(torch.exp(r / 3) * 10 + 1, g, t), adv)
    perm = list(range(len(rows)))
    rnd.shuffle(perm)
    perm = torch.tensor(perm)
    assert torch.equal(gs_grpo_advantages(r[perm], g[perm], t[perm]), adv[perm])


def test_all_tied_groups_get_zero_whatever_the_group_size():
    r = torch.tensor([1.0] * 5 + [0.0] * 8 + [0.0, 1.0], dtype=torch.float64)
    g = torch.tensor([0] * 5 + [1] * 8 + [2, 2])
    t = torch.zeros(15, dtype=torch.long)
    adv = gs_grpo_advantages(r, g, t)
    # 13 tied zeros from stage 1 tie again in stage 2: one shared value, the mean of their quantiles.
    assert len(torch.unique(adv[:13])) == 1
    assert adv[13] < adv[0] < adv[14]


def test_task_std_tends_to_one_with_many_samples():
    rng = random.Random(3)
    r, g, t = as_tensors(*random_batch(rng, n_groups=3000, n_tasks=2))
    adv = gs_grpo_advantages(r, g, t)
    for task in (0, 1):
        assert abs(adv[t == task].std().item() - 1.0) < 0.05


def test_each_task_gets_the_same_advantage_distribution_whatever_its_reward_scale():
    rng = random.Random(4)
    r, g, _ = as_tensors(*random_batch(rng, n_groups=200, n_tasks=1, max_group=8))
    n = len(r)
    t = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)])
    adv = gs_grpo_advantages(torch.cat([r, 1000 * r]), torch.cat([g, g + 1000]), t)
    assert torch.equal(adv[:n], adv[n:])


def test_gs_grpo_rejects_non_finite_rewards_and_bad_shapes():
    g = torch.tensor([0, 0, 1])
    with pytest.raises(ValueError, match="non-finite.*index 1"):
        gs_grpo_advantages(torch.tensor([0.0, math.nan, 1.0]), g, g)
    with pytest.raises(ValueError, match="task_ids must have shape"):
        gs_grpo_advantages(torch.tensor([0.0, 1.0, 1.0]), g, g[:2])
    with pytest.raises(ValueError, match="integer"):
        gs_grpo_advantages(torch.tensor([0.0, 1.0, 1.0]), g.float(), g)


# ---------------------------------------------------------------- GS-GDPO


def random_components(rng, n, k, p_missing=0.2):
    rows = []
    for _ in range(n):
        rows.append(
            [None if rng.random() < p_missing else rng.choice([0.0, 0.5, 1.0, rng.uniform(0, 1)]) for _ in range(k)]
        )
    return rows


@pytest.mark.parametrize("seed", range(40))
def test_gs_gdpo_equals_loop_reference_with_missing_components(seed):
    rng = random.Random(100 + seed)
    _, groups, tasks = random_batch(rng, n_groups=rng.randint(1, 30), n_tasks=rng.randint(1, 4))
    k = rng.randint(1, 4)
    comps = random_components(rng, len(groups), k)
    weights = [rng.choice([1.0, 0.5, 2.0, 0.0]) for _ in range(k)]
    weights[0] = 1.0
    values = torch.tensor([[math.nan if v is None else v for v in row] for row in comps], dtype=torch.float64)
    present = torch.tensor([[v is not None for v in row] for row in comps])
    out = gs_gdpo_advantages(values, torch.tensor(groups), torch.tensor(tasks), weights, present)
    ref = gs_gdpo_loop(comps, weights, groups, tasks)
    assert torch.allclose(out, torch.tensor(ref, dtype=torch.float64), atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(group_batches, st.sampled_from([0.3, 1.0, 7.0]))
def test_gs_gdpo_with_one_component_equals_gs_grpo(rows, weight):
    r, g, t = _unpack(rows)
    assert torch.equal(gs_gdpo_advantages(r.unsqueeze(1), g, t, [weight]), gs_grpo_advantages(r, g, t))


def test_missing_component_is_neutral_not_a_zero_reward():
    # Group of 3; sample 2 has no format score. Treating it as 0 would rank it last on format.
    acc = [1.0, 1.0, 1.0]  # tied: contributes nothing
    fmt = [1.0, 0.0, None]
    values = torch.tensor([[a, math.nan if f is None else f] for a, f in zip(acc, fmt)], dtype=torch.float64)
    present = torch.tensor([[True, f is not None] for f in fmt])
    g = torch.zeros(3, dtype=torch.long)
    adv = gs_gdpo_advantages(values, g, g, present=present)
    assert adv[0] > adv[2] > adv[1]
    assert adv[2] == 0.0  # neutral sample sits at the centre of the task's distribution


def test_gs_gdpo_errors_are_named():
    g = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="component 1 of sample 0"):
        gs_gdpo_advantages(torch.tensor([[1.0, math.inf], [0.0, 1.0]]), g, g)
    with pytest.raises(ValueError, match="weights must have 2 entries"):
        gs_gdpo_advantages(torch.ones(2, 2), g, g, [1.0])
    with pytest.raises(ValueError, match="at least one positive"):
        gs_gdpo_advantages(torch.ones(2, 2), g, g, [0.0, -1.0])
    with pytest.raises(ValueError, match="present must have shape"):
        gs_gdpo_advantages(torch.ones(2, 2), g, g, present=torch.ones(2, 3, dtype=torch.bool))
