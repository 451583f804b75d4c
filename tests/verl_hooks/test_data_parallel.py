"""Data parallel on the CPU: two FSDP2 ranks on gloo give what one rank gives.

The exactness test runs the actor's loss path as verl's workers run it — a real (tiny) Qwen2
sharded with verl's own ``apply_fsdp2``, per-rank contiguous chunks of the batch, micro-batches
with gradient accumulation, verl's ``ppo_loss`` with the KL loss on, wrapped by the plugin's
:class:`G2RPOActorLoss` — in one process (dp = 1) and in two gloo processes (dp = 2), on the
same fixed batch. The trainer-side numbers (per-task entropy and shaping metrics, the per-row
weights) are computed from the old policy's per-token entropy, which the workers compute
sharded too. Seconds, no Ray.

The demo's real pipeline with two ranks is tests/e2e/test_data_parallel_demo.py.
"""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from g2rpo_verl.demo.fixtures import tiny
from support.verl_config import actor_config

TASKS = ["numerical", "OCR", "math"]
ROW_TASKS = [0, 1, 2, 0, 1, 2, 0, 1]  # 8 rows: dp = 2 gives each rank 4 contiguous rows
RESPONSE_LENGTHS = [5, 3, 6, 2, 4, 7, 3, 5]
PROMPT_LENGTH = 4
MICRO_BATCH = 2  # rows per micro-batch on each rank
BETA = 0.5
TASK_MEAN_WEIGHTS = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)  # g2rpo.loss_agg.weights, per task


def _fixed_batch(vocab: int) -> dict:
    g = torch.Generator().manual_seed(0)
    rows = []
    for task, n in zip(ROW_TASKS, RESPONSE_LENGTHS):
        rows.append(
            {
                "task": task,
                "prompt": torch.randint(3, vocab, (PROMPT_LENGTH,), generator=g),
                "response": torch.randint(3, vocab, (n,), generator=g),
                "adv": float(torch.randn(1, generator=g)),
                "noise": 0.05 * torch.randn(n, generator=g, dtype=torch.float64),
            }
        )
    return {"rows": rows}


