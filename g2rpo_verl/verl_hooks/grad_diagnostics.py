"""Per-task gradient diagnostics in verl's actor worker (``g2rpo.diagnostics.grad_every``; math in
:mod:`g2rpo_verl.algorithms.grad_diagnostics`).

Every ``grad_every`` steps (``global_steps % grad_every == 0``), for every PPO mini-batch of the
actor update, before verl's own forward/backward/optimizer step on it:

1. the trainer writes each row's task index into TransferQueue (:data:`TASK_FIELD`) and asks for
   the diagnostics through the batch's ``extra_info`` (:data:`REQUEST_KEY` = number of tasks);
2. in the worker, verl's FSDP engine ``train_batch(data, loss_function)`` (patched by
   :func:`install_engine_hook`, a pass-through without the request) runs, per task τ, verl's
   own ``forward_backward_batch`` on the same mini-batch with :class:`TaskRestrictedLoss`: a copy
   of the loss the update uses (verl's ``ppo_loss``, the entropy-shaping wrapper, ...) that sees
   ``response_mask`` zeroed on every row outside τ. Micro-batching, dynamic batch size, the
   data-parallel split and the loss normalisation (``batch_num_tokens`` / ``global_batch_size``
   of the whole mini-batch, from ``loss_mask``) are verl's, unchanged, so the parts sum to the
   real gradient. After each pass it keeps this rank's gradient shard; at the end it zeroes the
   gradients, all-reduces the Gram matrix of the parts and calls verl's ``train_batch``, which
   zeroes the gradients again and takes the real step as if nothing had happened (the passes
   run under ``torch.random.fork_rng``; the optimizer is never stepped; the loss copies carry
   the real loss's state, so the real loss's state is untouched);
3. the Gram entries come back with verl's actor metrics (``actor/g2rpo_grad/gram/<i>_<j>``,
   averaged over the step's mini-batches by verl); the trainer turns them into the logged
   metrics (:func:`grad_diagnostic_metrics`): ``task_<τ>/grad/norm``, ``task_<τ>/grad/share``
   (projection share, sums to 1) and ``grad/cosine/<τ1>__<τ2>`` for every pair (names sorted).

With one mini-batch per step (``ppo_mini_batch_size`` = ``data.train_batch_size``, the demo's
setting) these describe the step's gradient exactly; with several they describe the Gram matrix
averaged over the mini-batches (norm = root mean square over mini-batches, share = Σ g_τ·g /
Σ ‖g‖²). The norms and shares are of the gradient before verl clips it; ``sqrt(Σ_ij G)`` is
verl's ``actor/grad_norm``.

Limits (refused early by :mod:`~g2rpo_verl.verl_hooks.checks`): the FSDP engine only
(``actor.strategy`` fsdp / fsdp2), no distillation, and policy losses that are sums of per-row
terms (verl's ``clip_cov`` / ``kl_cov`` pick tokens across the batch, so masking rows would
change which ones). Cost: ``T`` extra forward+backward passes per diagnosed mini-batch and a copy
of the local gradient shard per task (``T × parameters / FSDP shards`` in the gradient dtype:
fp32 for verl's FSDP, e.g. 6 tasks x 8B parameters / 8 GPUs x 4 B = 24 GB per GPU) — see
docs/diagnostics.md.
"""

from __future__ import annotations

import copy
import logging
import math
import re
from collections.abc import Sequence

import torch

from g2rpo_verl.algorithms.grad_diagnostics import TaskGradientGram, mask_rows, task_gradient_gram
from g2rpo_verl.verl_compat.api import ENGINE_TRAIN_BATCH, TQ, WORKER_METRIC_PREFIX
from g2rpo_verl.verl_hooks.base import G2RPOBase
from g2rpo_verl.verl_hooks.samples import metric_prefix

logger = logging.getLogger(__name__)

__all__ = [
    "GradDiagnosticsMixin",
    "TaskRestrictedLoss",
    "REQUEST_KEY",
    "TASK_FIELD",
    "GRAM_METRIC",
    "diagnose_minibatch",
    "gram_metrics",
    "gram_from_metrics",
    "grad_diagnostic_metrics",
    "install_engine_hook",
]

