"""Everything the plugin can check in a verl config, checked before anything heavy starts.

:func:`validate_run_config` is called

* by the plugin's V1 trainer mixin at the top of the trainer's ``__init__`` (in verl's
  TaskRunner, before the replay buffer, workers or models exist), and by the guard put in front
  of verl's deprecated V0 trainer;
* by ``g2rpo-train`` on the composed config before it builds a model or starts verl, and by
  ``g2rpo-preflight`` (its ``config`` check).

It collects every problem it finds and raises one :class:`G2RPOConfigError` naming each key.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from g2rpo_verl.config import G2RPOConfig, load_filter_band, load_g2rpo_config
from g2rpo_verl.estimators import component_estimators, estimator_spec, plugin_estimators

__all__ = ["G2RPOConfigError", "validate_run_config", "config_problems", "estimator_problem", "uses_project_reward"]

#: ``reward.custom_reward_function.path`` values that select the project's reward function.
PROJECT_REWARD_PATHS = ("pkg://g2rpo_verl.rewards", "pkg://g2rpo_verl.rewards.compute_score")


class G2RPOConfigError(ValueError):
    """A config the plugin cannot run as asked; ``problems`` lists each one (each names its key)."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"g2rpo_verl: {len(self.problems)} problem(s) in the config:\n{lines}")


def estimator_problem(name: str, known: Iterable[str]) -> str | None:
    """``None`` if ``name`` is a known estimator, else the message with the nearest names."""
    known = sorted(set(known))
    if name in known:
        return None
    guess = difflib.get_close_matches(name, known, n=2, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(g) for g in guess)}? " if guess else ""
    return (
        f"algorithm.adv_estimator={name!r} is not a registered advantage estimator; {hint}(known: {', '.join(known)})"
    )


def uses_project_reward(config: Any) -> bool:
    """True when ``reward.custom_reward_function.path`` is the project's reward function."""
    reward = config.get("reward", None) or {}
    path = str((reward.get("custom_reward_function", None) or {}).get("path", None) or "")
    return path in PROJECT_REWARD_PATHS or path.endswith("g2rpo_verl/rewards/__init__.py")


def _get(config: Any, dotted: str, default=None):
    node = config
    for part in dotted.split("."):
        if node is None or not hasattr(node, "get"):
            return default
        node = node.get(part, None)
    return default if node is None else node


def config_problems(config: Any, trainer: str | None = None, known_estimators: Iterable[str] | None = None):
    """``(problems, g2rpo_config)``: every problem found in ``config`` (a full verl config).

    Args:
        trainer: ``"v1"`` / ``"v0"``: the trainer that will run it; ``None`` = read
            ``trainer.use_v1``.
        known_estimators: the names verl's registry holds; default: read the registry (imports
            verl's ``core_algos``, a few seconds).
    """
    problems: list[str] = []
    g2rpo: G2RPOConfig | None = None
    try:
        g2rpo = load_g2rpo_config(config)
    except ValueError as err:
        problems.append(str(err))

    algorithm = config.get("algorithm", None) or {}
    estimator = str(algorithm.get("adv_estimator", "gae"))
    if known_estimators is None:
        from g2rpo_verl.verl_compat.api import adv_estimator_registry

        known_estimators = adv_estimator_registry()
    known = set(known_estimators) | set(plugin_estimators())
    if (problem := estimator_problem(estimator, known)) is not None:
        problems.append(problem)

    use_v1 = bool(_get(config, "trainer.use_v1", True)) if trainer is None else trainer == "v1"
    if estimator in plugin_estimators() and not use_v1:
        problems.append(
            f"algorithm.adv_estimator={estimator} needs verl's V1 trainer (trainer.use_v1=true, the default): "
            "it reads each sample's task key from TransferQueue, which the deprecated V0 trainer does not use"
        )

    spec = estimator_spec(estimator)
    if spec is not None and spec.config_problems is not None:
        problems += spec.config_problems(config)

    try:
        load_filter_band(config)
    except ValueError as err:
        problems.append(str(err))

    if uses_project_reward(config):
        from g2rpo_verl.rewards.settings import settings_from_kwargs

        kwargs = (config.reward.custom_reward_function.get("reward_kwargs", None)) or {}
        try:
            settings_from_kwargs(dict(kwargs))
        except (TypeError, ValueError) as err:
            problems.append(f"reward.custom_reward_function.reward_kwargs: {err}")

    if g2rpo is not None:
        problems += _shaping_problems(config, g2rpo, estimator)
    return problems, g2rpo


