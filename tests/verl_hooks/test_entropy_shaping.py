"""Task-level entropy shaping: the penalty, its split-invariant form in verl's loss, the trainer side.

Models are tiny float64 torch modules; micro-batches are built exactly as verl's engine hands
them to the loss (jagged prompts/responses/masks from TransferQueue, flat per-token model output),
so the real :class:`G2RPOActorLoss` and verl's own ``ppo_loss`` run unmodified. No Ray.
"""

import math
import pickle
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict
from torch import nn

from g2rpo_verl.algorithms.entropy import (
    band_slope,
    band_violation,
    coefficient_weights,
    penalty_weights,
    row_entropy_sums,
    shaping_surrogate,
    task_entropy_penalty,
)
from g2rpo_verl.config import EntropyShapingConfig
from g2rpo_verl.verl_hooks import actor_loss as hooks
from g2rpo_verl.verl_hooks.actor_loss import WEIGHT_FIELD, G2RPOActorLoss
from g2rpo_verl.verl_hooks.entropy import EntropyShapingMixin, entropy_shaping_metrics, task_bands
from g2rpo_verl.verl_hooks.minibatch import (
    PLAN_FIELDS,
    ROW_FIELD,
    STEP_FIELD,
    MiniBatchMismatch,
    MiniBatchTracker,
    minibatch_groups,
    minibatch_plan,
)
from g2rpo_verl.verl_hooks.samples import SampleInfo
from support.verl_config import ppo_trainer_config

LOW, HIGH, BETA = 0.2, 0.6, 0.02


# ------------------------------------------------------------------ tiny models and verl-shaped data


class TinyLM(nn.Module):
    """Next-token logits from the current token and the task (shared parameters across tasks)."""

    def __init__(self, vocab=6, tasks=3, dim=8, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.tok = nn.Parameter(torch.randn(vocab, dim, generator=g, dtype=torch.float64))
        self.task = nn.Parameter(torch.randn(tasks, dim, generator=g, dtype=torch.float64))
        self.out = nn.Parameter(torch.randn(dim, vocab, generator=g, dtype=torch.float64))

    def step_logits(self, cur, task):
        return torch.tanh(self.tok[cur] + self.task[task]) @ self.out


class TaskCategorical(nn.Module):
    """Context-free per-task next-token distribution: the entropy of task τ is that of softmax(θ_τ)."""

    def __init__(self, logits):
        super().__init__()
        self.theta = nn.Parameter(torch.as_tensor(logits, dtype=torch.float64).clone())

    def step_logits(self, cur, task):
        return self.theta[task]

    def task_entropy(self, t):
        lp = torch.log_softmax(self.theta[t].detach(), -1)
        return -(lp.exp() * lp).sum().item()


def sample_rows(model, tasks, resp_len, gen, prompt_len=2):
    rows = []
    with torch.no_grad():
        for i, t in enumerate(tasks):
            seq = [int(x) for x in torch.randint(0, 4, (prompt_len,), generator=gen)]
            n = resp_len if isinstance(resp_len, int) else resp_len[i]
            for _ in range(n):
                p = torch.softmax(model.step_logits(torch.tensor(seq[-1]), torch.tensor(t)), -1)
                seq.append(int(torch.multinomial(p, 1, generator=gen)))
            rows.append({"task": t, "prompt": seq[:prompt_len], "response": seq[prompt_len:]})
    return rows


def model_output(model, rows):
    """verl's FSDP engine output without padding: per sequence, entry j is about token j+1 (last is junk)."""
    lps, ents = [], []
    for r in rows:
        seq = torch.tensor(r["prompt"] + r["response"])
        nxt = torch.cat([seq[1:], seq[:1]])
        logp = torch.log_softmax(model.step_logits(seq, torch.full_like(seq, r["task"])), -1)
        lps.append(logp.gather(-1, nxt[:, None])[:, 0])
        ents.append(-(logp.exp() * logp).sum(-1))
    return {"log_probs": torch.cat(lps), "entropy": torch.cat(ents)}


def jagged(xs):
    return torch.nested.as_nested_tensor(xs, layout=torch.jagged)


def micro_batch(rows, weights=None, dp_size=1, batch_num_tokens=None, global_batch_size=None, ref=False, extra=None):
    """A micro-batch TensorDict as verl's engine passes it to the loss (fields fetched from TransferQueue)."""
    from verl.utils import tensordict_utils as tu

    g = torch.Generator().manual_seed(7)
    fields = {
        "prompts": jagged([torch.tensor(r["prompt"]) for r in rows]),
        "responses": jagged([torch.tensor(r["response"]) for r in rows]),
        "response_mask": jagged([torch.ones(len(r["response"]), dtype=torch.long) for r in rows]),
        "old_log_probs": jagged([r.get("old_log_probs", torch.zeros(len(r["response"]))) for r in rows]),
        "advantages": jagged([torch.full((len(r["response"]),), r.get("adv", 0.0)) for r in rows]),
    }
    if ref:
        noise = [0.1 * torch.rand(len(r["response"]), generator=g, dtype=torch.float64) for r in rows]
        fields["ref_log_prob"] = jagged([r["old_log_probs"] - n for r, n in zip(rows, noise)])
    if weights is not None:
        fields[WEIGHT_FIELD] = weights
    fields.update(extra or {})
    td = TensorDict(fields, batch_size=[len(rows)])
    tu.assign_non_tensor(td, dp_size=dp_size, batch_num_tokens=batch_num_tokens, global_batch_size=global_batch_size)
    return td


def padded(rows, per_token):
    """(B, L) response-aligned values and mask from a flat per-sequence tensor (as no_padding_2_padding)."""
    L = max(len(r["response"]) for r in rows)
    out = per_token.new_zeros(len(rows), L)
    mask = torch.zeros(len(rows), L, dtype=torch.bool)
    off = 0
    for i, r in enumerate(rows):
        p, n = len(r["prompt"]), len(r["response"])
        out[i, :n] = per_token[off + p - 1 : off + p - 1 + n]
        mask[i, :n] = True
        off += p + n
    return out, mask


def estimate(out, estimator):
    return out["entropy"] if estimator == "exact" else -out["log_probs"]


def annotate(rows, model, seed=0):
    """Old log-probs (a slightly different policy) and per-row advantages, for verl's ppo_loss."""
    g = torch.Generator().manual_seed(seed)
    lp, _ = padded(rows, model_output(model, rows)["log_probs"].detach())
    for i, r in enumerate(rows):
        n = len(r["response"])
        r["old_log_probs"] = lp[i, :n] + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)
        r["adv"] = float(torch.randn(1, generator=g))
    return rows


