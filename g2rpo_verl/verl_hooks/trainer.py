"""The V1-trainer mixin: per-sample task keys for gs_*, task-level shaping, per-task metrics.

verl's V1 trainer stores every dataset column (``data_source``, ``extra_info``, ...) and the
reward function's dict (``extra_fields["reward_extra_info"]``) per sample in TransferQueue,
but its advantage step reads only uids, masks and rewards. The mixin reads the rest for the
same rows and resolves each sample's task key; for gs_* it opens a :func:`task_batch`
context and lets verl's own ``_compute_advantage`` run unchanged (KL-in-reward, rollout
correction and the write-back stay verl's). Around it come length shaping (before) and the
per-task metrics of the step (after), for every estimator. Entropy shaping and group
filtering live in their own mixins (``entropy.py``, ``filtering.py``), bases of this one.

It is mixed into every trainer in verl's ``TRAINER_REGISTRY`` when that module is imported,
so ``algorithm.adv_estimator=gs_grpo`` works with the stock ``trainer.v1.trainer_mode``
values and no extra config.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from g2rpo_verl.config import G2RPOConfig, gdpo_components, load_g2rpo_config
from g2rpo_verl.verl_hooks.entropy import EntropyShapingMixin
from g2rpo_verl.verl_hooks.filtering import GroupFilterMixin
from g2rpo_verl.verl_hooks.estimators import ESTIMATORS, TaskBatch, task_batch
from g2rpo_verl.verl_hooks.length import LengthShapingMixin, ResponseBatch

logger = logging.getLogger(__name__)

__all__ = [
    "G2RPOTrainerMixin",
    "SampleInfo",
    "install",
    "resolve_task_keys",
    "build_task_batch",
    "task_step_metrics",
    "task_entropy_metrics",
]

_TQ_FIELDS = ["uid", "data_source", "extra_info", "extra_fields"]


def resolve_task_keys(
    task_key: str,
    columns: Mapping[str, Sequence[Any]],
    extra_infos: Sequence[Mapping | None],
    reward_infos: Sequence[Mapping | None],
) -> list[str]:
    """Each sample's task: ``columns[task_key]``, else ``extra_info[task_key]``, else the reward dict's.

    Raises ``ValueError`` naming the key, the first sample lacking it and where it looked.
    """
    n = len(extra_infos)
    if task_key in columns:
        values = list(columns[task_key])
    else:
        values = [None] * n
        for i in range(n):
            for source in (extra_infos[i], reward_infos[i]):
                if isinstance(source, Mapping) and source.get(task_key) is not None:
                    values[i] = source[task_key]
                    break
    missing = [i for i, v in enumerate(values) if v is None or (isinstance(v, float) and math.isnan(v))]
    if missing:
        i = missing[0]
        ds = columns.get("data_source", [None] * n)[i]
        raise ValueError(
            f"g2rpo.task_key='{task_key}' is missing for {len(missing)} of {n} samples (first: sample {i}, "
            f"data_source={ds!r}); looked in the dataset columns {sorted(columns)}, in extra_info "
            f"(keys {sorted(extra_infos[i] or {})}) and in the reward dict (keys {sorted(reward_infos[i] or {})}). "
            "Add it to the data, or set g2rpo.task_key to one of those keys."
        )
    return [str(v) for v in values]


def _component_matrix(
    names: Sequence[str], reward_infos: Sequence[Mapping | None]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, K)`` float64 values and ``(N, K)`` presence from the per-sample reward dicts.

    ``None`` or an absent key means "does not apply to this sample"; a name that no sample
    has is a configuration error, as is a value that is not a number.
    """
    n, k = len(reward_infos), len(names)
    values = torch.zeros(n, k, dtype=torch.float64)
    present = torch.zeros(n, k, dtype=torch.bool)
    for i, info in enumerate(reward_infos):
        info = info or {}
        for c, name in enumerate(names):
            v = info.get(name)
            if v is None:
                continue
            if not isinstance(v, (bool, int, float, np.bool_, np.integer, np.floating)):
                raise ValueError(f"reward component '{name}' of sample {i} is {v!r}, not a number")
            values[i, c] = float(v)
            present[i, c] = True
    unknown = [name for c, name in enumerate(names) if not present[:, c].any()]
    if unknown:
        seen = sorted({key for info in reward_infos for key in (info or {})})
        raise ValueError(
            f"gs_gdpo: reward component(s) {unknown} (algorithm.gdpo_reward_keys) are returned for no sample; "
            f"the reward function returned the keys {seen}"
        )
    return values, present