#: ``extra_info`` / non-tensor key of the actor update's batch: the number of tasks to diagnose.
REQUEST_KEY = "g2rpo_grad_num_tasks"
#: ``(N,)`` int64 TransferQueue field: each row's task index (``SampleInfo.task_ids``).
TASK_FIELD = "g2rpo_grad_task"
#: Worker metric holding Gram entry (i, j), i <= j: ``GRAM_METRIC.format(i=i, j=j)``.
GRAM_METRIC = "g2rpo_grad/gram/{i}_{j}"
_GRAM_RE = re.compile(r"^g2rpo_grad/gram/(\d+)_(\d+)$")
_MARKER = "_g2rpo_grad_diagnostics"


class TaskRestrictedLoss:
    """The actor loss ``inner`` seeing only the rows of task ``task`` (``response_mask`` zeroed elsewhere).

    Everything else of the micro-batch (``dp_size``, ``batch_num_tokens``, ``global_batch_size``,
    the model output) is passed through, so the normalisation is the real loss's.
    """

    def __init__(self, inner, task: int):
        self.inner = inner
        self.task = int(task)

    def __call__(self, model_output=None, data=None, dp_group=None, **kwargs):
        if TASK_FIELD not in data.keys():
            raise RuntimeError(f"g2rpo.diagnostics: the micro-batch has no '{TASK_FIELD}' field")
        keep = data[TASK_FIELD].reshape(-1) == self.task
        restricted = data.copy()  # shallow: only the mask is replaced
        restricted[TQ.RESPONSE_MASK] = mask_rows(data[TQ.RESPONSE_MASK], keep)
        return self.inner(model_output=model_output, data=restricted, dp_group=dp_group, **kwargs)


def _plain_group(module):
    """Process group plain-tensor gradients are sharded over: FSDP1's; ``None`` otherwise."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    return module.process_group if isinstance(module, FullyShardedDataParallel) else None


def diagnose_minibatch(engine, data, loss_function, num_tasks: int) -> TaskGradientGram:
    """The Gram matrix of the per-task parts of this mini-batch's gradient, on every rank.

    ``engine`` is verl's FSDP engine (``forward_backward_batch``, ``optimizer_zero_grad``,
    ``module``); ``data`` the mini-batch as ``train_batch`` gets it. Leaves the gradients zeroed.
    """
    if TASK_FIELD not in data.keys():
        raise RuntimeError(
            f"g2rpo.diagnostics: the actor update was asked for gradient diagnostics but its batch has no "
            f"'{TASK_FIELD}' field (the trainer writes it with the request)"
        )

    def run(task: int) -> None:
        # a fresh copy per pass: a stateful loss (the entropy-shaping row tracker) sees this
        # mini-batch as the real pass will, and the real loss's own state does not move
        loss = TaskRestrictedLoss(copy.deepcopy(loss_function), task)
        engine.forward_backward_batch(data, loss, forward_only=False)

    return task_gradient_gram(
        [str(t) for t in range(num_tasks)],
        engine.module.parameters,
        run,
        engine.optimizer_zero_grad,
        plain_group=_plain_group(engine.module),
    )


def gram_metrics(gram: TaskGradientGram) -> dict[str, list[float]]:
    """The worker's metrics: Gram entries ``i <= j`` as one-element lists (verl's per-micro-batch form)."""
    n = len(gram.tasks)
    return {GRAM_METRIC.format(i=i, j=j): [float(gram.gram[i, j])] for i in range(n) for j in range(i, n)}


def install_engine_hook(module) -> None:
    """Wrap ``module.FSDPEngine.train_batch`` (idempotent): diagnostics first when the batch asks."""
    cls = getattr(module, ENGINE_TRAIN_BATCH[0], None)
    original = getattr(cls, ENGINE_TRAIN_BATCH[1], None) if cls is not None else None
    if original is None:
        raise RuntimeError(f"g2rpo.diagnostics: {module.__name__}.{'.'.join(ENGINE_TRAIN_BATCH)} not found")
    if getattr(original, _MARKER, False):
        return

    def train_batch(self, data, loss_function):
        from verl.utils import tensordict_utils as tu

        num_tasks = tu.get_non_tensor_data(data=data, key=REQUEST_KEY, default=None)
        if not num_tasks:
            return original(self, data, loss_function)
        gram = diagnose_minibatch(self, data, loss_function, int(num_tasks))
        outputs = original(self, data, loss_function)
        if self.is_mp_src_rank_with_outputs():
            outputs["metrics"].update(gram_metrics(gram))
        return outputs

    setattr(train_batch, _MARKER, True)
    train_batch.__wrapped__ = original
    setattr(cls, ENGINE_TRAIN_BATCH[1], train_batch)


def gram_from_metrics(metrics: dict, task_names: Sequence[str], prefix: str = WORKER_METRIC_PREFIX) -> TaskGradientGram:
    """Pop the worker's Gram entries (``<prefix>g2rpo_grad/gram/i_j``) from ``metrics``."""
    n = len(task_names)
    gram = torch.full((n, n), float("nan"), dtype=torch.float64)
    for key in [k for k in metrics if k.startswith(prefix)]:
        m = _GRAM_RE.match(key[len(prefix) :])
        if m:
            i, j = int(m.group(1)), int(m.group(2))
            value = float(metrics.pop(key))
            if i < n and j < n:
                gram[i, j] = gram[j, i] = value
    if torch.isnan(gram).any():
        raise RuntimeError(
            "g2rpo.diagnostics.grad_every is set but verl's actor update returned no (or incomplete) gradient "
            "diagnostics: the actor engine is not the FSDP engine the plugin patches"
        )
    return TaskGradientGram(tuple(task_names), gram)


