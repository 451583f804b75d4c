"""Online group filtering: the (low, high) band on verl 0.9.1's own V1 replay buffer.

The buffer tests run verl's real ``ReplayBuffer.sample`` loop (eviction, 2k refill credit,
draining, surplus discard) against an in-memory stand-in for TransferQueue, so they pin the
band, the refill budget and the per-task counts as verl's loop sees them.
"""

from __future__ import annotations

import itertools
import math

import pytest
from omegaconf import OmegaConf

from g2rpo_verl.config import FilterBand, load_filter_band
from g2rpo_verl.verl_hooks import filtering
from g2rpo_verl.verl_hooks.filtering import BUDGET_METRIC, BandFilter, classify_groups, group_means

replay_buffer = pytest.importorskip("verl.trainer.ppo.v1.replay_buffer")

REF = FilterBand(0.01, 0.99)


# ---------------------------------------------------------------------------------------------
# band logic
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "values, kept",
    [
        ([0.0] * 8, False),  # all wrong: no signal
        ([1.0] * 8, False),  # all right: no signal
        ([1.0] + [0.0] * 7, True),  # 1/8 = 0.125
        ([1.0] * 7 + [0.0], True),
        ([0.5] * 8, True),  # tied but inside the band: the reference keeps it (verl drops it)
        ([0.995] * 4 + [1.0] * 4, False),  # continuous accuracy near 1: not tied, still dropped
        ([0.0] * 7 + [0.05], False),  # mean 0.00625 <= 0.01
        ([1.0], False),  # a single response: judged by its mean like any group
        ([0.3], True),
    ],
)
def test_band_keeps_a_group_iff_its_mean_is_strictly_inside(values, kept):
    means = group_means(["u"] * len(values), values)
    assert (
        classify_groups(means, REF)["u"] is None
        if kept
        else classify_groups(means, REF)["u"] == pytest.approx(sum(values) / len(values))
    )


def test_band_bounds_are_exclusive_and_nan_is_dropped():
    band = FilterBand(0.25, 0.75)
    assert not band.keeps(0.25) and not band.keeps(0.75) and band.keeps(0.5)
    assert classify_groups({"a": math.nan}, band)["a"] is not None


def test_group_means_per_uid():
    assert group_means(["a", "b", "a", "b"], [1, 0, 0, 0]) == {"a": 0.5, "b": 0.0}


@pytest.mark.parametrize("low, high", [(0.5, 0.5), (0.9, 0.1), (math.nan, 0.9), (0.0, math.inf)])
def test_invalid_band_names_the_key(low, high):
    with pytest.raises(ValueError, match="sampler_kwargs.filter_band"):
        FilterBand(low, high)


def _config(band=None, enable=True, **sampler_kwargs):
    if band is not None:
        sampler_kwargs["filter_band"] = band
    return OmegaConf.create(
        {
            "algorithm": {"filter_groups": {"enable": enable, "metric": "accuracy", "max_num_gen_batches": 0}},
            "trainer": {"v1": {"sampler": {"sampler_kwargs": sampler_kwargs, "custom_sampler": {"path": None}}}},
            "data": {"train_batch_size": 4},
        }
    )


def test_load_filter_band():
    assert load_filter_band(_config()) is None  # verl's own rule
    assert load_filter_band(_config(enable=False)) is None
    assert load_filter_band(_config({"low": 0.01, "high": 0.99})) == REF
    assert load_filter_band(_config({"high": 0.5})) == FilterBand(0.01, 0.5)
    with pytest.raises(ValueError, match=r"unknown keys \['hihg'\]"):
        load_filter_band(_config({"low": 0.1, "hihg": 0.9}))
    with pytest.raises(ValueError, match="filter_groups.enable is false"):
        load_filter_band(_config({"low": 0.1, "high": 0.9}, enable=False))
    custom = _config({"low": 0.1, "high": 0.9})
    custom.trainer.v1.sampler.custom_sampler = {"path": "pkg://x", "name": "Y"}
    with pytest.raises(ValueError, match="custom sampler"):
        load_filter_band(custom)


# ---------------------------------------------------------------------------------------------
# verl's real ReplayBuffer loop on an in-memory TransferQueue
# ---------------------------------------------------------------------------------------------
class FakeTQ:
    """The three TransferQueue calls verl's ReplayBuffer makes, on a dict."""

    def __init__(self):
        self.tags: dict[str, dict] = {}  # key -> tag (partition "train" only)
        self.values: dict[str, dict] = {}

    def add_group(self, uid, accuracies, task):
        self.tags[uid] = {"is_prompt": True, "status": "finished", "global_steps": 1}
        for i, acc in enumerate(accuracies):
            key = f"{uid}_{i}_0"
            self.tags[key] = {"status": "success"}
            self.values[key] = {
                "extra_fields": {"reward_extra_info": {"accuracy": acc, "problem_type": task}},
                "data_source": f"src_{task}",
                "extra_info": {"problem_type": task},
            }

    def kv_list(self):
        return {"train": dict(self.tags)}

    def kv_batch_get(self, keys, partition_id, select_fields):
        return {f: [self.values[k][f] for k in keys] for f in select_fields}

    def kv_clear(self, partition_id, keys):
        for key in keys:
            self.tags.pop(key, None)
            self.values.pop(key, None)


class Generator:
    """refill_fn: each new prompt's group finishes at once with accuracies from ``groups``."""

    def __init__(self, tq, groups):
        self.tq, self.groups, self.ids, self.calls = tq, itertools.cycle(groups), itertools.count(), []

    def submit(self, n):
        self.calls.append(n)
        for _ in range(n):
            accs, task = next(self.groups)
            self.tq.add_group(f"g{next(self.ids)}", accs, task)
        return n


