"""Online group filtering with a ``(low, high)`` band, on verl 0.9.1's own V1 replay buffer.

The reference keeps a prompt group only when its mean accuracy lies in ``(0.01, 0.99)`` and
refills the batch, with a bound on the tries. verl 0.9.1 already evicts and refills groups in
its V1 replay buffer (``algorithm.filter_groups``: ``enable``, ``metric`` = ``reward`` for the
summed ``rm_scores`` or any key of the reward dict, ``max_inflight_gen_batches``), but

* it drops a group only when the metric is *identical* for all its responses (std == 0), so a
  group of IoUs all near 1, or of 1 − WERs of 0.995, is kept, and a group whose responses all
  score 0.5 is dropped;
* it ignores ``max_num_gen_batches`` (it logs so): a step refills until the batch is full,
  however many prompts that takes.

This module changes exactly those two decisions and leaves verl's eviction, refill and
selection loop as it is. With ``trainer.v1.sampler.sampler_kwargs.filter_band: {low, high}``
and ``algorithm.filter_groups.enable=true``, the trainer mixin :class:`GroupFilterMixin` puts
:class:`BandFilterMixin` in front of the replay buffer verl built:

* a group is evicted iff ``not (low < mean(metric over its responses) < high)``;
* sync trainer: at most ``max_num_gen_batches × train_batch_size`` prompts are generated per
  step (the first batch included; ``<= 0`` = no bound; async trainers refill exactly what
  they evict and have no per-step bound). Once refills reach that, no further group is
  evicted in the step, so the batch fills with what arrives (verl's loop cannot hang on a
  too-hard or too-easy dataset); ``training/filter_groups/budget_exhausted`` is 1 that step;
* per task (``g2rpo.task_key``), ``task_<τ>/filtered_groups`` counts the evicted groups.

The band lives in ``sampler_kwargs`` because that is verl's slot for the replay buffer's own
parameters and the ``g2rpo`` section is strict; it is validated here (unknown keys, ``low <
high``) when the trainer starts.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "FILTER_BAND_KEY",
    "FilterBand",
    "load_filter_band",
    "group_means",
    "classify_groups",
    "filtered_group_metrics",
    "BandFilterMixin",
    "install_band",
    "GroupFilterMixin",
]

FILTER_BAND_KEY = "filter_band"
BUDGET_METRIC = "training/filter_groups/budget_exhausted"
_REWARD_METRIC = "reward"  # verl's name for the summed rm_scores (FILTER_GROUPS_REWARD_METRIC)


@dataclass(frozen=True)
class FilterBand:
    """Keep a group iff ``low < mean < high`` (open interval, as the reference)."""

    low: float = 0.01
    high: float = 0.99

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(
                f"trainer.v1.sampler.sampler_kwargs.{FILTER_BAND_KEY} needs finite low < high, "
                f"got low={self.low}, high={self.high}"
            )

    def keeps(self, mean: float) -> bool:
        return self.low < mean < self.high


def load_filter_band(config: Any) -> FilterBand | None:
    """The band of a full verl config, or ``None`` when verl's own rule applies.

    ``None`` when ``algorithm.filter_groups.enable`` is false or the band is absent / null.
    Raises ``ValueError`` naming the key for unknown keys or an invalid band, and when a band
    is set while filtering is off (the band would silently do nothing).
    """
    sampler_kwargs = config.trainer.v1.sampler.get("sampler_kwargs", None) or {}
    raw = sampler_kwargs.get(FILTER_BAND_KEY, None)
    filter_groups = config.algorithm.get("filter_groups", None)
    enabled = bool(filter_groups is not None and filter_groups.get("enable", False))
    if raw is None:
        return None
    if not enabled:
        raise ValueError(
            f"trainer.v1.sampler.sampler_kwargs.{FILTER_BAND_KEY} is set but algorithm.filter_groups.enable "
            "is false: set it true (and algorithm.filter_groups.metric, e.g. accuracy) or remove the band"
        )
    raw = dict(raw)
    unknown = set(raw) - {"low", "high"}
    if unknown:
        raise ValueError(
            f"trainer.v1.sampler.sampler_kwargs.{FILTER_BAND_KEY} has unknown keys {sorted(unknown)}; use low / high"
        )
    return FilterBand(**{k: float(v) for k, v in raw.items()})


def group_means(uids: Sequence[str], values: Sequence[float]) -> dict[str, float]:
    """Mean of ``values`` per uid (responses of one prompt group share its uid)."""
    sums: dict[str, float] = defaultdict(float)
    counts: Counter = Counter()
    for uid, value in zip(uids, values, strict=True):
        sums[uid] += float(value)
        counts[uid] += 1
    return {uid: sums[uid] / counts[uid] for uid in sums}


def classify_groups(means: Mapping[str, float], band: FilterBand) -> dict[str, float | None]:
    """``uid -> mean`` for each group the band evicts, ``uid -> None`` for each it keeps.

    The shape of verl's ``_dapo_classification_cache`` (the value is the diagnostic verl logs
    as the reward level filtered groups collapse to). A non-finite mean is evicted: a NaN
    metric would otherwise train as a real reward.
    """
    return {uid: (None if math.isfinite(m) and band.keeps(m) else float(m)) for uid, m in means.items()}


def filtered_group_metrics(filtered_uids: Sequence[str], task_by_uid: Mapping[str, str]) -> dict[str, int]:
    """``task_<τ>/filtered_groups`` per task of the evicted groups (``<unknown>`` if unseen)."""
    from g2rpo_verl.verl_hooks.trainer import _metric_name  # here: trainer.py imports this module

    counts = Counter(task_by_uid.get(uid, "<unknown>") for uid in filtered_uids)
    return {f"{_metric_name(task)}/filtered_groups": n for task, n in counts.items()}


def _as_list(column) -> list:
    # TransferQueue returns NonTensorStack / numpy / lists depending on its backend.
    return column.tolist() if hasattr(column, "tolist") else list(column)


def _plain(value):
    return getattr(value, "data", value)


class BandFilterMixin:
    """Put in front of verl's ``ReplayBuffer`` / ``ReplayBufferAsync`` by :func:`install_band`.

    Overrides only the group classification (``_dapo_filtered_keys``) and adds the per-task
    counts to verl's eviction metrics; ``sample`` counts this step's refills for the budget.
    """

    g2rpo_band: FilterBand
    g2rpo_task_key: str
    g2rpo_max_refill: int | None  # prompts that refills may generate per step; None = no bound

    def _g2rpo_reset_step(self) -> None:
        self._g2rpo_refilled = 0
        self._g2rpo_budget_hit = False
        self._g2rpo_tasks: dict[str, str] = getattr(self, "_g2rpo_tasks", {})

    def sample(self, global_steps: int, partition_id: str, batch_size: int):
        self._g2rpo_reset_step()
        batch, metrics = super().sample(global_steps, partition_id, batch_size)
        if self._g2rpo_budget_hit and partition_id != "val":
            metrics[BUDGET_METRIC] = 1
        return batch, metrics

    def _g2rpo_count_refill(self, num_prompts: int):
        self._g2rpo_refilled = getattr(self, "_g2rpo_refilled", 0) + int(num_prompts)
        return self._g2rpo_inner_refill(num_prompts)

    def _g2rpo_budget_left(self) -> bool:
        if self.g2rpo_max_refill is None or getattr(self, "_g2rpo_refilled", 0) < self.g2rpo_max_refill:
            return True
        if not getattr(self, "_g2rpo_budget_hit", False):
            logger.warning(
                "g2rpo: online filtering generated %d extra prompts this step (max_num_gen_batches budget); "
                "the rest of the batch is filled without the %s band",
                self._g2rpo_refilled, self.g2rpo_band,
            )
        self._g2rpo_budget_hit = True
        return False

    def _dapo_filtered_keys(self, partition_id: str) -> tuple[set[str], Counter]:
        if partition_id == "val" or self.filter_groups_metric is None:
            return set(), Counter()
        finished = self.finished_keys[partition_id]
        cache = self._dapo_classification_cache[partition_id]
        for uid in cache.keys() - finished:
            del cache[uid]
        for uid in self._g2rpo_tasks.keys() - finished:
            del self._g2rpo_tasks[uid]
        new = finished - cache.keys()
        if new:
            if self._g2rpo_budget_left():
                cache.update(classify_groups(self._g2rpo_group_means(partition_id, new), self.g2rpo_band))
            else:
                cache.update(dict.fromkeys(new))  # kept: the step's refill budget is spent
        filtered = {uid: value for uid, value in cache.items() if value is not None}
        return set(filtered), Counter(filtered.values())

    def _g2rpo_group_means(self, partition_id: str, uids: set[str]) -> dict[str, float]:
        """Mean metric of each finished group in ``uids``; records each group's task key."""
        import transfer_queue as tq

        from g2rpo_verl.verl_hooks.trainer import resolve_task_keys

        keys = [key for key in self.partitions[partition_id] if key.split("_")[0] in uids]
        missing = uids - {key.split("_")[0] for key in keys}
        if missing:
            raise RuntimeError(f"Finished groups have no trajectories for the group filter: {sorted(missing)[:5]}")
        use_reward = self.filter_groups_metric == _REWARD_METRIC
        fields = ["extra_fields", "data_source", "extra_info"] + (["rm_scores"] if use_reward else [])
        data = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=fields)
        extra_fields = [_plain(x) or {} for x in _as_list(data["extra_fields"])]
        reward_infos = [ef.get("reward_extra_info") or {} for ef in extra_fields]
        if use_reward:
            values = [float(x.sum().item()) for x in data["rm_scores"]]
        else:
            name = self.filter_groups_metric
            lacking = [k for k, info in zip(keys, reward_infos, strict=True) if name not in info]
            if lacking:
                raise RuntimeError(
                    f"algorithm.filter_groups.metric={name!r} is not a key of the reward dict of {len(lacking)} "
                    f"responses (first: {lacking[0]}; keys: {sorted(reward_infos[keys.index(lacking[0])])})"
                )
            values = [float(info[name]) for info in reward_infos]
        group_uids = [key.split("_")[0] for key in keys]
        columns = {"data_source": [_plain(x) for x in _as_list(data["data_source"])]}
        extra_infos = [_plain(x) for x in _as_list(data["extra_info"])]
        try:
            tasks = resolve_task_keys(self.g2rpo_task_key, columns, extra_infos, reward_infos)
        except ValueError:
            tasks = [str(ds) for ds in columns["data_source"]]  # metrics only: never stop training
        for uid, task in zip(group_uids, tasks, strict=True):
            self._g2rpo_tasks.setdefault(uid, task)
        return group_means(group_uids, values)

    def _evict_terminal_groups(self, global_steps, partition_id, eviction_reasons):
        dapo_uids = eviction_reasons[1]
        tasks = {uid: self._g2rpo_tasks.pop(uid, "<unknown>") for uid in dapo_uids}
        result = super()._evict_terminal_groups(global_steps, partition_id, eviction_reasons)
        if dapo_uids:
            result[3].update(filtered_group_metrics(sorted(dapo_uids), tasks))
        return result


