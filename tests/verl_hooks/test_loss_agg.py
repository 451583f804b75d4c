"""``g2rpo.loss_agg``: the task_mean definition, verl's loss untouched when off, and the worker-side
loss equal to one process holding the whole mini-batch under every split verl can make.

The worker loss runs verl's own ``ppo_loss`` (vanilla policy loss, KL loss, entropy bonus) on
micro-batches shaped as verl's engine hands them over (jagged fields, flat model output). The
per-row plan comes from verl's own ``make_iterator`` (:func:`minibatch_groups`). Data parallel is
simulated here by averaging the ranks' accumulated gradients (what FSDP's reduce does); the real
FSDP2/gloo run is in tests/verl_hooks/test_data_parallel.py. No Ray, seconds.
"""

import copy
from functools import partial

import pytest
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict

from g2rpo_verl.algorithms.loss_agg import effective_task_weights, task_mean_loss, task_row_counts
from g2rpo_verl.config import LossAggConfig, load_g2rpo_config
from g2rpo_verl.verl_hooks.actor_loss import WEIGHT_FIELD, G2RPOActorLoss
from g2rpo_verl.verl_hooks.minibatch import (
    ROW_FIELD,
    STEP_FIELD,
    minibatch_groups,
    minibatch_plan,
    plan_fields,
    task_plan_fields,
)
from support.verl_config import actor_config

TASKS = [0, 1, 2, 0, 1, 2, 0, 1, 1, 0, 2, 2]
LENGTHS = [9, 2, 5, 7, 1, 3, 8, 2, 3, 6, 4, 0]  # one empty response: excluded from S, contributes nothing


def _actor_config(*extra):
    """verl's actor config (its ppo_trainer.yaml, KL loss and entropy bonus on), a fresh copy per call."""
    return actor_config(
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.actor.use_kl_loss=true",
        "actor_rollout_ref.actor.kl_loss_coef=0.1",
        "actor_rollout_ref.actor.entropy_coeff=0.01",
        *extra,
    )


