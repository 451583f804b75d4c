"""Every private verl name the plugin relies on, in one place, and the verl version guard.

verl's public surface (``register_adv_est``, the ``verl.plugins`` entry point, Hydra configs)
does not reach everything a task-level algorithm needs, so the wiring uses some verl 0.9.1
internals. They are all listed here, each with what uses it; ``tests/verl_compat/test_verl_api.py``
checks every one against the installed verl, so an upgrade that renames or reshapes one
fails that test instead of a training run. Code elsewhere takes the names from this module.

This module imports nothing from verl at module level (the demo and the launch tools use it
without paying for ``import verl``); the accessors below import what they return.

Version guard: :func:`check_verl_version` runs when the plugin loads (every verl process).
Outside :data:`TESTED_VERL` it raises, naming the range; ``G2RPO_ALLOW_UNTESTED_VERL=1``
turns the error into a warning (at your own risk: run ``pytest tests/verl_compat/test_verl_api.py``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from types import ModuleType

logger = logging.getLogger(__name__)

__all__ = [
    "TESTED_VERL",
    "ALLOW_UNTESTED_ENV",
    "check_verl_version",
    "installed_verl_version",
    "MODULE_CORE_ALGOS",
    "MODULE_TRAINERS_V1",
    "MODULE_TRAINER_V0",
    "MODULE_VERL_CONFIG",
    "VALIDATE_CONFIG",
    "adv_estimator_registry",
    "trainer_registry",
    "actor_dp_size",
    "TRAINER_HOOKS",
    "TQ",
    "REPLAY_BUFFER_HOOKS",
    "FILTER_REWARD_METRIC",
    "group_uid",
    "checkpoint_folder",
    "CHECKPOINT_STEP_PREFIX",
    "ACTOR_CHECKPOINT_DIR",
    "ACTOR_CHECKPOINT_MARKERS",
    "TRACKER_FILE",
    "CONSOLE_STEP_PREFIX",
    "CONSOLE_SEPARATOR",
    "LOSS_BATCH_KEYS",
    "MODULE_FSDP_ENGINE",
    "ENGINE_TRAIN_BATCH",
    "ENGINE_MEMBERS",
    "WORKER_METRIC_PREFIX",
    "verl_config_dir",
    "PRIVATE_SYMBOLS",
]

# ------------------------------------------------------------------------------------------------
# version
# ------------------------------------------------------------------------------------------------
#: The verl versions this plugin is tested with (pyproject pins the same range).
TESTED_VERL = ">=0.9.1,<0.10"
#: Set to 1 to run with a verl outside :data:`TESTED_VERL` (a warning instead of an error).
ALLOW_UNTESTED_ENV = "G2RPO_ALLOW_UNTESTED_VERL"


def installed_verl_version() -> str:
    """The installed verl's version, from its package metadata (verl is not imported)."""
    from importlib.metadata import version

    return version("verl")


def check_verl_version(version: str | None = None, env: Mapping[str, str] | None = None) -> None:
    """Raise ``RuntimeError`` unless ``version`` (default: the installed verl's) is in :data:`TESTED_VERL`.

    With ``env[ALLOW_UNTESTED_ENV]`` set to ``1`` / ``true`` it logs a warning instead.
    """
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    version = installed_verl_version() if version is None else version
    if Version(version) in SpecifierSet(TESTED_VERL):
        return
    env = os.environ if env is None else env
    message = (
        f"g2rpo_verl is tested with verl {TESTED_VERL}, but verl {version} is installed: the private verl "
        f"names it relies on (g2rpo_verl.verl_compat.api) may have changed. Install a verl in that range, or set "
        f"{ALLOW_UNTESTED_ENV}=1 to try anyway (then run tests/verl_compat/test_verl_api.py first)."
    )
    if env.get(ALLOW_UNTESTED_ENV, "").strip().lower() in ("1", "true", "yes"):
        logger.warning("%s (%s is set: continuing)", message, ALLOW_UNTESTED_ENV)
        return
    raise RuntimeError(message)


# ------------------------------------------------------------------------------------------------
# registries and trainer hooks (g2rpo_verl.verl_hooks)
# ------------------------------------------------------------------------------------------------
#: Holds ``ADV_ESTIMATOR_REGISTRY`` (a module-level dict; the plugin registers gs_* through
#: the public ``register_adv_est`` and reads the dict for "did you mean").
MODULE_CORE_ALGOS = "verl.trainer.ppo.core_algos"
#: Its ``__init__`` registers verl's V1 trainers in ``trainer_base.TRAINER_REGISTRY``; the
#: plugin puts its mixin in front of each registered class right after.
MODULE_TRAINERS_V1 = "verl.trainer.ppo.v1"
#: The deprecated V0 trainer's module (``RayPPOTrainer``): the plugin puts a guard in front of
#: the class that refuses gs_* before any worker starts.
MODULE_TRAINER_V0 = "verl.trainer.ppo.ray_trainer"


