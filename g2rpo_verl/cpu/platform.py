"""A verl platform for machines without an accelerator.

verl 0.9.1 routes every device call (``get_torch_device()``, ``get_device_id()``, the
distributed backend name, the Ray resource name) through ``verl.plugin.platform``. It ships
CUDA, NPU and ROCm platforms only, so on a CPU-only machine the trainer asks NCCL for a process
group and CUDA for a device. :class:`PlatformCPU` answers those questions for the CPU:

* device name ``"cpu"``, ``current_device() -> "cpu"`` (verl uses it as ``tensor.to(...)``);
* collective backend ``gloo``;
* Ray resource ``"GPU"``: verl's resource pool counts ``GPU`` (or ``NPU``) resources and places
  one training process per unit. A CPU run therefore declares *fake* GPU units with
  ``+ray_kwargs.ray_init.num_gpus=<n>``; nothing ever touches CUDA. Ray sets
  ``CUDA_VISIBLE_DEVICES`` for such actors, which is harmless here.

The platform is selected only explicitly (``VERL_PLATFORM=cpu``): ``is_platform_available``
returns False so verl's auto-detection never picks it on a GPU machine.

verl builds its process-group backend as ``f"cpu:gloo,{device}:{backend}"``, which on this
platform reads ``"cpu:gloo,cpu:gloo"``, and torch rejects it ("Duplicate device type cpu in
backend string"). :func:`install_backend_string_fix` wraps ``torch.distributed.init_process_group``
to collapse such duplicates; :func:`g2rpo_verl.cpu.register` installs it only when the CPU
platform is active.
"""

from __future__ import annotations

import contextlib
import functools
from types import ModuleType
from typing import Any

import torch
import torch.distributed
from verl.plugin.platform import PlatformBase

from g2rpo_verl.cpu.env import PLATFORM_NAME

__all__ = [
    "PLATFORM_NAME",
    "CpuDeviceModule",
    "PlatformCPU",
    "collapse_duplicate_backends",
    "install_backend_string_fix",
]


class CpuDeviceModule(ModuleType):
    """The ``torch.cuda``-shaped namespace verl calls through ``get_torch_device()``.

    ``torch.cpu`` covers only part of the ``torch.cuda`` API verl uses (memory statistics,
    seeding, RNG state, allocator settings, NVTX ranges are missing). Memory queries report 0
    allocated / host RAM as free; cache and allocator calls are no-ops; RNG calls go to torch's
    CPU generator (which is the only generator on this machine). Any other attribute is looked
    up on ``torch.cpu`` (streams, events, ``synchronize``), so an API verl uses that neither
    provides still fails loudly with ``AttributeError``.
    """

    def __init__(self) -> None:
        super().__init__("g2rpo_verl_cpu_device")

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.cpu, name)

    # --- device selection ---------------------------------------------------------------
    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def current_device() -> int:
        return 0

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def set_device(*_args, **_kwargs) -> None:
        return None

    @staticmethod
    def synchronize(*_args, **_kwargs) -> None:
        return None

    @staticmethod
    def get_device_name(*_args, **_kwargs) -> str:
        return "cpu"

    # --- memory (CPU tensors live in host RAM; there is no device cache to manage) --------
    @staticmethod
    def empty_cache() -> None:
        return None

    @staticmethod
    def ipc_collect() -> None:
        return None

    @staticmethod
    def memory_allocated(*_args, **_kwargs) -> int:
        return 0

    @staticmethod
    def memory_reserved(*_args, **_kwargs) -> int:
        return 0

    @staticmethod
    def max_memory_allocated(*_args, **_kwargs) -> int:
        return 0

    @staticmethod
    def max_memory_reserved(*_args, **_kwargs) -> int:
        return 0

    @staticmethod
    def reset_peak_memory_stats(*_args, **_kwargs) -> None:
        return None

    @staticmethod
    def set_per_process_memory_fraction(*_args, **_kwargs) -> None:
        return None

    @staticmethod
    def mem_get_info(*_args, **_kwargs) -> tuple[int, int]:
        """(free, total) bytes of host memory, the CPU analogue of ``cudaMemGetInfo``."""
        import psutil

        vm = psutil.virtual_memory()
        return vm.available, vm.total

    # --- RNG -------------------------------------------------------------------------------
    @staticmethod
    def manual_seed(seed: int) -> None:
        torch.manual_seed(seed)

    @staticmethod
    def manual_seed_all(seed: int) -> None:
        torch.manual_seed(seed)

    @staticmethod
    def get_rng_state(*_args, **_kwargs) -> torch.Tensor:
        return torch.get_rng_state()

    @staticmethod
    def set_rng_state(state: torch.Tensor, *_args, **_kwargs) -> None:
        torch.set_rng_state(state)

    # --- namespaces verl reaches into --------------------------------------------------
    class memory:  # noqa: N801 - mirrors torch.cuda.memory
        @staticmethod
        def _set_allocator_settings(_settings: str) -> None:
            return None

    class nvtx:  # noqa: N801 - mirrors torch.cuda.nvtx
        @staticmethod
        def range(_msg: str):
            return contextlib.nullcontext()

        @staticmethod
        def range_push(_msg: str) -> None:
            return None

        @staticmethod
        def range_pop() -> None:
            return None


