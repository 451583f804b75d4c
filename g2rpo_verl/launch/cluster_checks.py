"""Preflight checks for the cluster side of a run: what fails in the first hour on GPUs.

Registered in :mod:`g2rpo_verl.launch.preflight` (``CHECKS``); each returns
:class:`ClusterFinding` tuples ``(check, level, message)`` whose message names the key and the fix.

``world_size``
    every batch size verl divides by a data-parallel or rollout world size, with
    ``W = trainer.nnodes × trainer.n_gpus_per_node`` (verl 0.9.1:
    ``TrainingWorker.train_mini_batch`` asserts ``ppo_mini_batch_size·n % dp == 0``; the batch is
    chunked over the dp ranks; ``ActorRolloutRefWorker`` asserts
    ``W % (rollout TP·DP·PP) == 0``; without dynamic batch size the per-rank micro-batches).
``wandb``
    ``wandb`` in ``trainer.logger`` with no credentials on the driver (``WANDB_API_KEY``, a
    ``~/.netrc`` entry for the W&B host) and no offline mode: the run dies or hangs after the
    models have loaded.
``shared_dirs``
    with ``trainer.nnodes > 1``, a relative checkpoint / dump directory is resolved by each
    node's processes against their own working directory: the checkpoint's shards end up
    scattered over the nodes and cannot be resumed.
``kv_cache``
    per vLLM replica: ``gpu_memory_utilization × GPU memory × TP`` minus the weights and a
    fixed reserve must hold at least one ``max_model_len`` sequence of KV cache
    (``2 · layers · kv_heads · head_dim · dtype bytes`` per token). An unset ``max_model_len``
    is the model's ``max_position_embeddings``, as verl 0.9.1 sets it.
``model_files``
    the model path is a local directory that exists, or (with ``HF_HUB_OFFLINE=1``) a hub ID
    already in this node's Hugging Face cache.
``attention``
    verl loads the model with ``flash_attention_2`` unless
    ``actor_rollout_ref.model.override_config.attn_implementation`` says otherwise: flash-attn
    must import on this node, else the route to build it or to run without it (docs/gpu_install.md).
``entropy_memory``
    the exact-entropy estimator's extra peak memory for the configured micro-batch
    (``tokens × vocab × bytes`` × the factor measured by ``scripts/bench_entropy_memory.py``)
    and the verl keys that bound it (the compiled entropy: ``fsdp_config.use_torch_compile``
    with ``use_remove_padding``, verl's defaults).

The model's shape comes from its ``config.json`` (local directory, or this node's HF cache; never
the network): ``text_config`` for vision-language models.
"""

from __future__ import annotations

import json
import math
import netrc
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "CLUSTER_CHECKS",
    "ClusterFinding",
    "ModelShape",
    "check_world_size",
    "check_wandb",
    "check_shared_dirs",
    "check_kv_cache",
    "check_model_files",
    "check_attention",
    "check_entropy_memory",
    "load_model_shape",
    "cluster_findings",
]

CLUSTER_CHECKS = ("world_size", "wandb", "shared_dirs", "kv_cache", "model_files", "attention", "entropy_memory")