def _rows(seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for task, n in zip(TASKS, LENGTHS):
        rows.append(
            {
                "task": task,
                "prompt": torch.randint(3, 20, (3,), generator=g),
                "response": torch.randint(3, 20, (n,), generator=g),
                "adv": float(torch.randn(1, generator=g)),
                "old": -1.0 - 0.5 * torch.rand(n, generator=g, dtype=torch.float64),
                "ref": -1.0 - 0.5 * torch.rand(n, generator=g, dtype=torch.float64),
            }
        )
    return rows


def _jagged(xs):
    return torch.nested.as_nested_tensor(xs, layout=torch.jagged)


def _params(rows, seed=1):
    """One leaf per row over prompt+response positions: the 'model' the gradient is taken in."""
    g = torch.Generator().manual_seed(seed)
    return [
        (
            -1.2 + 0.3 * torch.randn(len(r["prompt"]) + len(r["response"]), generator=g, dtype=torch.float64)
        ).requires_grad_()
        for r in rows
    ]


def _output(theta, idx):
    """verl's no-padding model output for rows ``idx``: flat log-probs and entropies (entry j about token j+1)."""
    lp = torch.cat([-torch.nn.functional.softplus(-theta[i]) for i in idx])  # log-probs < 0
    return {"log_probs": lp, "entropy": torch.cat([theta[i].tanh() ** 2 for i in idx])}


def _micro(rows, idx, dp_size, batch_num_tokens, global_batch_size, fields=None):
    from verl.utils import tensordict_utils as tu

    sub = [rows[i] for i in idx]
    td = {
        "prompts": _jagged([r["prompt"] for r in sub]),
        "responses": _jagged([r["response"] for r in sub]),
        "response_mask": _jagged([torch.ones(len(r["response"]), dtype=torch.long) for r in sub]),
        "old_log_probs": _jagged([r["old"] for r in sub]),
        "ref_log_prob": _jagged([r["ref"] for r in sub]),
        "advantages": _jagged([torch.full((len(r["response"]),), r["adv"], dtype=torch.float64) for r in sub]),
    }
    for key, value in (fields or {}).items():
        td[key] = value[idx]
    td = TensorDict(td, batch_size=[len(sub)])
    tu.assign_non_tensor(td, dp_size=dp_size, batch_num_tokens=batch_num_tokens, global_batch_size=global_batch_size)
    return td


def _grad(loss, theta):
    grads = torch.autograd.grad(loss, theta, allow_unused=True)
    return torch.cat([g if g is not None else torch.zeros_like(t) for g, t in zip(grads, theta)])


# ------------------------------------------------------------------ the definition


def test_task_mean_is_the_weighted_mean_of_each_tasks_token_mean():
    loss = torch.tensor([[1.0, 2.0, 3.0], [10.0, 0.0, 0.0], [4.0, 4.0, 0.0], [7.0, 7.0, 7.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [0, 0, 0]])
    task = torch.tensor([0, 1, 0, 2])  # task 2 has no token: absent, its weight goes to the others
    # task 0: (1+2+3+4+4)/5 = 2.8; task 1: 10
    assert task_mean_loss(loss, mask, task, torch.ones(3)).item() == pytest.approx((2.8 + 10) / 2)
    assert task_mean_loss(loss, mask, task, torch.tensor([3.0, 1.0, 5.0])).item() == pytest.approx(0.75 * 2.8 + 2.5)
    # seq-mean-token-mean inside the task: task 0 = (2 + 4) / 2
    assert task_mean_loss(loss, mask, task, torch.ones(3), "seq-mean-token-mean").item() == pytest.approx((3 + 10) / 2)
    # equal token counts per task and equal weights: verl's token-mean
    even = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 1, 0]])
    tokmean = (loss * even).sum() / even.sum()
    assert task_mean_loss(loss, even, torch.tensor([0, 1, 0, 1]), torch.ones(2)).item() == pytest.approx(tokmean)


def test_row_counts_are_each_tasks_tokens_rows_and_weight_in_the_rows_mini_batch():
    row_tokens = torch.tensor([3, 0, 2, 5, 1, 4])
    tasks = torch.tensor([0, 0, 1, 0, 1, 2])
    groups = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 1, 0, 1, 0, 1]])
    c = task_row_counts(row_tokens, tasks, groups, torch.tensor([1.0, 2.0, 1.0]))
    assert c.tokens[0].tolist() == [3, 3, 2, 5, 1, 4]
    assert c.seqs[0].tolist() == [1, 1, 1, 1, 1, 1]  # the empty row is not a sequence
    # epoch 1: mini-batch 0 = rows 0, 2, 4 (task 0: 3 tokens; task 1: 3); mini-batch 1 = rows 1, 3, 5
    assert c.tokens[1].tolist() == [3, 5, 3, 5, 3, 4] and c.seqs[1].tolist() == [1, 1, 2, 1, 2, 1]
    torch.testing.assert_close(c.weight[0], torch.tensor([1 / 3, 1 / 3, 2 / 3, 0.25, 0.5, 0.25], dtype=torch.float64))
    for e, g in enumerate(groups):  # per mini-batch, the present tasks' weights sum to 1
        for k in g.unique():
            cells = {(int(t), float(w)) for t, w in zip(tasks[g == k], c.weight[e][g == k])}
            assert sum(w for _, w in cells) == pytest.approx(1.0)


def test_effective_weights_at_the_papers_lengths_favour_math_under_token_mean_only():
    lengths = torch.tensor([1100.0, 65.0])  # math and grounding at the end of the paper's trend
    w = effective_task_weights(lengths, torch.tensor([8, 8]))
    assert w["token_mean_sample"][0] / w["token_mean_sample"][1] == pytest.approx(1100 / 65)
    assert w["task_mean_task"].tolist() == [0.5, 0.5]