_DEVICE_MODULE = CpuDeviceModule()


class PlatformCPU(PlatformBase):
    """verl platform for CPU-only hosts (see the module docstring for the why of each answer)."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return _DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Never auto-detected: a GPU host must not silently fall back to CPU training.
        return False

    def current_device(self) -> str:  # type: ignore[override]
        # verl uses the value as a device spec: ``tensor.to(get_device_id())``,
        # ``torch.device(get_device_id())``. An int would mean ``cuda:<int>``.
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        # Ray exports CUDA_VISIBLE_DEVICES for actors holding (fake) GPU units; verl reads
        # the same variable to derive local ranks.
        return "CUDA_VISIBLE_DEVICES"

    @contextlib.contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        # verl's ResourcePoolManager only counts "GPU"/"NPU" resources; see module docstring.
        return "GPU"

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {"num_gpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


def collapse_duplicate_backends(backend: Any) -> Any:
    """Merge repeated ``device:backend`` entries of a torch backend string.

    ``"cpu:gloo,cpu:gloo"`` -> ``"cpu:gloo"``. Anything else is returned unchanged: non-strings,
    plain backend names (``"gloo"``), strings without duplicates, and strings that map one
    device to two *different* backends (torch's own error is the right answer there).
    """
    if not isinstance(backend, str) or ":" not in backend:
        return backend
    entries = [part.strip() for part in backend.split(",") if part.strip()]
    chosen: dict[str, str] = {}
    for entry in entries:
        device, sep, name = entry.partition(":")
        if not sep:
            return backend
        device, name = device.strip(), name.strip()
        if chosen.setdefault(device, name) != name:
            return backend
    if len(chosen) == len(entries):
        return backend
    return ",".join(f"{device}:{name}" for device, name in chosen.items())


_FIX_MARKER = "_g2rpo_cpu_backend_fix"


def install_backend_string_fix() -> bool:
    """Wrap ``torch.distributed.init_process_group`` to pass de-duplicated backend strings.

    Idempotent: returns True if this call installed the wrapper, False if it was already
    there. The wrapper only rewrites the ``backend`` argument (keyword or first positional)
    through :func:`collapse_duplicate_backends`; every other argument passes through.
    """
    current = torch.distributed.init_process_group
    if getattr(current, _FIX_MARKER, False):
        return False

    @functools.wraps(current)
    def init_process_group(*args, **kwargs):
        if "backend" in kwargs:
            kwargs["backend"] = collapse_duplicate_backends(kwargs["backend"])
        elif args:
            args = (collapse_duplicate_backends(args[0]), *args[1:])
        return current(*args, **kwargs)

    setattr(init_process_group, _FIX_MARKER, True)
    torch.distributed.init_process_group = init_process_group
    return True
