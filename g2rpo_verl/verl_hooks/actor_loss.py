"""The plugin's actor loss: verl's own loss plus the task-level entropy term (``g2rpo.entropy``).

The trainer side (weights, plan, metrics) is :mod:`g2rpo_verl.verl_hooks.entropy`; the math is
:mod:`g2rpo_verl.algorithms.entropy`.

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

from functools import partial

import torch

from g2rpo_verl.algorithms.entropy import shaping_surrogate
from g2rpo_verl.config import ENTROPY_ESTIMATORS
from g2rpo_verl.verl_compat.api import TQ
from g2rpo_verl.verl_hooks.minibatch import PLAN_FIELDS, ROW_FIELD, STEP_FIELD, MiniBatchTracker

__all__ = ["EntropyShapedLoss", "WEIGHT_FIELD", "build_actor_loss"]

#: ``(N, E)`` float32 per-row weights, one column per epoch (E = 1 unless rows change mini-batch).
WEIGHT_FIELD = "g2rpo_entropy_weight"


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
