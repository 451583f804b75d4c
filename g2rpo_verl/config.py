"""The ``g2rpo`` section of a verl config: every key this plugin adds, with paper defaults.

verl's own ``algorithm`` section is a strict dataclass (unknown keys fail to merge), so the
plugin's keys live in a top-level section. In a plain verl config add them with Hydra's ``+``
(``+g2rpo.task_key=data_source``); the configs under ``configs/`` already define the section.

GS-GDPO's components reuse verl's own GDPO keys ``algorithm.gdpo_reward_keys`` and
``algorithm.gdpo_reward_weights``; when unset, gs_gdpo uses :data:`DEFAULT_GDPO_COMPONENTS`
with weight 1 each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

__all__ = ["G2RPOConfig", "EntropyShapingConfig", "DEFAULT_GDPO_COMPONENTS", "load_g2rpo_config", "gdpo_components"]

DEFAULT_GDPO_COMPONENTS = ("accuracy", "format", "structure")


@dataclass
class EntropyShapingConfig:
    """``g2rpo.entropy``: keep each task's token entropy inside a band (DESIGN.md).

    Penalty added to verl's actor loss: ``beta · Σ_τ [relu(Ĥ_τ − high_τ) + relu(low_τ − Ĥ_τ)]``
    with Ĥ_τ the token-mean entropy of task τ's responses.

    Attributes:
        enable: add the penalty (off by default in a plain verl config; the project's configs
            turn it on as the paper does).
        low / high: the band, reference 0.2 / 0.6, for every task not in ``per_task``.
        beta: penalty coefficient, reference 0.02.
        per_task: task-key value -> ``{low: ..., high: ...}`` overriding the band for that task.
        estimator: ``sampled`` = −log π(y_t) of the sampled token (the reference's estimate),
            ``exact`` = entropy of the full next-token distribution from the logits.
    """

    enable: bool = False
    low: float = 0.2
    high: float = 0.6
    beta: float = 0.02
    per_task: dict[str, dict[str, float]] = field(default_factory=dict)
    estimator: str = "sampled"


@dataclass
class G2RPOConfig:
    """Keys of the ``g2rpo`` config section.

    Attributes:
        task_key: the per-sample key whose value is the task τ that stage 2 normalises over.
            Looked up, in order, as a dataset column (``data_source``, ``ability``, ...), in
            the sample's ``extra_info``, then in the reward function's returned dict. The
            reference normalises per ``problem_type`` (answer type: "multiple choice",
            "math", "numerical", ...); ``task_type`` (domain) and ``data_source`` are common
            alternatives. A sample without it is an error, never a silent default task.
        entropy: task-level entropy shaping, see :class:`EntropyShapingConfig`.
    """

    task_key: str = "problem_type"
    entropy: EntropyShapingConfig = field(default_factory=EntropyShapingConfig)


def load_g2rpo_config(full_config: Any) -> G2RPOConfig:
    """Read and validate ``full_config.g2rpo`` (absent -> defaults; unknown keys -> error)."""
    section = full_config.get("g2rpo", None) if full_config is not None else None
    schema = OmegaConf.structured(G2RPOConfig)
    if section is None:
        return OmegaConf.to_object(schema)
    try:
        return OmegaConf.to_object(OmegaConf.merge(schema, section))
    except Exception as err:  # omegaconf raises several types; the message names the key
        raise ValueError(f"invalid 'g2rpo' config section: {err}") from err


def gdpo_components(algorithm_config: Any) -> tuple[list[str], list[float]]:
    """GS-GDPO's component names and weights from verl's ``algorithm`` section.

    Returns ``(names, weights)``; defaults to :data:`DEFAULT_GDPO_COMPONENTS`, weight 1 each.
    """
    get = algorithm_config.get if algorithm_config is not None else (lambda k, d=None: d)
    names = get("gdpo_reward_keys", None) or list(DEFAULT_GDPO_COMPONENTS)
    names = [str(x) for x in names]
    weights = get("gdpo_reward_weights", None)
    if weights is None:
        weights = [1.0] * len(names)
    weights = [float(x) for x in weights]
    if len(weights) != len(names):
        raise ValueError(
            f"algorithm.gdpo_reward_weights has {len(weights)} entries but "
            f"algorithm.gdpo_reward_keys names {len(names)} components {names}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"algorithm.gdpo_reward_keys repeats a component: {names}")
    return names, weights
