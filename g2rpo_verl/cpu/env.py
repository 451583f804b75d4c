"""The CPU backend's names, environment and Hydra overrides (no torch / verl imports).

The bottom of :mod:`g2rpo_verl.cpu`: the platform and rollout modules import their names
from here, and the package ``__init__`` re-exports them, so nothing in the backend imports
its own package back.
"""

from __future__ import annotations

import os

from g2rpo_verl.verl_compat.request_seeds import SEEDED_LOOP_OVERRIDES

__all__ = ["CPU_ENV", "PLATFORM_NAME", "ROLLOUT_NAME", "cpu_overrides", "enabled"]

#: ``VERL_PLATFORM`` value that selects the CPU platform.
PLATFORM_NAME = "cpu"
#: ``actor_rollout_ref.rollout.name`` value that selects the HF rollout backend.
ROLLOUT_NAME = "hf"

#: Environment every process of a CPU run needs.
CPU_ENV: dict[str, str] = {
    # Selects g2rpo_verl.cpu.platform.PlatformCPU in verl's platform registry (it is never
    # auto-detected) and makes the autoload call register().
    "VERL_PLATFORM": PLATFORM_NAME,
    # verl registers its FSDP training engines for devices "cuda" and "npu" only and looks them
    # up by the platform's device name ("cpu" here). The FSDP engine itself is device-agnostic
    # (it asks the platform for every device call), so look it up under "cuda". Still needed in
    # verl 0.9.1; the variable only affects EngineRegistry.get_engine_cls.
    "VERL_ENGINE_DEVICE": "cuda",
    # Ray 2.60 turns token authentication on for new clusters and keeps a token in ~/.ray; the
    # private single-machine cluster main_ppo starts does not need it.
    "RAY_AUTH_MODE": "disabled",
    # Everything is local (tiny model built on disk): fail fast instead of trying the HF hub.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    # No experiment tracker on a smoke machine, even if a logger list names wandb.
    "WANDB_MODE": "disabled",
    # HF tokenizers' thread pool + Ray's forked workers -> "fork after parallelism" warnings.
    "TOKENIZERS_PARALLELISM": "false",
}


def enabled() -> bool:
    """True iff this process runs verl on the CPU platform (``VERL_PLATFORM=cpu``)."""
    return os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM_NAME


def cpu_overrides(n_procs: int = 1, ray_num_cpus: int = 16, ray_cluster: bool = False) -> list[str]:
    """Hydra overrides for ``verl.trainer.main_ppo`` that every CPU run needs.

    Args:
        n_procs: training processes (= fake GPU units = rollout replicas, data-parallel FSDP
            ranks on gloo); a later ``trainer.n_gpus_per_node=N`` override changes it too.
        ray_num_cpus: *logical* CPUs Ray advertises; verl's placement groups reserve CPU bundles
            per training process and its helper actors need more, independent of real cores.
        ray_cluster: the trainer joins a running Ray cluster (``RAY_ADDRESS``, e.g. the one
            ``scripts/slurm_multinode.sbatch`` starts): its nodes declare their (fake) GPU units
            and CPUs with ``ray start``, Ray refuses resource counts from a joining driver, and
            the launcher sets ``trainer.nnodes`` / ``trainer.n_gpus_per_node``, so none of these
            is among the overrides.

    They set backends and process counts only; model, data, batch sizes and the algorithm are
    the caller's. ``++`` adds a key or overrides it, so user YAMLs that already set one still
    compose.

    The reference model (KL loss) and the critic (``gae``) build with the same settings; see
    :mod:`g2rpo_verl.cpu.engine_fixes` for what verl's engine needs for them on the CPU.
    """
    processes = [
        "trainer.nnodes=1",
        f"trainer.n_gpus_per_node={n_procs}",
        # verl's resource pool needs GPU units; these are fake (see g2rpo_verl.cpu.platform).
        # Derived from the config, so `trainer.n_gpus_per_node=2` on the command line gives the
        # local Ray cluster two units (two FSDP ranks on gloo, two rollout replicas).
        "++ray_kwargs.ray_init.num_gpus=${trainer.n_gpus_per_node}",
        f"ray_kwargs.ray_init.num_cpus={ray_num_cpus}",
    ]
    overrides = [
        # --- devices and processes --------------------------------------------------------------
        # verl hands this device name to its worker groups; "cuda" would not match the platform.
        "trainer.device=cpu",
        *([] if ray_cluster else processes),
        # --- training engine (actor, ref, critic) -------------------------------------------
        # FSDP1 needs a GPU for sync_module_states; FSDP2 (fully_shard) runs on gloo/CPU.
        "actor_rollout_ref.actor.strategy=fsdp2",
        "critic.strategy=fsdp2",
        # Default mixed precision is bf16 params + bf16 autocast: slow on CPU, and the trainer's
        # log-probs would then disagree with the float32 rollout. Train in float32.
        "++actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
        "++actor_rollout_ref.ref.fsdp_config.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
        "++critic.fsdp.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
        # torch.compile of the entropy kernel would JIT C++ with inductor at the first step.
        "actor_rollout_ref.actor.use_torch_compile=False",
        "actor_rollout_ref.actor.fsdp_config.use_torch_compile=False",
        "actor_rollout_ref.ref.fsdp_config.use_torch_compile=False",
        "critic.fsdp.use_torch_compile=False",
        # flash-attention does not exist on CPU; eager attention is exact and simple.
        "++actor_rollout_ref.model.override_config.attn_implementation=eager",
        "++critic.model.override_config.attn_implementation=eager",
        # Remove-padding packs a micro-batch into one row that only flash-attention's varlen
        # kernels split back into sequences; eager attention would attend across them.
        "actor_rollout_ref.model.use_remove_padding=False",
        "critic.model.use_remove_padding=False",
        # --- rollout --------------------------------------------------------------------------
        # HF generate() backend instead of vLLM/SGLang (g2rpo_verl.cpu.hf_rollout).
        f"actor_rollout_ref.rollout.name={ROLLOUT_NAME}",
        # One HF process per replica; verl's default is tensor parallel 2.
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        # Same precision as the trainer, so rollout and trainer log-probs agree.
        "actor_rollout_ref.rollout.dtype=float32",
        # Per-request sampling seeds (seed, step, dataset row, sample number, prompt): the hf
        # server samples each request with its own generator, so a run is reproducible whatever
        # requests share a batch (g2rpo_verl.verl_hooks.seeded_agent_loop).
        *SEEDED_LOOP_OVERRIDES,
        # Return rollout log-probs: verl then logs training/rollout_probs_diff_*, a live check
        # that weight sync works.
        "actor_rollout_ref.rollout.calculate_log_probs=True",
        # --- helper processes: verl defaults to 8 of each, every one a Python process that
        # imports verl; on a few cores their start-up would dominate the run.
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "reward.num_workers=1",
        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
        # Dataloader worker processes only add fork overhead at this scale.
        "data.dataloader_num_workers=0",
    ]
    return overrides