def _double_model(model_dir, **kwargs):
    """The tiny Qwen2 in float64 throughout. transformers' RMSNorm and its eager attention's
    softmax compute in float32 whatever the model's dtype, so a 1e-16 difference between two batch
    shapes (another matmul blocking, another thread count) can round to another float32 (~1e-8
    relative; it did, depending on the machine). With sdpa attention and the norm in the input
    dtype the comparisons below measure the plugin's arithmetic, not that rounding."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa", **kwargs).double()
    for module in model.modules():
        if type(module).__name__ == "Qwen2RMSNorm":
            module.forward = partial(_rms_norm_in_input_dtype, module)
    return model


def _rms_norm_in_input_dtype(norm, hidden: torch.Tensor) -> torch.Tensor:
    return norm.weight * (hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon))


def _forward(model, rows) -> tuple[torch.Tensor, torch.Tensor]:
    """verl's no-padding model output for ``rows``: flat per-token log-prob and entropy, entry j
    of a sequence being about its token j+1 (the last one of each sequence unused)."""
    seqs = [torch.cat([r["prompt"], r["response"]]) for r in rows]
    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)] = s, 1
    logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.double(), -1)
    nxt = torch.cat([ids[:, 1:], ids[:, :1]], 1)
    tok = logp.gather(-1, nxt[..., None])[..., 0]
    ent = -(logp.exp() * logp).sum(-1)
    return (
        torch.cat([tok[i, : len(s)] for i, s in enumerate(seqs)]),
        torch.cat([ent[i, : len(s)] for i, s in enumerate(seqs)]),
    )


def _response_values(rows, flat: torch.Tensor) -> list[torch.Tensor]:
    out, off = [], 0
    for r in rows:
        p, n = len(r["prompt"]), len(r["response"])
        out.append(flat[off + p - 1 : off + p - 1 + n])
        off += p + n
    return out


def _micro_batch(rows, weights, dp_size: int, batch_num_tokens, global_batch_size, tasks=None, fields=None):
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu

    from g2rpo_verl.verl_hooks.actor_loss import WEIGHT_FIELD
    from g2rpo_verl.verl_hooks.grad_diagnostics import TASK_FIELD

    def jagged(xs):
        return torch.nested.as_nested_tensor(xs, layout=torch.jagged)

    td_fields = {
        "prompts": jagged([r["prompt"] for r in rows]),
        "responses": jagged([r["response"] for r in rows]),
        "response_mask": jagged([torch.ones(len(r["response"]), dtype=torch.long) for r in rows]),
        "old_log_probs": jagged([r["old_log_probs"] for r in rows]),
        "ref_log_prob": jagged([r["ref_log_prob"] for r in rows]),
        "advantages": jagged([torch.full((len(r["response"]),), r["adv"], dtype=torch.float64) for r in rows]),
        WEIGHT_FIELD: weights[:, None].to(torch.float32),
    }
    if tasks is not None:  # the per-row task index the trainer writes for the gradient diagnostics
        td_fields[TASK_FIELD] = torch.as_tensor(tasks, dtype=torch.long)
    td = TensorDict({**td_fields, **(fields or {})}, batch_size=[len(rows)])
    tu.assign_non_tensor(td, dp_size=dp_size, batch_num_tokens=batch_num_tokens, global_batch_size=global_batch_size)
    return td


def _rank_main(rank: int, world: int, init_file: str, model_dir: str, io_path: str) -> None:
    """One data-parallel rank of one training step: the old policy's entropy (the trainer side's
    input), then the actor update with the shaping weights and, for reference, without; then the
    per-task gradient diagnostics of that update (:func:`_rank_diagnostics`)."""
    from torch.distributed.device_mesh import init_device_mesh
    from verl.utils.fsdp_utils import apply_fsdp2
    from verl.workers.utils.losses import ppo_loss

    from g2rpo_verl.verl_hooks.actor_loss import G2RPOActorLoss

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        io = torch.load(io_path, weights_only=False)
        rows = io["rows"]
        model = _double_model(model_dir)
        apply_fsdp2(model, {"mesh": init_device_mesh("cpu", (world,))}, {})
        per_rank = len(rows) // world
        mine = list(range(rank * per_rank, (rank + 1) * per_rank))  # verl's contiguous dp chunks

        with torch.no_grad():  # compute_log_prob of the old policy, sharded like the update
            _, ent = _forward(model, [rows[i] for i in mine])
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, _response_values([rows[i] for i in mine], ent))
        entropy = [e for part in gathered for e in part]
        weights, metrics = _trainer_side(rows, entropy, world)  # the driver's computation, on every rank
        for i, r in enumerate(rows):  # fixed old / reference log-probs around the old policy's values
            r["old_log_probs"] = -entropy[i] + r["noise"]
            r["ref_log_prob"] = -entropy[i] - r["noise"]

        loss_fn = G2RPOActorLoss(partial(ppo_loss, config=io["actor_config"]), "exact")
        n_tokens = sum(len(r["response"]) for r in rows)  # the global mini-batch, as verl passes it

        def update(w: torch.Tensor, loss_fn=loss_fn, fields=None):
            model.zero_grad(set_to_none=True)
            losses = []
            for start in range(0, per_rank, MICRO_BATCH):
                idx = mine[start : start + MICRO_BATCH]
                sub = [rows[i] for i in idx]
                log_probs, token_entropy = _forward(model, sub)
                own = None if fields is None else {k: v[idx] for k, v in fields.items()}
                data = _micro_batch(sub, w[idx], world, n_tokens, len(rows), fields=own)
                loss, m = loss_fn(model_output={"log_probs": log_probs, "entropy": token_entropy}, data=data)
                loss.backward()
                losses.extend(m["actor/entropy_shaping_loss"].values)
            totals = [None] * world
            torch.distributed.all_gather_object(totals, sum(losses))
            grads = {n: p.grad.full_tensor().clone() for n, p in model.named_parameters()}
            # verl's Metric.aggregate_dp: summed over micro-batches, averaged over dp ranks
            return grads, sum(totals) / world

        grads, shaping_loss = update(weights)
        unshaped, _ = update(torch.zeros_like(weights))
        # g2rpo.loss_agg.mode=task_mean with the shaping on: the trainer's plan fields, a fresh loss
        task_mean_fn = G2RPOActorLoss(partial(ppo_loss, config=io["actor_config"]), "exact", task_mean=True)
        task_mean, _ = update(weights, task_mean_fn, _task_mean_fields(rows, world))
        diag = _rank_diagnostics(model, model_dir, rows, mine, weights, loss_fn, world, n_tokens)
        if rank == 0:
            result = {
                "entropy": entropy,
                "weights": weights,
                "metrics": metrics,
                "grads": grads,
                "unshaped": unshaped,
                "task_mean": task_mean,
                "shaping_loss": shaping_loss,
                **diag,
            }
            torch.save(result, io_path + ".out")
    finally:
        torch.distributed.destroy_process_group()


def _task_mean_fields(rows, world: int) -> dict[str, torch.Tensor]:
    """What the trainer writes for task_mean: row index, step, and the plan of one mini-batch
    (the whole batch, one epoch) with each task's token and row counts and weight ω."""
    from g2rpo_verl.verl_hooks.minibatch import ROW_FIELD, STEP_FIELD, minibatch_plan, plan_fields, task_plan_fields

    row_tokens = torch.tensor([len(r["response"]) for r in rows])
    plan = minibatch_plan(row_tokens, world, len(rows), 1, seed=0, shuffle=False)
    return {
        ROW_FIELD: torch.arange(len(rows)),
        STEP_FIELD: torch.full((len(rows),), 1),
        **plan_fields(plan),
        **task_plan_fields(plan, row_tokens, torch.tensor(ROW_TASKS), TASK_MEAN_WEIGHTS),
    }