def zero_loss(model_output=None, data=None, dp_group=None, **kwargs):
    return torch.zeros((), dtype=torch.float64), {}


def actor_config(**overrides):
    """verl's own actor config (``ppo_trainer.yaml`` defaults) as the worker builds it."""
    from verl.utils.config import omega_conf_to_dataclass

    verl_cfg = ppo_trainer_config("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2")
    section = OmegaConf.create(OmegaConf.to_container(verl_cfg.actor_rollout_ref.actor, resolve=True))
    for key, value in overrides.items():
        OmegaConf.update(section, key, value, merge=False)
    return section, omega_conf_to_dataclass(section)


# ------------------------------------------------------------------ the penalty itself


def test_penalty_is_the_band_violation_of_present_tasks_only():
    ent = torch.tensor([[0.1, 0.3, 9.0], [1.0, 1.0, 1.0], [0.4, 0.5, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 0]])
    tasks = torch.tensor([0, 1, 0])
    low, high = torch.tensor([0.2, 0.2, 0.2]), torch.tensor([0.6, 0.6, 0.6])  # task 2 absent
    h0 = (0.1 + 0.3 + 0.4 + 0.5) / 4  # 0.325: inside
    assert task_entropy_penalty(ent, mask, tasks, low, high, BETA).item() == pytest.approx(BETA * (1.0 - 0.6))
    assert h0 == pytest.approx(0.325)
    # an absent task, or one whose responses are empty, adds nothing (the reference added relu(low - 0))
    empty = torch.zeros_like(mask)
    assert task_entropy_penalty(ent, empty, tasks, low, high, BETA).item() == 0.0
    assert band_violation(torch.tensor([0.1, 0.4, 0.7]), 0.2, 0.6).tolist() == pytest.approx([0.1, 0.0, 0.1])
    assert band_slope(torch.tensor([0.1, 0.2, 0.4, 0.6, 0.7]), 0.2, 0.6).tolist() == [-1.0, 0.0, 0.0, 0.0, 1.0]


def test_weights_are_beta_slope_over_task_tokens_per_group_and_zero_inside_the_band():
    row_sum = torch.tensor([0.1, 0.1, 3.0, 2.0, 0.8, 0.0], dtype=torch.float64)
    row_cnt = torch.tensor([1.0, 1.0, 2.0, 2.0, 2.0, 0.0], dtype=torch.float64)
    tasks = torch.tensor([0, 0, 1, 1, 2, 2])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    low, high = torch.full((3,), LOW, dtype=torch.float64), torch.full((3,), HIGH, dtype=torch.float64)
    w = penalty_weights(row_sum, row_cnt, tasks, groups, low, high, BETA)
    # group 0: task 0 Ĥ=0.1 below (2 tokens), task 1 Ĥ=1.5 above (2 tokens);
    # group 1: task 1 Ĥ=1.0 above (2 tokens), task 2 Ĥ=0.4 inside
    assert w.tolist() == pytest.approx([-BETA / 2, -BETA / 2, BETA / 2, BETA / 2, 0.0, 0.0])
    assert w[4] == 0 and w[5] == 0


@pytest.mark.parametrize("estimator", ["sampled", "exact"])
def test_per_group_weights_equal_weights_computed_on_each_group_alone(estimator):
    model = TinyLM()
    rows = sample_rows(model, [0, 1, 2, 0, 1, 2, 0, 1], [3, 5, 2, 4, 1, 3, 2, 6], torch.Generator().manual_seed(1))
    h, mask = padded(rows, estimate(model_output(model, rows), estimator).detach())
    s, c = row_entropy_sums(h, mask)
    tasks = torch.tensor([r["task"] for r in rows])
    groups = torch.tensor([0, 1, 1, 0, 2, 1, 0, 2])
    low, high = torch.tensor([0.2, 2.0, 0.0]), torch.tensor([0.6, 3.0, 0.1], dtype=torch.float64)
    w = penalty_weights(s, c, tasks, groups, low, high, BETA)
    for g in range(3):
        idx = (groups == g).nonzero()[:, 0]
        alone = penalty_weights(s[idx], c[idx], tasks[idx], torch.zeros_like(idx), low, high, BETA)
        assert torch.equal(w[idx], alone)


# ------------------------------------------------------------------ split invariance in verl's loss

SPLITS = {
    "whole": [list(range(8))],
    "one_row_each": [[i] for i in range(8)],
    "uneven": [[0, 1, 2], [3], [4, 5, 6, 7]],
    "dynamic_bsz_permuted": [[5, 2], [7, 0, 3, 6], [1, 4]],
}


def shaping_grads(model, rows, weights, estimator, split, dp_ranks=1):
    """Σ over micro-batches (and DP ranks, averaged as FSDP does) of the loss term's gradient."""
    loss_fn = G2RPOActorLoss(zero_loss, estimator)
    grads = [torch.zeros_like(p) for p in model.parameters()]
    for rank in range(dp_ranks):
        model.zero_grad(set_to_none=False)
        for micro in split:
            micro = [i for i in micro if i % dp_ranks == rank]
            if not micro:
                continue
            sub = [rows[i] for i in micro]
            data = micro_batch(sub, weights[micro].unsqueeze(-1), dp_size=dp_ranks, batch_num_tokens=1)
            loss, metrics = loss_fn(model_output=model_output(model, sub), data=data)
            assert "actor/entropy_shaping_loss" in metrics
            loss.backward()
        for acc, p in zip(grads, model.parameters()):
            acc += p.grad / dp_ranks  # FSDP/DDP average gradients over data-parallel ranks
    return grads