def test_config_key_defaults_off_and_refuses_what_it_cannot_honour():
    assert load_g2rpo_config(None).loss_agg == LossAggConfig(mode="verl", weights={})
    on = load_g2rpo_config(OmegaConf.create({"g2rpo": {"loss_agg": {"mode": "task_mean", "weights": {"math": 2}}}}))
    assert on.loss_agg.task_mean and on.loss_agg.weight("math") == 2.0 and on.loss_agg.weight("OCR") == 1.0
    for bad, needle in (
        ({"mode": "tokenmean"}, "g2rpo.loss_agg.mode"),
        ({"mode": "task_mean", "weights": {"math": 0}}, "g2rpo.loss_agg.weights.math"),
        ({"weights": {"math": 2}}, "mode is not task_mean"),
    ):
        with pytest.raises(ValueError, match=needle):
            load_g2rpo_config(OmegaConf.create({"g2rpo": {"loss_agg": bad}}))


def test_checks_name_each_layout_task_mean_cannot_make_exact():
    from g2rpo_verl.verl_hooks.checks import config_problems

    def problems(**actor):
        cfg = OmegaConf.create(
            {
                "algorithm": {"adv_estimator": "grpo"},
                "actor_rollout_ref": {"actor": actor},
                "g2rpo": {"loss_agg": {"mode": "task_mean"}},
            }
        )
        return config_problems(cfg, trainer="v1", known_estimators=["grpo"])[0]

    assert problems(loss_agg_mode="token-mean") == [] and problems(loss_agg_mode="seq-mean-token-mean") == []
    assert any("loss_agg_mode" in p and "token-sum" in p for p in problems(loss_agg_mode="token-sum"))
    assert any("strategy='megatron'" in p for p in problems(strategy="megatron"))
    assert any("loss_mode=kl_cov" in p for p in problems(policy_loss={"loss_mode": "kl_cov"}))


# ------------------------------------------------------------------ off: verl's loss, bit for bit


def test_mode_verl_returns_verls_own_loss_and_metrics_bitwise():
    from verl.workers.utils.losses import ppo_loss

    rows = _rows()
    idx = [0, 1, 2, 3]
    n_tok = sum(len(rows[i]["response"]) for i in range(len(rows)))
    theta = _params(rows)
    ours = G2RPOActorLoss(partial(ppo_loss, config=_actor_config()), None, task_mean=False)
    theirs = partial(ppo_loss, config=_actor_config())
    la, ma = ours(model_output=_output(theta, idx), data=_micro(rows, idx, 2, n_tok, len(rows)))
    lb, mb = theirs(model_output=_output(theta, idx), data=_micro(rows, idx, 2, n_tok, len(rows)))
    assert torch.equal(la, lb) and torch.equal(_grad(la, theta), _grad(lb, theta))
    assert set(ma) == set(mb)
    for k in ma:
        va, vb = (m.values if hasattr(m, "values") else m for m in (ma[k], mb[k]))
        assert va == vb, k


# ------------------------------------------------------------------ on: exact under every split


def _reference(rows, theta, members, omega, agg):
    """One process, the whole mini-batch ``members``: verl's ppo_loss on each task's rows alone
    (verl normalises by those rows' own tokens / sequences), weighted by the present tasks' ω."""
    from verl.workers.utils.losses import ppo_loss

    tasks = sorted({rows[i]["task"] for i in members if len(rows[i]["response"])})
    total = 0.0
    for t in tasks:
        idx = [i for i in members if rows[i]["task"] == t]
        loss, _ = ppo_loss(
            _actor_config(f"actor_rollout_ref.actor.loss_agg_mode={agg}"),
            model_output=_output(theta, idx),
            data=_micro(rows, idx, 1, None, None),
        )
        total = total + omega[t] / sum(omega[u] for u in tasks) * loss
    return _grad(total, theta)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