def _pair_key(name: str) -> str:
    return metric_prefix(name)[len("task_") :]


def grad_diagnostic_metrics(gram: TaskGradientGram) -> dict[str, float]:
    """``task_<τ>/grad/norm``, ``task_<τ>/grad/share`` and ``grad/cosine/<τ1>__<τ2>`` (τ1 < τ2 by name).

    A cosine with a zero part (a task whose advantages are all 0 this step, and no other loss
    term) and the shares of an all-zero gradient are undefined and left out, not logged as NaN.
    """
    metrics: dict[str, float] = {}
    norms, shares, cos = gram.norms, gram.shares, gram.cosines
    for t, name in enumerate(gram.tasks):
        metrics[f"{metric_prefix(name)}/grad/norm"] = float(norms[t])
        if math.isfinite(shares[t]):  # undefined when the whole gradient is zero
            metrics[f"{metric_prefix(name)}/grad/share"] = float(shares[t])
    order = sorted(range(len(gram.tasks)), key=lambda t: _pair_key(gram.tasks[t]))
    for a, i in enumerate(order):
        for j in order[a + 1 :]:
            if math.isfinite(cos[i, j]):  # undefined when a part is zero (e.g. all its advantages are 0)
                metrics[f"grad/cosine/{_pair_key(gram.tasks[i])}__{_pair_key(gram.tasks[j])}"] = float(cos[i, j])
    return metrics


class GradDiagnosticsMixin(G2RPOBase):
    """Trainer side: the per-row task field, the request, the metrics (see the module docstring)."""

    def diagnose_gradients_now(self) -> bool:
        every = self.g2rpo_config.diagnostics.grad_every
        return every > 0 and self.global_steps % every == 0

    def _update_actor(self, batch, metrics: dict):
        if not self.diagnose_gradients_now():
            return super()._update_actor(batch, metrics)
        import transfer_queue as tq
        from tensordict import TensorDict

        info = self.sample_info(batch, fallback_to_data_source=True)
        n = len(batch.keys)
        fields = {TASK_FIELD: info.task_ids.to(torch.long)}
        tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=TensorDict(fields, batch_size=n))
        if batch.fields is not None:  # the workers fetch the fields the meta lists
            batch.fields = list(dict.fromkeys([*batch.fields, *fields]))
        batch.extra_info[REQUEST_KEY] = len(info.task_names)
        try:
            batch = super()._update_actor(batch, metrics)
        finally:
            batch.extra_info.pop(REQUEST_KEY, None)
        metrics.update(grad_diagnostic_metrics(gram_from_metrics(metrics, info.task_names)))
        return batch
