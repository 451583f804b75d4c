"""The plugin's actor loss: verl's own loss, aggregated by task (``g2rpo.loss_agg.mode=task_mean``)
or as verl aggregates it, plus the task-level entropy term (``g2rpo.entropy``).

``task_mean`` (math: :mod:`g2rpo_verl.algorithms.loss_agg`)
------------------------------------------------------------
For each task τ in the micro-batch, :class:`G2RPOActorLoss` calls verl's own ``ppo_loss`` once on
the micro-batch with ``response_mask`` zeroed outside τ's rows and the global normalisers
replaced by τ's: ``batch_num_tokens = n_{g,τ}`` and ``global_batch_size = S_{g,τ}``, τ's response
tokens and non-empty rows in the whole global mini-batch g (all micro-batches, all dp ranks;
trainer-side, :data:`~g2rpo_verl.verl_hooks.minibatch.TASK_PLAN_FIELDS`). verl's ``agg_loss``
then gives ``dp_size · Σ_{t∈micro,τ} ℓ_t / n_{g,τ}`` (``token-mean``; ``seq-mean-token-mean``
likewise with ``S``) for the policy loss, the ``entropy_coeff`` term and the KL loss, and the
micro-batch's loss is ``Σ_τ w_{g,τ} · ppo_loss_τ``. Each piece is a sum of per-row terms with
mini-batch constants, so the micro-batch losses of all ranks, accumulated and averaged by FSDP,
give the gradient of ``L_g`` exactly, for any micro-batch split (``use_dynamic_bsz`` included),
any dp size and any number of mini-batches/epochs (each row reads its epoch's column; the plan
is checked row by row, below). Refused early (verl_hooks/checks.py): a ``loss_agg_mode`` other
than ``token-mean``/``seq-mean-token-mean``, the cross-batch policy losses ``clip_cov``/``kl_cov``,
distillation, and engines other than FSDP (the ``dp_size`` scaling is FSDP's gradient average).
Metrics: ``actor/pg_loss``, ``actor/entropy_loss``, ``kl_loss`` are the task-weighted sums (the
value of ``L``'s parts); verl's per-token means (``actor/pg_clipfrac``, ``actor/ppo_kl``, ...)
are recombined token-weighted over the micro-batch's tasks, i.e. the micro-batch means verl logs.
With ``mode: verl`` (the default) none of this runs: the loss is verl's, bit for bit.

Entropy shaping
---------------

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
* **Everything else of verl's loss is verl's.** :class:`G2RPOActorLoss` calls verl's own
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
  the band is reinforced rather than corrected (tests/verl_hooks/test_entropy_shaping.py shows both).
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
from g2rpo_verl.algorithms.grad_diagnostics import mask_rows
from g2rpo_verl.config import ENTROPY_ESTIMATORS
from g2rpo_verl.verl_compat.api import TQ
from g2rpo_verl.verl_hooks.minibatch import (
    PLAN_FIELDS,
    PLAN_TASK_FIELD,
    PLAN_TASK_SEQS_FIELD,
    PLAN_TASK_TOKENS_FIELD,
    PLAN_TASK_WEIGHT_FIELD,
    ROW_FIELD,
    STEP_FIELD,
    TASK_PLAN_FIELDS,
    MiniBatchTracker,
)

__all__ = ["G2RPOActorLoss", "WEIGHT_FIELD", "build_actor_loss"]

#: ``(N, E)`` float32 per-row weights, one column per epoch (E = 1 unless rows change mini-batch).
WEIGHT_FIELD = "g2rpo_entropy_weight"


class G2RPOActorLoss:
    """verl's actor loss, ``task_mean``-aggregated when asked, plus ``dp_size · Σ w·H`` for rows
    carrying :data:`WEIGHT_FIELD`.

    Sent to every actor worker by ``set_loss_fn`` (so it is pickled: plain attributes only).
    ``inner`` is the loss verl itself would use, built from the same config; ``estimator`` the
    entropy estimate of the shaping (``None``: no shaping); ``task_mean``: aggregate by task.
    """

    def __init__(self, inner, estimator: str | None = None, task_mean: bool = False):
        if estimator is not None and estimator not in ENTROPY_ESTIMATORS:
            raise ValueError(f"estimator must be one of {ENTROPY_ESTIMATORS} or None, got {estimator!r}")
        self.inner = inner
        self.estimator = estimator
        self.task_mean = bool(task_mean)
        self.label = (
            " / ".join(([] if estimator is None else ["g2rpo.entropy"]) + (["g2rpo.loss_agg"] if task_mean else []))
            or "g2rpo"
        )
        self.tracker = MiniBatchTracker(self.label)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["tracker"] = MiniBatchTracker(self.label)
        return state

    def __call__(self, model_output=None, data=None, dp_group=None, **kwargs):
        # distillation calls the loss as a logits processor too; that output is not a loss
        if kwargs.get("student_logits") is not None or data is None:
            return self.inner(model_output=model_output, data=data, dp_group=dp_group, **kwargs)
        keys = set(data.keys())
        shaped = self.estimator is not None and WEIGHT_FIELD in keys
        if not self.task_mean and not shaped:
            return self.inner(model_output=model_output, data=data, dp_group=dp_group, **kwargs)
        sel, cols = self._plan_columns(data, shaped)
        if self.task_mean:
            loss, metrics = self._task_mean(model_output, data, dp_group, sel, cols, **kwargs)
        else:
            loss, metrics = self.inner(model_output=model_output, data=data, dp_group=dp_group, **kwargs)
        if not shaped:
            return loss, metrics
        term = self._shaping_term(model_output, data, sel, cols)
        from verl.utils.metric import AggregationType, Metric

        aggregation = AggregationType.SUM if self._global_norm(data) else AggregationType.MEAN
        metrics["actor/entropy_shaping_loss"] = Metric(value=term.detach().item(), aggregation=aggregation)
        return loss + term, metrics

    def _global_norm(self, data) -> bool:
        """verl's ppo_loss rule: partial sums of a global-batch quantity are summed as metrics."""
        inner_config = getattr(self.inner, "keywords", {}).get("config")
        return (
            data["dp_size"] > 1
            or data["batch_num_tokens"] is not None
            or data["global_batch_size"] is not None
            or getattr(inner_config, "loss_scale_factor", None) is not None
        )

    def _plan_columns(self, data, shaped: bool):
        """The plan fields of this micro-batch (padded) and each row's epoch column ``(B,)``;
        checks the micro-batch against the trainer's predicted mini-batches (once per call)."""
        keys = set(data.keys())
        planned = [f for f in PLAN_FIELDS if f in keys]
        if planned and len(planned) != len(PLAN_FIELDS):
            raise RuntimeError(f"{self.label}: the micro-batch carries only {planned} of the plan fields {PLAN_FIELDS}")
        indexed = ROW_FIELD in keys
        fields = [TQ.RESPONSE_MASK] + ([WEIGHT_FIELD] if shaped else [])
        if self.task_mean:
            missing = [f for f in (ROW_FIELD, STEP_FIELD, *PLAN_FIELDS, *TASK_PLAN_FIELDS) if f not in keys]
            if missing:
                raise RuntimeError(
                    f"g2rpo.loss_agg.mode=task_mean: the micro-batch lacks the trainer's fields {missing}; the "
                    "per-task normalisers of the global mini-batch cannot be computed in the worker (the trainer "
                    "writes them with every actor update; was the trainer class the plugin's?)"
                )
            fields += list(TASK_PLAN_FIELDS)
        fields += ([ROW_FIELD, STEP_FIELD] if indexed else []) + planned
        sel = data.select(*fields).to_padded_tensor()
        num_rows = sel[TQ.RESPONSE_MASK].shape[0]
        num_cols = max(
            (sel[f].reshape(num_rows, -1).shape[-1] for f in [WEIGHT_FIELD, *planned] if f in sel.keys()), default=1
        )
        cols = torch.zeros(num_rows, dtype=torch.long)
        if indexed:
            cols = self.tracker.epoch_columns(sel[ROW_FIELD], sel[STEP_FIELD], num_cols)
            if planned:
                pick = cols.unsqueeze(-1)
                self.tracker.check(
                    sel[ROW_FIELD].reshape(-1),
                    cols,
                    *(sel[f].reshape(len(cols), -1).cpu().gather(1, pick).squeeze(1) for f in PLAN_FIELDS),
                    data["batch_num_tokens"],
                )
        elif num_cols > 1:
            raise RuntimeError(f"{self.label}: per-epoch weights without row indices")
        return sel, cols

    def _task_mean(self, model_output, data, dp_group, sel, cols, **kwargs):
        """``Σ_τ w_{g,τ} · ppo_loss_τ`` over the tasks of this micro-batch (see the module docstring)."""
        from verl.utils import tensordict_utils as tu
        from verl.utils.metric import AggregationType, Metric

        num_rows = len(cols)
        pick = cols.unsqueeze(-1)

        def column(field):
            return sel[field].reshape(num_rows, -1).cpu().gather(1, pick).squeeze(1)

        task = sel[PLAN_TASK_FIELD].reshape(-1).cpu()
        n, s, w = column(PLAN_TASK_TOKENS_FIELD), column(PLAN_TASK_SEQS_FIELD), column(PLAN_TASK_WEIGHT_FIELD)
        local_tokens = sel[TQ.RESPONSE_MASK].reshape(num_rows, -1).sum(-1).cpu()
        log_probs = model_output["log_probs"]
        # a micro-batch whose tasks have no token contributes exactly 0 and keeps the graph
        loss = (log_probs.values() if log_probs.is_nested else log_probs).sum() * 0.0
        parts = []  # (weight, micro-batch tokens, metrics) per task
        for t in sorted(set(task.tolist())):
            rows = task == t
            tokens = int(local_tokens[rows].sum())
            if tokens == 0:
                continue
            cell = {(int(a), int(b), float(c)) for a, b, c in zip(n[rows], s[rows], w[rows], strict=True)}
            if len(cell) != 1:
                raise RuntimeError(f"g2rpo.loss_agg: rows of task {t} in one micro-batch carry different counts {cell}")
            n_t, s_t, w_t = cell.pop()
            if n_t < tokens:
                raise RuntimeError(
                    f"g2rpo.loss_agg: task {t} has {tokens} response tokens in this micro-batch but the trainer counted "
                    f"{n_t} in the whole mini-batch: the plan does not describe this batch"
                )
            restricted = data.copy()  # shallow: the mask and the normalisers are replaced
            restricted[TQ.RESPONSE_MASK] = mask_rows(data[TQ.RESPONSE_MASK], rows)
            tu.assign_non_tensor(restricted, batch_num_tokens=n_t, global_batch_size=s_t)
            part, metrics = self.inner(model_output=model_output, data=restricted, dp_group=dp_group, **kwargs)
            loss = loss + w_t * part
            parts.append((w_t, tokens, metrics))
        if not parts:
            # no response token here: verl's own call gives the metric keys every rank must report
            # (verl aggregates a metric over ranks only when each has the same number of values)
            empty, metrics = self.inner(model_output=model_output, data=data, dp_group=dp_group, **kwargs)
            parts.append((0.0, 1, metrics))
            loss = loss + 0.0 * empty
        total_tokens = sum(p[1] for p in parts)
        combined = {}
        for key in dict.fromkeys(k for p in parts for k in p[2]):
            present = [(wt, tok, m[key]) for wt, tok, m in parts if key in m]
            first = present[0][2]
            if not isinstance(first, Metric):
                combined[key] = first  # a constant (kl_coef)
                continue
            values = [(wt, tok, float(sum(m.values))) for wt, tok, m in present]
            if first.aggregation == AggregationType.SUM:
                value = sum(wt * v for wt, _, v in values)  # the task-weighted loss part
            elif first.aggregation == AggregationType.MEAN:
                value = sum(tok * v for _, tok, v in values) / total_tokens  # verl's micro-batch token mean
            else:
                raise RuntimeError(f"g2rpo.loss_agg: no rule to combine metric {key} ({first.aggregation})")
            combined[key] = Metric(value=value, aggregation=first.aggregation)
        return loss, combined

    def shaping_term(self, model_output, data) -> torch.Tensor:
        """``dp_size · Σ_{rows, tokens} w·H`` for this micro-batch (scalar with the graph); checks the plan."""
        sel, cols = self._plan_columns(data, shaped=True)
        return self._shaping_term(model_output, data, sel, cols)

    def _shaping_term(self, model_output, data, sel, cols) -> torch.Tensor:
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
        weights = sel[WEIGHT_FIELD]
        if weights.dim() == 1:
            weights = weights.unsqueeze(-1)
        weights = weights.gather(1, cols.clamp_max(weights.shape[-1] - 1).to(weights.device).unsqueeze(-1))
        local = shaping_surrogate(entropy, sel[TQ.RESPONSE_MASK].bool(), weights[:, 0])
        # FSDP averages gradients over data-parallel ranks: scale as agg_loss's "token-sum"
        # does so the reduced gradient is the sum over the global mini-batch.
        return local * data["dp_size"]


def build_actor_loss(
    actor_config, estimator: str | None, distillation_config=None, task_mean: bool = False
) -> G2RPOActorLoss:
    """Wrap the loss verl's actor worker builds in ``init_model`` (``ppo_loss`` or ``distillation_ppo_loss``).

    ``actor_config`` is the ``actor_rollout_ref.actor`` section (DictConfig or ``ActorConfig``);
    it is converted with verl's ``omega_conf_to_dataclass`` exactly as the worker does.
    ``estimator``: the entropy shaping's (``None`` = no shaping); ``task_mean``: ``g2rpo.loss_agg``.
    """
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.utils.losses import ppo_loss

    if not hasattr(actor_config, "global_batch_info"):
        actor_config = omega_conf_to_dataclass(actor_config)
    if distillation_config is not None and getattr(distillation_config, "enabled", False):
        if task_mean:
            raise ValueError("g2rpo.loss_agg.mode=task_mean with distillation.enabled=true is not supported")
        from verl.trainer.distillation.losses import distillation_ppo_loss

        inner = partial(distillation_ppo_loss, config=actor_config, distillation_config=distillation_config)
    else:
        inner = partial(ppo_loss, config=actor_config)
    return G2RPOActorLoss(inner, estimator, task_mean=task_mean)