GIB = 1024**3
DTYPE_BYTES = {"bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "half": 2, "float32": 4, "fp32": 4, "float": 4}
#: Per-GPU memory vLLM needs besides weights and KV cache (activations of the profiling run,
#: CUDA graphs, the sampler, NCCL buffers): a rough, deliberately high constant.
VLLM_RESERVE_GIB = 4.0
#: Extra peak bytes of the exact-entropy path over the log-prob path alone, in units of one
#: ``tokens × vocab`` logits tensor in the logits' dtype. Keyed by whether verl's engine runs the
#: entropy compiled (``fsdp_config.use_torch_compile``, verl's default, on the
#: ``use_remove_padding`` path): measured 0 compiled and 2 eager by
#: ``scripts/bench_entropy_memory.py`` (docs/production.md), plus 1 for flash-attn's
#: cross-entropy, which verl runs out of place when it also computes the entropy
#: (``inplace_backward=False``; from verl's source, not measured). verl's
#: ``entropy_checkpointing`` does not lower the peak (measured: 2 with and without).
ENTROPY_PEAK_FACTOR = {True: 1.0, False: 3.0}
#: warn when the exact-entropy extra exceeds this share of a GPU's memory
ENTROPY_WARN_SHARE = 0.10
WANDB_OFFLINE_MODES = ("offline", "disabled", "dryrun")
DIR_KEYS = ("trainer.default_local_dir", "trainer.rollout_data_dir", "trainer.validation_data_dir")


class ClusterFinding(NamedTuple):
    """One result; the preflight turns it into its own ``Finding(check, level, message)``."""

    check: str
    level: str  # "ok" | "warn" | "fail"
    message: str


_finding = ClusterFinding


def _get(config, dotted: str, default=None):
    from omegaconf import OmegaConf

    value = OmegaConf.select(config, dotted, default=default)
    return default if value is None else value


# ------------------------------------------------------------------------------------------------
# world size
# ------------------------------------------------------------------------------------------------
def _suggest(train_bs: int, mini_bs: int, step: int) -> str:
    """A ``ppo_mini_batch_size = step·2^k`` closest to ``mini_bs`` and the train batch keeping the
    number of mini-batches per step."""
    candidates = [step * 2**k for k in range(0, 20)]
    mini = min(candidates, key=lambda c: (abs(c - mini_bs), c))
    per_step = max(1, round(train_bs / mini_bs))
    return f"e.g. ppo_mini_batch_size={mini} with data.train_batch_size={mini * per_step} ({per_step} mini-batches per step)"


def check_world_size(config) -> list:
    """Every division verl makes of a batch by the world size; one FAIL per key that does not divide."""
    nnodes, per_node = int(config.trainer.nnodes), int(config.trainer.n_gpus_per_node)
    world = nnodes * per_node
    where = f"trainer.nnodes={nnodes} × n_gpus_per_node={per_node} = {world} GPUs"
    actor = config.actor_rollout_ref.actor
    rollout = config.actor_rollout_ref.rollout
    n = int(rollout.n)
    sp = int(_get(config, "actor_rollout_ref.actor.ulysses_sequence_parallel_size", 1))
    problems: list[str] = []
    if world % sp:
        problems.append(f"{where} is not divisible by actor.ulysses_sequence_parallel_size={sp}")
        sp = 1
    dp = world // sp
    dp_text = f"{dp} data-parallel ranks ({where}" + (f" / ulysses {sp})" if sp > 1 else ")")
    train_bs, mini_bs = int(config.data.train_batch_size), int(actor.ppo_mini_batch_size)
    rows, mini_rows = train_bs * n, mini_bs * n
    step = dp // math.gcd(dp, n)  # ppo_mini_batch_size must be a multiple of this
    if mini_rows % dp:
        problems.append(
            f"actor.ppo_mini_batch_size={mini_bs} × rollout.n={n} = {mini_rows} rows per mini-batch do not split over "
            f"{dp_text}: verl's train_mini_batch asserts 'mini_batch_size % data_parallel_size == 0' at the first "
            f"update. Use ppo_mini_batch_size a multiple of {step} ({_suggest(train_bs, mini_bs, step)}) or a node "
            f"count whose GPUs divide {mini_rows}"
        )
    if rows % dp:
        problems.append(
            f"data.train_batch_size={train_bs} × rollout.n={n} = {rows} rows per step do not split over {dp_text}: "
            f"use data.train_batch_size a multiple of {step}"
        )
    if train_bs % mini_bs:
        problems.append(
            f"data.train_batch_size={train_bs} is not a multiple of actor.ppo_mini_batch_size={mini_bs}: the last "
            "mini-batch of each step would be partial"
        )
    if not bool(actor.use_dynamic_bsz) and not problems:
        per_rank_mini, per_rank_rows = mini_rows // dp, rows // dp
        micro = _get(config, "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu")
        if micro and per_rank_mini % int(micro):
            problems.append(
                f"actor.ppo_micro_batch_size_per_gpu={micro} does not divide the {per_rank_mini} rows of a mini-batch "
                f"per rank ({mini_rows} / {dp})"
            )
        # the reference model exists only with a KL term (verl's need_reference_policy)
        uses_ref = bool(_get(config, "actor_rollout_ref.actor.use_kl_loss", False)) or bool(
            _get(config, "algorithm.use_kl_in_reward", False)
        )
        for role in ("rollout", "ref") if uses_ref else ("rollout",):
            key = f"actor_rollout_ref.{role}.log_prob_micro_batch_size_per_gpu"
            value = _get(config, key)
            if value and per_rank_rows % int(value):
                problems.append(
                    f"{key.removeprefix('actor_rollout_ref.')}={value} does not divide the {per_rank_rows} rows per rank ({rows} / {dp})"
                )
    tp = int(_get(config, "actor_rollout_ref.rollout.tensor_model_parallel_size", 1))
    rdp = int(_get(config, "actor_rollout_ref.rollout.data_parallel_size", 1))
    pp = int(_get(config, "actor_rollout_ref.rollout.pipeline_model_parallel_size", 1))
    replica = tp * rdp * pp
    if world % replica:
        problems.append(
            f"{where} is not divisible by the rollout's tensor_model_parallel_size={tp} × data_parallel_size={rdp} × "
            f"pipeline_model_parallel_size={pp} = {replica} (verl: 'rollout world_size ... is not divisible by "
            "infer_world_size')"
        )
    elif tp * pp > per_node:
        problems.append(
            f"one vLLM replica (tensor × pipeline parallel = {tp * pp} GPUs) spans more than a node's {per_node} GPUs"
        )
    if problems:
        return [_finding("world_size", "fail", p) for p in problems]
    return [
        _finding(
            "world_size",
            "ok",
            f"{where}: {rows} rows per step, mini-batches of {mini_rows} = {mini_rows // dp} per rank on {dp} ranks, "
            f"{world // replica} vLLM replica(s) of {replica} GPU(s)",
        )
    ]


# ------------------------------------------------------------------------------------------------
# W&B
# ------------------------------------------------------------------------------------------------
def _wandb_host() -> str:
    base = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    return base.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]