def _shaping_problems(config: Any, g2rpo: G2RPOConfig, estimator: str) -> list[str]:
    """Shaping options whose effect the rest of the config would cancel."""
    problems = []
    length, entropy = g2rpo.length, g2rpo.entropy
    algorithm = config.get("algorithm", None) or {}
    if length.enable and length.mode == "component":
        keys = list(algorithm.get("gdpo_reward_keys", None) or [])
        if estimator != "gs_gdpo" or "length" not in keys:
            problems.append(
                "g2rpo.length.mode=component needs algorithm.adv_estimator=gs_gdpo with 'length' in "
                f"algorithm.gdpo_reward_keys (got adv_estimator={estimator}, gdpo_reward_keys={keys or None})"
            )
    if length.enable and length.mode == "reward" and estimator in component_estimators():
        problems.append(
            f"algorithm.adv_estimator={estimator} ignores the summed reward, so g2rpo.length.mode=reward would "
            "have no effect: use g2rpo.length.mode=component and add 'length' to algorithm.gdpo_reward_keys"
        )
    if entropy.enable:
        if entropy.estimator == "exact" and _get(config, "algorithm.rollout_correction.bypass_mode", False):
            problems.append(
                "g2rpo.entropy.estimator=exact needs the old policy's entropy, which verl does not compute when "
                "algorithm.rollout_correction.bypass_mode=true; use g2rpo.entropy.estimator=sampled"
            )
        distillation = config.get("distillation", None) or {}
        loss = _get(distillation, "distillation_loss", None) or {}
        settings = loss.get("loss_settings", None) or {}
        if (
            distillation.get("enabled", False)
            and settings.get("use_topk", False)
            and not loss.get("use_task_rewards", True)
            and not loss.get("use_policy_gradient", True)
        ):
            problems.append(
                "g2rpo.entropy.enable=true with a distillation-only actor update (distillation top-k without task "
                "rewards or policy gradient): the update computes no log-probs or entropy to shape"
            )
        if int(_get(config, "actor_rollout_ref.actor.ppo_epochs", 1)) < 1:
            problems.append("g2rpo.entropy.enable=true but actor_rollout_ref.actor.ppo_epochs < 1: no actor update")
    if g2rpo.diagnostics.grad_every > 0:
        problems += _diagnostics_problems(config)
    if g2rpo.loss_agg.task_mean:
        problems += _task_mean_problems(config)
    return problems


def _task_mean_problems(config: Any) -> list[str]:
    """Layouts in which ``g2rpo.loss_agg.mode=task_mean`` would not be the exact global-mini-batch loss."""
    from g2rpo_verl.config import TASK_MEAN_INNER_MODES

    key = "g2rpo.loss_agg.mode=task_mean"
    problems = []
    agg = str(_get(config, "actor_rollout_ref.actor.loss_agg_mode", "token-mean"))
    if agg not in TASK_MEAN_INNER_MODES:
        problems.append(
            f"{key} applies actor_rollout_ref.actor.loss_agg_mode inside each task; it must be one of "
            f"{TASK_MEAN_INNER_MODES}, got {agg!r}"
        )
    strategy = str(_get(config, "actor_rollout_ref.actor.strategy", "fsdp"))
    if strategy not in ("fsdp", "fsdp2"):
        problems.append(
            f"{key} is exact only with verl's FSDP engine (its dp_size scaling assumes FSDP's gradient average); "
            f"actor_rollout_ref.actor.strategy={strategy!r} cannot be exact: use fsdp or fsdp2, or mode=verl"
        )
    loss_mode = str(_get(config, "actor_rollout_ref.actor.policy_loss.loss_mode", "vanilla"))
    if loss_mode in NON_SEPARABLE_POLICY_LOSSES:
        problems.append(
            f"{key} with actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode}: that loss picks tokens across "
            "the whole micro-batch, so it cannot be split into per-task parts exactly"
        )
    if _get(config, "distillation.enabled", False):
        problems.append(
            f"{key} with distillation.enabled=true is not supported (the distillation loss is not split by task)"
        )
    if int(_get(config, "actor_rollout_ref.actor.ppo_epochs", 1)) < 1:
        problems.append(f"{key} but actor_rollout_ref.actor.ppo_epochs < 1: no actor update")
    return problems


#: verl policy losses that pick tokens across the batch (not a sum of per-row terms).
NON_SEPARABLE_POLICY_LOSSES = ("clip_cov", "kl_cov")


def _diagnostics_problems(config: Any) -> list[str]:
    """What ``g2rpo.diagnostics.grad_every > 0`` cannot measure exactly (verl_hooks/grad_diagnostics.py)."""
    problems = []
    key = "g2rpo.diagnostics.grad_every"
    strategy = str(_get(config, "actor_rollout_ref.actor.strategy", "fsdp"))
    if strategy not in ("fsdp", "fsdp2"):
        problems.append(
            f"{key} needs verl's FSDP actor engine (actor_rollout_ref.actor.strategy fsdp or fsdp2), got {strategy!r}"
        )
    loss_mode = str(_get(config, "actor_rollout_ref.actor.policy_loss.loss_mode", "vanilla"))
    if loss_mode in NON_SEPARABLE_POLICY_LOSSES:
        problems.append(
            f"{key} with actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode}: that loss picks tokens across "
            "the whole batch, so one task's part of the gradient is not the loss restricted to its rows"
        )
    if _get(config, "distillation.enabled", False):
        problems.append(
            f"{key} with distillation.enabled=true is not supported (the distillation loss is not split by task)"
        )
    return problems


def validate_run_config(
    config: Any, trainer: str | None = None, known_estimators: Iterable[str] | None = None
) -> G2RPOConfig:
    """The validated ``g2rpo`` section; raises :class:`G2RPOConfigError` listing every problem."""
    problems, g2rpo = config_problems(config, trainer, known_estimators)
    if problems:
        raise G2RPOConfigError(problems)
    assert g2rpo is not None
    return g2rpo
