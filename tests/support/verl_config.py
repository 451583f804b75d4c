"""verl's own trainer config (``ppo_trainer.yaml``), composed as ``verl.trainer.main_ppo`` does."""

from __future__ import annotations

import functools
import os


@functools.cache
def ppo_trainer_config(*overrides: str):
    """The composed ``ppo_trainer`` DictConfig with Hydra ``overrides`` (cached: do not mutate it)."""
    import verl
    from hydra import compose, initialize_config_dir

    cfgdir = os.path.join(os.path.dirname(verl.__file__), "trainer/config")
    with initialize_config_dir(config_dir=cfgdir, version_base=None):
        return compose(config_name="ppo_trainer", overrides=list(overrides))


def actor_config(*overrides: str):
    """``actor_rollout_ref.actor`` as verl's worker builds it (a new ``ActorConfig`` dataclass per call)."""
    from verl.utils.config import omega_conf_to_dataclass

    return omega_conf_to_dataclass(ppo_trainer_config(*overrides).actor_rollout_ref.actor)
