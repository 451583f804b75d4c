"""CPU backend for verl 0.9.1: run the real ``verl.trainer.main_ppo`` without an accelerator.

Pieces (each module says why it exists):

* :mod:`.platform` - a verl platform for the CPU (gloo, device ``"cpu"``, fake Ray GPU units);
* :mod:`.engine_fixes` - what verl's FSDP engine needs to build the reference model and the
  critic on the CPU (and the list of private verl symbols the backend touches);
* :mod:`.hf_rollout` / :mod:`.hf_generation` - an ``hf`` rollout backend (HF ``generate()`` in a
  Ray actor, concurrent requests batched, images through the model's processor, weights synced
  from the trainer), replacing vLLM/SGLang;
* :mod:`.vl_processor` / :mod:`.vl_dataset` - Qwen3-VL's processor and verl's RL dataset without
  torchvision / ``qwen_vl_utils`` (no CPU torchvision exists on the package registry);
* :mod:`.replay_buffer` - verl's sync replay buffer polling every 50 ms instead of 2 s;
* :mod:`.env` - the names, the environment (:data:`CPU_ENV`) and the Hydra overrides
  (:func:`cpu_overrides`) of a CPU run; the bottom of the package.

The backend only: the tiny models, toy data and reward and the smoke command that exercise it
are fixtures of the demo (:mod:`g2rpo_verl.demo`), which imports this package, never the
reverse.

This ``__init__`` is deliberately light (no torch / verl imports at module level): the plugin's
autoload imports it in every verl process and calls :func:`register` only when :func:`enabled`.
A CPU run needs both the environment :data:`CPU_ENV` (in every process, so set it before
``ray.init``; Ray workers inherit it) and the Hydra overrides :func:`cpu_overrides`.
"""

from __future__ import annotations

from g2rpo_verl.cpu.env import CPU_ENV, PLATFORM_NAME, ROLLOUT_NAME, cpu_overrides, enabled

__all__ = [
    "CPU_ENV",
    "PLATFORM_NAME",
    "ROLLOUT_NAME",
    "cpu_overrides",
    "enabled",
    "register",
]


def register() -> None:
    """Register the CPU platform and the ``hf`` rollout with verl. Idempotent, cheap.

    The model/generation code is imported lazily by verl when a rollout is built. The
    ``init_process_group`` backend-string fix is installed only when :func:`enabled`, i.e. when
    the CPU platform is the active one (see :func:`g2rpo_verl.cpu.platform.install_backend_string_fix`).
    """
    from verl.plugin.platform import PlatformRegistry
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    from g2rpo_verl.cpu.platform import PlatformCPU, install_backend_string_fix

    if PlatformRegistry.get(PLATFORM_NAME) is not PlatformCPU:
        PlatformRegistry.register(platform=PLATFORM_NAME)(PlatformCPU)
    _ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = "g2rpo_verl.cpu.hf_rollout.HFServerAdapter"
    RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_hf_replica)
    if enabled():
        from g2rpo_verl.cpu.engine_fixes import install as install_engine_fixes

        install_backend_string_fix()
        install_engine_fixes()


def _load_hf_replica():
    from g2rpo_verl.cpu.hf_rollout import HFReplica

    return HFReplica