#: Holds ``validate_config(config, use_reference_policy, use_critic)``, which verl's drivers
#: (``main_ppo.main``, ``main_ppo_v0``, ``one_step_off_policy.main_ppo``) import by name and call
#: on the composed config before ``ray.init``; the plugin wraps it so its own checks run there
#: first (``verl.utils`` re-exports it: both names are wrapped).
MODULE_VERL_CONFIG = "verl.utils.config"
VALIDATE_CONFIG = "validate_config"


def adv_estimator_registry() -> dict:
    """verl's ``core_algos.ADV_ESTIMATOR_REGISTRY`` (name -> estimator function)."""
    from verl.trainer.ppo import core_algos

    return core_algos.ADV_ESTIMATOR_REGISTRY


def trainer_registry(v1_module: ModuleType | None = None) -> dict:
    """verl's ``trainer_base.TRAINER_REGISTRY`` (trainer mode -> V1 trainer class)."""
    if v1_module is None:
        from verl.trainer.ppo import v1 as v1_module
    return v1_module.trainer_base.TRAINER_REGISTRY


#: Methods of verl's V1 ``PPOTrainer`` the plugin's mixins override (all call verl's own
#: method), with the signature verl calls them with.
TRAINER_HOOKS = {
    "__init__": ("self", "config"),
    "_build_replay_buffer": ("self",),
    "_compute_advantage": ("self", "batch", "metrics"),
    "_update_actor": ("self", "batch", "metrics"),
    "_save_checkpoint": ("self",),
    "_load_checkpoint": ("self",),
    "on_init_end": ("self",),
}


def actor_dp_size(trainer) -> int:
    """Data-parallel size of the actor, read as verl's own ``_balance_batch`` reads it.

    Uses the worker group's private ``_dispatch_info`` / ``_query_dispatch_info("actor")``
    (rank -> dp rank mapping).
    """
    wg = trainer.actor_rollout_wg
    mapping = wg._dispatch_info.get("actor") or wg._query_dispatch_info("actor")
    return max(mapping) + 1


# ------------------------------------------------------------------------------------------------
# TransferQueue: the per-sample fields the V1 trainer stores and the plugin reads / writes
# ------------------------------------------------------------------------------------------------
class TQ:
    """TransferQueue field names (verl 0.9.1's V1 trainer and agent loop)."""

    UID = "uid"
    DATA_SOURCE = "data_source"
    EXTRA_INFO = "extra_info"
    #: per-sample dict of the agent loop; the reward function's dict is under REWARD_EXTRA_INFO
    EXTRA_FIELDS = "extra_fields"
    REWARD_EXTRA_INFO = "reward_extra_info"
    RM_SCORES = "rm_scores"
    RESPONSE_MASK = "response_mask"
    RESPONSES = "responses"
    ADVANTAGES = "advantages"
    #: per-token entropy of the old policy (written by verl's old-log-prob pass)
    ENTROPY = "entropy"
    OLD_LOG_PROBS = "old_log_probs"


def group_uid(key: str) -> str:
    """The prompt group (uid) of a trajectory's TransferQueue key ``f"{uid}_{session_id}_{index}"``.

    Split from the right as verl's ``compute_advantage_for_multi_trajectories`` does; a key
    without the two suffixes is a prompt's own key (the uid itself).
    """
    parts = key.rsplit("_", 2)
    return parts[0] if len(parts) == 3 else key


# ------------------------------------------------------------------------------------------------
# replay buffer (g2rpo_verl.verl_hooks.filtering)
# ------------------------------------------------------------------------------------------------
#: Private members of ``verl.trainer.ppo.v1.replay_buffer.ReplayBuffer`` the band filter uses.
REPLAY_BUFFER_HOOKS = {
    # (partition_id) -> (set of evicted uids, Counter of their diagnostic values); overridden
    "_dapo_filtered_keys": ("self", "partition_id"),
    # called with (global_steps, partition_id, eviction_reasons); returns a tuple whose [3] is
    # the metrics dict; eviction_reasons[1] are the DAPO-filtered uids; wrapped
    "_evict_terminal_groups": ("self", "global_steps", "partition_id", "eviction_reasons"),
    # the CPU backend's buffer (g2rpo_verl.cpu.replay_buffer) re-orders the batch it returns
    "_materialize_batch": ("self", "partition_id", "selected_prompt_uids", "partition_snapshot"),
}
#: The replay buffer attributes read: ``finished_keys[partition]`` (set of finished uids),
#: ``partitions[partition]`` (TransferQueue keys), ``filter_groups_metric``, ``refill_fn``.
REPLAY_BUFFER_ATTRIBUTES = ("finished_keys", "partitions", "filter_groups_metric", "refill_fn")
#: ``algorithm.filter_groups.metric`` value meaning "the summed rm_scores" (verl's constant
#: ``FILTER_GROUPS_REWARD_METRIC``).
FILTER_REWARD_METRIC = "reward"


