"""Task-level entropy shaping: the band penalty and its split-invariant linearisation (pure torch).

For a batch of responses with task ids τ and per-token entropy estimates ``H_t``, task τ's
entropy is the token mean ``Ĥ_τ = Σ_{t∈τ} H_t / n_τ`` over the response tokens of τ, and

    P = β · Σ_τ [ relu(Ĥ_τ − high_τ) + relu(low_τ − Ĥ_τ) ]

summed over the tasks **present** in the batch (a task with no response token contributes
nothing; the reference added a constant for it). :func:`task_entropy_penalty` computes P
directly and is differentiable; it is the definition the rest is checked against.

Gradient accumulation sums per-micro-batch losses, so P computed per micro-batch is a different
function of the split (Ĥ_τ of a micro-batch is not Ĥ_τ of the mini-batch). P's gradient is
linear in the per-token gradients once the per-task slopes are fixed:

    ∇P = Σ_τ β · P'_τ / n_τ · Σ_{t∈τ} ∇H_t,      P'_τ = +1 above the band, −1 below, 0 inside

so with per-sample weights ``w_b = β·P'_τ(b) / n_τ(b)`` computed once over the whole mini-batch
(:func:`penalty_weights`), the surrogate ``Σ_b w_b Σ_t H_{b,t}`` (:func:`shaping_surrogate`) is
additive over any partition of the rows: its micro-batch pieces sum to a surrogate whose
gradient equals ∇P wherever the slopes (the band side of each Ĥ_τ) are those the weights were
built from. At the band edges the slope is 0, matching ``torch.relu``'s subgradient.

Shapes: B rows (responses), L response positions, T tasks, G groups (mini-batches). Masks are
0/1 or bool. Per-row sums are taken in float64 so that token counts and means are exact for
any realistic batch.
"""

from __future__ import annotations

import torch

__all__ = [
    "band_violation",
    "band_slope",
    "task_entropy_penalty",
    "row_entropy_sums",
    "group_task_stats",
    "penalty_weights",
    "coefficient_weights",
    "shaping_surrogate",
]