def _netrc_has(host: str) -> Path | None:
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc")).expanduser()
    if not path.is_file():
        return None
    try:
        return path if netrc.netrc(str(path)).authenticators(host) else None
    except (netrc.NetrcParseError, OSError):
        return None


def check_wandb(config) -> list:
    """``wandb`` in ``trainer.logger``: a key, a login or an offline mode must exist on the driver."""
    loggers = _get(config, "trainer.logger", [])
    loggers = [loggers] if isinstance(loggers, str) else [str(x) for x in loggers]
    if "wandb" not in loggers:
        return [_finding("wandb", "ok", f"trainer.logger={loggers}: no W&B")]
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in WANDB_OFFLINE_MODES:
        return [_finding("wandb", "ok", f"WANDB_MODE={mode}: runs are written locally (`wandb sync` them later)")]
    if os.environ.get("WANDB_API_KEY"):
        return [_finding("wandb", "ok", "WANDB_API_KEY is set")]
    host = _wandb_host()
    found = _netrc_has(host)
    if found:
        return [_finding("wandb", "ok", f"W&B login for {host} in {found}")]
    return [
        _finding(
            "wandb",
            "fail",
            f"trainer.logger includes wandb but this node has no W&B credentials (no WANDB_API_KEY, no {host} entry "
            f"in {os.environ.get('NETRC', '~/.netrc')}) and WANDB_MODE={mode or 'unset'}: the trainer would stop or "
            "wait for a login after the models load. Export WANDB_API_KEY, or run `wandb login` on the head node, or "
            "set WANDB_MODE=offline (sync later with `wandb sync`), or drop it: trainer.logger=[console]",
        )
    ]


# ------------------------------------------------------------------------------------------------
# shared directories
# ------------------------------------------------------------------------------------------------
def check_shared_dirs(config) -> list:
    """With several nodes every directory the workers write to must be absolute (and shared)."""
    nnodes = int(config.trainer.nnodes)
    values = {key: _get(config, key) for key in DIR_KEYS}
    set_dirs = {k: str(v) for k, v in values.items() if v}
    if nnodes <= 1:
        return [_finding("shared_dirs", "ok", "one node: relative directories are fine")]
    relative = {k: v for k, v in set_dirs.items() if not os.path.isabs(os.path.expanduser(v))}
    if relative:
        return [
            _finding(
                "shared_dirs",
                "fail",
                f"{key}={value!r} is relative with trainer.nnodes={nnodes}: each node's ranks would write their "
                "shards under their own working directory (ray job submit: a per-node copy of working_dir), so the "
                f"checkpoint could not be resumed. Set {key} to an absolute path on a filesystem every node mounts "
                "(the launchers' CHECKPOINT_DIR)",
            )
            for key, value in relative.items()
        ]
    listed = ", ".join(f"{k}={v}" for k, v in set_dirs.items())
    return [_finding("shared_dirs", "ok", f"absolute: {listed} (must be on a filesystem every node mounts)")]


