"""The demo's verl settings: ``configs/demo_cpu.yaml`` turned into Hydra overrides, plus paths.

The YAML holds nested verl keys (and the plugin's ``g2rpo`` section). :func:`flatten` turns it
into ``++a.b.c=value`` overrides, which add a key or replace it, so the file composes with
verl's stock ``ppo_trainer`` config and the CPU backend's overrides. A mapping with a key that
is not an identifier (``multiple choice``) is passed as one dict literal instead.

Order of the final list (:func:`demo_overrides`), later wins per key: the CPU backend's
overrides, every key of the plugin's ``g2rpo`` section with its default
(:func:`g2rpo_verl.config.g2rpo_defaults`, so ``g2rpo.<key>=<value>`` needs no ``+``), the YAML, the work directory's paths, what the chosen estimator needs
(:func:`estimator_overrides`), then the user's command-line overrides.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from g2rpo_verl.cpu.env import cpu_overrides
from g2rpo_verl.demo.data import DemoData
from g2rpo_verl.demo.smoke import merge_overrides
from g2rpo_verl.estimators import estimator_spec

__all__ = [
    "DEFAULT_CONFIG",
    "demo_overrides",
    "estimator_overrides",
    "flatten",
    "format_value",
    "load_config",
    "override_value",
    "path_overrides",
    "compose_config",
]

#: ``configs/demo_cpu.yaml`` of the source checkout (the package is installed editable).
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo_cpu.yaml"

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
# Characters a Hydra value may hold unquoted (paths, pkg:// URLs, identifiers, numbers).
_PLAIN = re.compile(r"^[A-Za-z0-9_./:\-+@~]+$")


def load_config(path: str | os.PathLike = DEFAULT_CONFIG) -> dict[str, Any]:
    """The YAML at ``path`` as a plain dict (raises FileNotFoundError with a hint)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"demo config {p} not found; pass --config PATH (the file ships as configs/demo_cpu.yaml "
            "in the g2rpo-verl source tree, which `pip install -e .` keeps next to the package)"
        )
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a mapping of verl config keys, got {type(data).__name__}")
    return data


def format_value(value: Any) -> str:
    """A Python value as Hydra override syntax (``true``, ``null``, ``[a,b]``, ``{k:v}``, quoted strings)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if _PLAIN.match(value) and value.lower() not in ("true", "false", "null"):
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    raise TypeError(f"cannot express {type(value).__name__} as a Hydra override value")


def flatten(config: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``++dotted.key=value`` for every leaf of ``config`` (see module docstring)."""
    out: list[str] = []
    for key, value in config.items():
        key = str(key)
        if not _KEY.match(key):
            raise ValueError(f"config key {prefix + key!r} is not an identifier; nest it in a mapping value")
        dotted = prefix + key
        if isinstance(value, Mapping) and value and all(_KEY.match(str(k)) for k in value):
            out.extend(flatten(value, dotted + "."))
        else:
            out.append(f"++{dotted}={format_value(value)}")
    return out


def path_overrides(workdir: Path, model_dir: Path, data: DemoData) -> list[str]:
    """Model, data, checkpoint, rollout-dump and Hydra output locations inside ``workdir``."""
    # verl validates on the first prompts of each task during training; the greedy table at the
    # end (g2rpo_verl.demo.base_vs_trained) on all of them
    val_files = ",".join(str(p) for p in data.val_step_files)
    return [
        f"++actor_rollout_ref.model.path={model_dir}",
        f"++critic.model.path={model_dir}",  # built only for critic-based estimators (gae)
        f"++data.train_files={data.train}",
        f"++data.val_files=[{val_files}]",
        f"++trainer.default_local_dir={workdir / 'checkpoints'}",
        f"++trainer.rollout_data_dir={workdir / 'rollouts'}",
        f"++hydra.run.dir={workdir / 'hydra'}",
    ]


def estimator_overrides(estimator: str | None) -> list[str]:
    """What the estimator needs on top of the YAML so that length shaping keeps working.

    The plugin's estimators: their declared ``demo_overrides`` (:mod:`g2rpo_verl.estimators`;
    ``gs_gdpo``: length as a component). verl's ``gdpo``: its components are fixed by verl, so
    length shaping is switched off. Others: nothing.
    """
    if (spec := estimator_spec(str(estimator))) is not None:
        return list(spec.demo_overrides)
    if estimator == "gdpo":
        return ["++g2rpo.length.enable=false"]
    return []


def demo_overrides(
    workdir: Path,
    model_dir: Path,
    data: DemoData,
    user: Sequence[str] = (),
    config_path: str | os.PathLike = DEFAULT_CONFIG,
    extra: Sequence[str] = (),
) -> list[str]:
    """Every override of a demo run, in precedence order (the user's last, see module docstring)."""
    from g2rpo_verl.config import g2rpo_defaults

    plugin = flatten({"g2rpo": g2rpo_defaults()})
    base = (
        cpu_overrides()
        + plugin
        + flatten(load_config(config_path))
        + path_overrides(workdir, model_dir, data)
        + list(extra)
    )
    base += estimator_overrides(override_value([*base, *user], "algorithm.adv_estimator"))
    return merge_overrides(base, user)


def override_value(overrides: Sequence[str], key: str, default: str | None = None) -> str | None:
    """The value the last override of ``key`` sets (raw text), else ``default``."""
    value = default
    for override in overrides:
        name, sep, raw = override.partition("=")
        if sep and name.lstrip("+~").strip() == key:
            value = raw
    return value


def compose_config(overrides: Sequence[str]):
    """verl's ``ppo_trainer`` config composed with ``overrides``, as ``verl.trainer.main_ppo`` will.

    Hydra's own ``hydra.*`` overrides (run directory) are left out: they configure Hydra, not the
    job. verl's config directory is found without importing verl.
    """
    from hydra import compose, initialize_config_dir

    from g2rpo_verl.verl_compat.api import verl_config_dir

    job = [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]
    with initialize_config_dir(config_dir=verl_config_dir(), version_base=None):
        return compose(config_name="ppo_trainer", overrides=job)