def _reference_task_mean_grad(model_dir, rows, weights, actor_config) -> dict[str, torch.Tensor]:
    """One process, the whole batch, no FSDP: Σ_τ ω_τ/Σω · ppo_loss over τ's rows alone (verl
    normalising by τ's own tokens and rows) plus the shaping term over every row."""
    from verl.workers.utils.losses import ppo_loss

    from g2rpo_verl.verl_hooks.actor_loss import G2RPOActorLoss

    model = _double_model(model_dir)
    log_probs, token_entropy = _forward(model, rows)
    data = _micro_batch(rows, weights, 1, None, None)
    shaping = G2RPOActorLoss(partial(ppo_loss, config=copy.deepcopy(actor_config)), "exact")
    total = shaping.shaping_term({"log_probs": log_probs, "entropy": token_entropy}, data)
    for task, omega in enumerate(TASK_MEAN_WEIGHTS.tolist()):
        sub = [r for r, t in zip(rows, ROW_TASKS) if t == task]
        log_probs, token_entropy = _forward(model, sub)
        n_tokens = sum(len(r["response"]) for r in sub)
        part, _ = ppo_loss(
            copy.deepcopy(actor_config),
            model_output={"log_probs": log_probs, "entropy": token_entropy},
            data=_micro_batch(sub, torch.zeros(len(sub)), 1, n_tokens, len(sub)),  # ppo_loss reads no weight
        )
        total = total + omega / TASK_MEAN_WEIGHTS.sum().item() * part
    total.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _splits(n: int) -> dict[str, list[list[int]]]:
    """Micro-batches of a rank's ``n`` rows (positions in its chunk): fixed size, and a split like
    dynamic batch size makes (uneven, reordered). The per-task parts must not depend on it."""
    order = list(range(n))[::-1]
    return {
        "fixed": [list(range(i, min(i + MICRO_BATCH, n))) for i in range(0, n, MICRO_BATCH)],
        "dynamic": [order[:1], order[1:4], order[4:]],
    }