@pytest.fixture
def fake_tq(monkeypatch):
    tq = FakeTQ()
    monkeypatch.setattr(replay_buffer, "tq", tq)
    monkeypatch.setattr("transfer_queue.kv_batch_get", tq.kv_batch_get)
    return tq


def make_buffer(gen, batch_size, band=REF, max_refill=None, cls=None):
    buf = (cls or replay_buffer.ReplayBuffer)(
        trainer_mode="sync",
        trainer_config={},
        max_off_policy_threshold=None,
        max_off_policy_strategy="drop",
        sampler_kwargs={},
        poll_interval=0.0,
        refill_fn=gen.submit,
        filter_groups_metric="accuracy",
        train_batch_size=batch_size,
        gen_batch_size=1,
        max_inflight_gen_batches=1,
    )
    if band is not None:
        BandFilter(buf, band, "problem_type", max_refill).attach()
    return buf


MIXED = ([1.0, 0.0, 0.0, 1.0], "math")
SOLVED = ([1.0, 1.0, 1.0, 1.0], "math")
WRONG = ([0.0, 0.0, 0.0, 0.0], "OCR")
HALF = ([0.5, 0.5, 0.5, 0.5], "spatial grounding")


def test_band_evicts_refills_and_counts_per_task(fake_tq):
    gen = Generator(fake_tq, [MIXED])
    for i, group in enumerate([SOLVED, MIXED, WRONG, MIXED]):  # the step's first batch
        fake_tq.add_group(f"first{i}", *group)
    buf = make_buffer(gen, batch_size=4)
    batch, metrics = buf.sample(global_steps=1, partition_id="train", batch_size=4)
    uids = {key.split("_")[0] for key in batch.keys}
    assert len(uids) == 4 and not uids & {"first0", "first2"}
    assert gen.calls == [4]  # verl's sync rule: 2 credits per evicted group
    assert metrics["task_math/filtered_groups"] == 1
    assert metrics["task_OCR/filtered_groups"] == 1
    assert metrics["training/filter_groups/evicted_samples"] == 2
    assert BUDGET_METRIC not in metrics


def test_band_keeps_tied_groups_inside_it_where_verl_drops_them(fake_tq):
    for i in range(2):
        fake_tq.add_group(f"h{i}", *HALF)
    gen = Generator(fake_tq, [MIXED])
    batch, metrics = make_buffer(gen, batch_size=2).sample(1, "train", 2)
    assert {k.split("_")[0] for k in batch.keys} == {"h0", "h1"} and gen.calls == []

    fake_tq.tags.clear()
    for i in range(2):
        fake_tq.add_group(f"h{i}", *HALF)
    gen = Generator(fake_tq, [MIXED])
    batch, _ = make_buffer(gen, batch_size=2, band=None).sample(1, "train", 2)  # verl's own rule
    assert not {k.split("_")[0] for k in batch.keys} & {"h0", "h1"}


def test_refill_budget_stops_filtering_instead_of_looping_forever(fake_tq):
    gen = Generator(fake_tq, [SOLVED])  # every group is filtered: verl alone would never finish
    for i in range(4):
        fake_tq.add_group(f"first{i}", *SOLVED)
    buf = make_buffer(gen, batch_size=4, max_refill=4)  # max_num_gen_batches = 2
    batch, metrics = buf.sample(1, "train", 4)
    assert len({k.split("_")[0] for k in batch.keys}) == 4
    assert sum(gen.calls) <= 4 + 2 * 4  # the budget plus the credit already granted
    assert metrics[BUDGET_METRIC] == 1
    assert metrics["task_math/filtered_groups"] >= 4

    # the next step starts with a fresh budget
    fake_tq.tags.clear()
    gen.groups = itertools.cycle([MIXED])
    for i in range(4):
        fake_tq.add_group(f"next{i}", *(SOLVED if i == 0 else MIXED))
    _, metrics = buf.sample(2, "train", 4)
    assert BUDGET_METRIC not in metrics and metrics["task_math/filtered_groups"] == 1


def test_missing_metric_is_a_clear_error(fake_tq):
    fake_tq.add_group("a", *MIXED)
    del fake_tq.values["a_0_0"]["extra_fields"]["reward_extra_info"]["accuracy"]
    buf = make_buffer(Generator(fake_tq, [MIXED]), batch_size=1)
    # verl's own DAPO pass runs first (the band post-filters its result) and names the metric
    with pytest.raises(RuntimeError, match="missing DAPO metric 'accuracy'"):
        buf.sample(1, "train", 1)


def test_the_band_hooks_verls_buffer_instance_without_changing_its_class(fake_tq):
    buf = make_buffer(Generator(fake_tq, [MIXED]), 2, max_refill=4, cls=replay_buffer.ReplayBufferAsync)
    assert type(buf) is replay_buffer.ReplayBufferAsync
    assert buf.g2rpo_band_filter.max_refill is None  # async trainers have no per-step budget
    assert type(make_buffer(Generator(fake_tq, [MIXED]), 2)) is replay_buffer.ReplayBuffer


def test_the_band_refuses_a_buffer_without_group_filtering(fake_tq):
    buf = make_buffer(Generator(fake_tq, [MIXED]), 2, band=None)
    buf.filter_groups_metric = None
    with pytest.raises(ValueError, match="custom sampler"):
        BandFilter(buf, REF, "problem_type", None)


def test_the_trainer_mixin_carries_the_filter():
    from g2rpo_verl.verl_hooks.trainer import G2RPOTrainerMixin

    assert issubclass(G2RPOTrainerMixin, filtering.GroupFilterMixin)


# The real main_ppo with the band on is the gs_grpo case of tests/e2e/test_e2e_g2rpo.py.