# ------------------------------------------------------------------------------------------------
# files and console (trainer state, the demo)
# ------------------------------------------------------------------------------------------------
#: verl's V1 ``_save_checkpoint`` writes step N into ``<default_local_dir>/global_step_N``; the
#: actor's FSDP shards go to its ``actor`` folder, with ``fsdp_config.json`` and the HF config /
#: tokenizer in ``actor/huggingface`` (what verl's model_merger reads).
CHECKPOINT_STEP_PREFIX = "global_step_"
ACTOR_CHECKPOINT_DIR = "actor"
ACTOR_CHECKPOINT_MARKERS = ("fsdp_config.json", "huggingface")


def checkpoint_folder(default_local_dir: str, global_step: int) -> str:
    """The folder verl's V1 ``_save_checkpoint`` writes step ``global_step`` into."""
    return os.path.join(default_local_dir, f"{CHECKPOINT_STEP_PREFIX}{global_step}")


#: verl's ``get_checkpoint_tracker_filename``: the latest saved step, in ``default_local_dir``.
TRACKER_FILE = "latest_checkpointed_iteration.txt"
#: verl's console logger (``concat_dict_to_str``): ``step:N - key:value - key:value``.
CONSOLE_STEP_PREFIX = "step:"
CONSOLE_SEPARATOR = " - "


# ------------------------------------------------------------------------------------------------
# the actor's loss (g2rpo_verl.verl_hooks.actor_loss)
# ------------------------------------------------------------------------------------------------
#: Keys verl's engine puts on every micro-batch handed to the loss function (FSDP engine's
#: ``forward_backward_batch``): ``dp_size``, ``batch_num_tokens`` (response tokens of the
#: whole global mini-batch), ``global_batch_size``.
LOSS_BATCH_KEYS = ("dp_size", "batch_num_tokens", "global_batch_size")


# ------------------------------------------------------------------------------------------------
# the actor's engine (g2rpo_verl.verl_hooks.grad_diagnostics)
# ------------------------------------------------------------------------------------------------
#: verl's FSDP training engine (the V1 actor worker's ``self.actor.engine``).
MODULE_FSDP_ENGINE = "verl.workers.engine.fsdp.transformer_impl"
#: ``FSDPEngine.train_batch(self, data, loss_function)`` (inherited from ``BaseEngine``): zero the
#: gradients, ``forward_backward_batch``, ``optimizer_step``; called once per PPO mini-batch by the
#: worker's ``train_mini_batch``. Wrapped: the gradient diagnostics run first when asked for.
ENGINE_TRAIN_BATCH = ("FSDPEngine", "train_batch")
#: Other engine members the diagnostics call, with the signature they are called with:
#: ``forward_backward_batch(data, loss_function, forward_only)`` (micro-batching, dynamic batch
#: size, ``batch_num_tokens`` from ``loss_mask``, backward), ``optimizer_zero_grad()``,
#: ``is_mp_src_rank_with_outputs()``; and the attribute ``module`` (the FSDP-wrapped model).
ENGINE_MEMBERS = {
    "forward_backward_batch": ("self", "data", "loss_function", "forward_only"),
    "optimizer_zero_grad": ("self",),
    "is_mp_src_rank_with_outputs": ("self",),
}
#: The V1 trainer's ``_update_actor`` renames the worker's metrics with this prefix (``rename_dict``).
WORKER_METRIC_PREFIX = "actor/"


def verl_config_dir() -> str:
    """verl's Hydra config directory (``ppo_trainer.yaml``), found without importing verl."""
    from importlib.util import find_spec

    spec = find_spec("verl")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("verl is not installed")
    return os.path.join(list(spec.submodule_search_locations)[0], "trainer", "config")


