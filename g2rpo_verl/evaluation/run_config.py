"""What a training run's config says about scoring and prompts, for scoring "exactly as training".

From the run's composed Hydra config (``.hydra/config.yaml``, or any YAML with the same keys)
an evaluation takes:

* ``reward.custom_reward_function.{path,name,reward_kwargs}``: the reward function and its
  keyword arguments, passed through as they are (a ``preset`` key included); loaded with
  verl's own ``get_custom_reward_fn``. A run config without a custom reward function scored
  with verl's ``default_compute_score``, and so does the evaluation;
* ``data``: ``prompt_key``, ``image_key``, ``apply_chat_template_kwargs``,
  ``mm_processor_kwargs``, ``custom_cls`` (the dataset class, which turns ``<image>`` into image
  parts) and ``max_response_length`` (the default ``--max-new-tokens``);
* ``g2rpo.task_key``: how samples are grouped into tasks.

Without a run config (an HF model, e.g. the base model) the project's defaults are used -- the
reward :func:`g2rpo_verl.rewards.compute_score` with no kwargs, the torchvision-free dataset
class, the default ``g2rpo.task_key`` -- and ``source`` says so in every output.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from g2rpo_verl.config import G2RPOConfig, load_g2rpo_config

__all__ = ["DEFAULT_REWARD", "DEFAULT_DATASET_CLS", "RunConfig", "load_run_config"]

#: the project's reward function (verl's ``pkg://`` form)
DEFAULT_REWARD = ("pkg://g2rpo_verl.rewards", "compute_score")
#: the dataset class when the run config names none: verl's RLHFDataset minus qwen_vl_utils
DEFAULT_DATASET_CLS = ("pkg://g2rpo_verl.cpu.vl_dataset", "VisionRLHFDataset")
#: ``data`` keys the evaluation reads (and records in its settings)
DATA_KEYS = (
    "prompt_key",
    "image_key",
    "apply_chat_template_kwargs",
    "mm_processor_kwargs",
    "custom_cls",
    "max_response_length",
    "trust_remote_code",
)


@dataclass(frozen=True)
class RunConfig:
    """The parts of a run's config an evaluation uses (see the module docstring).

    ``reward_path`` is None when the run used verl's ``default_compute_score``.
    """

    source: str
    reward_path: str | None = DEFAULT_REWARD[0]
    reward_name: str | None = DEFAULT_REWARD[1]
    reward_kwargs: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    task_key: str = field(default_factory=lambda: G2RPOConfig().task_key)

    def reward_fn(self) -> Callable[..., Any]:
        """The reward callable ``fn(data_source, solution_str, ground_truth, extra_info)`` with the kwargs bound.

        Loaded by verl's ``get_custom_reward_fn`` (so ``pkg://`` and file paths work as in
        training); verl's ``default_compute_score`` when the run had no custom function.
        """
        from omegaconf import OmegaConf
        from verl.trainer.ppo.reward import get_custom_reward_fn

        if self.reward_path is None:
            from verl.utils.reward_score import default_compute_score

            return default_compute_score
        section = {"path": self.reward_path, "name": self.reward_name, "reward_kwargs": dict(self.reward_kwargs)}
        fn = get_custom_reward_fn(OmegaConf.create({"reward": {"custom_reward_function": section}}))
        if fn is None:
            raise ValueError(f"reward.custom_reward_function {section} could not be loaded")
        return fn

    def data_config(self):
        """The ``data`` section for verl's dataset class (DictConfig), evaluation overrides applied.

        Every row is kept and in file order: ``filter_overlong_prompts=False``,
        ``shuffle=False``, ``max_samples=-1``; a missing ``custom_cls`` becomes
        :data:`DEFAULT_DATASET_CLS`.
        """
        from omegaconf import OmegaConf

        data = dict(self.data)
        if not (data.get("custom_cls") or {}).get("path"):
            data["custom_cls"] = {"path": DEFAULT_DATASET_CLS[0], "name": DEFAULT_DATASET_CLS[1]}
        data.update(filter_overlong_prompts=False, shuffle=False, max_samples=-1, return_raw_chat=True)
        return OmegaConf.create(data)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "path": self.reward_path or "verl.utils.reward_score",
            "name": self.reward_name or "default_compute_score",
            "kwargs": dict(self.reward_kwargs),
        }


def load_run_config(path: str | os.PathLike | None) -> RunConfig:
    """The :class:`RunConfig` of the YAML at ``path``; the defaults when ``path`` is None.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the key for a
    malformed section.
    """
    if path is None:
        return RunConfig(source="defaults (no run config)")
    from omegaconf import DictConfig, OmegaConf

    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    cfg = OmegaConf.load(p)
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"--config {p}: expected a mapping of verl config keys")

    def plain(node: Any) -> Any:
        return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node

    reward_section = OmegaConf.select(cfg, "reward.custom_reward_function", default=None)
    reward_path = reward_name = None
    kwargs: Mapping[str, Any] = {}
    if reward_section is not None and OmegaConf.select(reward_section, "path", default=None):
        reward_path = str(reward_section.path)
        reward_name = OmegaConf.select(reward_section, "name", default=None)
        if not reward_name:
            raise ValueError(f"--config {p}: reward.custom_reward_function.path is set but name is not")
        kwargs = plain(OmegaConf.select(reward_section, "reward_kwargs", default=None)) or {}
        if not isinstance(kwargs, Mapping):
            raise ValueError(f"--config {p}: reward.custom_reward_function.reward_kwargs must be a mapping")
    data_section = OmegaConf.select(cfg, "data", default=None)
    data = {}
    if data_section is not None:
        for key in DATA_KEYS:
            value = OmegaConf.select(data_section, key, default=None)
            if value is not None:
                data[key] = plain(value)
    task_key = load_g2rpo_config(cfg).task_key
    return RunConfig(
        source=str(p),
        reward_path=reward_path,
        reward_name=str(reward_name) if reward_name else None,
        reward_kwargs=dict(kwargs),
        data=data,
        task_key=str(task_key),
    )
