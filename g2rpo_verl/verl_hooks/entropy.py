"""Trainer side of task-level entropy shaping (``g2rpo.entropy``) and of the ``task_mean`` loss
aggregation (``g2rpo.loss_agg``): both need the predicted actor mini-batch plan, written here
into TransferQueue whenever either is on (one plan, one put per step).

Per step the trainer computes each task's old-policy entropy over every predicted actor
mini-batch (:mod:`g2rpo_verl.verl_hooks.minibatch`), the band side, and per-row weights
``w = β_τ·slope/n_{g,τ}``, and writes them with the plan into TransferQueue; the worker's loss
(:mod:`g2rpo_verl.verl_hooks.actor_loss`, whose docstring says exactly what is added) turns
them into the gradient. Math: :mod:`g2rpo_verl.algorithms.entropy`.

Metrics (per task, ``task_<name>/...`` like the advantage statistics): ``entropy_estimate`` = the
old policy's ``Ĥ_τ`` over the whole step, ``entropy_penalty`` = ``β_τ·(band violation)`` averaged
over the mini-batches containing τ; and ``actor/entropy_shaping_loss`` from the workers (the
surrogate's value, which shows the term reached the loss). With ``task_mean``: per task
``task_<name>/loss_agg/weight`` (``w_{g,τ}``, the task's share of the loss) and
``task_<name>/loss_agg/token_share`` (``n_{g,τ}/N_g``, its share under verl's token-mean), each
averaged over the step's (epoch, mini-batch) cells containing τ.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Sequence

import torch

from g2rpo_verl.algorithms.entropy import (
    band_slope,
    band_violation,
    coefficient_weights,
    group_task_stats,
    penalty_weights,
)
from g2rpo_verl.algorithms.entropy_control import EntropyController, TaskBands
from g2rpo_verl.config import EntropyShapingConfig
from g2rpo_verl.verl_compat.api import TQ, actor_dp_size
from g2rpo_verl.verl_hooks.actor_loss import WEIGHT_FIELD, build_actor_loss
from g2rpo_verl.verl_hooks.base import G2RPOBase
from g2rpo_verl.verl_hooks.minibatch import (
    PLAN_TASK_FIELD,
    PLAN_TASK_TOKENS_FIELD,
    PLAN_TASK_WEIGHT_FIELD,
    ROW_FIELD,
    STEP_FIELD,
    MiniBatchPlan,
    minibatch_plan,
    plan_fields,
    task_plan_fields,
)
from g2rpo_verl.verl_hooks.samples import TokenRows, metric_prefix

logger = logging.getLogger(__name__)

__all__ = ["EntropyShapingMixin", "task_bands", "entropy_shaping_metrics", "loss_agg_metrics"]


def task_bands(cfg: EntropyShapingConfig, task_names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)``, each ``(T,)`` float64, for ``task_names`` (:meth:`EntropyShapingConfig.band`)."""
    bands = [cfg.band(str(name)) for name in task_names]
    return (
        torch.tensor([b[0] for b in bands], dtype=torch.float64),
        torch.tensor([b[1] for b in bands], dtype=torch.float64),
    )


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
        metrics[f"{prefix}/entropy/coef"] = acting[t].item()
        if torch.isfinite(high[t]):  # a task without a band yet (band_rule=start) logs none
            metrics[f"{prefix}/entropy/out_of_band"] = float(not (low[t] <= step_h[t] <= high[t]))
            metrics[f"{prefix}/entropy/band_low"] = float(low[t])
            metrics[f"{prefix}/entropy/band_high"] = float(high[t])
        if coef is None:
            metrics[f"{prefix}/entropy_penalty"] = (pen_sum[t] / pen_n[t]).item()
    return metrics