def build_task_batch(
    uids: Sequence[str],
    task_names_per_sample: Sequence[str],
    reward_infos: Sequence[Mapping | None],
    components: tuple[list[str], list[float]] | None = None,
) -> TaskBatch:
    """Assemble the :class:`TaskBatch` for one advantage step (``components`` for gs_gdpo)."""
    task_names, task_ids = np.unique(np.asarray(task_names_per_sample, dtype=object), return_inverse=True)
    batch = TaskBatch(
        uids=np.asarray(uids, dtype=object),
        task_ids=torch.as_tensor(task_ids.reshape(-1), dtype=torch.long),
        task_names=[str(t) for t in task_names],
    )
    if components is not None:
        names, weights = components
        batch.components, batch.present = _component_matrix(names, reward_infos)
        batch.component_names, batch.component_weights = list(names), list(weights)
    return batch


def _metric_name(task: str) -> str:
    return "task_" + (re.sub(r"[^0-9A-Za-z_.-]+", "_", task).strip("_") or "empty")


def task_step_metrics(
    tasks: Sequence[str],
    reward_infos: Sequence[Mapping | None],
    rewards: torch.Tensor,
    advantages: torch.Tensor,
    lengths: torch.Tensor,
    truncated: torch.Tensor,
) -> dict[str, float]:
    """Per-task metrics of one training step, named ``task_<task>/...`` so W&B groups them.

    Args: per-sample ``(N,)`` tensors — ``rewards`` (the total reward the estimator saw),
    ``advantages`` (token-mean over the response), response ``lengths`` in tokens and
    ``truncated`` flags — and the reward function's dicts. Logs ``count``, ``reward/total``,
    ``reward/<component>`` for every numeric key of the reward dict (``None`` = not
    applicable, left out), ``advantage/{mean,std,min,max}``, ``length/mean`` and
    ``length/truncation_rate``.
    """
    metrics: dict[str, float] = {}
    names = np.asarray(tasks, dtype=object)
    for task in dict.fromkeys(tasks):
        sel = torch.from_numpy(names == task)
        prefix = _metric_name(task)
        a = advantages[sel].double()
        metrics[f"{prefix}/count"] = float(sel.sum())
        metrics[f"{prefix}/reward/total"] = rewards[sel].double().mean().item()
        metrics[f"{prefix}/advantage/mean"] = a.mean().item()
        metrics[f"{prefix}/advantage/std"] = a.std(unbiased=False).item()
        metrics[f"{prefix}/advantage/min"] = a.min().item()
        metrics[f"{prefix}/advantage/max"] = a.max().item()
        metrics[f"{prefix}/length/mean"] = lengths[sel].double().mean().item()
        metrics[f"{prefix}/length/truncation_rate"] = truncated[sel].double().mean().item()
        values: dict[str, list[float]] = {}
        for i in sel.nonzero().squeeze(1).tolist():
            for key, value in (reward_infos[i] or {}).items():
                if isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)) and math.isfinite(value):
                    values.setdefault(key, []).append(float(value))
        for key, vs in values.items():
            metrics[f"{prefix}/reward/{key}"] = sum(vs) / len(vs)
    return metrics


def task_entropy_metrics(tasks: Sequence[str], entropy: torch.Tensor, response_mask: torch.Tensor) -> dict[str, float]:
    """``task_<task>/entropy``: token-mean of verl's per-token entropy ``(N, T)`` over the task's tokens."""
    names = np.asarray(tasks, dtype=object)
    mask = response_mask.to(torch.float64)
    per_row = (entropy.to(torch.float64) * mask).sum(-1)
    metrics = {}
    for task in dict.fromkeys(tasks):
        sel = torch.from_numpy(names == task)
        n_tokens = mask[sel].sum()
        if n_tokens > 0:
            metrics[f"{_metric_name(task)}/entropy"] = (per_row[sel].sum() / n_tokens).item()
    return metrics


