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

:class:`BandFilter` changes exactly those two decisions and leaves verl's eviction, refill and
selection loop as it is. With ``trainer.v1.sampler.sampler_kwargs.filter_band: {low, high}``
(:class:`~g2rpo_verl.config.FilterBand`) and ``algorithm.filter_groups.enable=true``, the
trainer mixin :class:`GroupFilterMixin` attaches it to the replay buffer verl built. It hooks
three members of that instance (the class is untouched):

* ``_terminal_eviction_reasons``: verl's own method runs first (staleness, failures, and its
  DAPO pass with its metric checks and cache); the band then replaces verl's DAPO set: a group
  is evicted iff ``not (low < mean(metric over its responses) < high)``;
* ``refill_fn``: counts the prompts refills generate. Sync trainer: at most
  ``max_num_gen_batches × train_batch_size`` prompts per step (the first batch included;
  ``<= 0`` = no bound; async trainers refill exactly what they evict and have no per-step
  bound). Once refills reach that, no further group is evicted in the step, so the batch fills
  with what arrives (verl's loop cannot hang on a too-hard or too-easy dataset);
  ``training/filter_groups/budget_exhausted`` is 1 that step;
* ``sample``: resets the budget per step and adds ``task_<τ>/filtered_groups``, the groups the
  band evicted per task (``g2rpo.task_key``).
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

from g2rpo_verl.config import FilterBand, load_filter_band
from g2rpo_verl.verl_compat.api import FILTER_REWARD_METRIC, TQ, group_uid
from g2rpo_verl.verl_hooks.base import G2RPOBase
from g2rpo_verl.verl_hooks.samples import metric_prefix, resolve_task_keys

logger = logging.getLogger(__name__)

__all__ = [
    "BUDGET_METRIC",
    "group_means",
    "classify_groups",
    "filtered_group_metrics",
    "BandFilter",
    "GroupFilterMixin",
]

BUDGET_METRIC = "training/filter_groups/budget_exhausted"


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

    A non-finite mean is evicted: a NaN metric would otherwise train as a real reward.
    """
    return {uid: (None if math.isfinite(m) and band.keeps(m) else float(m)) for uid, m in means.items()}


def filtered_group_metrics(filtered_uids: Sequence[str], task_by_uid: Mapping[str, str]) -> dict[str, int]:
    """``task_<τ>/filtered_groups`` per task of the evicted groups (``<unknown>`` if unseen)."""
    counts = Counter(task_by_uid.get(uid, "<unknown>") for uid in filtered_uids)
    return {f"{metric_prefix(task)}/filtered_groups": n for task, n in counts.items()}


def _as_list(column) -> list:
    # TransferQueue returns NonTensorStack / numpy / lists depending on its backend.
    return column.tolist() if hasattr(column, "tolist") else list(column)


def _plain(value):
    return getattr(value, "data", value)


class BandFilter:
    """The band's decisions and the per-step refill budget, attached to one verl replay buffer.

    Args:
        buffer: verl's ``ReplayBuffer`` / ``ReplayBufferAsync`` with group filtering on.
        band: the band.
        task_key: ``g2rpo.task_key`` (for the per-task counts only).
        max_refill: prompts refills may generate per step; ``None`` = no bound.
    """

    def __init__(self, buffer, band: FilterBand, task_key: str, max_refill: int | None):
        from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync

        if not isinstance(buffer, ReplayBuffer):
            raise TypeError(f"the group-filter band needs verl's ReplayBuffer, got {type(buffer).__qualname__}")
        if buffer.filter_groups_metric is None:
            raise ValueError(
                "the group-filter band needs verl's group filtering: a custom sampler "
                "(trainer.v1.sampler.custom_sampler) owns its filtering and cannot take the band"
            )
        if isinstance(buffer, ReplayBufferAsync) and max_refill is not None:
            # Async trainers have no per-step sampling round to reset a budget in (the separate
            # trainer polls wait_for_sampleable directly); verl refills exactly what it evicts there.
            logger.info("g2rpo: max_num_gen_batches does not apply to async trainers; the band does")
            max_refill = None
        self.buffer, self.band, self.task_key, self.max_refill = buffer, band, task_key, max_refill
        self.decisions: dict[str, dict[str, float | None]] = defaultdict(dict)  # partition -> uid -> evicted mean
        self.refilled = 0
        self.budget_hit = False
        self.evicted_tasks: list[str] = []  # tasks of the groups evicted this step
        self._verl_reasons = buffer._terminal_eviction_reasons
        self._verl_sample = buffer.sample
        self._verl_refill = buffer.refill_fn

    def attach(self):
        """Hook the buffer's instance (see module docstring); returns the buffer."""
        buf = self.buffer
        buf._terminal_eviction_reasons = self.terminal_eviction_reasons
        buf.sample = self.sample
        if self._verl_refill is not None:
            buf.refill_fn = self.refill
        buf.g2rpo_band_filter = self
        return buf

    # -------------------------------------------------------------- hooks

    def sample(self, global_steps: int, partition_id: str, batch_size: int):
        self.refilled, self.budget_hit, self.evicted_tasks = 0, False, []
        batch, metrics = self._verl_sample(global_steps, partition_id, batch_size)
        if partition_id != "val":
            counts = Counter(self.evicted_tasks)
            metrics.update({f"{metric_prefix(task)}/filtered_groups": n for task, n in counts.items()})
            if self.budget_hit:
                metrics[BUDGET_METRIC] = 1
        return batch, metrics

    def refill(self, num_prompts: int):
        self.refilled += int(num_prompts)
        return self._verl_refill(num_prompts)

    def terminal_eviction_reasons(self, global_steps: int, partition_id: str):
        stale, _verl_dapo, failed, _verl_counts = self._verl_reasons(global_steps, partition_id)
        if partition_id == "val":
            return stale, set(), failed, Counter()
        evicted = self.band_evicted(partition_id)
        return stale, set(evicted), failed, Counter(evicted.values())

    # -------------------------------------------------------------- the band

    def _budget_left(self) -> bool:
        if self.max_refill is None or self.refilled < self.max_refill:
            return True
        if not self.budget_hit:
            logger.warning(
                "g2rpo: online filtering generated %d extra prompts this step (max_num_gen_batches budget); "
                "the rest of the batch is filled without the %s band",
                self.refilled,
                self.band,
            )
        self.budget_hit = True
        return False

    def band_evicted(self, partition_id: str) -> dict[str, float]:
        """``uid -> mean`` of the finished groups the band evicts (each group decided once)."""
        finished = self.buffer.finished_keys[partition_id]
        decisions = self.decisions[partition_id]
        for uid in decisions.keys() - finished:
            del decisions[uid]  # evicted or sampled: gone from verl's bookkeeping
        new = finished - decisions.keys()
        if new:
            if self._budget_left():
                means, tasks = self.group_means(partition_id, new)
                decided = classify_groups(means, self.band)
                self.evicted_tasks += [tasks[uid] for uid, mean in decided.items() if mean is not None]
            else:
                decided = dict.fromkeys(new)  # kept: the step's refill budget is spent
            decisions.update(decided)
        return {uid: mean for uid, mean in decisions.items() if mean is not None}

    def group_means(self, partition_id: str, uids: set[str]) -> tuple[dict[str, float], dict[str, str]]:
        """Mean metric and task of each finished group in ``uids``."""
        import transfer_queue as tq

        keys = [key for key in self.buffer.partitions[partition_id] if group_uid(key) in uids]
        missing = uids - {group_uid(key) for key in keys}
        if missing:
            raise RuntimeError(f"Finished groups have no trajectories for the group filter: {sorted(missing)[:5]}")
        metric = self.buffer.filter_groups_metric
        use_reward = metric == FILTER_REWARD_METRIC
        fields = [TQ.EXTRA_FIELDS, TQ.DATA_SOURCE, TQ.EXTRA_INFO] + ([TQ.RM_SCORES] if use_reward else [])
        data = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=fields)
        extra_fields = [_plain(x) or {} for x in _as_list(data[TQ.EXTRA_FIELDS])]
        reward_infos = [ef.get(TQ.REWARD_EXTRA_INFO) or {} for ef in extra_fields]
        if use_reward:
            values = [float(x.sum().item()) for x in data[TQ.RM_SCORES]]
        else:
            lacking = [k for k, info in zip(keys, reward_infos, strict=True) if metric not in info]
            if lacking:
                raise RuntimeError(
                    f"algorithm.filter_groups.metric={metric!r} is not a key of the reward dict of {len(lacking)} "
                    f"responses (first: {lacking[0]}; keys: {sorted(reward_infos[keys.index(lacking[0])])})"
                )
            values = [float(info[metric]) for info in reward_infos]
        group_uids = [group_uid(key) for key in keys]
        columns = {TQ.DATA_SOURCE: [_plain(x) for x in _as_list(data[TQ.DATA_SOURCE])]}
        extra_infos = [_plain(x) for x in _as_list(data[TQ.EXTRA_INFO])]
        try:
            tasks = resolve_task_keys(self.task_key, columns, extra_infos, reward_infos)
        except ValueError:
            tasks = [str(ds) for ds in columns[TQ.DATA_SOURCE]]  # metrics only: never stop training
        return group_means(group_uids, values), dict(zip(group_uids, tasks, strict=True))


class GroupFilterMixin(G2RPOBase):
    """Trainer side: attaches :class:`BandFilter` to the replay buffer verl builds in ``__init__``.

    A pass-through unless the band is configured (the config check validated it already).
    """

    def _build_replay_buffer(self):
        buffer = super()._build_replay_buffer()
        band = load_filter_band(self.config)
        if band is None:
            return buffer
        max_batches = int(self.config.algorithm.filter_groups.get("max_num_gen_batches", 0) or 0)
        batch = int(self.config.data.train_batch_size)
        max_refill = (max_batches - 1) * batch if max_batches > 0 else None
        band_filter = BandFilter(buffer, band, self.g2rpo_config.task_key, max_refill)
        band_filter.attach()
        logger.info(
            "g2rpo: online group filtering keeps groups with %s < mean(%s) < %s; at most %s prompts per step "
            "(algorithm.filter_groups.max_num_gen_batches=%s is honoured here, whatever verl logs)",
            band.low,
            buffer.filter_groups_metric,
            band.high,
            "unbounded" if band_filter.max_refill is None else band_filter.max_refill + batch,
            max_batches,
        )
        return buffer
