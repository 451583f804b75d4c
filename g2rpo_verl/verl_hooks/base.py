"""The base of every trainer mixin: the plugin config, per-step sample info, trainer-side state.

:class:`G2RPOBase` is the one class the shaping / filtering / estimator mixins share. It

* validates the whole config (:func:`~g2rpo_verl.verl_hooks.checks.validate_run_config`) at
  the top of the trainer's ``__init__``, before verl builds the replay buffer, the workers or
  the models, and owns the result (:attr:`g2rpo_config`);
* reads each step's :class:`~g2rpo_verl.verl_hooks.samples.SampleInfo` once
  (:meth:`sample_info`; immutable, cached per batch);
* saves and restores trainer-side state next to verl's checkpoint: every mixin that keeps
  state across steps returns it from :meth:`g2rpo_state_parts` (``name -> object with
  state_dict() / load_state_dict()``), calling ``super()``; all parts go into one
  ``global_step_N/g2rpo_state.json``, written atomically, and are restored on resume.

:func:`install_v0_guard` puts a guard in front of verl's deprecated V0 trainer that runs the
same validation (gs_* there stop before any worker starts).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Protocol

from g2rpo_verl.config import G2RPOConfig
from g2rpo_verl.verl_compat.api import checkpoint_folder
from g2rpo_verl.verl_hooks.checks import validate_run_config
from g2rpo_verl.verl_hooks.samples import SampleInfo, read_sample_info

logger = logging.getLogger(__name__)

__all__ = ["G2RPOBase", "Stateful", "STATE_FILE", "install_v0_guard"]

#: Trainer-side state of the plugin, one JSON file in each of verl's ``global_step_N`` folders.
STATE_FILE = "g2rpo_state.json"


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class G2RPOBase:
    """Owns the plugin config and the per-step sample info; see the module docstring."""

    def __init__(self, config, *args, **kwargs):
        # first: a config the plugin cannot run stops here, before verl starts anything
        self._g2rpo_config = validate_run_config(config, trainer="v1")
        self._g2rpo_samples: tuple[tuple, bool, SampleInfo] | None = None
        super().__init__(config, *args, **kwargs)

    @property
    def g2rpo_config(self) -> G2RPOConfig:
        """The validated ``g2rpo`` section."""
        if getattr(self, "_g2rpo_config", None) is None:  # a subclass that skipped __init__
            self._g2rpo_config = validate_run_config(self.config, trainer="v1")
        return self._g2rpo_config

    def sample_info(self, batch, fallback_to_data_source: bool = False) -> SampleInfo:
        """The :class:`SampleInfo` of ``batch`` (a ``KVBatchMeta``), read once per batch.

        ``fallback_to_data_source``: see :func:`~g2rpo_verl.verl_hooks.samples.read_sample_info`
        (per-task metrics of an estimator that needs no task key); a warning names the
        missing key once.
        """
        keys = tuple(batch.keys)
        cached = getattr(self, "_g2rpo_samples", None)
        # info read with the task key serves both kinds of request; one grouped by data_source
        # (the key was missing) serves only requests that allow the fallback
        if cached is not None and cached[0] == keys and (fallback_to_data_source or not cached[1]):
            return cached[2]
        task_key = self.g2rpo_config.task_key
        fell_back = False
        try:
            info = read_sample_info(batch, task_key)
        except ValueError as err:
            if not fallback_to_data_source:
                raise
            if not getattr(self, "_g2rpo_warned_task_key", False):
                logger.warning("%s Per-task metrics are grouped by data_source instead.", err)
                self._g2rpo_warned_task_key = True
            info = read_sample_info(batch, task_key, fallback_to_data_source=True)
            fell_back = True
        self._g2rpo_samples = (keys, fell_back, info)
        return info

    @property
    def eos_token_ids(self) -> set[int]:
        """Token ids that end a response: the tokenizer's EOS and the generation config's."""
        if getattr(self, "_eos_token_ids", None) is None:
            from verl.utils.config import omega_conf_to_dataclass
            from verl.workers.config import HFModelConfig

            ids = {self.tokenizer.eos_token_id} - {None}
            model_config = omega_conf_to_dataclass(self.config.actor_rollout_ref.model, dataclass_type=HFModelConfig)
            eos = getattr(model_config.generation_config, "eos_token_id", None)
            ids.update([eos] if isinstance(eos, int) else list(eos or []))
            if not ids:
                raise ValueError("the tokenizer and generation config name no EOS token: truncation is undefined")
            self._eos_token_ids = {int(i) for i in ids}
        return self._eos_token_ids

    # ------------------------------------------------------------------ trainer-side state

    def g2rpo_state_parts(self) -> dict[str, Stateful]:
        """``name -> state`` of every mixin that keeps state across steps (override, call super)."""
        return {}

    def _g2rpo_state_path(self, loading: bool) -> str:
        trainer_cfg = self.config.trainer
        if loading and trainer_cfg.resume_mode == "resume_path":
            folder = trainer_cfg.resume_from_path
            if not os.path.isabs(folder):
                folder = os.path.join(os.getcwd(), folder)  # as verl resolves it
        else:
            folder = checkpoint_folder(trainer_cfg.default_local_dir, self.global_steps)
        return os.path.join(folder, STATE_FILE)

    def _save_checkpoint(self):
        # Written BEFORE verl's save, which ends by pointing its tracker at this step: a run
        # that dies in between (a lost node) resumes from a checkpoint that has the state.
        parts = self.g2rpo_state_parts()
        if parts:
            path = self._g2rpo_state_path(loading=False)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp"
            with open(tmp, "w") as f:
                json.dump({name: part.state_dict() for name, part in parts.items()}, f)
            os.replace(tmp, path)  # atomic: a crash never leaves a half-written state file
        super()._save_checkpoint()

    def _load_checkpoint(self):
        super()._load_checkpoint()
        parts = self.g2rpo_state_parts()
        if not parts or self.global_steps == 0:
            return
        path = self._g2rpo_state_path(loading=True)
        if not os.path.exists(path):
            logger.warning("g2rpo: no %s in the checkpoint; %s start afresh", path, ", ".join(parts))
            return
        with open(path) as f:
            state = json.load(f)
        for name, part in parts.items():
            if name in state:
                part.load_state_dict(state[name])
                logger.warning("g2rpo: %s state restored from %s", name, path)
            else:
                logger.warning("g2rpo: %s has no '%s' state; it starts afresh", path, name)


def install_v0_guard(module) -> None:
    """Put a config check in front of ``module.RayPPOTrainer`` (verl's V0 trainer; idempotent)."""
    cls = module.RayPPOTrainer
    if getattr(cls, "_g2rpo_guarded", False):
        return

    def __init__(self, config, *args, **kwargs):
        validate_run_config(config, trainer="v0")
        cls.__init__(self, config, *args, **kwargs)

    module.RayPPOTrainer = type(
        cls.__name__, (cls,), {"__init__": __init__, "_g2rpo_guarded": True, "__module__": cls.__module__}
    )