def _micro_batched_pass(model, rows, mine, weights, loss_fn, world, n_tokens, split):
    """verl's micro-batch loop of one mini-batch on this rank: forward, loss, backward per micro-batch."""
    for positions in split:
        idx = [mine[k] for k in positions if k < len(mine)]
        if not idx:
            continue
        sub = [rows[i] for i in idx]
        log_probs, token_entropy = _forward(model, sub)
        data = _micro_batch(sub, weights[idx], world, n_tokens, len(rows), tasks=[ROW_TASKS[i] for i in idx])
        loss, _ = loss_fn(model_output={"log_probs": log_probs, "entropy": token_entropy}, data=data)
        loss.backward()


class _EngineStandIn:
    """The members of verl's FSDP engine the diagnostics call (verl_api.ENGINE_MEMBERS), running
    the micro-batch loop above on the real FSDP2 model."""

    def __init__(self, model, run):
        self.module, self._run = model, run

    def forward_backward_batch(self, data, loss_function, forward_only=False):
        assert not forward_only
        self._run(loss_function)

    def optimizer_zero_grad(self):
        self.module.zero_grad(set_to_none=True)


def _rank_diagnostics(model, model_dir, rows, mine, weights, loss_fn, world, n_tokens) -> dict:
    """Per-task Gram matrices under both micro-batch splits, and one optimizer step (dropout on)
    with and without the diagnostic passes before it."""
    from tensordict import TensorDict
    from torch.distributed.device_mesh import init_device_mesh
    from verl.utils.fsdp_utils import apply_fsdp2

    from g2rpo_verl.verl_hooks.grad_diagnostics import TASK_FIELD, diagnose_minibatch

    request = TensorDict({TASK_FIELD: torch.tensor([ROW_TASKS[i] for i in mine])}, batch_size=[len(mine)])
    grams = {}
    splits = _splits(len(mine))
    for name, split in splits.items():
        run = partial(_micro_batched_pass, model, rows, mine, weights, world=world, n_tokens=n_tokens, split=split)
        engine = _EngineStandIn(model, lambda loss, run=run: run(loss_fn=loss))
        grams[name] = diagnose_minibatch(engine, request, loss_fn, len(TASKS)).gram
        leftover = [p.grad for p in model.parameters() if p.grad is not None]
        assert not leftover, "the diagnostics left gradients behind"

    # training unchanged: same init, same seed, dropout on; diagnostics before the step or not
    params = {}
    for diagnosed in (False, True):
        torch.manual_seed(1234)
        m = _double_model(model_dir, attention_dropout=0.3)
        apply_fsdp2(m, {"mesh": init_device_mesh("cpu", (world,))}, {})
        m.train()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
        run = partial(
            _micro_batched_pass, m, rows, mine, weights, world=world, n_tokens=n_tokens, split=splits["fixed"]
        )
        step_loss = copy.deepcopy(loss_fn)
        for _ in range(2):
            if diagnosed:
                diagnose_minibatch(_EngineStandIn(m, lambda loss: run(loss_fn=loss)), request, step_loss, len(TASKS))
            opt.zero_grad()
            run(loss_fn=step_loss)
            opt.step()
        params[diagnosed] = {n: p.full_tensor().clone() for n, p in m.named_parameters()}
    return {"grams": grams, "params_plain": params[False], "params_diagnosed": params[True]}


def _reference_gram(model_dir, rows, weights, actor_config) -> torch.Tensor:
    """One process, the whole batch, no FSDP: τ's part = gradient of the loss over τ's rows only,
    normalised by the whole mini-batch's tokens and rows; Gram matrix of the flat parts."""
    from verl.workers.utils.losses import ppo_loss

    from g2rpo_verl.verl_hooks.actor_loss import G2RPOActorLoss

    model = _double_model(model_dir)
    n_tokens = sum(len(r["response"]) for r in rows)
    parts = []
    for task in range(len(TASKS)):
        idx = [i for i, t in enumerate(ROW_TASKS) if t == task]
        sub = [rows[i] for i in idx]
        log_probs, token_entropy = _forward(model, sub)
        data = _micro_batch(sub, weights[idx], 1, n_tokens, len(rows))
        loss_fn = G2RPOActorLoss(partial(ppo_loss, config=copy.deepcopy(actor_config)), "exact")
        loss, _ = loss_fn(model_output={"log_probs": log_probs, "entropy": token_entropy}, data=data)
        grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
        parts.append(
            torch.cat(
                [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, model.parameters())]
            )
        )
    flat = torch.stack(parts)
    return flat @ flat.T