@pytest.mark.parametrize("estimator", ["sampled", "exact"])
@pytest.mark.parametrize("split", list(SPLITS))
def test_gradient_equals_the_whole_mini_batch_penalty_for_any_micro_batch_split(estimator, split):
    model = TinyLM()
    rows = sample_rows(model, [0, 1, 2, 0, 1, 2, 0, 1], [3, 5, 2, 4, 1, 3, 2, 6], torch.Generator().manual_seed(1))
    tasks = torch.tensor([r["task"] for r in rows])
    # bands chosen so one task is below, one above and one inside
    h, mask = padded(rows, estimate(model_output(model, rows), estimator))
    means = [(h[tasks == t] * mask[tasks == t]).sum() / mask[tasks == t].sum() for t in range(3)]
    low = torch.tensor([means[0].item() + 0.3, 0.0, means[2].item() - 0.1], dtype=torch.float64)
    high = torch.tensor([means[0].item() + 0.5, means[1].item() - 0.2, means[2].item() + 0.1], dtype=torch.float64)
    beta = 0.7

    model.zero_grad()
    task_entropy_penalty(h, mask, tasks, low, high, beta).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    assert all(e.abs().sum() > 0 for e in expected)

    s, c = row_entropy_sums(h.detach(), mask)
    weights = penalty_weights(s, c, tasks, torch.zeros_like(tasks), low, high, beta)
    for dp_ranks in (1, 2):
        got = shaping_grads(model, rows, weights, estimator, SPLITS[split], dp_ranks)
        for e, g in zip(expected, got):
            torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-13)


