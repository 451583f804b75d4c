"""What verl 0.9.1's FSDP engine needs on the CPU to build the reference model and the critic.

The actor builds on the CPU platform as it is; two other engines of the same FSDP code do not:

* **Reference model** (``actor_rollout_ref.actor.use_kl_loss=true`` or
  ``algorithm.use_kl_in_reward=true``). verl builds every forward-only FSDP2 engine with
  ``CPUOffloadPolicy(pin_memory=True)``; torch pins the sharded parameters, and pinning asks
  the accelerator driver for page-locked memory: "Cannot access accelerator device when none
  is available". Pinned memory only speeds up host-to-device copies, and on the CPU platform
  there is no device to copy to, so the CPU platform builds the same policy unpinned
  (:class:`UnpinnedCPUOffloadPolicy`). Everything else of verl's offload path is unchanged.
* **Critic** (``algorithm.adv_estimator=gae``). verl's ``load_valuehead_model`` hard-codes
  ``attn_implementation="flash_attention_2"``, which does not exist on a CPU, where the actor
  takes the configured one (``critic.model.override_config.attn_implementation``, ``eager`` in
  :func:`g2rpo_verl.cpu.cpu_overrides`). :func:`valuehead_loader` runs verl's own loader with
  that hard-coded value replaced by the critic's configured attention; a config that asks for
  flash-attention keeps it, and transformers then fails loudly as it should. For a Qwen3-VL
  critic (the demo's model) it first registers :mod:`g2rpo_verl.cpu.vl_value_model`'s value
  head, which transformers lacks and verl's ``trl`` fallback no longer finds.

Both are installed by :func:`install`, which :func:`g2rpo_verl.cpu.register` calls only when the
CPU platform is active. They apply when verl imports the module concerned (wrapt's post-import
hooks), so processes that never build an engine never import the engine code for them.

The private verl names patched here are listed with every other one in
:data:`g2rpo_verl.verl_compat.api.PRIVATE_SYMBOLS` and checked against the installed verl by
``tests/verl_compat/test_verl_api.py``; each patch also fails loudly, naming the symbol, if a verl release
moved it.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from torch.distributed.fsdp import CPUOffloadPolicy

__all__ = [
    "ENGINE_MODULE",
    "MODEL_MODULE",
    "UnpinnedCPUOffloadPolicy",
    "install",
    "unpin_offload_policy",
    "valuehead_loader",
]

#: verl module whose ``CPUOffloadPolicy`` binding builds the forward-only (reference) engines.
ENGINE_MODULE = "verl.workers.engine.fsdp.transformer_impl"
#: verl module holding ``load_valuehead_model`` (imported by the engine at call time).
MODEL_MODULE = "verl.utils.model"

_MARKER = "_g2rpo_cpu_fix"
_HARD_CODED_ATTENTION = "flash_attention_2"


@dataclass
class UnpinnedCPUOffloadPolicy(CPUOffloadPolicy):
    """torch's ``CPUOffloadPolicy`` that never pins: there is no device to copy to on the CPU.

    A subclass, so every ``isinstance(policy, CPUOffloadPolicy)`` in torch and verl still holds.
    """

    pin_memory: bool = False

    def __post_init__(self) -> None:
        # verl passes pin_memory=True explicitly; pinning cannot work without an accelerator.
        self.pin_memory = False


def unpin_offload_policy(module: ModuleType) -> None:
    """Post-import hook for :data:`ENGINE_MODULE`: bind :class:`UnpinnedCPUOffloadPolicy`."""
    current = getattr(module, "CPUOffloadPolicy", None)
    if current is UnpinnedCPUOffloadPolicy:
        return
    if current is not CPUOffloadPolicy:
        raise RuntimeError(
            f"g2rpo_verl.cpu: {module.__name__}.CPUOffloadPolicy is {current!r}, not torch's CPUOffloadPolicy; "
            "this verl release builds forward-only FSDP2 engines differently (see g2rpo_verl.cpu.engine_fixes)"
        )
    module.CPUOffloadPolicy = UnpinnedCPUOffloadPolicy


def configured_attention(model_config: Any) -> str | None:
    """The attention implementation a HF config was built with (``_attn_implementation``)."""
    return getattr(model_config, "_attn_implementation", None)


@contextlib.contextmanager
def _from_pretrained_attention(attention: str):
    """While active, ``PreTrainedModel.from_pretrained(..., attn_implementation="flash_attention_2")``
    loads with ``attention`` instead (any other value passes through)."""
    from transformers import PreTrainedModel

    original = PreTrainedModel.__dict__["from_pretrained"]

    @functools.wraps(original.__func__)
    def from_pretrained(cls, *args, **kwargs):
        if kwargs.get("attn_implementation") == _HARD_CODED_ATTENTION:
            kwargs["attn_implementation"] = attention
        return original.__func__(cls, *args, **kwargs)

    PreTrainedModel.from_pretrained = classmethod(from_pretrained)
    try:
        yield
    finally:
        PreTrainedModel.from_pretrained = original


def valuehead_loader(original):
    """verl's ``load_valuehead_model`` with the critic's configured attention (see module docstring)."""
    if getattr(original, _MARKER, False):
        return original

    @functools.wraps(original)
    def load_valuehead_model(local_path, torch_dtype, model_config, trust_remote_code):
        if getattr(model_config, "model_type", None) == "qwen3_vl":
            from g2rpo_verl.cpu.vl_value_model import register

            register()  # transformers has no Qwen3-VL token-classification head
        attention = configured_attention(model_config)
        if attention is None or attention == _HARD_CODED_ATTENTION:
            return original(local_path, torch_dtype, model_config, trust_remote_code)
        with _from_pretrained_attention(attention):
            return original(local_path, torch_dtype, model_config, trust_remote_code)

    setattr(load_valuehead_model, _MARKER, True)
    return load_valuehead_model


def _patch_valuehead_loader(module: ModuleType) -> None:
    original = getattr(module, "load_valuehead_model", None)
    if original is None:
        raise RuntimeError(
            f"g2rpo_verl.cpu: {module.__name__}.load_valuehead_model is gone; this verl release loads the critic "
            "differently (see g2rpo_verl.cpu.engine_fixes)"
        )
    module.load_valuehead_model = valuehead_loader(original)


def install() -> None:
    """Apply both fixes when (or, if already imported, now that) verl imports their modules. Idempotent."""
    from wrapt import register_post_import_hook

    register_post_import_hook(unpin_offload_policy, ENGINE_MODULE)
    register_post_import_hook(_patch_valuehead_loader, MODEL_MODULE)