#: Every private verl dependency, for the report and the test: name -> where it is used.
PRIVATE_SYMBOLS = {
    "verl.trainer.ppo.core_algos.ADV_ESTIMATOR_REGISTRY": "estimator names (did you mean), check_registered",
    "verl.trainer.ppo.v1.trainer_base.TRAINER_REGISTRY": "the trainer mixin is put in front of every V1 trainer",
    "verl.trainer.ppo.ray_trainer.RayPPOTrainer.__init__(config, ...)": "V0 guard: gs_* refused before workers",
    "verl.utils.config.validate_config(config, use_reference_policy, use_critic), imported by name by "
    "verl.trainer.main_ppo and called before ray.init": "the plugin's config and data checks in verl's driver (verl_hooks/driver_checks.py)",
    "PPOTrainer._build_replay_buffer / _compute_advantage / _update_actor": "trainer mixins (call verl's own)",
    "PPOTrainer._save_checkpoint / _load_checkpoint / on_init_end / __init__": "trainer mixins (call verl's own)",
    "PPOTrainer.global_steps / tokenizer / actor_rollout_wg / distillation_config": "attributes read by the mixins",
    "RayWorkerGroup._dispatch_info / _query_dispatch_info('actor')": "actor data-parallel size (entropy shaping)",
    "engine worker train_mini_batch: contiguous dp chunks, make_iterator(seed=data_loader_seed+rank)": "the actor mini-batch split entropy shaping and task_mean predict (checked per row in the loss)",
    "loss micro-batch keys dp_size / batch_num_tokens / global_batch_size": "entropy-shaping loss; task_mean loss",
    "ppo_loss(config, model_output, data) reads batch_num_tokens / global_batch_size from the micro-batch on "
    "every call and every policy loss aggregates with agg_loss(**config.global_batch_info)": "task_mean (verl_hooks/actor_loss.py): verl's ppo_loss called per task with that task's normalisers",
    "verl.utils.metric.Metric(value, aggregation).values / .aggregation (SUM, MEAN)": "task_mean recombines the per-task ppo_loss metrics",
    "verl.workers.engine.fsdp.transformer_impl.FSDPEngine.train_batch(data, loss_function) / "
    "forward_backward_batch(data, loss_function, forward_only) / optimizer_zero_grad() / "
    "is_mp_src_rank_with_outputs() / module": "per-task gradient diagnostics (verl_hooks/grad_diagnostics.py): extra passes before each mini-batch",
    "batch.extra_info reaches the worker as non-tensor data of every mini-batch; worker metrics logged as "
    "actor/<name>, one-element lists per mini-batch averaged by reduce_metrics": "per-task gradient diagnostics: the request and the Gram entries",
    "TransferQueue fields uid, data_source, extra_info, extra_fields.reward_extra_info, rm_scores, "
    "response_mask, responses, advantages, entropy, old_log_probs": "per-sample task keys, shaping, metrics",
    "TransferQueue key format {uid}_{session}_{index}": "group filtering (group of a key); each step's uids (samples)",
    "ReplayBuffer._dapo_filtered_keys / _evict_terminal_groups / finished_keys / partitions / "
    "filter_groups_metric / refill_fn": "group filtering band",
    "checkpoint folder <default_local_dir>/global_step_<N>": "trainer-side state saved next to verl's; g2rpo-eval",
    "actor checkpoint layout global_step_<N>/actor/{fsdp_config.json,huggingface/}": "g2rpo-eval finds a checkpoint",
    "tracker file latest_checkpointed_iteration.txt": "the demo's resume check; g2rpo-eval",
    "console logger line 'step:N - key:value - ...'": "the demo's progress bar",
    "verl.workers.rollout.base._ROLLOUT_REGISTRY": "CPU backend: the hf rollout",
    "ReplayBuffer._materialize_batch(partition_id, selected_prompt_uids, partition_snapshot)": "CPU backend: batches in request order (cpu/replay_buffer.py)",
    "TransferQueue fields index, data_source, prompts": "CPU backend: the request-order sort key",
    "SingleTurnAgentLoop.run(sampling_params, priority, **sample) with sample fields global_steps, index, "
    "session_id; server_manager.generate(request_id, prompt_ids=, sampling_params=, ...)": "the seeded agent loop (verl_hooks/seeded_agent_loop.py)",
    "init_process_group backend string 'cpu:gloo,{device}:{backend}'": "CPU backend: duplicate-backend fix",
    "VERL_ENGINE_DEVICE environment variable": "CPU backend: FSDP engine looked up under cuda",
    "verl.workers.engine.fsdp.transformer_impl.CPUOffloadPolicy (forward-only engines pin)": "CPU backend: the reference model's offload policy unpinned (cpu/engine_fixes.py)",
    "verl.utils.model.load_valuehead_model(local_path, torch_dtype, model_config, trust_remote_code)": "CPU backend: the critic loads with its configured attention (cpu/engine_fixes.py)",
    "RLHFDataset._process_multi_modal_info(messages, image_patch_size, config)": "CPU backend: images without qwen_vl_utils / torchvision (cpu/vl_dataset.py)",
}
