"""Everything the plugin can check in a verl config, checked before anything heavy starts.

:func:`validate_run_config` is called

* by the plugin's V1 trainer mixin at the top of the trainer's ``__init__`` (in verl's
  TaskRunner, before the replay buffer, workers or models exist), and by the guard put in front
  of verl's deprecated V0 trainer;
* by ``g2rpo-train`` on the composed config before it builds a model or starts verl, and by
  ``g2rpo-preflight`` (its ``config`` check).

It collects every problem it finds and raises one :class:`G2RPOConfigError` naming each key.

:func:`data_problems` (the data files exist; every row has its task and a task the reward can
score, :func:`task_problems`) runs with it in verl's driver process, before Ray starts
(:func:`check_driver_config`, called from verl's own ``validate_config``), in ``g2rpo-train``
and in ``g2rpo-preflight``'s ``data`` check.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from g2rpo_verl.config import G2RPOConfig, load_filter_band, load_g2rpo_config
from g2rpo_verl.estimators import component_estimators, estimator_spec, plugin_estimators
from g2rpo_verl.task_lookup import is_blank, task_values

__all__ = [
    "G2RPOConfigError",
    "validate_run_config",
    "config_problems",
    "estimator_problem",
    "uses_project_reward",
    "data_files",
    "data_problems",
    "task_problems",
    "needs_task",
    "check_driver_config",
]

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


# ------------------------------------------------------------------------------------------------
# data: the files exist, every row has its task, the reward can score every task
# ------------------------------------------------------------------------------------------------
#: The config keys of verl's data files, in the order they are checked.
DATA_FILE_KEYS = ("data.train_files", "data.val_files")
#: URL schemes verl copies to local disk itself (``copy_to_local``): not checked here.
_REMOTE = ("hdfs://", "s3://", "gs://", "http://", "https://")
#: Reward-dict key that carries the project's reward's problem type (rewards/__init__.py).
_REWARD_TASK_KEY = "problem_type"


def data_files(config: Any) -> list[tuple[str, str]]:
    """``(key, path)`` of every local data file of ``data.train_files`` / ``data.val_files`` (``~`` expanded)."""
    import os

    out = []
    for key in DATA_FILE_KEYS:
        value = _get(config, key, None)
        if value is None:
            continue
        for name in [value] if isinstance(value, str) else list(value):
            name = str(name)
            if not name.startswith(_REMOTE):
                out.append((key, os.path.expanduser(name)))
    return out


def needs_task(config: Any, g2rpo: G2RPOConfig) -> bool:
    """True when something the run does groups samples by ``g2rpo.task_key``."""
    estimator = str(_get(config, "algorithm.adv_estimator", "gae"))
    return (
        estimator in plugin_estimators()
        or g2rpo.length.enable
        or g2rpo.entropy.enable
        or g2rpo.loss_agg.task_mean
        or g2rpo.diagnostics.grad_every > 0
    )


def data_problems(config: Any, g2rpo: G2RPOConfig, max_rows: int | None = None) -> list[str]:
    """Missing data files (naming their key), then :func:`task_problems` of each file that exists."""
    import os

    problems = []
    for key in DATA_FILE_KEYS:
        if not _get(config, key, None):
            problems.append(f"{key} is empty: set it to the parquet file(s) of g2rpo-data convert")
    for key, path in data_files(config):
        if not os.path.isfile(path):
            problems.append(f"{key}: {path} does not exist (fix the path, or write it with g2rpo-data convert)")
    if problems:
        return problems
    for _key, path in data_files(config):
        problems += task_problems(config, g2rpo, path, max_rows)
    return problems


def _flat(table, column: str, field: str | None = None) -> list | None:
    """``table[column]`` (or its struct field ``field``) as a Python list; ``None`` if absent."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column not in table.column_names:
        return None
    array = table[column].combine_chunks()
    if field is None:
        return array.to_pylist()
    if pa.types.is_struct(array.type):
        if array.type.get_field_index(field) < 0:
            return None
        return pc.struct_field(array, field).to_pylist()
    return [(v or {}).get(field) if isinstance(v, dict) else None for v in array.to_pylist()]


def _row(path: str, i: int, ids: list | None) -> str:
    import os

    pid = ids[i] if ids is not None and ids[i] is not None else None
    return f"{os.path.basename(path)} row {i}" + (f" (problem_id={pid})" if pid is not None else "")


