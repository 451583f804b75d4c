"""Task-level entropy shaping in verl's actor update (``g2rpo.entropy``; math in :mod:`g2rpo_verl.entropy_shaping`).

What is added to verl's actor loss, exactly
-------------------------------------------
For every PPO mini-batch ``g`` (the rows one optimizer step is taken on) and task τ with
response tokens in it::

    P_g = Σ_τ β_τ · [ relu(Ĥ_{g,τ} − high_τ) + relu(low_τ − Ĥ_{g,τ}) ]
    Ĥ_{g,τ} = Σ_{t∈g,τ} H_t / n_{g,τ}

``H_t`` is the configured estimate: ``sampled`` = −log π(y_t) of the sampled token (the
reference's), ``exact`` = entropy of the next-token distribution from the logits.

* **Which policy picks the band side.** The slope of each task's term (+1 above the band, −1
  below, 0 inside) and ``n_{g,τ}`` are fixed per step from the *old* policy, i.e. the per-token
  estimate verl already stores in TransferQueue before the update (``entropy`` for ``exact``,
  −``old_log_probs`` for ``sampled``; the same temperature-scaled distribution the actor
  trains). The gradient added for mini-batch g is ``∇P_g`` evaluated with those slopes: on the
  first mini-batch of the first epoch that is the exact gradient of ``P_g`` at the current
  weights; later mini-batches/epochs keep the old policy's band side (as PPO keeps π_old), with
  the current policy's per-token gradients.
* **Per mini-batch.** ``Ĥ`` and ``n`` are taken over the whole global mini-batch (all
  micro-batches, all data-parallel ranks), not per micro-batch: the trainer predicts verl's
  own mini-batch split (contiguous data-parallel chunks, then ``tensordict_utils.make_iterator``
  with the actor's ``ppo_mini_batch_size·n``, ``shuffle``, ``data_loader_seed + dp_rank``,
  ``ppo_epochs``; :func:`minibatch_plan`) and writes per-row weights ``w = β_τ·slope/n_{g,τ}``
  into TransferQueue. With one mini-batch per step (ppo_mini_batch_size = train_batch_size)
  this is per step. With ``shuffle=True`` and ``ppo_epochs > 1`` rows change mini-batch
  between epochs, so one weight column per epoch is written and the loss picks a row's column
  by counting how often it has seen that row in this step (each row is trained once per epoch).
* **The prediction is checked, row by row.** With the weights the trainer writes the plan
  (:data:`PLAN_FIELDS`: each row's mini-batch per epoch, that mini-batch's response tokens over
  all ranks, its rows on the row's rank). The loss (:class:`MiniBatchTracker`) fails with
  :class:`MiniBatchMismatch` unless, in every micro-batch, all rows are in the same predicted
  mini-batch of the same epoch, verl's ``batch_num_tokens`` (the tokens of the mini-batch it
  actually formed) equals the predicted one, and each predicted mini-batch is complete on the
  rank before the next begins. A verl that splits differently stops the run at the first
  micro-batch; nothing falls back to another penalty. (The trainer always writes the plan with
  the weights; the loss accepts weights without a plan only from direct calls, as in the unit
  tests of the gradient, and never sees that in training.)
* **Per-task coefficients.** ``β_τ`` comes from :meth:`EntropyShapingMixin.entropy_coefficients`
  (``(T,)`` per task; ``g2rpo.entropy.beta`` for every task here), so a controller that adapts
  each task's coefficient overrides that one method and keeps its state in the trainer.
* **Micro-batches / dynamic batch size.** The loss adds ``dp_size · Σ_{t∈micro} w·H_t`` (the
  scaling verl's ``agg_loss(..., "token-sum")`` uses, since FSDP averages gradients over
  data-parallel ranks). It is linear in per-row terms, so the accumulated gradient is the
  same for any micro-batch split, ``use_dynamic_bsz`` or not, and for any ``loss_agg_mode``
  (the penalty has its own normalisation, independent of verl's).
* **Everything else of verl's loss is verl's.** :class:`EntropyShapedLoss` calls verl's own
  ``ppo_loss`` (or ``distillation_ppo_loss`` when distillation is on) with verl's config and adds
  the term after it, so clip ratios, dual clip, loss modes, ``loss_agg_mode``, the KL loss and
  ``entropy_coeff`` are untouched; the term is added whether or not the KL loss is on. With
  ``enable: false`` nothing is installed; a micro-batch without the weight field gets verl's
  loss unchanged.
* ``exact`` needs the current policy's entropy, so the update requests ``calculate_entropy``
  for the duration of :meth:`EntropyShapingMixin._update_actor` (memory: verl keeps the
  per-token entropy graph).
* **Caveat on ``sampled``** (kept because it is the reference's): for tokens sampled from the
  policy, ``E_y[∇(−log π(y))] = 0``, so the term moves the policy only through the particular
  tokens drawn. It can lower a task's entropy at most to the empirical entropy of those tokens,
  and because the band side is chosen from the same tokens, the noise that pushed Ĥ out of
  the band is reinforced rather than corrected (tests/test_entropy_shaping.py shows both).
  ``exact`` differentiates the true entropy.

Metrics (per task, ``task_<name>/...`` like the advantage statistics): ``entropy_estimate`` = the
old policy's ``Ĥ_τ`` over the whole step, ``entropy_penalty`` = ``β_τ·(band violation)`` averaged
over the mini-batches containing τ; and ``actor/entropy_shaping_loss`` from the workers (the
surrogate's value, which shows the term reached the loss).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch

from g2rpo_verl.config import ENTROPY_ESTIMATORS, EntropyShapingConfig
from g2rpo_verl.entropy_control import EntropyController
from g2rpo_verl.entropy_shaping import (
    band_slope,
    band_violation,
    coefficient_weights,
    group_task_stats,
    penalty_weights,
    row_entropy_sums,
    shaping_surrogate,
)
from g2rpo_verl.verl_api import TQ, actor_dp_size
from g2rpo_verl.verl_hooks.base import G2RPOBase
from g2rpo_verl.verl_hooks.samples import metric_prefix

logger = logging.getLogger(__name__)

__all__ = [
    "EntropyShapingMixin",
    "EntropyShapedLoss",
    "MiniBatchPlan",
    "MiniBatchTracker",
    "MiniBatchMismatch",
    "WEIGHT_FIELD",
    "ROW_FIELD",
    "STEP_FIELD",
    "PLAN_FIELDS",
    "task_bands",
    "minibatch_groups",
    "minibatch_plan",
    "entropy_shaping_metrics",
    "build_actor_loss",
]

#: ``(N, E)`` float32 per-row weights, one column per epoch (E = 1 unless rows change mini-batch).
WEIGHT_FIELD = "g2rpo_entropy_weight"
#: ``(N,)`` int64 row index and per-step nonce (which epoch a row is in; steps told apart).
ROW_FIELD = "g2rpo_entropy_row"
STEP_FIELD = "g2rpo_entropy_step"
#: ``(N, E)`` int64 each: the predicted mini-batch of each row per epoch, that mini-batch's
#: response tokens over all ranks, and its rows on the row's data-parallel rank.
PLAN_GROUP_FIELD = "g2rpo_entropy_minibatch"
PLAN_TOKENS_FIELD = "g2rpo_entropy_minibatch_tokens"
PLAN_ROWS_FIELD = "g2rpo_entropy_minibatch_rank_rows"
PLAN_FIELDS = (PLAN_GROUP_FIELD, PLAN_TOKENS_FIELD, PLAN_ROWS_FIELD)


def task_bands(cfg: EntropyShapingConfig, task_names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)``, each ``(T,)`` float64, for ``task_names`` (:meth:`EntropyShapingConfig.band`)."""
    bands = [cfg.band(str(name)) for name in task_names]
    return (
        torch.tensor([b[0] for b in bands], dtype=torch.float64),
        torch.tensor([b[1] for b in bands], dtype=torch.float64),
    )


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