def _run_ranks(world: int, tmp: Path, model_dir: Path, io: dict) -> dict:
    io_path = tmp / f"dp{world}.pt"
    torch.save(io, io_path)
    init_file = tmp / f"pg_{world}"
    mp.spawn(_rank_main, args=(world, str(init_file), str(model_dir), str(io_path)), nprocs=world, join=True)
    return torch.load(str(io_path) + ".out", weights_only=False)


def _actor_config(*extra: str):
    return actor_config(
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.actor.use_kl_loss=true",
        "actor_rollout_ref.actor.kl_loss_coef=0.1",
        *extra,
    )


def _trainer_side(rows, entropy: list[torch.Tensor], dp_size: int):
    """What the trainer computes from the workers' old-policy entropy: weights and per-task metrics."""
    from g2rpo_verl.algorithms.entropy import penalty_weights, row_entropy_sums
    from g2rpo_verl.verl_hooks.entropy import entropy_shaping_metrics
    from g2rpo_verl.verl_hooks.minibatch import minibatch_groups
    from g2rpo_verl.verl_hooks.trainer import task_entropy_metrics

    width = max(len(e) for e in entropy)
    h = torch.zeros(len(rows), width, dtype=torch.float64)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, e in enumerate(entropy):
        h[i, : len(e)], mask[i, : len(e)] = e, 1
    task_ids = torch.tensor(ROW_TASKS)
    s, c = row_entropy_sums(h, mask)
    means = [(s[task_ids == t].sum() / c[task_ids == t].sum()).item() for t in range(3)]
    # bands: numerical above its band, OCR below, math inside
    low = torch.tensor([0.0, means[1] + 0.5, means[2] - 0.5], dtype=torch.float64)
    high = torch.tensor([means[0] - 0.5, means[1] + 1.0, means[2] + 0.5], dtype=torch.float64)
    groups = minibatch_groups(len(rows), dp_size, len(rows), epochs=1, seed=42, shuffle=False)
    weights = penalty_weights(s, c, task_ids, groups[0], low, high, BETA)
    metrics = entropy_shaping_metrics(TASKS, s, c, task_ids, groups, low, high, BETA)
    metrics.update(task_entropy_metrics(TASKS, task_ids, s, c))
    return weights, metrics


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny.build_tiny_qwen2(tmp_path_factory.mktemp("tiny") / "model", seed=0, warm_start_steps=0)