def test_a_task_inside_the_band_gets_no_gradient_and_an_absent_task_nothing():
    model = TaskCategorical(torch.randn(3, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    rows = sample_rows(model, [0, 0, 1, 1], 4, torch.Generator().manual_seed(2))
    h, mask = padded(rows, model_output(model, rows)["entropy"].detach())
    s, c = row_entropy_sums(h, mask)
    tasks = torch.tensor([r["task"] for r in rows])
    low = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)
    high = torch.tensor([10.0, 0.0, 0.0], dtype=torch.float64)  # task 0 inside, task 1 above, task 2 absent
    w = penalty_weights(s, c, tasks, torch.zeros_like(tasks), low, high, BETA)
    assert torch.all(w[:2] == 0) and torch.all(w[2:] > 0)
    loss_fn = G2RPOActorLoss(zero_loss, "exact")
    model.zero_grad()
    loss, _ = loss_fn(model_output=model_output(model, rows), data=micro_batch(rows, w.float()[:, None]))
    loss.backward()
    assert torch.all(model.theta.grad[0] == 0) and torch.all(model.theta.grad[2] == 0)
    assert model.theta.grad[1].abs().sum() > 0


# ------------------------------------------------------------------ verl's loss stays verl's


LOSS_CASES = [
    {},
    {"loss_agg_mode": "seq-mean-token-sum"},
    {"loss_agg_mode": "seq-mean-token-mean"},
    {"loss_agg_mode": "seq-mean-token-sum-norm"},
    {"loss_agg_mode": "token-sum", "clip_ratio_c": 2.0},
    {"policy_loss.loss_mode": "gspo", "loss_agg_mode": "seq-mean-token-mean"},
    {"policy_loss.loss_mode": "sapo"},
    {"policy_loss.loss_mode": "clip_cov"},
    {"use_kl_loss": True, "kl_loss_coef": 0.1},
    {"use_kl_loss": True, "kl_loss_type": "k1", "entropy_coeff": 0.01},
]


@pytest.mark.parametrize("overrides", LOSS_CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_with_zero_weight_or_no_weights_the_loss_is_verls_own(overrides):
    from verl.workers.utils.losses import ppo_loss

    section, cfg = actor_config(**overrides)
    model = TinyLM()
    rows = annotate(sample_rows(model, [0, 1, 2, 0, 1], [3, 5, 2, 4, 1], torch.Generator().manual_seed(4)), model)
    out = model_output(model, rows)
    kw = dict(batch_num_tokens=15, global_batch_size=5, ref=cfg.use_kl_loss)
    ours = hooks.build_actor_loss(section, "exact")
    assert ours.inner.func is ppo_loss
    pickle.loads(pickle.dumps(ours))  # set_loss_fn ships it to the workers

    base_loss, base_metrics = ppo_loss(cfg, out, micro_batch(rows, **kw))
    for data in (micro_batch(rows, **kw), micro_batch(rows, torch.zeros(5, 1), **kw)):
        loss, metrics = ours(model_output=out, data=data)
        assert torch.equal(loss, base_loss)
        assert set(metrics) - {"actor/entropy_shaping_loss"} == set(base_metrics)

    # and with weights the difference is exactly the shaping term, KL loss on or off
    w = torch.linspace(-0.01, 0.02, 5)[:, None]
    loss, _ = ours(model_output=out, data=micro_batch(rows, w, **kw))
    h, mask = padded(rows, out["entropy"])
    torch.testing.assert_close(loss - base_loss, shaping_surrogate(h, mask, w[:, 0]), rtol=1e-12, atol=1e-12)


def test_distillation_logits_processor_calls_pass_through():
    calls = []

    def inner(**kwargs):
        calls.append(kwargs)
        return "topk-loss" if kwargs.get("student_logits") is not None else (torch.tensor(1.0), {})

    loss_fn = G2RPOActorLoss(inner, "sampled")
    data = micro_batch([{"prompt": [1], "response": [2]}], torch.ones(1, 1))
    assert loss_fn(student_logits=torch.zeros(1), data=data) == "topk-loss"


# ------------------------------------------------------------------ training: the gradient moves entropy into the band


def test_exact_penalty_moves_task_entropy_into_the_band_from_below_and_above_within_a_few_steps():
    gen = torch.Generator().manual_seed(0)
    vocab = 8
    init = torch.zeros(3, vocab, dtype=torch.float64)
    init[0, 0] = 6.0  # peaked: H ≈ 0.11 < low
    init[1] = 0.3 * torch.randn(vocab, generator=gen, dtype=torch.float64)  # near uniform: H ≈ 2.0 > high
    init[2, 0] = 4.5  # H ≈ 0.40, inside
    model = TaskCategorical(init)
    start = [model.task_entropy(t) for t in range(3)]
    assert start[0] < LOW and start[1] > HIGH and LOW < start[2] < HIGH
    opt = torch.optim.Adam(model.parameters(), lr=0.3)
    loss_fn = G2RPOActorLoss(zero_loss, "exact")
    low, high = torch.full((3,), LOW, dtype=torch.float64), torch.full((3,), HIGH, dtype=torch.float64)
    history = []
    for _step in range(25):
        rows = sample_rows(model, [0] * 6 + [1] * 6 + [2] * 6, 4, gen)
        out = model_output(model, rows)
        h_old, mask = padded(rows, out["entropy"].detach())  # the "old policy" entropy verl stores
        tasks = torch.tensor([r["task"] for r in rows])
        w = penalty_weights(*row_entropy_sums(h_old, mask), tasks, torch.zeros_like(tasks), low, high, BETA)
        opt.zero_grad()
        # two micro-batches, like gradient accumulation in verl
        for micro in (list(range(0, 18, 2)), list(range(1, 18, 2))):
            sub = [rows[i] for i in micro]
            loss, _ = loss_fn(model_output=model_output(model, sub), data=micro_batch(sub, w[micro].float()[:, None]))
            loss.backward()
        assert torch.all(model.theta.grad[2] == 0), "a task inside the band must get no gradient"
        opt.step()
        history.append([model.task_entropy(t) for t in range(3)])
        if all(LOW <= e <= HIGH for e in history[-1][:2]):
            break
    final = history[-1]
    assert LOW <= final[0] <= HIGH, history
    assert LOW <= final[1] <= HIGH, history
    assert final[2] == start[2]


def test_sampled_penalty_acts_on_the_batch_tokens_only():
    # −log π(y_t) of the sampled tokens (the reference's estimate) has zero expected gradient
    # when y ~ π, so it acts only through the tokens at hand: on a fixed batch, descending it
    # raises a too-low estimate into the band, but lowers a too-high one only down to the
    # batch's empirical entropy (where π matches the token frequencies), not into the band.
    gen = torch.Generator().manual_seed(1)
    init = torch.zeros(2, 8, dtype=torch.float64)
    init[0, 0] = 5.0
    init[1] = 0.3 * torch.randn(8, generator=gen, dtype=torch.float64)
    model = TaskCategorical(init)
    rows = sample_rows(model, [0] * 8 + [1] * 8, 6, gen)
    tasks = torch.tensor([r["task"] for r in rows])
    low, high = torch.full((2,), LOW, dtype=torch.float64), torch.full((2,), HIGH, dtype=torch.float64)
    loss_fn = G2RPOActorLoss(zero_loss, "sampled")
    opt = torch.optim.Adam(model.parameters(), lr=0.1)

    def h_hat():
        h, mask = padded(rows, -model_output(model, rows)["log_probs"].detach())
        return [((h * mask)[tasks == t].sum() / mask[tasks == t].sum()).item() for t in range(2)]

    counts = torch.bincount(torch.tensor([y for r in rows if r["task"] == 1 for y in r["response"]]), minlength=8)
    freq = counts[counts > 0].double() / counts.sum()
    floor = -(freq * freq.log()).sum().item()
    start = h_hat()
    assert start[0] < LOW and start[1] > HIGH and floor > HIGH
    for _ in range(60):
        h, mask = padded(rows, -model_output(model, rows)["log_probs"].detach())
        w = penalty_weights(*row_entropy_sums(h, mask), tasks, torch.zeros_like(tasks), low, high, BETA)
        opt.zero_grad()
        loss, _ = loss_fn(model_output=model_output(model, rows), data=micro_batch(rows, w[:, None]))
        loss.backward()
        opt.step()
    end = h_hat()
    assert LOW <= end[0] <= HIGH
    assert floor - 1e-6 <= end[1] < start[1]
    assert end[1] == pytest.approx(floor, abs=0.02)


# ------------------------------------------------------------------ verl's mini-batch split, epochs


def test_minibatch_groups_follow_verls_dp_chunks_and_mini_batches():
    # 2 dp ranks, 16 rows, global mini-batch 8 -> 4 per rank: rank r has rows [8r, 8r+8)
    g = minibatch_groups(16, dp_size=2, mini_batch_size=8, epochs=3, seed=42, shuffle=False)
    assert g.shape == (1, 16)
    assert g[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1] * 2
    one = minibatch_groups(8, dp_size=1, mini_batch_size=8, epochs=2, seed=42, shuffle=True)
    assert one.shape == (1, 8) and one.eq(0).all()


def test_minibatch_groups_with_shuffle_and_epochs_match_verls_iterator_per_epoch():
    from verl.utils import tensordict_utils as tu

    g = minibatch_groups(12, dp_size=2, mini_batch_size=4, epochs=2, seed=5, shuffle=True)
    assert g.shape == (2, 12)
    for rank in range(2):
        td = TensorDict({"i": torch.arange(6) + 6 * rank}, batch_size=[6])
        it = tu.make_iterator(td, mini_batch_size=2, epochs=2, seed=5 + rank, dataloader_kwargs={"shuffle": True})
        for k, mb in enumerate(it):
            assert g[k // 3, mb["i"]].eq(k % 3).all()


def test_epoch_columns_follow_how_often_a_row_was_trained_in_the_step():
    loss_fn = G2RPOActorLoss(zero_loss, "sampled")
    rows = [{"prompt": [1], "response": [2, 3], "old_log_probs": torch.zeros(2), "adv": 0.0} for _ in range(3)]
    out = {"log_probs": -torch.ones(9, dtype=torch.float64)}
    w = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])

    def run(idx, step):
        extra = {ROW_FIELD: torch.tensor(idx), STEP_FIELD: torch.full((len(idx),), step)}
        data = micro_batch([rows[i] for i in idx], w[idx], extra=extra)
        return loss_fn.shaping_term({"log_probs": out["log_probs"][: 3 * len(idx)]}, data).item()

    assert run([0, 2], 7) == 2 * (1 + 3)  # epoch 0
    assert run([1], 7) == 2 * 2
    assert run([2, 1], 7) == 2 * (30 + 20)  # epoch 1
    assert run([0], 7) == 2 * 10
    assert run([0], 8) == 2 * 1  # a new step starts at epoch 0
    fresh = pickle.loads(pickle.dumps(loss_fn))
    assert fresh.tracker.seen == {} and fresh.tracker.step is None


# ------------------------------------------------------------------ config, metrics, trainer side


def test_config_validation_and_per_task_bands():
    cfg = EntropyShapingConfig(enable=True, per_task={"math": {"high": 1.5}, "ocr": {"low": 0.0, "high": 0.1}})
    low, high = task_bands(cfg, ["chart", "math", "ocr"])
    assert low.tolist() == [0.2, 0.2, 0.0] and high.tolist() == [0.6, 1.5, 0.1]
    for bad in (
        dict(estimator="logits"),
        dict(beta=-1.0),
        dict(low=0.7, high=0.6),
        dict(per_task={"x": {"hi": 1.0}}),
        dict(per_task={"x": {"low": 0.9}}),
    ):
        with pytest.raises(ValueError, match="g2rpo.entropy"):
            EntropyShapingConfig(**bad)


def test_metrics_are_per_task_with_sanitised_names():
    row_sum = torch.tensor([0.1, 0.3, 4.0, 0.0], dtype=torch.float64)
    row_cnt = torch.tensor([1.0, 1.0, 2.0, 0.0], dtype=torch.float64)
    tasks = torch.tensor([0, 0, 1, 2])
    groups = torch.tensor([[0, 1, 0, 1]])
    low, high = torch.full((3,), LOW, dtype=torch.float64), torch.full((3,), HIGH, dtype=torch.float64)
    m = entropy_shaping_metrics(["multiple choice", "math", "empty"], row_sum, row_cnt, tasks, groups, low, high, BETA)
    assert m["task_multiple_choice/entropy_estimate"] == pytest.approx(0.2)
    # mini-batch 0 has Ĥ=0.1 (penalty β·0.1), mini-batch 1 has Ĥ=0.3 (0)
    assert m["task_multiple_choice/entropy_penalty"] == pytest.approx(BETA * 0.1 / 2)
    assert m["task_math/entropy_estimate"] == pytest.approx(2.0)
    assert m["task_math/entropy_penalty"] == pytest.approx(BETA * 1.4)
    assert not any(k.startswith("task_empty/") for k in m)
    # the step's Ĥ decides out_of_band and the fixed penalty's acting coefficient β·slope
    assert m["task_multiple_choice/entropy/out_of_band"] == 0.0 and m["task_math/entropy/out_of_band"] == 1.0
    assert m["task_multiple_choice/entropy/coef"] == 0.0 and m["task_math/entropy/coef"] == BETA
    # the adaptive controller's coefficients are logged as given, and no β penalty
    coef = torch.tensor([-0.3, 0.8, 0.0], dtype=torch.float64)
    m = entropy_shaping_metrics(
        ["multiple choice", "math", "empty"], row_sum, row_cnt, tasks, groups, low, high, BETA, coef
    )
    assert m["task_multiple_choice/entropy/coef"] == pytest.approx(-0.3) and m["task_math/entropy/coef"] == 0.8
    assert not any(k.endswith("entropy_penalty") for k in m)


@pytest.mark.parametrize("split", list(SPLITS))
def test_coefficient_weights_give_the_gradient_of_sum_coef_times_task_entropy_for_any_split(split):
    model = TinyLM()
    rows = sample_rows(model, [0, 1, 2, 0, 1, 2, 0, 1], [3, 5, 2, 4, 1, 3, 2, 6], torch.Generator().manual_seed(1))
    tasks = torch.tensor([r["task"] for r in rows])
    h, mask = padded(rows, model_output(model, rows)["entropy"])
    coef = torch.tensor([-0.7, 0.4, 0.0], dtype=torch.float64)  # raise task 0, lower task 1, leave task 2
    model.zero_grad()
    sum(coef[t] * (h * mask)[tasks == t].sum() / mask[tasks == t].sum() for t in range(3)).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    weights = coefficient_weights(row_entropy_sums(h.detach(), mask)[1], tasks, torch.zeros_like(tasks), coef)
    assert torch.all(weights[tasks == 2] == 0)
    for dp_ranks in (1, 2):
        got = shaping_grads(model, rows, weights, "exact", SPLITS[split], dp_ranks)
        for e, g in zip(expected, got):
            torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-13)