def entropy_shaping_metrics(
    task_names: Sequence[str],
    row_sum: torch.Tensor,
    row_count: torch.Tensor,
    task_ids: torch.Tensor,
    groups: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    beta: float | torch.Tensor,
    coef: torch.Tensor | None = None,
) -> dict[str, float]:
    """Per-task metrics of the shaping in one step (``task_<name>/...``); ``beta`` is a float or ``(T,)``.

    ``entropy_estimate``: the step's Ĥ_τ of the configured estimator; ``entropy/band_low`` and
    ``entropy/band_high``: τ's band; ``entropy/out_of_band``: 1 when Ĥ_τ lies outside it, else 0;
    ``entropy/coef``: the coefficient acting on Ĥ_τ this step (> 0 lowers the entropy) —
    ``coef[τ]`` of the adaptive controller, or for the fixed penalty ``β_τ·slope`` of the step's
    Ĥ_τ; with the fixed penalty also ``entropy_penalty``, ``β_τ·(band violation)`` averaged over
    the mini-batches containing τ. The trainer logs verl's per-token entropy as
    ``task_<name>/entropy`` whether shaping is on or not."""
    num_tasks = len(task_names)
    zeros = torch.zeros_like(task_ids)
    step_sum, step_cnt = group_task_stats(row_sum, row_count, task_ids, zeros, num_tasks, 1)
    step_h = step_sum[0] / step_cnt[0].clamp_min(1.0)
    pen_sum = torch.zeros(num_tasks, dtype=torch.float64)
    pen_n = torch.zeros(num_tasks, dtype=torch.float64)
    for epoch_groups in groups:
        num_groups = int(epoch_groups.max().item()) + 1
        sums, counts = group_task_stats(row_sum, row_count, task_ids, epoch_groups, num_tasks, num_groups)
        present = counts > 0
        pen = beta * band_violation(sums / counts.clamp_min(1.0), low, high)
        pen_sum += torch.where(present, pen, torch.zeros_like(pen)).sum(0)
        pen_n += present.sum(0)
    acting = beta * band_slope(step_h, low, high) if coef is None else coef.to(torch.float64)
    metrics: dict[str, float] = {}
    for t, name in enumerate(task_names):
        if step_cnt[0, t] <= 0:
            continue  # a task whose responses are all empty has no entropy to report
        prefix = metric_prefix(str(name))
        metrics[f"{prefix}/entropy_estimate"] = step_h[t].item()
        metrics[f"{prefix}/entropy/out_of_band"] = float(not (low[t] <= step_h[t] <= high[t]))
        metrics[f"{prefix}/entropy/coef"] = acting[t].item()
        metrics[f"{prefix}/entropy/band_low"] = float(low[t])
        metrics[f"{prefix}/entropy/band_high"] = float(high[t])
        if coef is None:
            metrics[f"{prefix}/entropy_penalty"] = (pen_sum[t] / pen_n[t]).item()
    return metrics


