"""Per-task gradient diagnostics: the Gram-matrix quantities, the row restriction, the metrics, the config.

The exactness under FSDP (2 gloo ranks), micro-batching and a dynamic-batch-size-like split, and
"training unchanged" (parameters after two optimizer steps with dropout on), are in
tests/verl_hooks/test_data_parallel.py; the metrics of a real verl run in tests/e2e/test_e2e_g2rpo.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from g2rpo_verl.algorithms.grad_diagnostics import TaskGradientGram, local_grads, mask_rows, task_gradient_gram
from g2rpo_verl.verl_hooks.grad_diagnostics import (
    GRAM_METRIC,
    TASK_FIELD,
    TaskRestrictedLoss,
    grad_diagnostic_metrics,
    gram_from_metrics,
    gram_metrics,
)


def _gram(*vectors, names=None) -> TaskGradientGram:
    v = torch.tensor(vectors, dtype=torch.float64)
    return TaskGradientGram(tuple(names or [f"t{i}" for i in range(len(vectors))]), v @ v.T)


# ------------------------------------------------------------------ norms, shares, cosines


def test_orthogonal_parts_share_the_update_by_squared_norm():
    g = _gram([3.0, 0.0], [0.0, 4.0])  # g = (3, 4), |g|^2 = 25
    assert g.norms.tolist() == [3.0, 4.0]
    assert g.shares.tolist() == pytest.approx([9 / 25, 16 / 25])
    assert g.cosines[0, 1] == 0.0 and g.total_norm == pytest.approx(5.0)


def test_a_task_pulling_against_the_update_gets_a_negative_share_and_the_shares_still_sum_to_one():
    g = _gram([1.0, 0.0], [-0.5, 0.0])  # g = (0.5, 0): task 0 carries 200 % of it, task 1 -100 %
    assert g.shares.tolist() == pytest.approx([2.0, -1.0])
    assert g.cosines[0, 1].item() == pytest.approx(-1.0)


@pytest.mark.parametrize("seed", range(5))
def test_shares_sum_to_one_and_the_total_norm_is_the_norm_of_the_sum(seed):
    v = torch.randn(4, 7, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    g = TaskGradientGram(("a", "b", "c", "d"), v @ v.T)
    assert g.shares.sum().item() == pytest.approx(1.0)
    assert g.total_norm == pytest.approx(v.sum(0).norm().item())
    assert torch.allclose(g.cosines, torch.nn.functional.cosine_similarity(v[:, None], v[None, :], dim=-1))


def test_a_zero_part_has_undefined_cosines_and_a_zero_gradient_undefined_shares():
    g = _gram([1.0, 2.0], [0.0, 0.0])
    assert math.isnan(g.cosines[0, 1]) and g.norms[1] == 0 and g.shares.tolist() == [1.0, 0.0]
    assert all(math.isnan(s) for s in _gram([0.0], [0.0]).shares.tolist())


# ------------------------------------------------------------------ metrics


def test_metric_names_follow_the_per_task_convention_and_pairs_are_sorted():
    g = _gram([1.0, 0.0], [1.0, 1.0], [0.0, 2.0], names=["spatial grounding", "OCR", "math"])
    m = grad_diagnostic_metrics(g)
    assert set(m) == {
        *(f"task_{t}/grad/{q}" for t in ("spatial_grounding", "OCR", "math") for q in ("norm", "share")),
        "grad/cosine/OCR__math",
        "grad/cosine/OCR__spatial_grounding",
        "grad/cosine/math__spatial_grounding",
    }
    assert m["task_OCR/grad/norm"] == pytest.approx(math.sqrt(2))
    assert m["grad/cosine/math__spatial_grounding"] == pytest.approx(0.0)
    assert sum(m[f"task_{t}/grad/share"] for t in ("spatial_grounding", "OCR", "math")) == pytest.approx(1.0)


def test_the_gram_travels_through_the_workers_metrics_and_back():
    g = _gram([1.0, 2.0], [3.0, -1.0], [0.5, 0.5])
    # verl: per-mini-batch lists, averaged, renamed actor/<key>
    logged = {f"actor/{k}": sum(v) / len(v) for k, v in gram_metrics(g).items()}
    logged["actor/pg_loss"] = 0.1
    assert GRAM_METRIC.format(i=0, j=2) in gram_metrics(g)
    back = gram_from_metrics(logged, g.tasks)
    assert torch.equal(back.gram, g.gram)
    assert logged == {"actor/pg_loss": 0.1}, "the raw Gram entries are not logged"


def test_undefined_cosines_and_shares_are_left_out_not_logged_as_nan():
    m = grad_diagnostic_metrics(_gram([1.0, 2.0], [0.0, 0.0], names=["a", "b"]))
    assert m == {
        "task_a/grad/norm": pytest.approx(math.sqrt(5)),
        "task_a/grad/share": 1.0,
        "task_b/grad/norm": 0.0,
        "task_b/grad/share": 0.0,
    }
    assert set(grad_diagnostic_metrics(_gram([0.0], [0.0], names=["a", "b"]))) == {
        "task_a/grad/norm",
        "task_b/grad/norm",
    }


def test_a_worker_that_returned_no_diagnostics_fails_loudly():
    with pytest.raises(RuntimeError, match="returned no .*gradient diagnostics"):
        gram_from_metrics({"actor/pg_loss": 0.1}, ("a", "b"))


# ------------------------------------------------------------------ the row restriction


def test_mask_rows_zeroes_whole_rows_of_dense_and_jagged_masks():
    jagged = torch.nested.as_nested_tensor(
        [torch.ones(3, dtype=torch.long), torch.ones(2, dtype=torch.long)], layout=torch.jagged
    )
    out = mask_rows(jagged, torch.tensor([False, True]))
    assert out.is_nested and out.to_padded_tensor(0).tolist() == [[0, 0, 0], [1, 1, 0]]
    dense = mask_rows(torch.ones(2, 3, dtype=torch.bool), torch.tensor([True, False]))
    assert dense.tolist() == [[True] * 3, [False] * 3]
    with pytest.raises(ValueError, match="rows"):
        mask_rows(torch.ones(2, 3), torch.tensor([True]))


def _ppo_micro_batch(seed: int = 0):
    """A micro-batch of 5 rows in verl's no-padding layout with verl's ppo_loss inputs."""
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu

    g = torch.Generator().manual_seed(seed)
    lengths, prompt = [3, 5, 2, 4, 1], 2
    jagged = lambda xs: torch.nested.as_nested_tensor(xs, layout=torch.jagged)  # noqa: E731
    td = TensorDict(
        {
            "prompts": jagged([torch.randint(3, 50, (prompt,), generator=g) for _ in lengths]),
            "responses": jagged([torch.randint(3, 50, (n,), generator=g) for n in lengths]),
            "response_mask": jagged([torch.ones(n, dtype=torch.long) for n in lengths]),
            "old_log_probs": jagged([-torch.rand(n, generator=g, dtype=torch.float64) for n in lengths]),
            "advantages": jagged(
                [torch.full((n,), float(torch.randn(1, generator=g)), dtype=torch.float64) for n in lengths]
            ),
            TASK_FIELD: torch.tensor([0, 1, 0, 2, 1]),
        },
        batch_size=[len(lengths)],
    )
    tu.assign_non_tensor(td, dp_size=1, batch_num_tokens=sum(lengths), global_batch_size=len(lengths))
    flat = torch.cat(
        [torch.cat([torch.zeros(prompt - 1), -torch.rand(n, generator=g), torch.zeros(1)]) for n in lengths]
    )
    return td, flat.double().requires_grad_()


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_the_task_restricted_losses_of_verls_ppo_loss_sum_to_the_loss_and_its_gradient(agg):
    from functools import partial

    from test_data_parallel import _actor_config
    from verl.workers.utils.losses import ppo_loss

    config = _actor_config(f"actor_rollout_ref.actor.loss_agg_mode={agg}", "actor_rollout_ref.actor.use_kl_loss=false")
    td, log_probs = _ppo_micro_batch()
    loss_fn = partial(ppo_loss, config=config)
    full, _ = loss_fn(model_output={"log_probs": log_probs}, data=td)
    (full_grad,) = torch.autograd.grad(full, log_probs)
    parts = [TaskRestrictedLoss(loss_fn, t)(model_output={"log_probs": log_probs}, data=td)[0] for t in range(3)]
    grads = [torch.autograd.grad(p, log_probs)[0] for p in parts]
    assert sum(p.item() for p in parts) == pytest.approx(full.item(), rel=1e-12)
    assert torch.allclose(sum(grads), full_grad, rtol=0, atol=1e-15)
    assert all(g.abs().sum() > 0 for g in grads)
    assert td["response_mask"].values().sum() == 15, "the caller's micro-batch was modified"


def test_task_gradient_gram_on_one_process_is_the_gram_of_per_task_autograd_and_leaves_no_gradients():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)).double()
    x, task = torch.randn(6, 4, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 2, 2])

    def loss(mask):  # a mean over the whole batch, restricted by a row mask
        return (model(x).squeeze(-1) ** 2 * mask).sum() / len(x)

    def run(t):
        loss((task == t).double()).backward()

    gram = task_gradient_gram(("a", "b", "c"), model.parameters, run, lambda: model.zero_grad(set_to_none=True))
    assert all(p.grad is None for p in model.parameters())
    parts = []
    for t in range(3):
        grads = torch.autograd.grad(loss((task == t).double()), list(model.parameters()))
        parts.append(torch.cat([g.reshape(-1) for g in grads]))
    ref = torch.stack(parts) @ torch.stack(parts).T
    assert torch.allclose(gram.gram, ref, rtol=1e-14, atol=0)
    full = torch.cat(
        [g.reshape(-1) for g in torch.autograd.grad(loss(torch.ones(6, dtype=torch.float64)), list(model.parameters()))]
    )
    assert gram.total_norm == pytest.approx(full.norm().item(), rel=1e-12)


def test_local_grads_groups_plain_gradients_and_skips_missing_ones():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    a.grad = torch.tensor([1.0, 2.0])
    assert list(local_grads([a, b])) == [None] and local_grads([a, b])[None].tolist() == [1.0, 2.0]


# ------------------------------------------------------------------ config


def _problems(*dotlist):
    from g2rpo_verl.verl_hooks.checks import config_problems

    cfg = OmegaConf.from_dotlist(["algorithm.adv_estimator=grpo", *dotlist])
    return config_problems(cfg, trainer="v1", known_estimators=["grpo"])[0]


def test_the_diagnostics_are_off_by_default_and_validated_early_naming_the_key():
    from g2rpo_verl.config import load_g2rpo_config

    assert load_g2rpo_config(OmegaConf.create({})).diagnostics.grad_every == 0
    assert _problems("g2rpo.diagnostics.grad_every=2", "actor_rollout_ref.actor.strategy=fsdp2") == []
    for bad in ("-1", "x"):
        (problem,) = _problems(f"g2rpo.diagnostics.grad_every={bad}")
        assert "grad_every" in problem
    (problem,) = _problems("g2rpo.diagnostics.grad_evry=2")
    assert "did you mean 'g2rpo.diagnostics.grad_every'" in problem


@pytest.mark.parametrize(
    "override, words",
    [
        ("actor_rollout_ref.actor.strategy=megatron", "FSDP actor engine"),
        ("actor_rollout_ref.actor.policy_loss.loss_mode=clip_cov", "picks tokens across"),
        ("distillation.enabled=true", "distillation"),
    ],
)
def test_what_the_diagnostics_cannot_measure_exactly_is_refused(override, words):
    (problem,) = _problems("g2rpo.diagnostics.grad_every=1", override)
    assert "g2rpo.diagnostics.grad_every" in problem and words in problem
    assert _problems(override) == [] or "distillation" in override
