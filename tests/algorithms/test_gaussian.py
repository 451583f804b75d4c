"""Specification of gaussianize: the rank transport onto N(0, 1) (docs/method.md, "The rank transport")."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from g2rpo_verl import gaussianize
from support.reference_impl import gaussianize_list


@pytest.mark.parametrize(
    "rewards, expected",
    [
        ([0, 0, 0, 0, 1], [-0.32, -0.32, -0.32, -0.32, 1.28]),
        ([0, 0, 1, 1, 1], [-0.90, -0.90, 0.60, 0.60, 0.60]),
        ([0.1, 0.1, 0.1, 0.2, 1.0], [-0.60, -0.60, -0.60, 0.52, 1.28]),
        ([0.81, 0.81, 0.82, 0.82, 0.83], [-0.90, -0.90, 0.26, 0.26, 1.28]),
    ],
)
def test_worked_examples_from_design(rewards, expected):
    out = gaussianize(torch.tensor(rewards, dtype=torch.float64))
    assert out.numpy().round(2).tolist() == expected


def test_distinct_values_get_exact_normal_quantiles():
    x = torch.tensor([3.0, -1.0, 10.0, 2.5])
    n = 4
    expected = [norm.ppf((k - 0.5) / n) for k in (3, 1, 4, 2)]
    assert torch.allclose(gaussianize(x), torch.tensor(expected, dtype=torch.float32), atol=1e-6)


def test_segments_are_independent_and_in_any_label_order():
    values = torch.tensor([0.0, 5.0, 1.0, 1.0, 7.0, 0.0, 2.0])
    labels = torch.tensor([42, -3, 42, -3, 42, 9, -3])
    out = gaussianize(values, labels)
    for lab in labels.unique():
        sel = labels == lab
        assert torch.allclose(out[sel], gaussianize(values[sel]), atol=1e-7)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_all_tied_or_single_segment_is_exactly_zero(n):
    assert torch.equal(gaussianize(torch.full((n,), 0.7)), torch.zeros(n))


def test_empty_input():
    assert gaussianize(torch.zeros(0)).shape == (0,)


def test_output_dtype_follows_input_and_integers_are_accepted():
    assert gaussianize(torch.tensor([1.0, 2.0], dtype=torch.float32)).dtype == torch.float32
    assert gaussianize(torch.tensor([1.0, 2.0], dtype=torch.float64)).dtype == torch.float64
    assert gaussianize(torch.tensor([1, 2, 2])).dtype == torch.get_default_dtype()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_rejected_with_their_index(bad):
    with pytest.raises(ValueError, match="index 2"):
        gaussianize(torch.tensor([0.0, 1.0, bad, 0.5]))


def test_shape_errors_are_named():
    with pytest.raises(ValueError, match="1-D"):
        gaussianize(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="group_ids shape"):
        gaussianize(torch.zeros(3), torch.zeros(4, dtype=torch.long))


def test_equal_runs_in_different_segments_are_bitwise_equal():
    # Stage 2 of G²RPO relies on this to see identical group outcomes as ties.
    pattern = [0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    values = torch.tensor(pattern * 50, dtype=torch.float64)
    groups = torch.arange(50).repeat_interleave(8)
    perm = torch.randperm(400, generator=torch.Generator().manual_seed(0))
    out = gaussianize(values[perm], groups[perm])
    assert len(torch.unique(out)) == 2


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(finite, st.sampled_from([0.0, 0.5, 1.0])), min_size=1, max_size=40))
def test_matches_loop_reference(xs):
    out = gaussianize(torch.tensor(xs, dtype=torch.float64))
    assert torch.allclose(out, torch.tensor(gaussianize_list(xs), dtype=torch.float64), atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(st.lists(finite, min_size=1, max_size=40))
def test_rank_invariance_zero_sum_and_bound(xs):
    x = torch.tensor(xs, dtype=torch.float64)
    out = gaussianize(x)
    # Strictly increasing transforms leave the output unchanged.
    for f in (lambda t: 3.0 * t - 7.0, lambda t: torch.sinh(t / 1e5), lambda t: torch.atan(t)):
        fx = f(x)
        if len(torch.unique(fx)) == len(torch.unique(x)):  # skip when floats collapse distinct values
            assert torch.allclose(gaussianize(fx), out, atol=1e-12)
    assert abs(out.sum().item()) < 1e-9
    n = len(xs)
    assert out.abs().max().item() <= norm.ppf(1 - 0.5 / n) + 1e-12


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.sampled_from([0.0, 0.25, 1.0, 3.0])), min_size=1, max_size=60),
    st.randoms(),
)
def test_permuting_the_input_permutes_the_output(pairs, rnd):
    groups = torch.tensor([g for g, _ in pairs])
    values = torch.tensor([v for _, v in pairs], dtype=torch.float64)
    perm = list(range(len(pairs)))
    rnd.shuffle(perm)
    perm = torch.tensor(perm)
    assert torch.equal(gaussianize(values, groups)[perm], gaussianize(values[perm], groups[perm]))


def test_per_segment_std_tends_to_one():
    x = torch.randn(20000, generator=torch.Generator().manual_seed(1), dtype=torch.float64) ** 3
    out = gaussianize(x)
    assert abs(out.std().item() - 1.0) < 1e-3