class MiniBatchMismatch(RuntimeError):
    """verl's actor formed mini-batches other than the ones the entropy weights were computed for."""


class MiniBatchTracker:
    """Worker side: each row's epoch column, and the check that verl's split is the predicted one.

    Fed every micro-batch of a step in the order the worker trains them (one instance per
    worker process). See the module docstring for what is checked.
    """

    def __init__(self):
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
                f"g2rpo.entropy: one micro-batch of verl's actor update holds rows the trainer placed in different "
                f"(epoch, mini-batch) cells {sorted(cells)} ({where}): verl split the batch differently from the "
                "prediction, so the per-mini-batch entropy penalty would be wrong. Turn g2rpo.entropy off or report "
                "this verl version / config."
            )
        cell = cells.pop()
        predicted = {int(t) for t in tokens.tolist()}
        if batch_num_tokens is None or {int(batch_num_tokens)} != predicted:
            raise MiniBatchMismatch(
                f"g2rpo.entropy: verl's mini-batch has {batch_num_tokens} response tokens but the trainer predicted "
                f"{sorted(predicted)} for (epoch, mini-batch) {cell} ({where}): verl split the batch differently"
            )
        if cell != self.current:
            if self.current is not None and self.current_rows != self.expected_rows:
                raise MiniBatchMismatch(
                    f"g2rpo.entropy: (epoch, mini-batch) {self.current} ended after {self.current_rows} rows on this "
                    f"rank, the trainer predicted {self.expected_rows}: verl split the batch differently"
                )
            self.current, self.current_rows, self.expected_rows = cell, 0, int(rank_rows[0])
        self.current_rows += rows.numel()
        if self.current_rows > self.expected_rows:
            raise MiniBatchMismatch(
                f"g2rpo.entropy: (epoch, mini-batch) {cell} has more than the {self.expected_rows} rows predicted "
                "on this rank: verl split the batch differently"
            )