_BANDED: dict[type, type] = {}


def install_band(buffer, band: FilterBand, task_key: str, max_refill: int | None):
    """Put :class:`BandFilterMixin` in front of ``buffer``'s class (in place; returns it).

    The instance verl built keeps every attribute its constructor set, so verl's
    eviction/refill loop runs unchanged; only the methods above are overridden.
    """
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync

    cls = type(buffer)
    if not isinstance(buffer, ReplayBuffer):
        raise TypeError(f"the group-filter band needs verl's ReplayBuffer, got {cls.__qualname__}")
    if buffer.filter_groups_metric is None:
        raise ValueError(
            "the group-filter band needs verl's group filtering: a custom sampler "
            "(trainer.v1.sampler.custom_sampler) owns its filtering and cannot take the band"
        )
    if not issubclass(cls, BandFilterMixin):
        if cls not in _BANDED:
            _BANDED[cls] = type(f"Band{cls.__name__}", (BandFilterMixin, cls), {"__module__": __name__})
        buffer.__class__ = _BANDED[cls]
    if isinstance(buffer, ReplayBufferAsync) and max_refill is not None:
        # Async trainers have no per-step sampling round to reset a budget in (the separate
        # trainer polls wait_for_sampleable directly); verl refills exactly what it evicts there.
        logger.info("g2rpo: max_num_gen_batches does not apply to async trainers; the band does")
        max_refill = None
    buffer.g2rpo_band, buffer.g2rpo_task_key, buffer.g2rpo_max_refill = band, task_key, max_refill
    if buffer.refill_fn is not None and not getattr(buffer, "_g2rpo_inner_refill", None):
        buffer._g2rpo_inner_refill = buffer.refill_fn
        buffer.refill_fn = buffer._g2rpo_count_refill
    buffer._g2rpo_reset_step()
    return buffer