@pytest.mark.parametrize(
    "dp,mini,epochs,shuffle,split",
    [
        (1, 12, 1, False, "fixed"),  # one mini-batch, fixed micro-batches (grad accumulation)
        (2, 12, 1, False, "dynamic"),  # dp 2, uneven reordered micro-batches (like use_dynamic_bsz)
        (2, 6, 2, True, "fixed"),  # dp 2, two mini-batches per step, two shuffled epochs
        (1, 4, 2, True, "dynamic"),  # three mini-batches per step, shuffled epochs, uneven split
    ],
)
def test_task_mean_gradient_equals_one_process_holding_each_mini_batch(dp, mini, epochs, shuffle, split, agg):
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.losses import ppo_loss

    rows = _rows()
    omega = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    row_tokens = torch.tensor([len(r["response"]) for r in rows])
    task_ids = torch.tensor(TASKS)
    plan = minibatch_plan(row_tokens, dp, mini, epochs, seed=3, shuffle=shuffle)
    fields = {
        ROW_FIELD: torch.arange(len(rows)),
        STEP_FIELD: torch.full((len(rows),), 11),
        **plan_fields(plan),
        **task_plan_fields(plan, row_tokens, task_ids, omega),
    }
    losses = [
        G2RPOActorLoss(
            partial(ppo_loss, config=_actor_config(f"actor_rollout_ref.actor.loss_agg_mode={agg}")),
            None,
            task_mean=True,
        )
        for _ in range(dp)
    ]
    per_rank = len(rows) // dp
    worst = differs = 0.0
    iters = []
    for rank in range(dp):  # verl's own iterator over each rank's contiguous chunk, seed + rank
        td = TensorDict({"row": torch.arange(per_rank) + rank * per_rank}, batch_size=[per_rank])
        iters.append(tu.make_iterator(td, mini // dp, epochs, 3 + rank, {"shuffle": shuffle}))
    groups = minibatch_groups(len(rows), dp, mini, epochs, 3, shuffle)
    for k, minis in enumerate(zip(*iters)):
        epoch = min(k // (len(rows) // mini), groups.shape[0] - 1)
        theta = _params(rows, seed=k)
        members = sorted(int(i) for m in minis for i in m["row"])
        n_tok = int(row_tokens[members].sum())
        grad = torch.zeros(sum(t.numel() for t in theta), dtype=torch.float64)
        for rank, m in enumerate(minis):
            mine = m["row"].tolist()
            chunks = (
                [mine[i : i + 2] for i in range(0, len(mine), 2)]
                if split == "fixed"
                else [c for c in (mine[::-1][:1], mine[::-1][1:4], mine[::-1][4:]) if c]
            )
            for idx in chunks:
                data = _micro(rows, idx, dp, n_tok, mini, fields)
                loss, metrics = losses[rank](model_output=_output(theta, idx), data=data)
                grad += _grad(loss, theta) / dp  # FSDP averages the ranks' gradients
        assert {int(groups[epoch, i]) for i in members} == {int(groups[epoch, members[0]])}
        ref = _reference(rows, theta, members, omega, agg)
        assert ref.abs().max() > 0
        # not vacuous: verl's own aggregation of the same rows is another gradient
        verl_loss, _ = ppo_loss(
            _actor_config(f"actor_rollout_ref.actor.loss_agg_mode={agg}"),
            model_output=_output(theta, members),
            data=_micro(rows, members, 1, None, None),
        )
        differs = max(differs, ((_grad(verl_loss, theta) - ref).abs().max() / ref.abs().max()).item())
        worst = max(worst, ((grad - ref).abs().max() / ref.abs().max()).item())
        assert {"actor/pg_loss", "kl_loss", "actor/pg_clipfrac"} <= set(metrics)
    print(
        f"\ntask_mean dp={dp} mini={mini} epochs={epochs} shuffle={shuffle} {split} {agg}: "
        f"max rel |Δ grad| vs one process {worst:.2e}"
    )
    assert worst < 1e-10 and differs > 1e-3


def test_task_mean_with_entropy_shaping_adds_the_shaping_term_unchanged():
    from verl.workers.utils.losses import ppo_loss

    rows = _rows()
    row_tokens = torch.tensor([len(r["response"]) for r in rows])
    plan = minibatch_plan(row_tokens, 1, 12, 1, seed=None, shuffle=False)
    weights = torch.linspace(-0.1, 0.1, len(rows), dtype=torch.float32)[:, None]
    fields = {
        ROW_FIELD: torch.arange(12),
        STEP_FIELD: torch.full((12,), 5),
        **plan_fields(plan),
        **task_plan_fields(plan, row_tokens, torch.tensor(TASKS), torch.ones(3)),
        WEIGHT_FIELD: weights,
    }
    theta = _params(rows)
    idx = list(range(12))
    config = _actor_config()
    both = G2RPOActorLoss(partial(ppo_loss, config=config), "exact", task_mean=True)
    only = G2RPOActorLoss(partial(ppo_loss, config=config), None, task_mean=True)
    shaping = G2RPOActorLoss(partial(ppo_loss, config=config), "exact")
    lb, mb = both(model_output=_output(theta, idx), data=_micro(rows, idx, 1, int(row_tokens.sum()), 12, fields))
    lo, _ = only(model_output=_output(theta, idx), data=_micro(rows, idx, 1, int(row_tokens.sum()), 12, fields))
    term = shaping.shaping_term(_output(theta, idx), _micro(rows, idx, 1, int(row_tokens.sum()), 12, fields))
    assert lb.item() == pytest.approx((lo + term).item(), rel=1e-12) and abs(term.item()) > 0
    assert "actor/entropy_shaping_loss" in mb


def test_task_mean_without_the_trainers_fields_fails_naming_them():
    from verl.workers.utils.losses import ppo_loss

    rows = _rows()
    theta = _params(rows)
    loss = G2RPOActorLoss(partial(ppo_loss, config=_actor_config()), None, task_mean=True)
    with pytest.raises(RuntimeError, match="task_mean: the micro-batch lacks the trainer's fields"):
        loss(model_output=_output(theta, [0, 1]), data=_micro(rows, [0, 1], 1, 10, 12))


def test_gradient_diagnostics_split_the_task_mean_loss_into_parts_that_sum_to_its_gradient():
    """The diagnostics restrict whatever loss is installed to one task's rows (TaskRestrictedLoss);
    under task_mean each part is that task's w·A term and the parts sum to the real gradient."""
    from verl.workers.utils.losses import ppo_loss

    from g2rpo_verl.verl_hooks.grad_diagnostics import TASK_FIELD, TaskRestrictedLoss

    rows = _rows()
    row_tokens = torch.tensor([len(r["response"]) for r in rows])
    plan = minibatch_plan(row_tokens, 1, 12, 1, seed=None, shuffle=False)
    fields = {
        ROW_FIELD: torch.arange(12),
        STEP_FIELD: torch.full((12,), 9),
        **plan_fields(plan),
        **task_plan_fields(plan, row_tokens, torch.tensor(TASKS), torch.ones(3)),
        TASK_FIELD: torch.tensor(TASKS),
    }
    theta = _params(rows)
    n_tok = int(row_tokens.sum())
    loss_fn = G2RPOActorLoss(partial(ppo_loss, config=_actor_config()), None, task_mean=True)
    chunks = [[0, 1, 2, 3, 4], [5, 6, 7], [8, 9, 10, 11]]

    def grad_of(fn):
        total = torch.zeros(sum(t.numel() for t in theta), dtype=torch.float64)
        for idx in chunks:
            loss, _ = fn(model_output=_output(theta, idx), data=_micro(rows, idx, 1, n_tok, 12, fields))
            total += _grad(loss, theta)
        return total

    full = grad_of(copy.deepcopy(loss_fn))
    parts = [grad_of(TaskRestrictedLoss(copy.deepcopy(loss_fn), t)) for t in range(3)]
    torch.testing.assert_close(sum(parts), full, rtol=1e-12, atol=1e-15)
    # each part is nonzero only on its task's rows: task 1's rows carry no gradient of task 0's part
    offsets = torch.tensor([0] + [t.numel() for t in theta]).cumsum(0)
    for i, t in enumerate(TASKS):
        for k in range(3):
            seg = parts[k][offsets[i] : offsets[i + 1]]
            assert (seg.abs().max() > 0) == (k == t and LENGTHS[i] > 0)


def test_trainer_with_task_mean_only_writes_the_plan_and_counts_and_installs_the_loss(monkeypatch):
    import pickle
    from types import SimpleNamespace

    import transfer_queue as tq
    from test_entropy_shaping import _Trainer, actor_config

    from g2rpo_verl.config import EntropyShapingConfig
    from g2rpo_verl.verl_hooks.minibatch import PLAN_FIELDS, TASK_PLAN_FIELDS

    section, _ = actor_config(ppo_mini_batch_size=2, ppo_epochs=1, shuffle=False)
    config = OmegaConf.create({"actor_rollout_ref": {"actor": section, "rollout": {"n": 2}}, "algorithm": {}})
    tasks = ["a", "b", "a", "b", "b", "b", "a", "a"]
    lengths = [2, 3, 1, 2, 0, 4, 2, 2]
    store = {"response_mask": _jagged([torch.ones(n, dtype=torch.long) for n in lengths])}
    put = {}

    def kv_get(keys, partition_id, select_fields):
        assert select_fields == ["response_mask"]  # no entropy fetched without the shaping
        return TensorDict({f: store[f] for f in select_fields}, batch_size=[len(keys)])

    monkeypatch.setattr(tq, "kv_batch_get", kv_get)
    monkeypatch.setattr(tq, "kv_batch_put", lambda keys, partition_id, fields: put.update(fields.to_dict()))
    trainer = _Trainer(
        config, EntropyShapingConfig(enable=False), tasks, loss_agg=LossAggConfig(mode="task_mean", weights={"b": 3.0})
    )
    trainer.on_init_end()
    assert isinstance(trainer.loss_fn, G2RPOActorLoss) and trainer.loss_fn.task_mean
    assert trainer.loss_fn.estimator is None and pickle.loads(pickle.dumps(trainer.loss_fn)).task_mean
    batch = SimpleNamespace(keys=[f"k{i}" for i in range(8)], partition_id="train", fields=["input_ids"])
    metrics = {}
    trainer._update_actor(batch, metrics)
    assert trainer.update_saw["calculate_entropy"] is False
    assert set(trainer.update_saw["fields"]) >= {*PLAN_FIELDS, *TASK_PLAN_FIELDS} and WEIGHT_FIELD not in put
    # mini-batch 0 = rows 0-3 (a: 3 tokens in 2 rows, b: 5 in 2), mini-batch 1 = rows 4-7 (a: 4 in 2, b: 4 in 1 row)
    assert put["g2rpo_plan_task_tokens"][:, 0].tolist() == [3, 5, 3, 5, 4, 4, 4, 4]
    assert put["g2rpo_plan_task_seqs"][:, 0].tolist() == [2, 2, 2, 2, 1, 1, 2, 2]
    torch.testing.assert_close(
        put["g2rpo_plan_task_weight"][:, 0],
        torch.tensor([0.25, 0.75, 0.25, 0.75, 0.75, 0.75, 0.25, 0.25], dtype=torch.float64),
    )
    assert metrics["task_a/loss_agg/weight"] == pytest.approx(0.25)
    assert metrics["task_a/loss_agg/token_share"] == pytest.approx((3 / 8 + 4 / 8) / 2)