def loss_agg_metrics(task_names: Sequence[str], fields: dict, groups: torch.Tensor, row_tokens: torch.Tensor) -> dict:
    """``task_<name>/loss_agg/weight`` and ``.../token_share`` (module docstring) from the task plan fields."""
    metrics: dict[str, float] = {}
    task = fields[PLAN_TASK_FIELD]
    for t, name in enumerate(task_names):
        rows = task == t
        weights, shares = [], []
        for e, g in enumerate(groups):
            for k in torch.unique(g[rows]).tolist():
                cell = rows & (g == k)
                first = int(torch.nonzero(cell)[0])
                if int(fields[PLAN_TASK_TOKENS_FIELD][first, e]) == 0:
                    continue
                weights.append(float(fields[PLAN_TASK_WEIGHT_FIELD][first, e]))
                shares.append(float(fields[PLAN_TASK_TOKENS_FIELD][first, e]) / float(row_tokens[g == k].sum()))
        if weights:
            prefix = metric_prefix(str(name))
            metrics[f"{prefix}/loss_agg/weight"] = sum(weights) / len(weights)
            metrics[f"{prefix}/loss_agg/token_share"] = sum(shares) / len(shares)
    return metrics


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
        shaping, loss_agg = self.g2rpo_config.entropy, self.g2rpo_config.loss_agg
        if not shaping.enable and not loss_agg.task_mean:
            return
        loss = build_actor_loss(
            self.config.actor_rollout_ref.actor,
            shaping.estimator if shaping.enable else None,
            getattr(self, "distillation_config", None),
            task_mean=loss_agg.task_mean,
        )
        self.actor_rollout_wg.set_loss_fn(loss)
        if loss_agg.task_mean:
            logger.info(
                "g2rpo: task_mean loss aggregation on (inside each task: %s; weights %s)",
                self.config.actor_rollout_ref.actor.loss_agg_mode,
                dict(loss_agg.weights) or "equal",
            )
        if shaping.enable:
            logger.info(
                "g2rpo: task-level entropy shaping on (controller=%s, %s, band %s, per_task=%s, estimator=%s)",
                shaping.controller,
                f"beta={shaping.beta}" if shaping.controller == "fixed" else shaping.adaptive,
                shaping.band(),
                dict(shaping.per_task),
                shaping.estimator,
            )

    def entropy_coefficients(self, task_names: Sequence[str]) -> torch.Tensor:
        """``(T,)`` float64 coefficient β_τ of each task this step (``g2rpo.entropy.beta`` for all)."""
        return torch.full((len(task_names),), float(self.g2rpo_config.entropy.beta), dtype=torch.float64)

    def _update_actor(self, batch, metrics: dict):
        shaping = self.g2rpo_config.entropy
        if not shaping.enable and not self.g2rpo_config.loss_agg.task_mean:
            return super()._update_actor(batch, metrics)
        batch = self.put_actor_plan(batch, metrics)
        with _entropy_requested(self.config.actor_rollout_ref.actor, shaping.enable and shaping.estimator == "exact"):
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

    def put_actor_plan(self, batch, metrics: dict):
        """Write the mini-batch plan, the shaping weights and/or the task_mean counts into
        TransferQueue (whichever feature is on); log their metrics."""
        import transfer_queue as tq
        from tensordict import TensorDict

        shaping, loss_agg = self.g2rpo_config.entropy, self.g2rpo_config.loss_agg
        info = self.sample_info(batch)
        source = None
        if shaping.enable:
            source = TQ.ENTROPY if shaping.estimator == "exact" else TQ.OLD_LOG_PROBS
        data = tq.kv_batch_get(
            keys=batch.keys,
            partition_id=batch.partition_id,
            select_fields=[TQ.RESPONSE_MASK] + ([source] if source else []),
        )
        rows = TokenRows.of(data[TQ.RESPONSE_MASK])
        row_tokens = rows.lengths
        plan = self.actor_minibatch_plan(row_tokens)
        n = len(batch.keys)
        fields = {
            ROW_FIELD: torch.arange(n, dtype=torch.long),
            STEP_FIELD: torch.full((n,), int.from_bytes(os.urandom(7), "little"), dtype=torch.long),
            **plan_fields(plan),
        }
        if shaping.enable:
            row_sum, row_count = rows.sum(data[source]), rows.counts
            if source == TQ.OLD_LOG_PROBS:  # the sampled estimate of H: −log π_old of the drawn tokens
                row_sum = -row_sum
            low, high = self._step_bands(list(info.task_names), row_sum, row_count, info.task_ids)
            beta = self.entropy_coefficients(info.task_names)
            coef = None
            if shaping.controller == "adaptive":
                coef = self._controller_step(list(info.task_names), row_sum, row_count, info.task_ids, low, high)
                weights = torch.stack(
                    [coefficient_weights(row_count, info.task_ids, g, coef) for g in plan.groups], dim=-1
                )
            else:
                weights = torch.stack(
                    [penalty_weights(row_sum, row_count, info.task_ids, g, low, high, beta) for g in plan.groups],
                    dim=-1,
                )
            fields[WEIGHT_FIELD] = weights.to(torch.float32)
            metrics.update(
                entropy_shaping_metrics(
                    info.task_names, row_sum, row_count, info.task_ids, plan.groups, low, high, beta, coef
                )
            )
        if loss_agg.task_mean:
            omega = torch.tensor([loss_agg.weight(str(name)) for name in info.task_names], dtype=torch.float64)
            task_fields = task_plan_fields(plan, row_tokens, info.task_ids, omega)
            fields.update(task_fields)
            metrics.update(loss_agg_metrics(info.task_names, task_fields, plan.groups, row_tokens))
        tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=TensorDict(fields, batch_size=n))
        # the workers fetch only the fields the meta lists; extend it in place rather than take
        # kv_batch_put's meta, so the caller's tags and extra_info stay as they were
        if batch.fields is not None:
            batch.fields = list(dict.fromkeys([*batch.fields, *fields]))
        return batch

    @property
    def entropy_controller(self) -> EntropyController:
        """The per-task adaptive coefficients (``controller=adaptive``); saved with checkpoints."""
        if getattr(self, "_entropy_controller", None) is None:
            self._entropy_controller = EntropyController(self.g2rpo_config.entropy.adaptive)
        return self._entropy_controller

    @property
    def entropy_bands(self) -> TaskBands:
        """Each task's band in effect (``band_rule``, ``floor``); saved with checkpoints when it has state."""
        if getattr(self, "_entropy_bands", None) is None:
            self._entropy_bands = self.g2rpo_config.entropy.task_bands()
        return self._entropy_bands

    def g2rpo_state_parts(self) -> dict:
        parts = super().g2rpo_state_parts()
        shaping = self.g2rpo_config.entropy
        if shaping.enable and shaping.controller == "adaptive":
            parts["entropy"] = self.entropy_controller
        if shaping.enable and (shaping.band_rule != "fixed" or shaping.floor != "always"):
            parts["entropy_bands"] = self.entropy_bands  # the starting entropies / armed floors
        return parts

    def _step_bands(self, task_names, row_sum, row_count, task_ids) -> tuple[torch.Tensor, torch.Tensor]:
        """``(low, high)``, each ``(T,)`` float64: each task's band in effect this step.

        A present task's step entropy Ĥ_τ goes through :meth:`TaskBands.update` (under
        ``band_rule=start`` its first ``start_steps`` fix H0_τ; with ``floor=fall`` it may arm
        the floor). A task with no tokens this step has no rows to weigh; it gets its nominal
        band. A task without a band yet (H0 still being measured) gets ``(0, inf)``: no term
        (the fixed penalty's violation is 0, the controller skips it) and no band metrics.
        """
        num_tasks = len(task_names)
        step_sum, step_cnt = group_task_stats(row_sum, row_count, task_ids, torch.zeros_like(task_ids), num_tasks, 1)
        bands = self.entropy_bands
        out = []
        for t, name in enumerate(task_names):
            if step_cnt[0, t] > 0:
                band = bands.update(str(name), (step_sum[0, t] / step_cnt[0, t]).item())
            else:
                band = bands.nominal(str(name))
            # no band yet (band_rule=start still measuring H0): nothing to hold, no term
            out.append(band if band is not None else (0.0, math.inf))
        return (
            torch.tensor([b[0] for b in out], dtype=torch.float64),
            torch.tensor([b[1] for b in out], dtype=torch.float64),
        )

    def _controller_step(self, task_names, row_sum, row_count, task_ids, low, high) -> torch.Tensor:
        """Update each present task's coefficient from the step's Ĥ_τ; returns ``(T,)`` λ_τ."""
        num_tasks = len(task_names)
        step_sum, step_cnt = group_task_stats(row_sum, row_count, task_ids, torch.zeros_like(task_ids), num_tasks, 1)
        controller = self.entropy_controller
        coef = []
        for t, name in enumerate(task_names):
            if not math.isfinite(high[t].item()):  # no band yet (_step_bands): not shaped
                coef.append(0.0)
            elif step_cnt[0, t] > 0:
                h = (step_sum[0, t] / step_cnt[0, t]).item()
                coef.append(controller.update(str(name), h, low[t].item(), high[t].item()))
            else:  # no token of the task this step: nothing measured, nothing to weigh
                coef.append(controller.coef(str(name)))
        return torch.tensor(coef, dtype=torch.float64)
