"""The plugin's checks in verl's driver process, before Ray or any worker starts.

``python -m verl.trainer.main_ppo`` runs as ``__main__``, so no import hook on its module
fires; but its body imports ``validate_config`` by name from ``verl.utils.config`` after
``import verl`` has loaded the plugin, and ``main`` calls it on the composed config before
``run_ppo`` starts Ray. :func:`install` wraps that function (and its ``verl.utils`` re-export):
the wrapper runs :func:`g2rpo_verl.verl_hooks.checks.check_driver_config` first (config and
data checks), then verl's own. Any driver that validates a PPO config through verl's function
gets the checks, ``main_ppo_v0`` and the one-step-off-policy recipe included.

A failing check prints one block naming each key, value and fix on stderr and exits with
status 2 when the caller is a script's ``main`` (the Hydra job); elsewhere (a library caller)
it raises :class:`~g2rpo_verl.verl_hooks.checks.G2RPOConfigError`.
"""

from __future__ import annotations

import functools
import sys
from types import ModuleType

from g2rpo_verl.verl_compat.api import VALIDATE_CONFIG
from g2rpo_verl.verl_hooks.checks import G2RPOConfigError, check_driver_config

__all__ = ["install", "unwrapped"]

#: Marks the wrapper, so installing twice wraps once.
_MARK = "g2rpo_driver_checks"


def unwrapped(fn):
    """verl's own function behind the wrapper (``fn`` itself when not wrapped)."""
    return getattr(fn, "__wrapped__", fn) if getattr(fn, _MARK, False) else fn


def _wrap(validate_config):
    @functools.wraps(validate_config)
    def checked_validate_config(config, *args, **kwargs):
        try:
            check_driver_config(config)
        except G2RPOConfigError as err:
            caller = sys._getframe(1).f_globals.get("__name__")
            if caller == "__main__":  # the driver script itself: a clean message, not a traceback
                print(f"{err}\nNothing was started: fix the key(s) above and run the command again.", file=sys.stderr)
                raise SystemExit(2) from None
            raise
        return validate_config(config, *args, **kwargs)

    setattr(checked_validate_config, _MARK, True)
    return checked_validate_config


def install(config_module: ModuleType) -> None:
    """Wrap ``config_module.validate_config`` (``verl.utils.config``) and its ``verl.utils`` re-export."""
    original = getattr(config_module, VALIDATE_CONFIG)
    if getattr(original, _MARK, False):
        return
    wrapped = _wrap(original)
    setattr(config_module, VALIDATE_CONFIG, wrapped)
    package = sys.modules.get(config_module.__name__.rpartition(".")[0])
    if package is not None and getattr(package, VALIDATE_CONFIG, None) is original:
        setattr(package, VALIDATE_CONFIG, wrapped)
