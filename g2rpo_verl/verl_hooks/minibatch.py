"""The actor's mini-batches of one step as the trainer predicts them, and the loss-side check.

Anything the loss normalises over a *global* mini-batch (all micro-batches, all data-parallel
ranks) needs, per row, which mini-batch verl's actor update will put it in. verl chunks the
batch into contiguous data-parallel pieces and each rank iterates
``tensordict_utils.make_iterator``; :func:`minibatch_plan` calls the same function on row
indices, and :class:`MiniBatchTracker` (in every worker) checks each micro-batch against that
prediction, raising :class:`MiniBatchMismatch` at the first difference.

Users: the entropy shaping (``g2rpo.entropy``, per-row weights over each mini-batch) and the
``task_mean`` loss aggregation (``g2rpo.loss_agg``, each row's task counts in its mini-batch,
:data:`TASK_PLAN_FIELDS` from :func:`task_plan_fields`). The trainer writes the plan whenever
either is on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "MiniBatchPlan",
    "MiniBatchTracker",
    "MiniBatchMismatch",
    "ROW_FIELD",
    "STEP_FIELD",
    "PLAN_FIELDS",
    "TASK_PLAN_FIELDS",
    "PLAN_TASK_FIELD",
    "PLAN_TASK_TOKENS_FIELD",
    "PLAN_TASK_SEQS_FIELD",
    "PLAN_TASK_WEIGHT_FIELD",
    "task_plan_fields",
    "minibatch_groups",
    "minibatch_plan",
]

#: ``(N,)`` int64 row index and per-step nonce (which epoch a row is in; steps told apart).
ROW_FIELD = "g2rpo_entropy_row"
STEP_FIELD = "g2rpo_entropy_step"
#: ``(N, E)`` int64 each: the predicted mini-batch of each row per epoch, that mini-batch's
#: response tokens over all ranks, and its rows on the row's data-parallel rank.
PLAN_GROUP_FIELD = "g2rpo_entropy_minibatch"
PLAN_TOKENS_FIELD = "g2rpo_entropy_minibatch_tokens"
PLAN_ROWS_FIELD = "g2rpo_entropy_minibatch_rank_rows"
PLAN_FIELDS = (PLAN_GROUP_FIELD, PLAN_TOKENS_FIELD, PLAN_ROWS_FIELD)
#: ``task_mean``: ``(N,)`` int64 task index of each row; ``(N, E)`` per epoch: the response tokens
#: ``n_{g,τ}`` (int64) and non-empty rows ``S_{g,τ}`` (int64) of the row's task in its global
#: mini-batch g, and the task's weight ``w_{g,τ}`` (float64) there (g2rpo_verl/algorithms/loss_agg.py).
PLAN_TASK_FIELD = "g2rpo_plan_task"
PLAN_TASK_TOKENS_FIELD = "g2rpo_plan_task_tokens"
PLAN_TASK_SEQS_FIELD = "g2rpo_plan_task_seqs"
PLAN_TASK_WEIGHT_FIELD = "g2rpo_plan_task_weight"
TASK_PLAN_FIELDS = (PLAN_TASK_FIELD, PLAN_TASK_TOKENS_FIELD, PLAN_TASK_SEQS_FIELD, PLAN_TASK_WEIGHT_FIELD)


def minibatch_groups(
    num_rows: int, dp_size: int, mini_batch_size: int, epochs: int, seed: int | None, shuffle: bool
) -> torch.Tensor:
    """The global mini-batch of each row, per epoch, as verl's actor update will form them.

    verl chunks the batch (in ``batch.keys`` order) into ``dp_size`` contiguous pieces and each
    rank iterates ``make_iterator(piece, mini_batch_size // dp_size, epochs, seed + rank,
    {"shuffle": shuffle})``; the k-th mini-batch of every rank is trained together. This calls
    the same function on row indices.

    Returns:
        ``(E, num_rows)`` long: ``E = 1`` when every epoch groups the rows the same way (no
        shuffle, or a single mini-batch), else ``epochs``.
    """
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu

    if num_rows % dp_size or mini_batch_size % dp_size:
        raise ValueError(f"{num_rows} rows / mini-batch {mini_batch_size} do not split over {dp_size} dp ranks")
    per_rank, mb_per_rank = num_rows // dp_size, mini_batch_size // dp_size
    per_epoch = per_rank // mb_per_rank
    groups = torch.full((epochs, num_rows), -1, dtype=torch.long)
    for rank in range(dp_size):
        rows = TensorDict({"row": torch.arange(per_rank)}, batch_size=[per_rank])
        it = tu.make_iterator(
            rows,
            mini_batch_size=mb_per_rank,
            epochs=epochs,
            seed=None if seed is None else seed + rank,
            dataloader_kwargs={"shuffle": bool(shuffle)},
        )
        for k, mb in enumerate(it):
            groups[k // per_epoch, rank * per_rank + mb["row"]] = k % per_epoch
    if (groups < 0).any():
        raise RuntimeError("verl's mini-batch iterator did not visit every row once per epoch")
    if bool((groups == groups[:1]).all()):
        groups = groups[:1]
    return groups


@dataclass(frozen=True)
class MiniBatchPlan:
    """The predicted actor mini-batches of one step (N rows, E epoch columns).

    Attributes:
        groups: ``(E, N)`` long, mini-batch index of each row per epoch (:func:`minibatch_groups`).
        tokens: ``(E, N)`` long, response tokens of the row's global mini-batch (all ranks).
        rank_rows: ``(E, N)`` long, rows of the row's mini-batch on the row's dp rank.
    """

    groups: torch.Tensor
    tokens: torch.Tensor
    rank_rows: torch.Tensor


def minibatch_plan(
    row_tokens: torch.Tensor, dp_size: int, mini_batch_size: int, epochs: int, seed: int | None, shuffle: bool
) -> MiniBatchPlan:
    """:class:`MiniBatchPlan` for rows with ``row_tokens`` ``(N,)`` response tokens each."""
    num_rows = row_tokens.numel()
    groups = minibatch_groups(num_rows, dp_size, mini_batch_size, epochs, seed, shuffle)
    tokens = torch.zeros_like(groups)
    for e, g in enumerate(groups):
        per_group = torch.zeros(int(g.max()) + 1, dtype=torch.long).index_add(0, g, row_tokens.long())
        tokens[e] = per_group[g]
    rank_rows = torch.full_like(groups, mini_batch_size // dp_size)
    return MiniBatchPlan(groups, tokens, rank_rows)


def plan_fields(plan: MiniBatchPlan) -> dict[str, torch.Tensor]:
    """The plan as TransferQueue fields (:data:`PLAN_FIELDS`), ``(N, E)`` each."""
    return {
        PLAN_GROUP_FIELD: plan.groups.T.contiguous(),
        PLAN_TOKENS_FIELD: plan.tokens.T.contiguous(),
        PLAN_ROWS_FIELD: plan.rank_rows.T.contiguous(),
    }


def task_plan_fields(
    plan: MiniBatchPlan, row_tokens: torch.Tensor, task_ids: torch.Tensor, task_weights: torch.Tensor
) -> dict[str, torch.Tensor]:
    """:data:`TASK_PLAN_FIELDS` for the plan's mini-batches (``row_tokens``, ``task_ids`` ``(N,)``, ω ``(T,)``)."""
    from g2rpo_verl.algorithms.loss_agg import task_row_counts

    counts = task_row_counts(row_tokens, task_ids, plan.groups, task_weights)
    return {
        PLAN_TASK_FIELD: task_ids.reshape(-1).to(torch.long),
        PLAN_TASK_TOKENS_FIELD: counts.tokens.T.contiguous(),
        PLAN_TASK_SEQS_FIELD: counts.seqs.T.contiguous(),
        PLAN_TASK_WEIGHT_FIELD: counts.weight.T.contiguous(),
    }