def task_problems(config: Any, g2rpo: G2RPOConfig, path: str, max_rows: int | None = None) -> list[str]:
    """What would put a row of ``path`` in the wrong task, or score it with the wrong rule.

    At most one message per kind, naming ``g2rpo.task_key``, the file, the first offending row
    and how many rows share the problem, with the fix:

    * a row without the task key (not a column, not in ``extra_info``) when the run groups by
      task (:func:`needs_task`): verl's default reward gives no task at all; the project's
      reward would put it into its ``default_problem_type`` (``free-form``), a wrong grouping
      — unless the row's ``data_source`` names a problem type, ``reward_kwargs`` sets
      ``default_problem_type`` or ``problem_type_map`` for it, or ``g2rpo.allow_task_fallback=true``.
      A custom reward function may return the key itself, so nothing is checked then.
    * with the project's reward: a problem type it has no scorer for (it would be scored as
      free-form), unless ``g2rpo.allow_task_fallback=true``.

    Reads only the ``data_source``, ``extra_info`` and task-key columns; ``max_rows`` limits the rows.
    """
    import pyarrow.parquet as pq

    key = g2rpo.task_key
    schema = pq.read_schema(path)
    columns = [c for c in dict.fromkeys(("data_source", "extra_info", key)) if c in schema.names]
    table = pq.read_table(path, columns=columns)
    if max_rows:
        table = table.slice(0, max_rows)
    n = table.num_rows
    own = {key: _flat(table, key)} if key in table.column_names else {}
    # only extra_info's task field, not every field of every row's struct as a Python dict
    field = _flat(table, "extra_info", key) or [None] * n
    values = task_values(key, own, [{key: v} for v in field])
    sources = _flat(table, "data_source") or [None] * n
    ids = _flat(table, "extra_info", "problem_id")
    project = uses_project_reward(config)
    settings = None
    if project:
        from g2rpo_verl.rewards import resolve_problem_type
        from g2rpo_verl.rewards.accuracy import PROBLEM_TYPES, canonical_problem_type
        from g2rpo_verl.rewards.settings import settings_from_kwargs

        kwargs = dict(_get(config, "reward.custom_reward_function.reward_kwargs", None) or {})
        try:
            settings = settings_from_kwargs(kwargs)
        except (TypeError, ValueError):
            return []  # reported by config_problems, naming reward_kwargs
    problems = []
    missing = [i for i, v in enumerate(values) if is_blank(v)]
    if missing and needs_task(config, g2rpo):
        custom = bool(_get(config, "reward.custom_reward_function.path", None))
        if project and key == _REWARD_TASK_KEY:
            explicit = "default_problem_type" in kwargs or g2rpo.allow_task_fallback
            defaulted = [
                i
                for i in missing
                if not explicit
                and sources[i] not in settings.problem_type_map
                and not canonical_problem_type(str(sources[i]) if sources[i] is not None else None)
            ]
            missing = defaulted
            fallback = (
                f"the reward would give them its default problem type {settings.default_problem_type!r}, so every "
                "such row lands in one task whatever it is"
            )
        elif custom and not project:
            missing = []  # a custom reward may return the key in its dict: resolved per step
            fallback = ""
        else:
            fallback = "no reward dict carries it either, so the first training step would stop"
        if missing:
            i = missing[0]
            known = sorted({c for c in schema.names} | set(_extra_keys(table)))
            guess = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
            hint = f"did you mean g2rpo.task_key={guess[0]}? " if guess else ""
            problems.append(
                f"g2rpo.task_key={key!r}: {_row(path, i, ids)} has no {key!r} (not a column, not in extra_info), "
                f"nor do {len(missing) - 1} more of its {n} rows; {fallback}. {hint}Fix: add {key!r} to every row "
                f"(g2rpo-data convert writes extra_info.{_REWARD_TASK_KEY}), set g2rpo.task_key to a field every row "
                f"has (columns and extra_info keys: {', '.join(known)})"
                + (", or opt in with g2rpo.allow_task_fallback=true" if project and key == _REWARD_TASK_KEY else "")
            )
    if project and not g2rpo.allow_task_fallback:
        extras = _flat(table, "extra_info", _REWARD_TASK_KEY) or [None] * n
        resolved: dict[tuple, str] = {}
        unknown = []
        for i in range(n):
            pair = (extras[i], sources[i])
            if pair not in resolved:
                resolved[pair] = resolve_problem_type(sources[i], {_REWARD_TASK_KEY: extras[i]}, settings)
            if resolved[pair] not in PROBLEM_TYPES:
                unknown.append(i)
        if unknown:
            i = unknown[0]
            name = resolved[(extras[i], sources[i])]
            guess = difflib.get_close_matches(name, PROBLEM_TYPES, n=1, cutoff=0.5)
            hint = f"did you mean {guess[0]!r}? " if guess else ""
            problems.append(
                f"{_row(path, i, ids)}: problem type {name!r} (extra_info.{_REWARD_TASK_KEY}, data_source "
                f"{sources[i]!r}) has no scorer in the reward, nor do {len(unknown) - 1} more of its {n} rows; the "
                f"reward would score them as free-form. {hint}Fix: use one of {', '.join(PROBLEM_TYPES)}, map it with "
                "reward.custom_reward_function.reward_kwargs.problem_type_map, or opt in with "
                "g2rpo.allow_task_fallback=true"
            )
    return problems


def _extra_keys(table) -> list[str]:
    import pyarrow as pa

    if "extra_info" not in table.column_names:
        return []
    kind = table.schema.field("extra_info").type
    return [kind.field(j).name for j in range(kind.num_fields)] if pa.types.is_struct(kind) else []


def check_driver_config(config: Any) -> None:
    """Everything the plugin checks, in verl's driver before Ray starts: raises :class:`G2RPOConfigError`.

    :func:`config_problems` and, when the ``g2rpo`` section loads, :func:`data_problems`.
    """
    problems, g2rpo = config_problems(config)
    if g2rpo is not None:
        problems += data_problems(config, g2rpo)
    if problems:
        raise G2RPOConfigError(problems)
