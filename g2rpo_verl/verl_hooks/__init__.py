"""The thin layer that wires g2rpo_verl's algorithms into verl.

``import verl`` imports :mod:`g2rpo_verl.verl_hooks.autoload` in every verl process (entry
point group ``verl.plugins``), which calls :func:`register_all`. Registration is attached to
the verl modules it extends and runs the moment each is imported, so a process that never
touches the trainer (a rollout server, a reward worker) does not pay for importing it:

* ``verl.trainer.ppo.core_algos`` -> the plugin's estimators (:mod:`g2rpo_verl.estimators`) registered;
* ``verl.trainer.ppo.v1`` (whose ``__init__`` registers verl's V1 trainers) -> every
  registered V1 trainer gets the plugin's mixin (the config check before anything starts,
  per-sample task keys for the estimators, shaping, per-task metrics). A trainer registered
  later, by other code, must inherit :class:`~g2rpo_verl.verl_hooks.trainer.G2RPOTrainerMixin`
  itself to use gs_*;
* ``verl.trainer.ppo.ray_trainer`` -> the deprecated V0 trainer gets the same config check
  (gs_* there stop before any worker starts);
* ``verl.workers.engine.fsdp.transformer_impl`` -> the FSDP engine's ``train_batch`` runs the
  per-task gradient diagnostics first when the actor update asks for them (a pass-through
  otherwise; :mod:`~g2rpo_verl.verl_hooks.grad_diagnostics`);
* ``verl.utils.config`` -> its ``validate_config``, which verl's ``main_ppo`` calls in the
  driver before Ray starts, runs the plugin's config and data checks first
  (:mod:`~g2rpo_verl.verl_hooks.driver_checks`);
* with ``VERL_PLATFORM=cpu``: the CPU platform and ``hf`` rollout (``g2rpo_verl.cpu``).

Before any of it, :func:`g2rpo_verl.verl_compat.api.check_verl_version` refuses a verl outside the
tested range. Every private verl name used is listed in :mod:`g2rpo_verl.verl_compat.api`.

verl swallows exceptions from entry points (logged at DEBUG), so failures here are logged at
ERROR and re-raised from the hooked import itself: a broken plugin stops the run.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys
from collections.abc import Callable
from types import ModuleType

from g2rpo_verl.verl_compat.api import (
    MODULE_CORE_ALGOS,
    MODULE_FSDP_ENGINE,
    MODULE_TRAINER_V0,
    MODULE_TRAINERS_V1,
    MODULE_VERL_CONFIG,
    check_verl_version,
    trainer_registry,
)

logger = logging.getLogger("g2rpo_verl")

__all__ = ["register_all", "check_registered"]

CORE_ALGOS = MODULE_CORE_ALGOS
TRAINERS_V1 = MODULE_TRAINERS_V1
TRAINER_V0 = MODULE_TRAINER_V0


def _register_estimators(_module: ModuleType) -> None:
    from g2rpo_verl.verl_hooks.advantages import register_estimators

    register_estimators()


def _install_trainer_mixin(module: ModuleType) -> None:
    from g2rpo_verl.verl_hooks.trainer import install

    install(trainer_registry(module))


def _install_engine_hook(module: ModuleType) -> None:
    if _VERSION_ERROR is not None:
        raise _VERSION_ERROR
    from g2rpo_verl.verl_hooks.grad_diagnostics import install_engine_hook

    try:
        install_engine_hook(module)
    except Exception:
        logger.exception("g2rpo_verl: could not wrap %s's engine; refusing to run without the plugin", module.__name__)
        raise


def _install_driver_checks(module: ModuleType) -> None:
    if _VERSION_ERROR is not None:
        return  # the hooked trainer imports raise it; this module is imported during `import verl`
    from g2rpo_verl.verl_hooks.driver_checks import install

    try:
        install(module)
    except Exception:
        logger.exception(
            "g2rpo_verl: could not wrap %s.validate_config; refusing to run without the plugin", module.__name__
        )
        raise


def _install_v0_guard(module: ModuleType) -> None:
    from g2rpo_verl.verl_hooks.base import install_v0_guard

    install_v0_guard(module)


_AFTER_IMPORT: dict[str, Callable[[ModuleType], None]] = {
    CORE_ALGOS: _register_estimators,
    TRAINERS_V1: _install_trainer_mixin,
    TRAINER_V0: _install_v0_guard,
}


#: The version guard's error, raised from every hooked import (verl swallows entry-point errors).
_VERSION_ERROR: RuntimeError | None = None


def _run_hook(name: str, module: ModuleType) -> None:
    if _VERSION_ERROR is not None:
        raise _VERSION_ERROR
    try:
        _AFTER_IMPORT[name](module)
    except Exception:
        logger.exception("g2rpo_verl: could not register with %s; refusing to run without the plugin", name)
        raise


class _AfterImportFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of each hooked module so its hook runs right after the module body."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _AFTER_IMPORT:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def exec_then_register(module: ModuleType) -> None:
            exec_module(module)
            _run_hook(fullname, module)

        spec.loader.exec_module = exec_then_register
        return spec


_FINDER = _AfterImportFinder()


def register_all() -> None:
    """Check verl's version, attach every registration to its verl module (idempotent; see module docstring)."""
    global _VERSION_ERROR
    from g2rpo_verl import cpu

    try:
        check_verl_version()
    except RuntimeError as err:
        # raised from the hooked imports below, which verl does not swallow
        logger.error("%s", err)
        _VERSION_ERROR = err

    if cpu.enabled():
        cpu.register()
    # wrapt's post-import hook, as the CPU backend's fixes of the same module use: two import
    # finders wrapping one module's loader would call each other
    from wrapt import register_post_import_hook

    register_post_import_hook(_install_engine_hook, MODULE_FSDP_ENGINE)
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    for name in _AFTER_IMPORT:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__spec__", None) is not None:
            _run_hook(name, module)  # imported before the plugin: register now
    # last: verl.utils.config is already imported when the plugin loads, so this runs at once
    register_post_import_hook(_install_driver_checks, MODULE_VERL_CONFIG)


def check_registered() -> None:
    """Raise ``RuntimeError`` unless the estimators and the trainer mixin are in place.

    Imports the hooked verl modules, so calling it from a test or a driver proves the whole
    chain (entry point -> hook -> registry) works in this process.
    """
    from g2rpo_verl import estimators
    from g2rpo_verl.verl_compat.api import adv_estimator_registry
    from g2rpo_verl.verl_hooks.trainer import G2RPOTrainerMixin

    registry = adv_estimator_registry()
    for spec in estimators.ESTIMATORS:
        fn = registry.get(spec.name)
        if getattr(fn, "g2rpo_spec", None) is not spec:
            raise RuntimeError(
                f"g2rpo_verl: advantage estimator '{spec.name}' is not registered with verl (got {fn!r})"
            )
    unwrapped = [n for n, c in trainer_registry().items() if not issubclass(c, G2RPOTrainerMixin)]
    if unwrapped:
        raise RuntimeError(f"g2rpo_verl: verl trainers {unwrapped} are missing the plugin's mixin")
