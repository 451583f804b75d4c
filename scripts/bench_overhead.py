#!/usr/bin/env python
"""What the plugin adds to one production training step, side by side with verl's own work.

One run, three parts, at the paper's shapes (512 prompts × 8 rollouts, six problem types in
:data:`TASK_MIX`, response lengths drawn from each type's range, Qwen3-VL's vocabulary of
151,936 where logits matter):

* **trainer** — everything the plugin does per step from the batch after rewards to the batch
  handed to the actor, on the composed ``configs/g2rpo_qwen3vl8b.yaml`` (``gs_grpo``, length and
  entropy shaping on): the trainer mixin's ``_compute_advantage`` (task resolution, length
  shaping, the two Gaussian maps through verl's own advantage step, per-task metrics) and
  ``_update_actor`` up to verl's actor call (mini-batch plan, entropy-band weights, metrics;
  ``--controller adaptive`` for the controller; ``--grad-every 1`` adds the gradient diagnostics'
  preparation) — against verl's own V1 ``_compute_advantage`` with ``adv_estimator=grpo`` on
  the same batch (``configs/grpo_qwen3vl8b.yaml``, verl's class without the plugin). Both run
  verl's real ``PPOTrainerSync`` methods, with TransferQueue replaced by an in-memory store
  (:class:`MemoryTQ`): its time is measured and reported apart (``TQ`` columns) with the number
  of round trips each path makes, since a real TransferQueue's cost per round trip depends on the
  deployment. Target: plugin ≤ 1 s at 4,096 samples; sizes ``--sizes`` (default 1k, 4k, 16k,
  65k samples) give the scaling exponent (least squares of log time on log size).
* **actor** — one micro-batch of ``--tokens`` response tokens × ``--vocab`` logits: verl's engine
  functions from the logits (``verl.utils.torch_functional.logprobs_from_logits``, and
  ``entropy_from_logits`` eager / ``torch.compile``-d / under ``checkpoint`` when the entropy is
  asked for, as ``verl/workers/engine/fsdp/transformer_impl.py`` calls them), then the loss,
  then the backward to the logits: verl's ``ppo_loss`` vs the plugin's
  :class:`~g2rpo_verl.verl_hooks.actor_loss.G2RPOActorLoss` (built by ``build_actor_loss`` as
  the trainer does) with the trainer's weight and plan fields. Target: ≤ 1.05× verl's.
* **rewards** — ``g2rpo_verl.rewards.compute_score`` on ``--reward-samples`` model-like
  responses per problem type (``scripts/bench_rewards.py``'s generator, think text as long as
  the type's responses), sequential and in a thread pool of the size asyncio's default executor
  has (how verl's reward loop runs a synchronous reward), with the slowest single call.

Prints one table per part (median of ``--repeat`` interleaved runs) and, with ``--json``, writes
every number. Heavy at the default sizes: run under the shared lock on a shared machine.

    flock /tmp/heavy.lock python scripts/bench_overhead.py [--sizes 1024 4096 16384 65536]
        [--tokens 1024] [--reward-samples 4096] [--parts trainer actor rewards] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

QWEN3_VL_VOCAB = 151936
ROLLOUTS = 8
EOS = 151645  # Qwen3-VL's <|im_end|>

#: problem type -> (share of the prompts, (min, max) response tokens, reward topology). The
#: length ranges are the paper's trends where it gives them (math 600-1,100, general VQA
#: 950-1,400, grounding 65-125, documents/OCR 30-105); the paper publishes no mixture weights
#: and no ranges for charts (numerical) or spatial reasoning (regression): those are this
#: bench's assumptions, stated in docs/production.md.
TASK_MIX: dict[str, tuple[float, tuple[int, int], str]] = {
    "multiple choice": (0.30, (950, 1400), "binary"),
    "math": (0.20, (600, 1100), "binary"),
    "numerical": (0.15, (600, 1100), "binary"),
    "regression": (0.10, (300, 900), "mra"),
    "OCR": (0.10, (30, 105), "wer"),
    "spatial grounding": (0.15, (65, 125), "iou"),
}


# ------------------------------------------------------------------ the step's batch


@dataclass
class StepBatch:
    """One step's rows after the rewards, as verl's V1 trainer holds them in TransferQueue."""

    keys: list[str]
    fields: dict  # field -> nested (jagged) per-token tensor, or list of per-row objects
    tasks: list[str]

    @property
    def tokens(self) -> int:
        return int(self.fields["response_mask"].values().numel())


def _jagged(rows: list[torch.Tensor]) -> torch.Tensor:
    return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


def draw_batch(n_samples: int, seed: int = 0, truncated_share: float = 0.02) -> StepBatch:
    """``n_samples`` rows (``n_samples / 8`` prompts × 8 rollouts) of the :data:`TASK_MIX`.

    Per row: response token ids (EOS last unless truncated), response mask, ``rm_scores`` (the
    reward at the last token: 0.9·accuracy + 0.1·format + structure, accuracy by the type's
    topology), ``old_log_probs`` and ``entropy`` per token (task-dependent levels), uid,
    ``data_source``, ``extra_info`` (``problem_type``) and the reward dict.
    """
    if n_samples % ROLLOUTS:
        raise ValueError(f"--sizes: {n_samples} samples is not a multiple of {ROLLOUTS} rollouts")
    rng = np.random.default_rng(seed)
    n_prompts = n_samples // ROLLOUTS
    names = list(TASK_MIX)
    shares = np.array([TASK_MIX[t][0] for t in names])
    prompt_task = rng.choice(len(names), size=n_prompts, p=shares / shares.sum())
    lengths_all, keys, tasks, uids = [], [], [], []
    infos, extras, sources = [], [], []
    responses, masks, scores, old_lp, ent = [], [], [], [], []
    for p in range(n_prompts):
        task = names[prompt_task[p]]
        _, (lo, hi), topology = TASK_MIX[task]
        uid = str(uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | p))
        p_right = rng.uniform(0.05, 0.95)  # the group's difficulty
        for s in range(ROLLOUTS):
            n = int(rng.integers(lo, hi + 1))
            truncated = rng.random() < truncated_share
            tok = torch.from_numpy(rng.integers(0, QWEN3_VL_VOCAB - 1000, n))
            if not truncated:
                tok[-1] = EOS
            if topology == "binary":
                acc = float(rng.random() < p_right)
            elif topology == "iou":
                acc = float(np.clip(rng.normal(p_right, 0.25), 0, 1)) * float(rng.random() < 0.9)
            elif topology == "wer":
                acc = float(rng.choice([0.0, 0.5, 1.0], p=[1 - p_right, 0.0, p_right] if p_right > 0.5 else None))
            else:  # mean relative accuracy: 10 levels
                acc = float(rng.integers(0, 11)) / 10 * float(rng.random() < p_right)
            fmt = float(rng.random() < 0.95)
            structure = 0.5 * fmt
            score = 0.9 * acc + 0.1 * fmt + structure
            rm = torch.zeros(n, dtype=torch.float32)
            rm[-1] = score
            level = 0.15 if topology == "binary" else 0.6
            e = torch.from_numpy(rng.gamma(2.0, level / 2.0, n).astype(np.float32))
            responses.append(tok)
            masks.append(torch.ones(n, dtype=torch.int64))
            scores.append(rm)
            ent.append(e)
            old_lp.append(-e * torch.from_numpy(rng.uniform(0.5, 1.5, n).astype(np.float32)))
            lengths_all.append(n)
            keys.append(f"{uid}_{s}_0")
            uids.append(uid)
            tasks.append(task)
            sources.append(f"onethinker_{task.replace(' ', '_')}")
            extras.append({"problem_type": task, "index": p})
            reward_info = {"score": score, "accuracy": acc, "format": fmt, "structure": structure}
            infos.append({"reward_extra_info": reward_info})
    fields = {
        "uid": uids,
        "data_source": sources,
        "extra_info": extras,
        "extra_fields": infos,
        "responses": _jagged(responses),
        "response_mask": _jagged(masks),
        "rm_scores": _jagged(scores),
        "old_log_probs": _jagged(old_lp),
        "entropy": _jagged(ent),
    }
    return StepBatch(keys, fields, tasks)


class MemoryTQ:
    """TransferQueue's ``kv_batch_get`` / ``kv_batch_put`` on one in-memory partition.

    Per-token fields are nested (jagged) tensors, per-row objects ``NonTensorStack``s, as the
    real client returns them. Counts the round trips and the time spent inside (the part a
    deployment's TransferQueue replaces with its own cost).
    """

    def __init__(self, batch: StepBatch):
        self.keys = list(batch.keys)
        self.fields = dict(batch.fields)
        self.gets = self.puts = 0
        self.seconds = 0.0

    def reset_counters(self) -> None:
        self.gets = self.puts = 0
        self.seconds = 0.0

    def _check_keys(self, keys) -> None:
        if list(keys) != self.keys:
            raise RuntimeError("MemoryTQ serves the step's rows in the stored order only")

    def kv_batch_get(self, keys, partition_id, select_fields=None):
        from tensordict import NonTensorStack, TensorDict

        t0 = time.perf_counter()
        self._check_keys(keys)
        out = {}
        for name in select_fields or list(self.fields):
            if name not in self.fields:
                continue  # as TransferQueue: a field no row has is absent from the result
            value = self.fields[name]
            out[name] = value if isinstance(value, torch.Tensor) else NonTensorStack.from_list(list(value))
        result = TensorDict(out, batch_size=[len(self.keys)])
        self.gets += 1
        self.seconds += time.perf_counter() - t0
        return result

    def kv_batch_put(self, keys, partition_id, fields=None, tags=None):
        from transfer_queue import KVBatchMeta

        t0 = time.perf_counter()
        self._check_keys(keys)
        for name, value in fields.items():
            self.fields[name] = value
        self.puts += 1
        self.seconds += time.perf_counter() - t0
        return KVBatchMeta(keys=list(keys), tags=[{}] * len(keys), partition_id=partition_id, fields=list(self.fields))


@contextlib.contextmanager
def memory_tq(store: MemoryTQ):
    """Route ``transfer_queue.kv_batch_get`` / ``kv_batch_put`` (module attributes, which every
    caller looks up at call time) to ``store``."""
    import transfer_queue as tq

    saved = tq.kv_batch_get, tq.kv_batch_put
    tq.kv_batch_get, tq.kv_batch_put = store.kv_batch_get, store.kv_batch_put
    try:
        yield store
    finally:
        tq.kv_batch_get, tq.kv_batch_put = saved


# ------------------------------------------------------------------ trainer side


@functools.cache
def production_config(name: str, n_samples: int, overrides: tuple[str, ...] = ()):
    """``configs/<name>.yaml`` composed as ``main_ppo`` does, scaled to ``n_samples`` rows per step
    (the recipe's 4 actor mini-batches per step kept). Cached: the trainers only read it."""
    from hydra import compose, initialize_config_dir

    prompts = n_samples // ROLLOUTS
    scaled = [f"data.train_batch_size={prompts}", f"actor_rollout_ref.actor.ppo_mini_batch_size={max(1, prompts // 4)}"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return compose(config_name=name, overrides=[*scaled, *overrides])


class _HandToActor:
    """Stands where verl's ``_update_actor`` sends the batch to the actor workers: returns it, with
    the gradient diagnostics' Gram entries the workers would report when the batch asks for them."""

    def _update_actor(self, batch, metrics):
        from g2rpo_verl.verl_compat.api import WORKER_METRIC_PREFIX
        from g2rpo_verl.verl_hooks.grad_diagnostics import GRAM_METRIC, REQUEST_KEY

        num_tasks = (batch.extra_info or {}).get(REQUEST_KEY)
        for i in range(num_tasks or 0):
            for j in range(i, num_tasks):
                metrics[WORKER_METRIC_PREFIX + GRAM_METRIC.format(i=i, j=j)] = 1.0 if i == j else 0.1
        return batch


def trainer_classes():
    """``(plugin, verl)``: verl's sync V1 trainer with and without the plugin's mixin, ending at the actor call."""
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    from g2rpo_verl.verl_hooks.trainer import G2RPOTrainerMixin

    plugin = type("PluginTrainer", (G2RPOTrainerMixin, _HandToActor, PPOTrainerSync), {})
    verl = type("VerlTrainer", (_HandToActor, PPOTrainerSync), {})
    return plugin, verl


def make_trainer(cls, config, dp_size: int):
    """An instance of ``cls`` with what the advantage step and the actor plan read (no workers, no models)."""
    from types import SimpleNamespace

    from g2rpo_verl.verl_hooks.checks import validate_run_config

    trainer = object.__new__(cls)
    trainer.config = config
    trainer.global_steps = 1
    trainer._eos_token_ids = {EOS}
    trainer.actor_rollout_wg = SimpleNamespace(_dispatch_info={"actor": list(range(dp_size))})
    if hasattr(cls, "g2rpo_config"):
        trainer._g2rpo_config = validate_run_config(config, trainer="v1")
        trainer._g2rpo_samples = None
    return trainer


def trainer_step(trainer, meta) -> dict:
    """The trainer's work from the batch after rewards to the batch handed to the actor."""
    metrics: dict = {}
    meta = trainer._compute_advantage(meta, metrics)
    trainer._update_actor(meta, metrics)
    return metrics


@dataclass
class TrainerTiming:
    samples: int
    tokens: int
    seconds: dict = field(default_factory=dict)  # arm -> median wall seconds
    cpu_seconds: dict = field(default_factory=dict)  # arm -> median process CPU seconds
    tq_seconds: dict = field(default_factory=dict)  # arm -> median seconds inside MemoryTQ
    round_trips: dict = field(default_factory=dict)  # arm -> (gets, puts)
    metrics: dict = field(default_factory=dict)  # arm -> metric count


def bench_trainer(
    n_samples: int, repeat: int, controller: str = "fixed", grad_every: int = 0, dp_size: int = 8
) -> TrainerTiming:
    """Median time of each arm on one drawn batch; arms interleaved round-robin."""
    from transfer_queue import KVBatchMeta

    batch = draw_batch(n_samples)
    extra = [f"++g2rpo.entropy.controller={controller}"]
    if grad_every:
        extra.append(f"++g2rpo.diagnostics.grad_every={grad_every}")
    plugin_cls, verl_cls = trainer_classes()
    arms = {
        "plugin": (plugin_cls, production_config("g2rpo_qwen3vl8b", n_samples, tuple(extra))),
        "verl": (verl_cls, production_config("grpo_qwen3vl8b", n_samples)),
    }
    timing = TrainerTiming(n_samples, batch.tokens)
    times: dict[str, list] = {a: [] for a in arms}
    cpu_times: dict[str, list] = {a: [] for a in arms}
    tq_times: dict[str, list] = {a: [] for a in arms}
    for it in range(repeat + 1):  # the first round is a warm-up
        for arm, (cls, config) in arms.items():
            store = MemoryTQ(batch)  # a fresh copy of the step's fields: each run sees the same batch
            trainer = make_trainer(cls, config, dp_size)
            meta = KVBatchMeta(
                keys=list(batch.keys), tags=[{}] * n_samples, partition_id="train", fields=list(store.fields)
            )
            with memory_tq(store):
                t0, c0 = time.perf_counter(), time.process_time()
                metrics = trainer_step(trainer, meta)
                elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
            if it:
                times[arm].append(elapsed)
                cpu_times[arm].append(cpu)
                tq_times[arm].append(store.seconds)
            timing.round_trips[arm] = (store.gets, store.puts)
            timing.metrics[arm] = len(metrics)
    timing.seconds = {a: statistics.median(v) for a, v in times.items()}
    timing.cpu_seconds = {a: statistics.median(v) for a, v in cpu_times.items()}
    timing.tq_seconds = {a: statistics.median(v) for a, v in tq_times.items()}
    return timing


def fitted_exponent(sizes: list[int], seconds: list[float]) -> float:
    """Slope of log(seconds) on log(size), least squares (1 = linear)."""
    if len(sizes) < 2:
        return float("nan")
    x, y = np.log(np.asarray(sizes, float)), np.log(np.asarray(seconds, float))
    return float(np.polyfit(x, y, 1)[0])


def profile_trainer(n_samples: int, top: int = 15, **kwargs) -> str:
    """cProfile of one plugin step (after a warm-up), top functions by cumulative time."""
    import cProfile
    import io
    import pstats

    from transfer_queue import KVBatchMeta

    batch = draw_batch(n_samples)
    plugin_cls, _ = trainer_classes()
    extra = [f"++g2rpo.entropy.controller={kwargs.get('controller', 'fixed')}"]
    config = production_config("g2rpo_qwen3vl8b", n_samples, tuple(extra))
    out = io.StringIO()
    for warm in (True, False):
        store = MemoryTQ(batch)
        trainer = make_trainer(plugin_cls, config, 8)
        meta = KVBatchMeta(
            keys=list(batch.keys), tags=[{}] * n_samples, partition_id="train", fields=list(store.fields)
        )
        with memory_tq(store):
            if warm:
                trainer_step(trainer, meta)
                continue
            prof = cProfile.Profile()
            prof.enable()
            trainer_step(trainer, meta)
            prof.disable()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


# ------------------------------------------------------------------ actor side


def micro_batch_inputs(tokens: int, vocab: int, dtype: torch.dtype, rows: int = 4, seed: int = 0) -> dict:
    """One packed micro-batch of ``rows`` sequences, ``tokens`` tokens in all (a quarter prompt,
    the rest response), as verl's engine hands it to the loss (no padding), with the trainer's
    shaping weights and plan fields. The logits cover every token, as the engine computes them."""
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu

    from g2rpo_verl.verl_hooks.actor_loss import WEIGHT_FIELD
    from g2rpo_verl.verl_hooks.minibatch import PLAN_FIELDS, ROW_FIELD, STEP_FIELD

    g = torch.Generator().manual_seed(seed)
    per_row = tokens // rows
    prompt = max(1, per_row // 4)
    response = per_row - prompt
    total = rows * per_row
    logits = torch.randn(total, vocab, generator=g).mul_(2.0).to(dtype)
    ids = torch.randint(0, vocab, (rows, per_row), generator=g)
    # the engine's labels: each position's next token (rolled by one within the packed batch)
    labels = torch.roll(ids.reshape(-1), -1)
    response_tokens = rows * response
    data = TensorDict(
        {
            "prompts": _jagged([ids[i, :prompt] for i in range(rows)]),
            "responses": _jagged([ids[i, prompt:] for i in range(rows)]),
            "response_mask": _jagged([torch.ones(response, dtype=torch.int64) for _ in range(rows)]),
            "old_log_probs": _jagged([-(torch.rand(response, generator=g) * 2) for _ in range(rows)]),
            "advantages": _jagged([torch.full((response,), float(torch.randn(1, generator=g))) for _ in range(rows)]),
            WEIGHT_FIELD: (torch.tensor([0.02, -0.02, 0.0, 0.02] * (rows // 4 + 1))[:rows] / response_tokens)
            .to(torch.float32)
            .unsqueeze(-1),
            ROW_FIELD: torch.arange(rows),
            STEP_FIELD: torch.full((rows,), 12345),
            PLAN_FIELDS[0]: torch.zeros(rows, 1, dtype=torch.long),
            PLAN_FIELDS[1]: torch.full((rows, 1), response_tokens, dtype=torch.long),
            PLAN_FIELDS[2]: torch.full((rows, 1), rows, dtype=torch.long),
        },
        batch_size=[rows],
    )
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=response_tokens, global_batch_size=rows)
    offsets = torch.arange(0, total + 1, per_row)
    return {"logits": logits, "labels": labels, "data": data, "offsets": offsets}


def actor_cases(actor_section, compile_backend: str = "inductor") -> dict[str, Callable]:
    """Each case: ``inputs -> d loss / d logits`` of one micro-batch (see the module docstring)."""
    from functools import partial

    from torch.utils.checkpoint import checkpoint
    from verl.utils import torch_functional as verl_F
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.utils.losses import ppo_loss

    from g2rpo_verl.verl_hooks.actor_loss import build_actor_loss

    verl_loss = partial(ppo_loss, config=omega_conf_to_dataclass(actor_section))
    plugin_exact = build_actor_loss(actor_section, "exact")
    plugin_sampled = build_actor_loss(actor_section, "sampled")
    compiled = torch.compile(verl_F.entropy_from_logits, dynamic=True, backend=compile_backend)

    def step(loss_fn, entropy: str | None, inputs):
        logits = inputs["logits"].detach().requires_grad_(True)
        off = inputs["offsets"]
        out = {}
        if entropy is not None:
            fn = compiled if entropy.startswith("compiled") else verl_F.entropy_from_logits
            ent = checkpoint(fn, logits, use_reentrant=False) if entropy.endswith("checkpointing") else fn(logits)
            out["entropy"] = torch.nested.nested_tensor_from_jagged(ent.float(), off)
        # inplace_backward=False whenever the entropy is computed, as verl's engine does
        lp = verl_F.logprobs_from_logits(logits, inputs["labels"], inplace_backward=entropy is None)
        out["log_probs"] = torch.nested.nested_tensor_from_jagged(lp.float(), off)
        if isinstance(loss_fn, type(plugin_exact)):
            loss_fn.tracker = type(loss_fn.tracker)(loss_fn.label)  # a fresh step for the plan check
        loss, _ = loss_fn(model_output=out, data=inputs["data"], dp_group=None)
        loss.backward()
        return logits.grad

    return {
        "verl ppo_loss": partial(step, verl_loss, None),
        "plugin, estimator=sampled": partial(step, plugin_sampled, None),
        "plugin, exact, eager": partial(step, plugin_exact, "eager"),
        "plugin, exact, eager + entropy_checkpointing": partial(step, plugin_exact, "eager+checkpointing"),
        "plugin, exact, compiled (verl's default)": partial(step, plugin_exact, "compiled"),
        "plugin, exact, compiled + entropy_checkpointing": partial(step, plugin_exact, "compiled+checkpointing"),
    }


def _actor_section(tokens: int):
    """``actor_rollout_ref.actor`` of the production config, micro-batch sized to ``tokens``."""
    cfg = production_config("g2rpo_qwen3vl8b", 4096, (f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={tokens}",))
    from omegaconf import OmegaConf

    return OmegaConf.create(OmegaConf.to_container(cfg.actor_rollout_ref.actor, resolve=True))


def bench_actor(
    tokens: int, vocab: int, dtype: torch.dtype, repeat: int, compile_backend: str = "inductor"
) -> dict[str, float]:
    """Median seconds of each case's forward + backward, interleaved round-robin."""
    inputs = micro_batch_inputs(tokens, vocab, dtype)
    cases = actor_cases(_actor_section(tokens), compile_backend)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():
        fn(inputs)  # warm-up (compilation, allocator)
    for _ in range(repeat):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn(inputs)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


# ------------------------------------------------------------------ rewards


def reward_samples(problem_type: str, n: int, seed: int = 0) -> list[tuple]:
    """``n`` model-like responses of one type: think text as long as the type's responses
    (~4 characters per token, the mid-point of :data:`TASK_MIX`'s range)."""
    from bench_rewards import make_samples

    _, (lo, hi), _ = TASK_MIX[problem_type]
    samples = make_samples(problem_type, n, think_chars=4 * (lo + hi) // 2, seed=seed)
    # the production configs' preset (reference) asks for <thinking>
    return [(s.replace("<think>", "<thinking>").replace("</think>", "</thinking>"), t, e) for s, t, e in samples]


def bench_rewards(n: int, threads: int | None = None) -> dict[str, dict[str, float]]:
    """Per problem type: samples/s sequential and in a thread pool, and the slowest call (s)."""
    from g2rpo_verl.rewards import compute_score

    threads = threads or min(32, (os.cpu_count() or 1) + 4)  # asyncio's default executor
    out = {}
    for task in TASK_MIX:
        samples = reward_samples(task, n)
        worst = 0.0

        def call(s):
            t0 = time.perf_counter()
            compute_score("g2rpo", s[0], s[1], s[2], preset="reference")
            return time.perf_counter() - t0

        call(samples[0])  # warm-up: a math worker starts on first use
        t0 = time.perf_counter()
        for s in samples:
            worst = max(worst, call(s))
        seq = time.perf_counter() - t0
        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            worst_pool = max(pool.map(call, samples))
        par = time.perf_counter() - t0
        out[task] = {"sequential": n / seq, "threads": n / par, "worst_s": max(worst, worst_pool), "pool": threads}
    return out


# ------------------------------------------------------------------ report


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"


def commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "g2rpo_verl", "scripts"], cwd=ROOT, capture_output=True, text=True
        )
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def trainer_table(rows: list[TrainerTiming]) -> list[str]:
    """Wall times (CPU time in brackets), the in-memory TransferQueue's share, and what the plugin adds."""
    lines = [
        "| samples | tokens | plugin step | of it TQ store | verl grpo step | of it TQ store "
        "| added by the plugin | added, TQ store excluded | TQ round trips plugin / verl |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def ms(x: float) -> str:
        return f"{x * 1e3:,.0f} ms"

    for r in rows:
        p, v = r.seconds["plugin"], r.seconds["verl"]
        ptq, vtq = r.tq_seconds["plugin"], r.tq_seconds["verl"]
        (pg, pp), (vg, vp) = r.round_trips["plugin"], r.round_trips["verl"]
        lines.append(
            f"| {r.samples:,} | {r.tokens:,} | {ms(p)} ({ms(r.cpu_seconds['plugin'])} CPU) | {ms(ptq)} "
            f"| {ms(v)} ({ms(r.cpu_seconds['verl'])} CPU) | {ms(vtq)} | {ms(p - v)} | {ms((p - ptq) - (v - vtq))} "
            f"| {pg} get + {pp} put / {vg} + {vp} |"
        )
    sizes = [r.samples for r in rows]
    exps = {a: fitted_exponent(sizes, [r.seconds[a] for r in rows]) for a in ("plugin", "verl")}
    added = fitted_exponent(sizes, [max(1e-9, r.seconds["plugin"] - r.seconds["verl"]) for r in rows])
    lines.append(f"| fitted exponent | | {exps['plugin']:.2f} | | {exps['verl']:.2f} | | {added:.2f} | | |")
    return lines


def actor_table(times: dict[str, float], tokens: int, vocab: int, dtype) -> list[str]:
    base = times["verl ppo_loss"]
    lines = [
        f"| case ({tokens:,} tokens × {vocab:,} vocab, {str(dtype).split('.')[-1]}) | fwd+bwd | × verl |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {t * 1e3:,.0f} ms | {t / base:.2f} |" for name, t in times.items()]
    return lines


def reward_table(results: dict[str, dict[str, float]], n: int) -> list[str]:
    pool = next(iter(results.values()))["pool"]
    lines = [
        f"| problem type ({n:,} responses) | sequential | thread pool ({pool}) | slowest call |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {t} | {r['sequential']:,.0f} /s | {r['threads']:,.0f} /s | {r['worst_s'] * 1e3:,.1f} ms |"
        for t, r in results.items()
    ]
    return lines


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--parts", nargs="+", default=["trainer", "actor", "rewards"], choices=["trainer", "actor", "rewards"]
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384, 65536], help="samples per step")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per arm (fewer above 16k samples)")
    parser.add_argument("--controller", default="fixed", choices=["fixed", "adaptive"])
    parser.add_argument("--grad-every", type=int, default=0, help="also prepare the gradient diagnostics")
    parser.add_argument("--tokens", type=int, default=1024, help="response tokens of the actor micro-batch")
    parser.add_argument("--vocab", type=int, default=QWEN3_VL_VOCAB)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--actor-repeat", type=int, default=5)
    parser.add_argument(
        "--compile-backend", default="inductor", help="torch.compile backend of the compiled entropy (verl: inductor)"
    )
    parser.add_argument("--reward-samples", type=int, default=4096)
    parser.add_argument("--profile", type=int, default=0, help="cProfile one plugin step at this many samples")
    # One intra-op thread for the trainer side (as scripts/bench_advantages.py): its ops are small and
    # a second OpenMP thread waiting for a busy core makes the timings much noisier; the actor's
    # tokens × vocab work keeps torch's default.
    parser.add_argument("--trainer-threads", type=int, default=1, help="torch intra-op threads, trainer side")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    import g2rpo_verl.verl_hooks as hooks

    hooks.check_registered()  # the plugin's estimators in verl's registry, as in a real run
    result: dict = {
        "machine": machine(),
        "commit": commit(),
        "command": " ".join(
            ["scripts/bench_overhead.py", *sys.argv[1:]] if argv is None else ["scripts/bench_overhead.py", *argv]
        ),
    }
    print(f"# machine: {result['machine']}\n# commit: {result['commit']}\n# command: {result['command']}")
    if "trainer" in args.parts:
        rows = []
        default_threads = torch.get_num_threads()
        torch.set_num_threads(args.trainer_threads)
        for n in args.sizes:
            repeat = args.repeat if n <= 16384 else max(1, args.repeat // 3)
            rows.append(bench_trainer(n, repeat, args.controller, args.grad_every))
            print(f"  trainer {n}: {rows[-1].seconds}", file=sys.stderr)
        torch.set_num_threads(default_threads)
        result["trainer"] = [r.__dict__ for r in rows]
        result["trainer_table"] = trainer_table(rows)
        print(f"\n## trainer side (controller={args.controller}, grad_every={args.grad_every})\n")
        print("\n".join(result["trainer_table"]))
    if args.profile:
        result["profile"] = profile_trainer(args.profile, controller=args.controller)
        print(f"\n## profile of the plugin's step at {args.profile} samples\n\n{result['profile']}")
    if "actor" in args.parts:
        dtype = getattr(torch, args.dtype)
        times = bench_actor(args.tokens, args.vocab, dtype, args.actor_repeat, args.compile_backend)
        result["actor"] = times
        result["actor_table"] = actor_table(times, args.tokens, args.vocab, dtype)
        print("\n## actor side: one micro-batch, loss forward + backward from the logits\n")
        print("\n".join(result["actor_table"]))
    if "rewards" in args.parts:
        rewards = bench_rewards(args.reward_samples)
        result["rewards"] = rewards
        result["reward_table"] = reward_table(rewards, args.reward_samples)
        print("\n## rewards: compute_score per problem type\n")
        print("\n".join(result["reward_table"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