class MiniBatchMismatch(RuntimeError):
    """verl's actor formed mini-batches other than the ones the per-mini-batch quantities were computed for."""


class MiniBatchTracker:
    """Worker side: each row's epoch column, and the check that verl's split is the predicted one.

    Fed every micro-batch of a step in the order the worker trains them (one instance per
    worker process). See the module docstring for what is checked.
    """

    def __init__(self, label: str = "g2rpo.entropy"):
        self.label = label  # the config key(s) whose per-mini-batch quantities depend on the plan
        self.step: int | None = None
        self.seen: dict[int, int] = {}
        self.current: tuple[int, int] | None = None  # (epoch, mini-batch) being trained
        self.current_rows = 0
        self.expected_rows = 0

    def epoch_columns(self, rows: torch.Tensor, step: torch.Tensor, num_epochs: int) -> torch.Tensor:
        """``(B,)`` long: the epoch each row is in (how often this worker has trained it this step)."""
        # Each row is trained exactly once per epoch; the nonce tells steps apart.
        nonce = int(step.reshape(-1)[0].item())
        if nonce != self.step:
            self.step, self.seen = nonce, {}
            self.current, self.current_rows, self.expected_rows = None, 0, 0
        cols = []
        for row in rows.reshape(-1).tolist():
            seen = self.seen.get(row, 0)
            self.seen[row] = seen + 1
            cols.append(min(seen, num_epochs - 1))
        return torch.tensor(cols, dtype=torch.long)

    def check(self, rows, cols, groups, tokens, rank_rows, batch_num_tokens) -> None:
        """Raise :class:`MiniBatchMismatch` unless this micro-batch fits the plan.

        Args: per-row ``(B,)`` tensors — ``rows``, their epoch ``cols``, and the plan's
        predicted mini-batch, its tokens and its rows on this rank for that epoch —
        and ``batch_num_tokens``, the tokens of the mini-batch verl actually formed.
        """
        cells = {(int(c), int(g)) for c, g in zip(cols.tolist(), groups.tolist(), strict=True)}
        where = f"rows {rows.reshape(-1).tolist()[:8]}"
        if len(cells) != 1:
            raise MiniBatchMismatch(
                f"{self.label}: one micro-batch of verl's actor update holds rows the trainer placed in different "
                f"(epoch, mini-batch) cells {sorted(cells)} ({where}): verl split the batch differently from the "
                f"prediction, so the per-mini-batch quantities would be wrong. Turn {self.label} off or report "
                "this verl version / config."
            )
        cell = cells.pop()
        predicted = {int(t) for t in tokens.tolist()}
        if batch_num_tokens is None or {int(batch_num_tokens)} != predicted:
            raise MiniBatchMismatch(
                f"{self.label}: verl's mini-batch has {batch_num_tokens} response tokens but the trainer predicted "
                f"{sorted(predicted)} for (epoch, mini-batch) {cell} ({where}): verl split the batch differently"
            )
        if cell != self.current:
            if self.current is not None and self.current_rows != self.expected_rows:
                raise MiniBatchMismatch(
                    f"{self.label}: (epoch, mini-batch) {self.current} ended after {self.current_rows} rows on this "
                    f"rank, the trainer predicted {self.expected_rows}: verl split the batch differently"
                )
            self.current, self.current_rows, self.expected_rows = cell, 0, int(rank_rows[0])
        self.current_rows += rows.numel()
        if self.current_rows > self.expected_rows:
            raise MiniBatchMismatch(
                f"{self.label}: (epoch, mini-batch) {cell} has more than the {self.expected_rows} rows predicted "
                "on this rank: verl split the batch differently"
            )
