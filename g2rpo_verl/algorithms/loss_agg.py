"""Task-balanced loss aggregation ``task_mean`` (pure torch): the definition and its per-row counts.

For one global PPO mini-batch g (all micro-batches, all data-parallel ranks) with per-token
losses ``ℓ_t``, rows b of task τ(b) and response tokens ``t ∈ b``::

    L_g = Σ_{τ ∈ g} w_{g,τ} · A_{g,τ}
    A_{g,τ} = (1 / n_{g,τ}) Σ_{b ∈ g,τ} Σ_{t ∈ b} ℓ_t                  (inner = token-mean)
    A_{g,τ} = (1 / S_{g,τ}) Σ_{b ∈ g,τ} (1/|b|) Σ_{t ∈ b} ℓ_t          (inner = seq-mean-token-mean)
    w_{g,τ} = ω_τ / Σ_{τ' ∈ g} ω_τ'

``n_{g,τ}`` = response tokens of τ in g, ``S_{g,τ}`` = rows of τ in g with at least one
response token, "τ ∈ g" = τ has a response token in g, ω_τ > 0 the configured task weight.
With ω = 1 and every task holding the same number of tokens this is verl's ``token-mean``.

``L_g`` is linear in per-row terms once ``n``, ``S`` and ``w`` are known, so a worker holding
any subset of g's rows adds its rows' terms and the sum over micro-batches and ranks is ``L_g``
exactly; :func:`task_row_counts` gives each row its ``(n, S, w)``. The worker-side loss
(g2rpo_verl/verl_hooks/actor_loss.py) computes ``A`` with verl's own ``agg_loss``.

Effective weight of one sample (its share of the loss per unit per-token loss): token-mean
``|b| / N_g`` (N_g all tokens of g), so a task's total weight is its token share
``n_{g,τ}/N_g``; task_mean ``w_{g,τ} · |b| / n_{g,τ}``, a task's total weight ``w_{g,τ}``
(:func:`effective_task_weights`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["TaskRowCounts", "task_row_counts", "task_mean_loss", "effective_task_weights", "INNER_MODES"]

INNER_MODES = ("token-mean", "seq-mean-token-mean")


@dataclass(frozen=True)
class TaskRowCounts:
    """Per row (N) and epoch column (E): its task's counts and weight in the row's mini-batch.

    Attributes:
        tokens: ``(E, N)`` long, ``n_{g,τ}``.
        seqs: ``(E, N)`` long, ``S_{g,τ}``.
        weight: ``(E, N)`` float64, ``w_{g,τ}``.
    """

    tokens: torch.Tensor
    seqs: torch.Tensor
    weight: torch.Tensor


def task_row_counts(
    row_tokens: torch.Tensor, task_ids: torch.Tensor, groups: torch.Tensor, task_weights: torch.Tensor
) -> TaskRowCounts:
    """Each row's ``(n_{g,τ}, S_{g,τ}, w_{g,τ})`` for the mini-batches ``groups``.

    Args:
        row_tokens: ``(N,)`` response tokens per row.
        task_ids: ``(N,)`` long in ``[0, T)``.
        groups: ``(E, N)`` long, mini-batch index of each row per epoch (any ``E >= 1``).
        task_weights: ``(T,)`` ω_τ > 0.
    """
    row_tokens = row_tokens.reshape(-1).long()
    task_ids = task_ids.reshape(-1).long()
    omega = task_weights.to(torch.float64).reshape(-1)
    num_tasks = omega.numel()
    if groups.dim() != 2 or groups.shape[1] != row_tokens.numel() or task_ids.numel() != row_tokens.numel():
        raise ValueError(f"groups {tuple(groups.shape)}, row_tokens {row_tokens.numel()}, task_ids {task_ids.numel()}")
    if task_ids.numel() and (task_ids.min() < 0 or task_ids.max() >= num_tasks):
        raise ValueError(f"task ids outside [0, {num_tasks})")
    if not bool((omega > 0).all()):
        raise ValueError("task weights must be > 0")
    tokens, seqs, weight = (
        torch.zeros_like(groups),
        torch.zeros_like(groups),
        torch.zeros(groups.shape, dtype=torch.float64),
    )
    for e, g in enumerate(groups):
        num_groups = int(g.max()) + 1 if g.numel() else 0
        cell = g * num_tasks + task_ids
        n = torch.zeros(num_groups * num_tasks, dtype=torch.long).index_add(0, cell, row_tokens)
        s = torch.zeros(num_groups * num_tasks, dtype=torch.long).index_add(0, cell, (row_tokens > 0).long())
        present = (n.reshape(num_groups, num_tasks) > 0).to(torch.float64)
        w = present * omega / (present * omega).sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
        tokens[e], seqs[e], weight[e] = n[cell], s[cell], w.reshape(-1)[cell]
    return TaskRowCounts(tokens, seqs, weight)


def task_mean_loss(
    loss_mat: torch.Tensor,
    mask: torch.Tensor,
    task_ids: torch.Tensor,
    task_weights: torch.Tensor,
    inner: str = "token-mean",
) -> torch.Tensor:
    """``L`` over one whole mini-batch held at once (the definition the split pieces are checked against).

    Args:
        loss_mat: ``(B, L)`` per-token loss.
        mask: ``(B, L)`` response-token mask.
        task_ids: ``(B,)`` long in ``[0, T)``.
        task_weights: ``(T,)`` ω_τ > 0.
        inner: one of :data:`INNER_MODES`.

    Returns:
        scalar in ``loss_mat.dtype``; 0 when no row has a token.
    """
    if inner not in INNER_MODES:
        raise ValueError(f"inner must be one of {INNER_MODES}, got {inner!r}")
    m = mask.to(loss_mat.dtype)
    row_cnt = m.sum(-1)
    row_sum = (loss_mat * m).sum(-1)
    omega = task_weights.to(loss_mat.dtype)
    present = torch.zeros_like(omega).index_add(0, task_ids, row_cnt) > 0
    w = torch.where(present, omega, torch.zeros_like(omega))
    w = w / w.sum().clamp_min(torch.finfo(loss_mat.dtype).tiny)
    total = loss_mat.new_zeros(())
    for t in torch.nonzero(present).reshape(-1).tolist():
        rows = task_ids == t
        if inner == "token-mean":
            part = row_sum[rows].sum() / row_cnt[rows].sum()
        else:
            nonempty = row_cnt[rows] > 0
            part = (row_sum[rows][nonempty] / row_cnt[rows][nonempty]).sum() / nonempty.sum()
        total = total + w[t] * part
    return total


def effective_task_weights(
    lengths: torch.Tensor, counts: torch.Tensor, task_weights: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Each task's total and per-sample weight in the loss, token-mean vs task_mean.

    Args:
        lengths: ``(T,)`` mean response tokens of a sample of each task.
        counts: ``(T,)`` samples of each task in the mini-batch.
        task_weights: ``(T,)`` ω_τ (default 1).

    Returns:
        ``token_mean_task`` / ``task_mean_task``: ``(T,)`` total weight of each task (sums to 1);
        ``token_mean_sample`` / ``task_mean_sample``: ``(T,)`` weight of one sample of the task.
    """
    lengths = lengths.to(torch.float64)
    counts = counts.to(torch.float64)
    omega = torch.ones_like(lengths) if task_weights is None else task_weights.to(torch.float64)
    tokens = lengths * counts
    token_task = tokens / tokens.sum()
    task_task = omega / omega.sum()
    return {
        "token_mean_task": token_task,
        "task_mean_task": task_task,
        "token_mean_sample": token_task / counts,
        "task_mean_sample": task_task / counts,
    }