@dataclass
class SampleInfo:
    """What the plugin reads per sample from TransferQueue, rows in ``batch.keys`` order."""

    uids: list[str]
    data_sources: list
    tasks: list[str]  # the value of g2rpo.task_key
    reward_infos: list[Mapping | None]  # the reward function's dict (reward_extra_info)


class G2RPOTrainerMixin(EntropyShapingMixin, LengthShapingMixin, GroupFilterMixin):
    """Mixed in front of verl's V1 trainers; see the module docstring."""

    @property
    def g2rpo_config(self) -> G2RPOConfig:
        if getattr(self, "_g2rpo_config", None) is None:
            self._g2rpo_config = load_g2rpo_config(self.config)
        return self._g2rpo_config

    def _sample_info(self, batch, strict: bool = True) -> SampleInfo:
        """Per-sample task keys and reward dicts of ``batch`` (a ``KVBatchMeta``), cached per batch.

        ``strict=False`` (per-task metrics of an estimator that needs no task key): samples
        without ``g2rpo.task_key`` are grouped by ``data_source`` instead, with one warning.
        """
        cached = getattr(self, "_g2rpo_info", None)
        if cached is not None and cached[0] == batch.keys:
            return cached[1]
        import transfer_queue as tq

        rows = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=_TQ_FIELDS)
        columns = {name: rows.pop(name).tolist() for name in ("uid", "data_source")}
        extra_infos = rows.pop("extra_info").tolist()
        reward_infos = [(ef or {}).get("reward_extra_info") for ef in rows.pop("extra_fields").tolist()]
        try:
            tasks = resolve_task_keys(self.g2rpo_config.task_key, columns, extra_infos, reward_infos)
        except ValueError as err:
            if strict:
                raise
            if not getattr(self, "_g2rpo_warned_task_key", False):
                logger.warning("%s Per-task metrics fall back to data_source.", err)
                self._g2rpo_warned_task_key = True
            tasks = [str(ds) for ds in columns["data_source"]]
        info = SampleInfo(columns["uid"], columns["data_source"], tasks, reward_infos)
        self._g2rpo_info = (list(batch.keys), info)
        return info

    def _compute_advantage(self, batch, metrics: dict):
        estimator = self.config.algorithm.adv_estimator
        length_cfg = self.g2rpo_config.length
        info = self._sample_info(batch, strict=estimator in ESTIMATORS or length_cfg.enable)
        responses = ResponseBatch.fetch(batch, self.eos_token_ids)
        bonus = self._shape_lengths(batch, info, responses, metrics) if length_cfg.enable else 0.0
        if estimator in ESTIMATORS:
            components = gdpo_components(self.config.algorithm) if estimator == "gs_gdpo" else None
            side = build_task_batch(info.uids, info.tasks, info.reward_infos, components)
            with task_batch(side):
                batch = super()._compute_advantage(batch, metrics)
        else:
            batch = super()._compute_advantage(batch, metrics)
        if length_cfg.enable and length_cfg.truncation == "mask":
            self._mask_truncated(batch, responses)
        advantages = responses.token_mean(batch, "advantages")
        rewards = responses.rm_scores.sum(-1) + bonus
        metrics.update(
            task_step_metrics(info.tasks, info.reward_infos, rewards, advantages, responses.lengths, responses.truncated)
        )
        if batch.fields is None or "entropy" in batch.fields:  # verl stores it unless bypass_mode
            metrics.update(task_entropy_metrics(info.tasks, responses.get(batch, "entropy"), responses.response_mask))
        return batch


def install(registry: dict[str, type]) -> None:
    """Put :class:`G2RPOTrainerMixin` in front of every trainer class in ``registry`` (idempotent)."""
    for name, cls in list(registry.items()):
        if not issubclass(cls, G2RPOTrainerMixin):
            registry[name] = type(cls.__name__, (G2RPOTrainerMixin, cls), {"__module__": __name__})