class EntropyShapedLoss:
    """verl's actor loss plus ``dp_size · Σ w·H`` for rows carrying :data:`WEIGHT_FIELD`.

    Sent to every actor worker by ``set_loss_fn`` (so it is pickled: plain attributes only).
    ``inner`` is the loss verl itself would use, built from the same config.
    """

    def __init__(self, inner, estimator: str):
        if estimator not in ENTROPY_ESTIMATORS:
            raise ValueError(f"estimator must be one of {ENTROPY_ESTIMATORS}, got {estimator!r}")
        self.inner = inner
        self.estimator = estimator
        self.tracker = MiniBatchTracker()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["tracker"] = MiniBatchTracker()
        return state

    def __call__(self, model_output=None, data=None, dp_group=None, **kwargs):
        result = self.inner(model_output=model_output, data=data, dp_group=dp_group, **kwargs)
        # distillation calls the loss as a logits processor too; that output is not a loss
        if kwargs.get("student_logits") is not None or data is None or WEIGHT_FIELD not in data.keys():
            return result
        loss, metrics = result
        term = self.shaping_term(model_output, data)
        from verl.utils.metric import AggregationType, Metric

        # same rule as verl's ppo_loss: partial sums of a global-batch quantity are summed
        inner_config = getattr(self.inner, "keywords", {}).get("config")
        global_norm = (
            data["dp_size"] > 1
            or data["batch_num_tokens"] is not None
            or data["global_batch_size"] is not None
            or getattr(inner_config, "loss_scale_factor", None) is not None
        )
        aggregation = AggregationType.SUM if global_norm else AggregationType.MEAN
        metrics["actor/entropy_shaping_loss"] = Metric(value=term.detach().item(), aggregation=aggregation)
        return loss + term, metrics

    def shaping_term(self, model_output, data) -> torch.Tensor:
        """``dp_size · Σ_{rows, tokens} w·H`` for this micro-batch (scalar with the graph)."""
        from verl.workers.utils.padding import no_padding_2_padding

        if self.estimator == "exact":
            entropy = model_output.get("entropy")
            if entropy is None:
                raise RuntimeError(
                    "g2rpo.entropy.estimator=exact needs the model's entropy, but the actor update did not "
                    "compute it (calculate_entropy was not requested for this batch)"
                )
            entropy = no_padding_2_padding(entropy, data)
        else:
            log_probs = model_output.get("log_probs")
            if log_probs is None:
                raise RuntimeError("g2rpo.entropy.estimator=sampled needs the actor's log_probs (distillation_only?)")
            entropy = -no_padding_2_padding(log_probs, data)
        keys = set(data.keys())
        planned = [f for f in PLAN_FIELDS if f in keys]
        if planned and len(planned) != len(PLAN_FIELDS):
            raise RuntimeError(f"g2rpo.entropy: the micro-batch carries only {planned} of the plan fields {PLAN_FIELDS}")
        indexed = ROW_FIELD in keys
        fields = [TQ.RESPONSE_MASK, WEIGHT_FIELD] + ([ROW_FIELD, STEP_FIELD] if indexed else []) + planned
        sel = data.select(*fields).to_padded_tensor()
        weights = sel[WEIGHT_FIELD]
        if weights.dim() == 1:
            weights = weights.unsqueeze(-1)
        cols = torch.zeros(weights.shape[0], dtype=torch.long)
        if indexed:
            cols = self.tracker.epoch_columns(sel[ROW_FIELD], sel[STEP_FIELD], weights.shape[-1])
            if planned:
                pick = cols.unsqueeze(-1)
                self.tracker.check(
                    sel[ROW_FIELD].reshape(-1),
                    cols,
                    *(sel[f].reshape(len(cols), -1).cpu().gather(1, pick).squeeze(1) for f in PLAN_FIELDS),
                    data["batch_num_tokens"],
                )
        elif weights.shape[-1] > 1:
            raise RuntimeError("g2rpo.entropy: per-epoch weights without row indices")
        weights = weights.gather(1, cols.to(weights.device).unsqueeze(-1))
        local = shaping_surrogate(entropy, sel[TQ.RESPONSE_MASK].bool(), weights[:, 0])
        # FSDP averages gradients over data-parallel ranks: scale as agg_loss's "token-sum"
        # does so the reduced gradient is the sum over the global mini-batch.
        return local * data["dp_size"]