def band_violation(h: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """``relu(h − high) + relu(low − h)``, elementwise (broadcasting); differentiable in ``h``."""
    return torch.relu(h - high) + torch.relu(low - h)


def band_slope(h: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """d/dh of :func:`band_violation` as autograd computes it: +1 above, −1 below, 0 inside or on an edge."""
    return (h > high).to(h.dtype) - (h < low).to(h.dtype)


def task_entropy_penalty(
    entropy: torch.Tensor,
    mask: torch.Tensor,
    task_ids: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """P over the whole batch at once (the definition; differentiable in ``entropy``).

    Args:
        entropy: ``(B, L)`` per-token entropy estimate.
        mask: ``(B, L)`` response-token mask.
        task_ids: ``(B,)`` long, values in ``[0, T)``.
        low, high: ``(T,)`` band per task.
        beta: coefficient.

    Returns:
        scalar, ``entropy.dtype``; 0 when no task has a token.
    """
    num_tasks = low.numel()
    m = mask.to(entropy.dtype)
    row_sum = (entropy * m).sum(-1)
    row_cnt = m.sum(-1)
    tsum = entropy.new_zeros(num_tasks).index_add(0, task_ids, row_sum)
    tcnt = entropy.new_zeros(num_tasks).index_add(0, task_ids, row_cnt)
    present = tcnt > 0
    h_hat = tsum[present] / tcnt[present]
    lo, hi = low.to(entropy)[present], high.to(entropy)[present]
    return beta * band_violation(h_hat, lo, hi).sum()


def row_entropy_sums(entropy: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row ``(Σ_t H_t, n_t)`` over the masked tokens, both ``(B,)`` float64, no graph."""
    m = mask.to(torch.float64)
    return (entropy.detach().to(torch.float64) * m).sum(-1), m.sum(-1)


def group_task_stats(
    row_sum: torch.Tensor,
    row_count: torch.Tensor,
    task_ids: torch.Tensor,
    group_ids: torch.Tensor,
    num_tasks: int,
    num_groups: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy sums and token counts per (group, task): two ``(G, T)`` float64 tensors.

    ``group_ids`` ``(B,)`` long in ``[0, G)`` names the mini-batch each row is trained in.
    """
    cell = group_ids.long() * num_tasks + task_ids.long()
    size = num_groups * num_tasks
    sums = torch.zeros(size, dtype=torch.float64).index_add(0, cell, row_sum.to(torch.float64))
    counts = torch.zeros(size, dtype=torch.float64).index_add(0, cell, row_count.to(torch.float64))
    return sums.view(num_groups, num_tasks), counts.view(num_groups, num_tasks)


def penalty_weights(
    row_sum: torch.Tensor,
    row_count: torch.Tensor,
    task_ids: torch.Tensor,
    group_ids: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    beta: float | torch.Tensor,
) -> torch.Tensor:
    """Per-row weights ``w_b = β_τ · P'_τ(Ĥ_{g,τ}) / n_{g,τ}`` for row b of task τ in group g.

    Args:
        row_sum, row_count: ``(B,)`` from :func:`row_entropy_sums` of the entropy that picks
            each task's band side (in training: the old policy's).
        task_ids: ``(B,)`` long in ``[0, T)``.
        group_ids: ``(B,)`` long, the mini-batch of each row; P is defined per group.
        low, high: ``(T,)`` band per task.
        beta: the coefficient, one for all tasks (float) or ``(T,)`` per task.

    Returns:
        ``(B,)`` float64. Guarantees: a row whose (group, task) lies inside the band, or has no
        token, gets exactly 0; for any partition of a group's rows into pieces, the pieces'
        :func:`shaping_surrogate` values sum to the group's, so their gradients sum to the
        gradient of :func:`task_entropy_penalty` over the group at the entropies that set the
        slopes.
    """
    if row_sum.numel() == 0:
        return torch.zeros(0, dtype=torch.float64)
    num_tasks = low.numel()
    num_groups = int(group_ids.max().item()) + 1
    sums, counts = group_task_stats(row_sum, row_count, task_ids, group_ids, num_tasks, num_groups)
    h_hat = sums / counts.clamp_min(1.0)
    slope = band_slope(h_hat, low.to(torch.float64), high.to(torch.float64))
    beta = torch.as_tensor(beta, dtype=torch.float64)
    per_cell = torch.where(counts > 0, beta * slope / counts.clamp_min(1.0), torch.zeros_like(h_hat))
    return per_cell[group_ids.long(), task_ids.long()]


def coefficient_weights(
    row_count: torch.Tensor, task_ids: torch.Tensor, group_ids: torch.Tensor, coef: torch.Tensor
) -> torch.Tensor:
    """Per-row weights ``w_b = λ_τ / n_{g,τ}`` of the linear term ``Σ_τ λ_τ·Ĥ_{g,τ}`` per group g.

    The adaptive controller's term (g2rpo_verl.algorithms.entropy_control): its gradient is ``λ_τ·∇Ĥ_τ``
    whatever side of the band Ĥ is on. Same additivity over row partitions as
    :func:`penalty_weights`.

    Args:
        row_count: ``(B,)`` response-token count per row.
        task_ids: ``(B,)`` long in ``[0, T)``; group_ids: ``(B,)`` long, the mini-batch of each row.
        coef: ``(T,)`` signed coefficient per task (> 0 lowers the entropy).

    Returns:
        ``(B,)`` float64; 0 for a row of a task with coefficient 0 or of a (group, task) without tokens.
    """
    if row_count.numel() == 0:
        return torch.zeros(0, dtype=torch.float64)
    num_tasks = coef.numel()
    num_groups = int(group_ids.max().item()) + 1
    _, counts = group_task_stats(row_count, row_count, task_ids, group_ids, num_tasks, num_groups)
    per_cell = torch.where(counts > 0, coef.to(torch.float64) / counts.clamp_min(1.0), torch.zeros_like(counts))
    return per_cell[group_ids.long(), task_ids.long()]


def shaping_surrogate(entropy: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``Σ_b w_b Σ_t mask·H_{b,t}``: the linear term whose gradient is P's (see module docstring).

    Args:
        entropy: ``(B, L)`` current-policy per-token estimate (carries the graph).
        mask: ``(B, L)``.
        weights: ``(B,)`` from :func:`penalty_weights` (cast to ``entropy.dtype``).
    """
    w = weights.to(device=entropy.device, dtype=entropy.dtype)
    return (entropy * mask.to(entropy.dtype) * w.unsqueeze(-1)).sum()