# ------------------------------------------------------------------------------------------------
# model config, files
# ------------------------------------------------------------------------------------------------
class ModelShape:
    """What the estimates need of a model's ``config.json`` (the text model of a VLM).

    ``weight_bytes`` is the checkpoint's size when the weight files are local, else an
    estimate from the shapes (text decoder + vision tower) at ``dtype``.
    """

    def __init__(self, raw: dict[str, Any], weight_bytes: int | None = None, source: str = ""):
        text = raw.get("text_config") or raw
        self.source = source
        self.layers = int(text["num_hidden_layers"])
        self.heads = int(text["num_attention_heads"])
        self.kv_heads = int(text.get("num_key_value_heads") or self.heads)
        self.hidden = int(text["hidden_size"])
        self.head_dim = int(text.get("head_dim") or self.hidden // self.heads)
        self.vocab = int(text.get("vocab_size") or raw["vocab_size"])
        self.intermediate = int(text.get("intermediate_size") or 4 * self.hidden)
        self.max_positions = int(text.get("max_position_embeddings") or raw.get("max_position_embeddings") or 0)
        self.tied = bool(text.get("tie_word_embeddings", raw.get("tie_word_embeddings", False)))
        self.dtype = str(text.get("dtype") or text.get("torch_dtype") or raw.get("torch_dtype") or "bfloat16")
        self.vision = raw.get("vision_config") or {}
        self.weight_bytes = weight_bytes if weight_bytes else self.estimated_weight_bytes()

    def parameters(self) -> int:
        h, kv = self.hidden, self.kv_heads * self.head_dim
        attn = h * self.heads * self.head_dim * 2 + h * kv * 2
        layer = attn + 3 * h * self.intermediate
        embed = self.vocab * h * (1 if self.tied else 2)
        vision = 0
        if self.vision:
            vh = int(self.vision.get("hidden_size", 0))
            vi = int(self.vision.get("intermediate_size", 4 * vh))
            vision = int(self.vision.get("depth", 0)) * (4 * vh * vh + 2 * vh * vi)
        return self.layers * layer + embed + vision

    def estimated_weight_bytes(self, dtype: str | None = None) -> int:
        return self.parameters() * DTYPE_BYTES.get(dtype or self.dtype, 2)

    def kv_bytes_per_token(self, dtype: str) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * DTYPE_BYTES.get(dtype, 2)


def _is_hub_id(path: str) -> bool:
    return not path.startswith(("/", ".", "~")) and path.count("/") == 1 and not Path(path).exists()


def _cached_file(repo_id: str, filename: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, filename)
    return found if isinstance(found, str) else None


def _local_weight_bytes(folder: Path) -> int | None:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            return int(json.loads(index.read_text())["metadata"]["total_size"])
        except (KeyError, ValueError, TypeError):
            pass
    files = list(folder.glob("*.safetensors"))
    return sum(f.stat().st_size for f in files) or None


def load_model_shape(path: str) -> ModelShape | None:
    """The model's shape from its local ``config.json`` or this node's HF cache; ``None`` if neither has it."""
    local = Path(os.path.expanduser(path))
    if local.is_dir() and (local / "config.json").is_file():
        raw = json.loads((local / "config.json").read_text())
        return ModelShape(raw, _local_weight_bytes(local), str(local / "config.json"))
    if _is_hub_id(path):
        cached = _cached_file(path, "config.json")
        if cached:
            return ModelShape(json.loads(Path(cached).read_text()), _local_weight_bytes(Path(cached).parent), cached)
    return None


def _offline() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def check_model_files(config) -> list:
    """A local model path must exist; with ``HF_HUB_OFFLINE`` a hub ID must already be cached."""
    path = str(config.actor_rollout_ref.model.path)
    local = Path(os.path.expanduser(path))
    download = (
        f"download it once to a filesystem every node mounts (`hf download {path if _is_hub_id(path) else 'ORG/NAME'} "
        "--local-dir /shared/models/NAME`) and set actor_rollout_ref.model.path to that directory"
    )
    if not _is_hub_id(path):
        if not (local / "config.json").is_file():
            return [
                _finding(
                    "model_files",
                    "fail",
                    f"actor_rollout_ref.model.path={path}: no config.json there ({'missing directory' if not local.exists() else 'not a model directory'})",
                )
            ]
        weights = _local_weight_bytes(local)
        if weights is None:
            return [
                _finding("model_files", "fail", f"actor_rollout_ref.model.path={path} has no *.safetensors weights")
            ]
        return [_finding("model_files", "ok", f"local model {path} ({weights / GIB:.1f} GiB of safetensors)")]
    cached = _cached_file(path, "config.json")
    if _offline():
        if cached is None:
            return [
                _finding(
                    "model_files",
                    "fail",
                    f"HF_HUB_OFFLINE is set but actor_rollout_ref.model.path={path} is a hub ID not in this node's "
                    f"Hugging Face cache (HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}): every worker "
                    f"would fail to load it. {download.capitalize()}",
                )
            ]
        return [
            _finding(
                "model_files",
                "ok",
                f"{path} is in this node's HF cache (HF_HUB_OFFLINE set; every node needs the same cache)",
            )
        ]
    state = "cached on this node" if cached else "not cached on this node"
    return [
        _finding(
            "model_files",
            "ok",
            f"{path} is a hub ID ({state}): each node without a cached copy downloads it at start; on nodes without "
            f"internet {download} (and set HF_HUB_OFFLINE=1)",
        )
    ]


# ------------------------------------------------------------------------------------------------
# attention implementation
# ------------------------------------------------------------------------------------------------
ATTN_KEY = "actor_rollout_ref.model.override_config.attn_implementation"


def _flash_attn_error() -> str | None:
    try:
        import flash_attn  # noqa: F401
    except Exception as err:  # ImportError, or an undefined symbol of a build against another torch
        return f"{type(err).__name__}: {err}"
    return None


def check_attention(config, flash_attn_error=_flash_attn_error) -> list:
    """``flash_attention_2`` (verl's default) needs flash-attn here; anything else is said out loud."""
    impl = str(_get(config, ATTN_KEY, "flash_attention_2"))
    remove_padding = bool(_get(config, "actor_rollout_ref.model.use_remove_padding", False))
    if impl == "flash_attention_2":
        error = flash_attn_error()
        if error:
            return [
                _finding(
                    "attention",
                    "fail",
                    f"{ATTN_KEY} is flash_attention_2 (verl's default) but flash-attn does not import on this node "
                    f"({error}): every actor worker would fail loading the model. Build it against this torch "
                    "(docs/gpu_install.md: CUDA toolkit matching torch.version.cuda, ninja, packaging, psutil, wheel; "
                    f"pip install flash-attn==2.8.3 --no-build-isolation), or run without it: +{ATTN_KEY}=sdpa "
                    "actor_rollout_ref.model.use_remove_padding=false (slower, padded micro-batches)",
                )
            ]
        return [_finding("attention", "ok", "flash_attention_2, flash-attn imports on this node")]
    if remove_padding:
        return [
            _finding(
                "attention",
                "warn",
                f"{ATTN_KEY}={impl} with actor_rollout_ref.model.use_remove_padding=true: verl packs the micro-batch's "
                "sequences into one row for flash-attn's variable-length kernels; with another attention set "
                "use_remove_padding=false",
            )
        ]
    return [
        _finding(
            "attention", "ok", f"{ATTN_KEY}={impl} without flash-attn (padded micro-batches, use_remove_padding=false)"
        )
    ]


# ------------------------------------------------------------------------------------------------
# KV cache per vLLM replica
# ------------------------------------------------------------------------------------------------
def detect_gpu_memory_gib() -> tuple[float | None, str]:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(
                0
            ).total_memory / GIB, f"{torch.cuda.get_device_name(0)} (this node)"
    except Exception:  # a broken CUDA setup is reported as "unknown", the gpus check names it
        pass
    return None, "no GPU on this node"


def _shape_or_warning(check: str, config):
    path = str(config.actor_rollout_ref.model.path)
    shape = load_model_shape(path)
    if shape is None:
        return None, [
            _finding(
                check,
                "warn",
                f"no local config.json for {path} (not a local directory, not in this node's HF cache): not estimated",
            )
        ]
    return shape, []


def check_kv_cache(config, gpu_memory_gib: float | None = None, shape: ModelShape | None = None) -> list:
    """Can one vLLM replica hold the KV cache of one ``max_model_len`` sequence?"""
    rollout = config.actor_rollout_ref.rollout
    if str(rollout.name) != "vllm":
        return [_finding("kv_cache", "ok", f"rollout.name={rollout.name}: only vLLM is estimated")]
    if shape is None:
        shape, warning = _shape_or_warning("kv_cache", config)
        if shape is None:
            return warning
    source = "--gpu-memory-gib"
    if gpu_memory_gib is None:
        gpu_memory_gib, source = detect_gpu_memory_gib()
        if gpu_memory_gib is None:
            return [
                _finding(
                    "kv_cache", "warn", f"GPU memory unknown ({source}): pass --gpu-memory-gib (80 for an H100 80GB)"
                )
            ]
    tp = int(_get(config, "actor_rollout_ref.rollout.tensor_model_parallel_size", 1))
    util = float(rollout.gpu_memory_utilization)
    dtype = str(_get(config, "actor_rollout_ref.rollout.dtype", shape.dtype))
    max_len = _get(config, "actor_rollout_ref.rollout.max_model_len")
    length_key = "rollout.max_model_len"
    if max_len is None:
        max_len, length_key = shape.max_positions, "rollout.max_model_len unset → max_position_embeddings"
    max_len = int(max_len)
    budget = util * gpu_memory_gib * tp
    weights = shape.weight_bytes / GIB
    reserve = VLLM_RESERVE_GIB * tp
    kv_gib = budget - weights - reserve
    per_token = shape.kv_bytes_per_token(dtype)
    tokens = int(max(kv_gib, 0) * GIB // per_token)
    how = (
        f"replica of {tp} GPU(s) × {gpu_memory_gib:g} GiB ({source}) × gpu_memory_utilization {util:g} = {budget:.1f} GiB "
        f"− weights {weights:.1f} GiB − reserve {reserve:.0f} GiB = {kv_gib:.1f} GiB KV cache = {tokens:,} tokens "
        f"at {per_token // 1024} KiB/token ({shape.layers} layers × {shape.kv_heads} KV heads × head_dim "
        f"{shape.head_dim} × 2 × {dtype})"
    )
    need = int(config.data.max_prompt_length) + int(config.data.max_response_length)
    findings = []
    if max_len < need:
        findings.append(
            _finding(
                "kv_cache",
                "fail",
                f"{length_key}={max_len} < data.max_prompt_length + max_response_length = {need}: the longest "
                f"sequences cannot be generated; set actor_rollout_ref.rollout.max_model_len={need}",
            )
        )
    if tokens < max_len:
        fix = (
            f"set actor_rollout_ref.rollout.max_model_len={need} (prompt + response)"
            if max_len > need
            else "raise actor_rollout_ref.rollout.gpu_memory_utilization or tensor_model_parallel_size"
        )
        findings.append(
            _finding(
                "kv_cache",
                "fail",
                f"{how} < {length_key}={max_len:,}: vLLM would refuse to start ('max_model_len ... larger than the "
                f"maximum number of tokens that can be stored in KV cache'); {fix}",
            )
        )
    elif not findings:
        findings.append(
            _finding(
                "kv_cache",
                "ok",
                f"{how} ≥ {length_key}={max_len:,} ({tokens // max_len} full-length sequence(s) at once)",
            )
        )
    return findings


# ------------------------------------------------------------------------------------------------
# exact-entropy memory
# ------------------------------------------------------------------------------------------------
def micro_batch_tokens(config) -> tuple[int, str]:
    actor = config.actor_rollout_ref.actor
    if bool(actor.use_dynamic_bsz):
        return int(
            actor.ppo_max_token_len_per_gpu
        ), f"actor.ppo_max_token_len_per_gpu={actor.ppo_max_token_len_per_gpu}"
    micro = int(_get(config, "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", 1))
    length = int(config.data.max_prompt_length) + int(config.data.max_response_length)
    return micro * length, f"actor.ppo_micro_batch_size_per_gpu={micro} × {length} tokens"


def entropy_compiled(config) -> tuple[bool, str]:
    """Does verl's FSDP engine run the entropy under ``torch.compile``? (and why not)."""
    if not bool(_get(config, "actor_rollout_ref.model.use_remove_padding", False)):
        return False, "actor_rollout_ref.model.use_remove_padding=false (that path computes the entropy eagerly)"
    if not bool(_get(config, "actor_rollout_ref.actor.fsdp_config.use_torch_compile", True)):
        return False, "actor_rollout_ref.actor.fsdp_config.use_torch_compile=false"
    if bool(_get(config, "actor_rollout_ref.actor.entropy_from_logits_with_chunking", False)):
        return False, "actor_rollout_ref.actor.entropy_from_logits_with_chunking=true (fp32 chunks, not measured)"
    return True, "compiled (fsdp_config.use_torch_compile=true, use_remove_padding=true)"


def check_entropy_memory(config, gpu_memory_gib: float | None = None, shape: ModelShape | None = None) -> list:
    """Extra peak memory of ``g2rpo.entropy.estimator=exact`` per micro-batch, and the verl keys that lower it."""
    from g2rpo_verl.config import load_g2rpo_config

    try:
        entropy = load_g2rpo_config(config).entropy
    except ValueError as err:  # the config check reports it
        return [_finding("entropy_memory", "warn", f"not estimated: the g2rpo section does not load ({err})")]
    if not entropy.enable or entropy.estimator != "exact":
        return [_finding("entropy_memory", "ok", "exact entropy not used (g2rpo.entropy off or estimator=sampled)")]
    if shape is None:
        shape, warning = _shape_or_warning("entropy_memory", config)
        if shape is None:
            return warning
    tokens, source = micro_batch_tokens(config)
    dtype = str(_get(config, "actor_rollout_ref.actor.fsdp_config.dtype", "bfloat16"))
    logits = tokens * shape.vocab * DTYPE_BYTES.get(dtype, 2)
    compiled, why = entropy_compiled(config)
    factor = ENTROPY_PEAK_FACTOR[compiled]
    extra = factor * logits / GIB
    how = (
        f"{source} × vocab {shape.vocab:,} × {DTYPE_BYTES.get(dtype, 2)} B ({dtype}) = {logits / GIB:.1f} GiB of logits; "
        f"the exact entropy adds ~{factor:g}× that at the peak = {extra:.1f} GiB per GPU, {why}"
    )
    share = None if gpu_memory_gib is None else extra / gpu_memory_gib
    of = "" if share is None else f" ({share:.0%} of a {gpu_memory_gib:g} GiB GPU)"
    if compiled:
        return [_finding("entropy_memory", "ok", f"{how}{of}; lower {source.split('=')[0]} if short of memory")]
    lower = ENTROPY_PEAK_FACTOR[True] * logits / GIB
    advice = (
        "set actor_rollout_ref.actor.fsdp_config.use_torch_compile=true with actor_rollout_ref.model."
        f"use_remove_padding=true and entropy_from_logits_with_chunking=false (verl's defaults; ~{lower:.1f} GiB, "
        f"same gradient to float rounding), or lower {source.split('=')[0]}, or g2rpo.entropy.estimator=sampled. "
        "actor.entropy_checkpointing does not lower this peak"
    )
    level = "warn" if share is None or share > ENTROPY_WARN_SHARE else "ok"
    return [_finding("entropy_memory", level, f"{how}{of}: {advice}")]


# ------------------------------------------------------------------------------------------------
# all of them
# ------------------------------------------------------------------------------------------------
def cluster_findings(config, skip: Iterable[str] = (), gpu_memory_gib: float | None = None) -> list:
    """Every cluster check not in ``skip``, in :data:`CLUSTER_CHECKS` order."""
    skip = set(skip)
    findings: list = []
    for name in CLUSTER_CHECKS:
        if name in skip:
            continue
        if name == "world_size":
            findings += check_world_size(config)
        elif name == "wandb":
            findings += check_wandb(config)
        elif name == "shared_dirs":
            findings += check_shared_dirs(config)
        elif name == "model_files":
            findings += check_model_files(config)
        elif name == "attention":
            findings += check_attention(config)
        elif name == "kv_cache":
            findings += check_kv_cache(config, gpu_memory_gib)
        elif name == "entropy_memory":
            if gpu_memory_gib is None:
                gpu_memory_gib = detect_gpu_memory_gib()[0]
            findings += check_entropy_memory(config, gpu_memory_gib)
    return findings