def build_actor_loss(actor_config, estimator: str, distillation_config=None) -> EntropyShapedLoss:
    """Wrap the loss verl's actor worker builds in ``init_model`` (``ppo_loss`` or ``distillation_ppo_loss``).

    ``actor_config`` is the ``actor_rollout_ref.actor`` section (DictConfig or ``ActorConfig``);
    it is converted with verl's ``omega_conf_to_dataclass`` exactly as the worker does.
    """
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.utils.losses import ppo_loss

    if not hasattr(actor_config, "global_batch_info"):
        actor_config = omega_conf_to_dataclass(actor_config)
    if distillation_config is not None and getattr(distillation_config, "enabled", False):
        from verl.trainer.distillation.losses import distillation_ppo_loss

        inner = partial(distillation_ppo_loss, config=actor_config, distillation_config=distillation_config)
    else:
        inner = partial(ppo_loss, config=actor_config)
    return EntropyShapedLoss(inner, estimator)


@contextlib.contextmanager
def _entropy_requested(actor_cfg, needed: bool):
    """Temporarily set ``calculate_entropy`` so verl's update asks the engine for the entropy."""
    if not needed or actor_cfg.get("calculate_entropy", False):
        yield
        return
    from omegaconf import open_dict, read_write

    with read_write(actor_cfg), open_dict(actor_cfg):
        actor_cfg.calculate_entropy = True
    try:
        yield
    finally:
        with read_write(actor_cfg), open_dict(actor_cfg):
            actor_cfg.calculate_entropy = False