class _Base:
    """Stands in for verl's PPOTrainer: records what the update saw."""

    def on_init_end(self):
        self.init_called = True

    def _update_actor(self, batch, metrics):
        actor = self.config.actor_rollout_ref.actor
        self.update_saw = {"calculate_entropy": actor.calculate_entropy, "fields": list(batch.fields)}
        return batch


class _Trainer(EntropyShapingMixin, _Base):
    def __init__(self, config, shaping, tasks, loss_agg=None):
        from g2rpo_verl.config import LossAggConfig

        self.config = config
        self._g2rpo_config = SimpleNamespace(entropy=shaping, loss_agg=loss_agg or LossAggConfig())
        self._tasks = tasks
        self.actor_rollout_wg = SimpleNamespace(_dispatch_info={"actor": [0]}, set_loss_fn=self._set)

    def _set(self, fn):
        self.loss_fn = pickle.loads(pickle.dumps(fn))

    def sample_info(self, batch, fallback_to_data_source=False):
        n = len(self._tasks)
        return SampleInfo.build([f"u{i}" for i in range(n)], self._tasks, [None] * n)


@pytest.mark.parametrize("estimator", ["sampled", "exact"])
def test_trainer_writes_weights_requests_entropy_and_installs_the_loss(monkeypatch, estimator):
    import transfer_queue as tq

    section, _ = actor_config(ppo_mini_batch_size=2, ppo_epochs=2, shuffle=False)
    config = OmegaConf.create({"actor_rollout_ref": {"actor": section, "rollout": {"n": 2}}, "algorithm": {}})
    shaping = EntropyShapingConfig(enable=True, estimator=estimator, per_task={"b": {"low": 0.0, "high": 0.05}})
    tasks = ["a", "b", "a", "b", "b", "b", "a", "a"]
    lengths, values = [2, 3, 1, 2, 0, 4, 2, 2], [0.1, 0.5, 0.1, 0.5, 0.0, 0.5, 0.9, 0.9]
    ent = [torch.full((n,), v, dtype=torch.float32) for n, v in zip(lengths, values)]
    store = {
        "entropy": jagged(ent),
        "old_log_probs": jagged([-e for e in ent]),
        "response_mask": jagged([torch.ones(len(e), dtype=torch.long) for e in ent]),
    }
    put = {}

    def kv_get(keys, partition_id, select_fields):
        return TensorDict({f: store[f] for f in select_fields}, batch_size=[len(keys)])

    def kv_put(keys, partition_id, fields):
        put.update(fields.to_dict())
        return SimpleNamespace(fields=list(fields.keys()))

    monkeypatch.setattr(tq, "kv_batch_get", kv_get)
    monkeypatch.setattr(tq, "kv_batch_put", kv_put)
    trainer = _Trainer(config, shaping, tasks)
    trainer.on_init_end()
    assert trainer.init_called and isinstance(trainer.loss_fn, G2RPOActorLoss)
    assert trainer.loss_fn.estimator == estimator

    batch = SimpleNamespace(keys=[f"k{i}" for i in range(8)], partition_id="train", fields=["input_ids"], tags=[{}] * 8)
    metrics = {}
    trainer._update_actor(batch, metrics)
    assert trainer.update_saw["calculate_entropy"] is (estimator == "exact")
    assert config.actor_rollout_ref.actor.calculate_entropy is False  # restored
    assert WEIGHT_FIELD in trainer.update_saw["fields"]
    # mini-batch 0 = rows 0-3: a Ĥ=0.1 (3 tokens) below, b Ĥ=0.5 (5 tokens) above its [0, 0.05];
    # mini-batch 1 = rows 4-7: a Ĥ=0.9 (4 tokens) above, b Ĥ=0.5 (4 tokens) above
    w = put[WEIGHT_FIELD][:, 0]
    expected = [-BETA / 3, BETA / 5, -BETA / 3, BETA / 5, BETA / 4, BETA / 4, BETA / 4, BETA / 4]
    torch.testing.assert_close(w, torch.tensor(expected), rtol=1e-5, atol=0)
    assert put[WEIGHT_FIELD].shape == (8, 1)
    # the plan the loss checks verl's split against: mini-batch, its tokens, its rows on the rank
    assert put[PLAN_FIELDS[0]][:, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert put[PLAN_FIELDS[1]][:, 0].tolist() == [8] * 4 + [8] * 4
    assert put[PLAN_FIELDS[2]][:, 0].tolist() == [4] * 8
    assert put[ROW_FIELD].tolist() == list(range(8)) and put[STEP_FIELD].unique().numel() == 1
    assert metrics["task_a/entropy_estimate"] == pytest.approx((0.3 + 1.8 + 1.8) / 7, rel=1e-6)
    assert metrics["task_b/entropy_penalty"] == pytest.approx(BETA * 0.45, rel=1e-5)


def test_adaptive_trainer_updates_each_tasks_coefficient_from_the_step_and_weights_rows_by_it(monkeypatch):
    import transfer_queue as tq

    from g2rpo_verl.algorithms.entropy_control import AdaptiveEntropyControl, EntropyController

    section, _ = actor_config(ppo_mini_batch_size=4, ppo_epochs=1, shuffle=False)
    config = OmegaConf.create({"actor_rollout_ref": {"actor": section, "rollout": {"n": 2}}, "algorithm": {}})
    gains = AdaptiveEntropyControl(rate=0.5, gain=0.5, coef_max=2.0)
    shaping = EntropyShapingConfig(enable=True, controller="adaptive", adaptive=gains)
    tasks = ["a", "b", "c", "a", "b", "c", "a", "b"]
    lengths, values = [2, 3, 1, 2, 4, 3, 2, 1], [0.05, 0.9, 0.4, 0.05, 0.9, 0.4, 0.05, 0.9]
    ent = [torch.full((n,), v, dtype=torch.float32) for n, v in zip(lengths, values)]
    store = {"entropy": jagged(ent), "response_mask": jagged([torch.ones(len(e), dtype=torch.long) for e in ent])}
    put = {}
    monkeypatch.setattr(
        tq,
        "kv_batch_get",
        lambda keys, partition_id, select_fields: TensorDict(
            {f: store[f] for f in select_fields}, batch_size=[len(keys)]
        ),
    )
    monkeypatch.setattr(tq, "kv_batch_put", lambda keys, partition_id, fields: put.update(fields.to_dict()))
    trainer = _Trainer(config, shaping, tasks)
    reference = EntropyController(gains)
    for _step in range(3):
        metrics = {}
        batch = SimpleNamespace(keys=[f"k{i}" for i in range(8)], partition_id="train", fields=["input_ids"])
        trainer._update_actor(batch, metrics)
        coef = {t: reference.update(t, h, LOW, HIGH) for t, h in (("a", 0.05), ("b", 0.9), ("c", 0.4))}
        assert coef["a"] < 0 < coef["b"] and coef["c"] == 0.0
        for t in coef:
            assert metrics[f"task_{t}/entropy/coef"] == pytest.approx(coef[t])
            assert metrics[f"task_{t}/entropy/out_of_band"] == float(t != "c")
        # one mini-batch of all 8 rows: w = λ_τ / n_τ (a: 6 tokens, b: 8, c: 4)
        expected = [coef[t] / {"a": 6, "b": 8, "c": 4}[t] for t in tasks]
        torch.testing.assert_close(put[WEIGHT_FIELD][:, 0], torch.tensor(expected, dtype=torch.float32))
    # the coefficient grew while a and b stayed outside: it is state, kept across steps
    assert trainer.entropy_controller.coef("b") > EntropyController(gains).update("b", 0.9, LOW, HIGH) > 0


@pytest.mark.parametrize("controller", ["adaptive", "fixed"])
def test_start_band_rule_fixes_each_tasks_band_at_its_first_step_and_is_saved_for_resume(monkeypatch, controller):
    import transfer_queue as tq

    section, _ = actor_config(ppo_mini_batch_size=2, ppo_epochs=1, shuffle=False)
    config = OmegaConf.create({"actor_rollout_ref": {"actor": section, "rollout": {"n": 2}}, "algorithm": {}})
    shaping = EntropyShapingConfig(enable=True, controller=controller, band_rule="start", start_low=0.5, start_high=2)
    tasks = ["a", "b", "a", "b"]
    values = {"step1": [0.1, 0.4, 0.1, 0.4], "step2": [0.02, 0.4, 0.02, 0.4]}
    store = {}
    monkeypatch.setattr(
        tq,
        "kv_batch_get",
        lambda keys, partition_id, select_fields: TensorDict(
            {f: store[f] for f in select_fields}, batch_size=[len(keys)]
        ),
    )
    monkeypatch.setattr(tq, "kv_batch_put", lambda keys, partition_id, fields: None)
    trainer = _Trainer(config, shaping, tasks)
    seen = []
    for step in ("step1", "step2"):
        ent = [torch.full((2,), v, dtype=torch.float32) for v in values[step]]
        store.update({"entropy": jagged(ent), "response_mask": jagged([torch.ones(2, dtype=torch.long)] * 4)})
        metrics = {}
        batch = SimpleNamespace(keys=[f"k{i}" for i in range(4)], partition_id="train", fields=["input_ids"])
        trainer._update_actor(batch, metrics)
        seen.append(metrics)
    # a's band is [0.05, 0.2] from its step-1 entropy 0.1, b's [0.2, 0.8] from 0.4; not the paper's
    for m in seen:
        assert (m["task_a/entropy/band_low"], m["task_a/entropy/band_high"]) == pytest.approx((0.05, 0.2))
        assert (m["task_b/entropy/band_low"], m["task_b/entropy/band_high"]) == pytest.approx((0.2, 0.8))
    # step 1: both at their own start, untouched; step 2: a fell to 0.02, below half its start
    assert seen[0]["task_a/entropy/coef"] == 0.0 and seen[0]["task_b/entropy/coef"] == 0.0
    assert seen[1]["task_a/entropy/out_of_band"] == 1.0 and seen[1]["task_a/entropy/coef"] < 0
    assert seen[1]["task_b/entropy/coef"] == 0.0
    parts = trainer.g2rpo_state_parts()
    assert parts["entropy_bands"].state_dict()["start"] == pytest.approx({"a": 0.1, "b": 0.4})


def test_start_band_rule_shapes_nothing_while_h0_is_measured(monkeypatch):
    import transfer_queue as tq

    section, _ = actor_config(ppo_mini_batch_size=2, ppo_epochs=1, shuffle=False)
    config = OmegaConf.create({"actor_rollout_ref": {"actor": section, "rollout": {"n": 2}}, "algorithm": {}})
    shaping = EntropyShapingConfig(enable=True, band_rule="start", start_steps=2)  # the fixed penalty
    ent = [torch.full((2,), v, dtype=torch.float32) for v in (0.01, 0.9, 0.01, 0.9)]
    store = {"entropy": jagged(ent), "response_mask": jagged([torch.ones(2, dtype=torch.long)] * 4)}
    put = {}
    monkeypatch.setattr(
        tq,
        "kv_batch_get",
        lambda keys, partition_id, select_fields: TensorDict(
            {f: store[f] for f in select_fields}, batch_size=[len(keys)]
        ),
    )
    monkeypatch.setattr(tq, "kv_batch_put", lambda keys, partition_id, fields: put.update(fields.to_dict()))
    trainer = _Trainer(config, shaping, ["a", "b", "a", "b"])
    metrics = {}
    batch = SimpleNamespace(keys=[f"k{i}" for i in range(4)], partition_id="train", fields=["input_ids"])
    trainer._update_actor(batch, metrics)
    # far outside the paper's band, but no band of their own yet: zero weights, no band metrics
    assert torch.equal(put[WEIGHT_FIELD], torch.zeros_like(put[WEIGHT_FIELD]))
    assert not any(k.endswith(("band_low", "band_high", "out_of_band")) for k in metrics)
    assert metrics["task_a/entropy/coef"] == 0.0 and math.isfinite(metrics["task_a/entropy_penalty"])


def test_trainer_with_shaping_off_changes_nothing(monkeypatch):
    section, _ = actor_config()
    config = OmegaConf.create({"actor_rollout_ref": {"actor": section, "rollout": {"n": 2}}, "algorithm": {}})
    trainer = _Trainer(config, EntropyShapingConfig(enable=False), [])
    trainer.on_init_end()
    assert not hasattr(trainer, "loss_fn")
    batch = SimpleNamespace(keys=[], partition_id="train", fields=["input_ids"])
    trainer._update_actor(batch, {})
    assert trainer.update_saw["fields"] == ["input_ids"]


def test_exact_estimator_refuses_bypass_mode():
    from g2rpo_verl.verl_hooks.checks import config_problems

    config = OmegaConf.create(
        {
            "algorithm": {"adv_estimator": "grpo", "rollout_correction": {"bypass_mode": True}},
            "g2rpo": {"entropy": {"enable": True, "estimator": "exact"}},
        }
    )
    problems, _ = config_problems(config, trainer="v1", known_estimators=["grpo"])
    assert len(problems) == 1 and "bypass_mode" in problems[0]


# ------------------------------------------------------------------ the predicted split is checked per row


def _worker_micro_batches(tokens, dp_size, mini_batch_size, epochs, seed, shuffle, micro):
    """What one run of verl's actor update feeds the loss on rank 0: (rows, batch_num_tokens) per micro-batch.

    verl's own ``make_iterator`` forms the mini-batches (rank 0's contiguous chunk, seed + rank);
    ``batch_num_tokens`` is the mini-batch's response tokens summed over all ranks.
    """
    from verl.utils import tensordict_utils as tu

    n = tokens.numel()
    per_rank, mb = n // dp_size, mini_batch_size // dp_size
    iters = []
    for rank in range(dp_size):
        td = TensorDict({"row": torch.arange(per_rank) + rank * per_rank}, batch_size=[per_rank])
        iters.append(tu.make_iterator(td, mb, epochs, seed + rank, {"shuffle": shuffle}))
    out = []
    for minis in zip(*iters):
        total = int(sum(tokens[m["row"]].sum() for m in minis))
        rows = minis[0]["row"]
        out += [(rows[i : i + micro], total) for i in range(0, len(rows), micro)]
    return out


def _feed(tracker, plan, micro_batches, nonce=1):
    for rows, total in micro_batches:
        cols = tracker.epoch_columns(rows, torch.tensor([nonce]), plan.groups.shape[0])
        picked = [
            x.T[rows].gather(1, cols.unsqueeze(-1)).squeeze(1) for x in (plan.groups, plan.tokens, plan.rank_rows)
        ]
        tracker.check(rows, cols, *picked, total)


SPLIT = dict(dp_size=2, mini_batch_size=8, epochs=2, shuffle=True)


def test_the_loss_accepts_verls_split_when_it_is_the_predicted_one():
    tokens = torch.randint(1, 9, (24,), generator=torch.Generator().manual_seed(3))
    plan = minibatch_plan(tokens, seed=11, **SPLIT)
    for micro in (1, 2, 4):
        _feed(MiniBatchTracker(), plan, _worker_micro_batches(tokens, seed=11, micro=micro, **SPLIT))


@pytest.mark.parametrize(
    "worker",
    [
        dict(seed=12),  # another data_loader_seed: rows shuffled into other mini-batches
        dict(seed=11, shuffle=False),  # shuffle turned off on the worker
        dict(seed=11, mini_batch_size=4),  # smaller mini-batches than predicted
        dict(seed=11, mini_batch_size=24),  # one mini-batch where the trainer predicted three
    ],
    ids=["seed", "shuffle", "smaller", "larger"],
)
def test_the_loss_fails_loudly_when_verls_split_differs_from_the_prediction(worker):
    tokens = torch.randint(1, 9, (24,), generator=torch.Generator().manual_seed(3))
    plan = minibatch_plan(tokens, seed=11, **SPLIT)
    actual = _worker_micro_batches(tokens, micro=2, **{**SPLIT, **worker})
    with pytest.raises(MiniBatchMismatch, match="g2rpo.entropy"):
        _feed(MiniBatchTracker(), plan, actual)


def test_the_check_catches_a_different_split_even_when_every_response_has_the_same_length():
    # token counts cannot tell the splits apart here; mini-batch membership still does
    tokens = torch.full((24,), 5)
    plan = minibatch_plan(tokens, seed=11, **SPLIT)
    with pytest.raises(MiniBatchMismatch):
        _feed(MiniBatchTracker(), plan, _worker_micro_batches(tokens, seed=12, micro=2, **SPLIT))


def test_the_loss_runs_the_check_on_the_plan_fields_the_trainer_writes():
    loss_fn = G2RPOActorLoss(zero_loss, "sampled")
    rows = [{"prompt": [1], "response": [2, 3], "old_log_probs": torch.zeros(2), "adv": 0.0} for _ in range(4)]
    out = {"log_probs": -torch.ones(12, dtype=torch.float64)}
    plan = minibatch_plan(torch.full((4,), 2), dp_size=1, mini_batch_size=2, epochs=1, seed=0, shuffle=False)
    extra = {
        ROW_FIELD: torch.arange(4),
        STEP_FIELD: torch.full((4,), 9),
        **{f: x.T.contiguous() for f, x in zip(PLAN_FIELDS, (plan.groups, plan.tokens, plan.rank_rows))},
    }

    def call(idx, batch_num_tokens):
        sub = {k: v[idx] for k, v in extra.items()}
        data = micro_batch(
            [rows[i] for i in idx], torch.ones(len(idx), 1), batch_num_tokens=batch_num_tokens, extra=sub
        )
        return loss_fn.shaping_term({"log_probs": out["log_probs"][: 3 * len(idx)]}, data)

    call([0, 1], 4)  # mini-batch 0 as predicted
    with pytest.raises(MiniBatchMismatch, match="predicted"):
        call([2], 6)  # verl's mini-batch has 6 tokens: not the predicted one


# The real pipeline (exact entropy, KL loss, shuffled mini-batches over two epochs) is the gs_gdpo
# case of tests/e2e/test_e2e_g2rpo.py.