class GroupFilterMixin:
    """Trainer side: a base of :class:`~g2rpo_verl.verl_hooks.trainer.G2RPOTrainerMixin`.

    Wraps verl's ``_build_replay_buffer`` (called in the trainer's ``__init__``); a
    pass-through unless the band is configured (see the module docstring).
    """

    def _build_replay_buffer(self):
        buffer = super()._build_replay_buffer()
        band = load_filter_band(self.config)
        if band is None:
            return buffer
        custom = self.config.trainer.v1.sampler.get("custom_sampler", None) or {}
        if custom.get("path") and custom.get("name"):
            raise ValueError(
                f"trainer.v1.sampler.sampler_kwargs.{FILTER_BAND_KEY} works with verl's built-in replay buffer only; "
                "a custom sampler (trainer.v1.sampler.custom_sampler) owns its filtering"
            )
        max_batches = int(self.config.algorithm.filter_groups.get("max_num_gen_batches", 0) or 0)
        batch = int(self.config.data.train_batch_size)
        max_refill = (max_batches - 1) * batch if max_batches > 0 else None
        install_band(buffer, band, self.g2rpo_config.task_key, max_refill)
        logger.info(
            "g2rpo: online group filtering keeps groups with %s < mean(%s) < %s; at most %s prompts per step "
            "(algorithm.filter_groups.max_num_gen_batches=%s is honoured here, whatever verl logs)",
            band.low, buffer.filter_groups_metric, band.high,
            "unbounded" if max_refill is None else max_refill + batch, max_batches,
        )
        return buffer