class EntropyShapingMixin(G2RPOBase):
    """Trainer side of the shaping; a base of :class:`~g2rpo_verl.verl_hooks.trainer.G2RPOTrainerMixin`."""

    def on_init_end(self):
        super().on_init_end()
        shaping = self.g2rpo_config.entropy
        if not shaping.enable:
            return
        loss = build_actor_loss(
            self.config.actor_rollout_ref.actor, shaping.estimator, getattr(self, "distillation_config", None)
        )
        self.actor_rollout_wg.set_loss_fn(loss)
        logger.info(
            "g2rpo: task-level entropy shaping on (controller=%s, %s, band %s, per_task=%s, estimator=%s)",
            shaping.controller,
            f"beta={shaping.beta}" if shaping.controller == "fixed" else shaping.adaptive,
            shaping.band(), dict(shaping.per_task), shaping.estimator,
        )

    def entropy_coefficients(self, task_names: Sequence[str]) -> torch.Tensor:
        """``(T,)`` float64 coefficient β_τ of each task this step (``g2rpo.entropy.beta`` for all)."""
        return torch.full((len(task_names),), float(self.g2rpo_config.entropy.beta), dtype=torch.float64)

    def _update_actor(self, batch, metrics: dict):
        shaping = self.g2rpo_config.entropy
        if not shaping.enable:
            return super()._update_actor(batch, metrics)
        batch = self.put_entropy_weights(batch, metrics, shaping)
        with _entropy_requested(self.config.actor_rollout_ref.actor, shaping.estimator == "exact"):
            return super()._update_actor(batch, metrics)

    def actor_minibatch_plan(self, row_tokens: torch.Tensor) -> MiniBatchPlan:
        """The mini-batches verl's actor update will form (its own config keys; no defaults of ours)."""
        actor = self.config.actor_rollout_ref.actor
        return minibatch_plan(
            row_tokens,
            dp_size=actor_dp_size(self),
            mini_batch_size=actor.ppo_mini_batch_size * self.config.actor_rollout_ref.rollout.n,
            epochs=actor.ppo_epochs,
            seed=actor.data_loader_seed,
            shuffle=actor.shuffle,
        )

    def put_entropy_weights(self, batch, metrics: dict, shaping: EntropyShapingConfig):
        """Write the per-row weights and the mini-batch plan into TransferQueue; log the metrics."""
        import transfer_queue as tq
        from tensordict import TensorDict

        info = self.sample_info(batch)
        source = TQ.ENTROPY if shaping.estimator == "exact" else TQ.OLD_LOG_PROBS
        data = tq.kv_batch_get(
            keys=batch.keys, partition_id=batch.partition_id, select_fields=[source, TQ.RESPONSE_MASK]
        )
        data = data.to_padded_tensor()
        per_token = data[source] if source == TQ.ENTROPY else -data[source]
        row_sum, row_count = row_entropy_sums(per_token, data[TQ.RESPONSE_MASK])

        low, high = task_bands(shaping, info.task_names)
        beta = self.entropy_coefficients(info.task_names)
        plan = self.actor_minibatch_plan(row_count.round().long())
        coef = None
        if shaping.controller == "adaptive":
            coef = self._controller_step(list(info.task_names), row_sum, row_count, info.task_ids, low, high)
            weights = torch.stack([coefficient_weights(row_count, info.task_ids, g, coef) for g in plan.groups], dim=-1)
        else:
            weights = torch.stack(
                [penalty_weights(row_sum, row_count, info.task_ids, g, low, high, beta) for g in plan.groups], dim=-1
            )
        n = len(batch.keys)
        fields = {
            WEIGHT_FIELD: weights.to(torch.float32),
            ROW_FIELD: torch.arange(n, dtype=torch.long),
            STEP_FIELD: torch.full((n,), int.from_bytes(os.urandom(7), "little"), dtype=torch.long),
            PLAN_GROUP_FIELD: plan.groups.T.contiguous(),
            PLAN_TOKENS_FIELD: plan.tokens.T.contiguous(),
            PLAN_ROWS_FIELD: plan.rank_rows.T.contiguous(),
        }
        tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=TensorDict(fields, batch_size=n))
        # the workers fetch only the fields the meta lists; extend it in place rather than take
        # kv_batch_put's meta, so the caller's tags and extra_info stay as they were
        if batch.fields is not None:
            batch.fields = list(dict.fromkeys([*batch.fields, *fields]))
        metrics.update(
            entropy_shaping_metrics(
                info.task_names, row_sum, row_count, info.task_ids, plan.groups, low, high, beta, coef
            )
        )
        return batch

    @property
    def entropy_controller(self) -> EntropyController:
        """The per-task adaptive coefficients (``controller=adaptive``); saved with checkpoints."""
        if getattr(self, "_entropy_controller", None) is None:
            self._entropy_controller = EntropyController(self.g2rpo_config.entropy.adaptive)
        return self._entropy_controller

    def g2rpo_state_parts(self) -> dict:
        parts = super().g2rpo_state_parts()
        shaping = self.g2rpo_config.entropy
        if shaping.enable and shaping.controller == "adaptive":
            parts["entropy"] = self.entropy_controller
        return parts

    def _controller_step(self, task_names, row_sum, row_count, task_ids, low, high) -> torch.Tensor:
        """Update each present task's coefficient from the step's Ĥ_τ; returns ``(T,)`` λ_τ."""
        num_tasks = len(task_names)
        step_sum, step_cnt = group_task_stats(row_sum, row_count, task_ids, torch.zeros_like(task_ids), num_tasks, 1)
        controller = self.entropy_controller
        coef = []
        for t, name in enumerate(task_names):
            if step_cnt[0, t] > 0:
                h = (step_sum[0, t] / step_cnt[0, t]).item()
                coef.append(controller.update(str(name), h, low[t].item(), high[t].item()))
            else:  # no token of the task this step: nothing measured, nothing to weigh
                coef.append(controller.coef(str(name)))
        return torch.tensor(coef, dtype=torch.float64)