def test_two_fsdp_ranks_on_gloo_give_the_single_rank_gradient_and_metrics(model_dir, tmp_path):
    from transformers import AutoConfig

    rows = _fixed_batch(AutoConfig.from_pretrained(model_dir).vocab_size)["rows"]
    io = {"rows": rows, "actor_config": _actor_config()}
    one, two = (_run_ranks(world, tmp_path, model_dir, io) for world in (1, 2))

    # trainer side: the old policy's entropy, the per-row weights and the per-task metrics
    ent_diff = max((a - b).abs().max().item() for a, b in zip(one["entropy"], two["entropy"]))
    assert set(one["metrics"]) == set(two["metrics"])
    assert {f"task_{t}/{m}" for t in TASKS for m in ("entropy", "entropy_penalty")} <= set(one["metrics"])
    metric_diff = max(abs(one["metrics"][k] - two["metrics"][k]) for k in one["metrics"])
    assert ent_diff < 1e-12 and metric_diff < 1e-12
    assert torch.equal(one["weights"], two["weights"])
    tasks = torch.tensor(ROW_TASKS)
    weights = one["weights"]  # numerical above its band, OCR below, math inside
    assert (weights[tasks == 0] > 0).all() and (weights[tasks == 1] < 0).all() and (weights[tasks == 2] == 0).all()

    # the update: verl's ppo_loss (KL loss on) + the shaping term, micro-batched, FSDP-reduced
    g1, g2 = one["grads"], two["grads"]
    assert set(g1) == set(g2)
    scale = max(g.abs().max().item() for g in g1.values())
    grad_diff = max((g1[n] - g2[n]).abs().max().item() for n in g1)
    shaping1 = {n: g1[n] - one["unshaped"][n] for n in g1}  # the shaping term's own gradient
    shaping2 = {n: g2[n] - two["unshaped"][n] for n in g1}
    shaping_diff = max((shaping1[n] - shaping2[n]).abs().max().item() for n in g1)
    assert max(v.abs().max().item() for v in shaping1.values()) > 1e-6, "the shaping term moved nothing"
    print(
        f"\ndp=1 vs dp=2: max |Δ old-policy entropy| {ent_diff:.2e}, max |Δ per-task metric| {metric_diff:.2e}, "
        f"max |Δ grad| {grad_diff:.2e} (max |grad| {scale:.2e}), max |Δ shaping grad| {shaping_diff:.2e}, "
        f"shaping loss {one['shaping_loss']:.6e} vs {two['shaping_loss']:.6e}"
    )
    assert grad_diff <= 1e-10 * scale and shaping_diff <= 1e-10 * scale
    assert one["shaping_loss"] == pytest.approx(two["shaping_loss"], rel=1e-10, abs=1e-14)

    # task_mean (shaping and KL loss on): both layouts give the one-process whole-batch gradient
    for i, r in enumerate(rows):  # the old / reference log-probs the ranks used
        r["old_log_probs"], r["ref_log_prob"] = -one["entropy"][i] + r["noise"], -one["entropy"][i] - r["noise"]
    ref_tm = _reference_task_mean_grad(model_dir, rows, one["weights"], io["actor_config"])
    tm_scale = max(g.abs().max().item() for g in ref_tm.values())
    tm_diff = {
        world: max((r["task_mean"][n] - ref_tm[n]).abs().max().item() for n in ref_tm) / tm_scale
        for world, r in ((1, one), (2, two))
    }
    vs_token_mean = max((g1[n] - ref_tm[n]).abs().max().item() for n in ref_tm) / tm_scale
    print(
        f"task_mean: max rel |Δ grad| vs one process: dp=1 {tm_diff[1]:.2e}, dp=2 {tm_diff[2]:.2e} "
        f"(token-mean's gradient differs by {vs_token_mean:.2e})"
    )
    assert max(tm_diff.values()) <= 1e-10 and vs_token_mean > 1e-3

    # per-task gradient diagnostics: FSDP-sharded, micro-batched (fixed and dynamic-like splits)
    # Gram matrices equal the one-process whole-batch one, and the parts sum to the real gradient
    ref = _reference_gram(model_dir, rows, one["weights"], io["actor_config"])
    full_sq = sum((g.double() ** 2).sum() for g in g1.values()).item()
    assert ref.sum().item() == pytest.approx(full_sq, rel=1e-10), "the task parts do not sum to the gradient"
    assert (ref.diagonal() > 0).all() and (ref - torch.diag(ref.diagonal())).abs().max() > 0
    gram_diff = max((r["grams"][k] - ref).abs().max().item() for r in (one, two) for k in r["grams"])
    print(f"per-task Gram: max |Δ| vs one-process whole batch {gram_diff:.2e} (max |G| {ref.abs().max():.2e})")
    assert gram_diff <= 1e-10 * ref.abs().max().item()
    # two optimizer steps with dropout on: the diagnostic passes before each change nothing
    for r in (one, two):
        assert set(r["params_plain"]) == set(r["params_diagnosed"])
        assert all(torch.equal(r["params_plain"][n], r["params_diagnosed"][n]) for n in r["params_plain"])
