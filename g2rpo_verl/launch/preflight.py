"""``g2rpo-preflight``: catch the mistakes that otherwise fail a long run late, before it starts.

::

    g2rpo-preflight --config-path=$PWD/configs --config-name=g2rpo_qwen3vl8b [overrides ...]
        [--gpus N | --ray-address auto] [--skip gpus,...] [--max-rows N]

It takes the same Hydra arguments as ``python -m verl.trainer.main_ppo`` (the launchers in
``scripts/`` pass it theirs) and runs these checks, each printing ``[ OK ]``, ``[WARN]`` or
``[FAIL]`` with what to change:

``config``
    verl's own ``validate_config`` and everything the plugin checks before a run starts
    (:func:`g2rpo_verl.verl_hooks.checks.validate_run_config`: the estimator name, the
    ``g2rpo`` section, reward kwargs, the filter band, combinations that cannot work).
``gpus``
    GPUs seen (the Ray cluster's, or this node's CUDA devices) against
    ``trainer.nnodes × trainer.n_gpus_per_node`` (verl #242).
``data``
    the train / val parquet files exist and parse, have verl's columns (``prompt``,
    ``data_source``, ``reward_model.ground_truth``), one ``<image>`` per image, image files that
    exist, and the ``g2rpo.task_key`` of every row (for the ``gs_*`` estimators).
``image_tokens``
    the longest prompt's image tokens (each image resized as qwen-vl-utils will, 14-px patches
    for Qwen2/2.5-VL, 16-px for Qwen3-VL, merged 2×2) plus its text fit
    ``data.max_prompt_length`` — else the run dies with "Image features and image tokens do
    not match" / "Multimodal prompt produced N tokens" (EasyR1 #175, verl #3469).
``world_size``, ``wandb``, ``shared_dirs``, ``kv_cache``, ``model_files``, ``entropy_memory``
    the cluster side (:mod:`g2rpo_verl.launch.cluster_checks`).
``format_tags``
    the prompts ask for the think tag the reward's format needs (else every format reward is
    0); a Qwen3-VL *Instruct* model is asked for ``<thinking>``, which it writes, not
    ``<think>``, which it does not reliably write (Qwen3-VL #1663, EasyR1 #597).

Checks with nothing to check print ``[SKIP]`` and why. Exit status: 0 when no check failed
(warnings do not fail), 1 if any did, 2 for a usage or config error (one line: the option or
key and the fix).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import re
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from g2rpo_verl.config import load_g2rpo_config
from g2rpo_verl.launch.cluster_checks import CLUSTER_CHECKS, cluster_findings
from g2rpo_verl.launch.vision import VisionFamily, detect_family, image_tokens, max_image_tokens
from g2rpo_verl.verl_hooks.checks import config_problems, task_problems, uses_project_reward

__all__ = [
    "Finding",
    "DataSummary",
    "check_config",
    "check_gpus",
    "scan_data",
    "check_image_tokens",
    "check_format_tags",
    "run_checks",
    "load_config",
    "main",
]

CHECKS = ("config", "gpus", "data", "image_tokens", "format_tags", *CLUSTER_CHECKS)
REQUIRED_COLUMNS = ("prompt", "data_source", "reward_model")
# Chat-template tokens around one user turn and the assistant header (Qwen: ~20).
TEMPLATE_TOKENS = 32
# English text is ~4 characters per token with Qwen's tokenizer; 3 keeps the estimate high.
CHARS_PER_TOKEN = 3.0
MAX_EXAMPLES = 3


@dataclass
class Finding:
    check: str
    level: str  # "ok" | "warn" | "fail" | "skip" (nothing to check; the message says why)
    message: str

    def line(self) -> str:
        tag = {"ok": "[ OK ]", "warn": "[WARN]", "fail": "[FAIL]", "skip": "[SKIP]"}[self.level]
        return f"{tag} {self.check}: {self.message}"


@dataclass
class Sample:
    """What the image-token and format checks need of one row."""

    where: str  # "train.parquet row 12 (problem_id=...)"
    text: str
    images: list[Any]


@dataclass
class DataSummary:
    samples: list[Sample] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# config
# ------------------------------------------------------------------------------------------------
def check_config(config) -> list[Finding]:
    """verl's ``validate_config`` and the plugin's checks, as the trainer will run them (one finding each)."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from g2rpo_verl.verl_hooks.driver_checks import unwrapped

    try:
        with _quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Disabled critic ..." for every critic-free estimator
            unwrapped(validate_config)(
                config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config)
            )
    except Exception as err:  # each validator raises its own type; the message names the key
        return [Finding("config", "fail", f"{type(err).__name__}: {err}")]
    problems, _ = config_problems(config)
    if problems:
        return [Finding("config", "fail", problem) for problem in problems]
    return [Finding("config", "ok", f"verl and g2rpo sections valid (estimator {config.algorithm.adv_estimator})")]


class _quiet:
    """Silence verl's validate_config prints (it reports success on stdout)."""

    def __enter__(self):
        self._stdout, sys.stdout = sys.stdout, io.StringIO()

    def __exit__(self, *exc):
        sys.stdout = self._stdout
        return False


# ------------------------------------------------------------------------------------------------
# GPUs
# ------------------------------------------------------------------------------------------------
def check_gpus(config, available: float | None, source: str, cluster_wide: bool) -> list[Finding]:
    """``available`` GPUs (``None``: unknown) against what the trainer will ask Ray for.

    ``cluster_wide``: ``available`` counts every node (Ray); else only this node's devices,
    compared with ``n_gpus_per_node``.
    """
    nnodes, per_node = int(config.trainer.nnodes), int(config.trainer.n_gpus_per_node)
    need = nnodes * per_node
    want = f"trainer.nnodes={nnodes} × trainer.n_gpus_per_node={per_node}"
    if available is None:
        return [Finding("gpus", "warn", f"could not count GPUs ({source}); the run needs {need} ({want})")]
    if cluster_wide:
        if available < need:
            return [
                Finding(
                    "gpus",
                    "fail",
                    f"{source} has {available:g} GPUs but {want} = {need}: verl would wait for resources or fail "
                    "('Total available GPUs ... is less than total desired GPUs'); start every node's Ray worker "
                    "with --num-gpus, or lower trainer.nnodes / n_gpus_per_node; checking from a machine without "
                    "the GPUs: pass --gpus N (the count there) or --skip gpus",
                )
            ]
        extra = f" ({available - need:g} unused)" if available > need else ""
        return [Finding("gpus", "ok", f"{source}: {available:g} GPUs for {want}{extra}")]
    if available < per_node:
        return [
            Finding(
                "gpus",
                "fail",
                f"{source} shows {available:g} GPUs but trainer.n_gpus_per_node={per_node}: lower "
                "trainer.n_gpus_per_node, or run the check on a GPU node; from another machine pass --gpus N "
                "(the count there), --ray-address ADDR, or --skip gpus",
            )
        ]
    message = f"{source}: {available:g} GPUs ≥ trainer.n_gpus_per_node={per_node}"
    if nnodes > 1:
        return [
            Finding("gpus", "warn", message + f"; the other {nnodes - 1} node(s) were not checked (pass --ray-address)")
        ]
    return [Finding("gpus", "ok", message)]


def detect_gpus(ray_address: str | None) -> tuple[float | None, str, bool]:
    """``(count, source, cluster_wide)`` from a running Ray cluster, else this node's CUDA."""
    if ray_address:
        try:
            import ray

            ray.init(address=ray_address, log_to_driver=False, logging_level="ERROR")
            try:
                return float(ray.cluster_resources().get("GPU", 0)), f"Ray cluster at {ray_address}", True
            finally:
                ray.shutdown()
        except Exception as err:  # connection errors come in several types
            return None, f"Ray cluster at {ray_address} unreachable: {err}", True
    try:
        import torch

        return float(torch.cuda.device_count()), "this node's CUDA devices", False
    except Exception as err:
        return None, f"torch.cuda unavailable: {err}", False


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
def _files(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _as_py(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _text_of(prompt) -> str:
    prompt = _as_py(prompt)
    if isinstance(prompt, str):
        return prompt
    parts = []
    for message in prompt or []:
        content = _as_py(message.get("content")) if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return "\n".join(parts)


def scan_data(config, max_rows: int | None = None) -> tuple[list[Finding], DataSummary]:
    """Read every train / val file; report what verl's dataset or the plugin would trip on."""
    import pyarrow.parquet as pq

    findings: list[Finding] = []
    summary = DataSummary()
    try:
        g2rpo = load_g2rpo_config(config)
    except ValueError:
        g2rpo = None  # reported by the config check, naming the key
    image_key = config.data.get("image_key", "images")
    prompt_key = config.data.get("prompt_key", "prompt")
    problems: list[str] = []
    for _split, key in (("train", "train_files"), ("val", "val_files")):
        files = _files(config.data.get(key))
        if not files:
            problems.append(f"data.{key} is empty: set it to the parquet file(s) of g2rpo-data convert")
        for name in files:
            path = Path(os.path.expanduser(name))
            if not path.is_file():
                problems.append(
                    f"data.{key}: {path} does not exist (fix the path, or write it with g2rpo-data convert)"
                )
                continue
            try:
                table = pq.read_table(path)
            except Exception as err:
                problems.append(f"{path} is not a readable parquet file: {err}")
                continue
            columns = set(table.column_names)
            missing = [c for c in (prompt_key, *REQUIRED_COLUMNS[1:]) if c not in columns]
            if missing:
                problems.append(
                    f"data.{key}: {path} lacks the column(s) {missing} verl's RL dataset reads (has "
                    f"{sorted(columns)}); write it with g2rpo-data convert, or set data.prompt_key"
                )
                continue
            rows = table.slice(0, max_rows).to_pylist() if max_rows else table.to_pylist()
            summary.rows[str(path)] = table.num_rows
            problems.extend(_check_rows(path, rows, prompt_key, image_key, summary))
            if g2rpo is not None:
                problems.extend(task_problems(config, g2rpo, str(path), max_rows))
    for problem in problems[: MAX_EXAMPLES * 4]:
        findings.append(Finding("data", "fail", problem))
    if len(problems) > MAX_EXAMPLES * 4:
        findings.append(Finding("data", "fail", f"... {len(problems) - MAX_EXAMPLES * 4} more problem(s)"))
    if not problems:
        total = sum(summary.rows.values())
        findings.append(
            Finding("data", "ok", f"{len(summary.rows)} file(s), {total} rows, columns and images as verl reads them")
        )
    return findings, summary


def _check_rows(path, rows, prompt_key, image_key, summary) -> list[str]:
    problems = []
    for i, row in enumerate(rows):
        extra = row.get("extra_info") or {}
        where = f"{path.name} row {i}" + (f" (problem_id={extra['problem_id']})" if extra.get("problem_id") else "")
        truth = (row.get("reward_model") or {}).get("ground_truth")
        if truth is None:
            problems.append(f"{where}: reward_model.ground_truth is missing (the reward has nothing to score against)")
        text = _text_of(row.get(prompt_key))
        images = list(row.get(image_key) or [])
        if text.count("<image>") != len(images):
            problems.append(f"{where}: {text.count('<image>')} <image> placeholder(s) for {len(images)} image(s)")
        for j, image in enumerate(images):
            source = image.get("image") if isinstance(image, dict) else image
            if isinstance(source, str) and not source.startswith(("http://", "https://", "data:")):
                if not Path(source.removeprefix("file://")).is_file():
                    problems.append(f"{where}: {image_key}[{j}] file not found: {source}")
        summary.samples.append(Sample(where, text, images))
    return problems


# ------------------------------------------------------------------------------------------------
# image tokens
# ------------------------------------------------------------------------------------------------
def _image_size(image) -> tuple[int, int] | None:
    from PIL import Image

    try:
        if isinstance(image, dict):
            if image.get("bytes"):
                return Image.open(io.BytesIO(image["bytes"])).size[::-1]
            image = image.get("image")
        if isinstance(image, str):
            with Image.open(image.removeprefix("file://")) as img:  # reads the header only
                return img.size[::-1]
    except Exception:
        return None
    return None


def _bounds(image) -> tuple[int | None, int | None]:
    if isinstance(image, dict):
        return image.get("min_pixels"), image.get("max_pixels")
    return None, None


def check_image_tokens(config, summary: DataSummary, family: VisionFamily | None) -> list[Finding]:
    """Image tokens + estimated text tokens of the longest prompt against data.max_prompt_length."""
    limit = int(config.data.max_prompt_length)
    if not summary.samples:
        return [Finding("image_tokens", "skip", "no data rows were read (see the data check): nothing to measure")]
    with_images = [s for s in summary.samples if s.images]
    if not with_images:
        return [Finding("image_tokens", "skip", f"none of the {len(summary.samples)} rows read has an image")]
    model = config.actor_rollout_ref.model.path
    if family is None:
        return [Finding("image_tokens", "warn", f"unknown vision family for model {model!r}: image budget not checked")]
    findings = []
    patch = config.data.get("image_patch_size")
    if patch is not None and int(patch) != family.patch_size:
        findings.append(
            Finding(
                "image_tokens",
                "warn",
                f"data.image_patch_size={patch} but {family.name} uses {family.patch_size}-px patches "
                "(verl's overlong-prompt filter would count image tokens wrong)",
            )
        )
    worst, unbounded = None, 0
    for sample in with_images:
        tokens = 0
        for image in sample.images:
            lo, hi = _bounds(image)
            unbounded += hi is None
            size = _image_size(image)
            tokens += image_tokens(*size, family, lo, hi) if size else max_image_tokens(family, hi)
        text = math.ceil(len(sample.text.replace("<image>", "")) / CHARS_PER_TOKEN) + TEMPLATE_TOKENS
        if worst is None or tokens + text > worst[0]:
            worst = (tokens + text, tokens, text, sample)
    total, tokens, text, sample = worst
    how = (
        f"{sample.where}: {len(sample.images)} image(s) = {tokens} tokens ({family.name}: {family.patch_size}-px "
        f"patches merged {family.merge_size}×{family.merge_size}) + ~{text} text tokens = ~{total}"
    )
    if unbounded:
        findings.append(
            Finding(
                "image_tokens",
                "warn",
                f"{unbounded} image entries have no max_pixels: qwen-vl-utils then allows up to "
                f"{max_image_tokens(family, None)} tokens per image (g2rpo-data convert --max-pixels sets it)",
            )
        )
    if total > limit:
        findings.append(
            Finding(
                "image_tokens",
                "fail",
                f"{how} > data.max_prompt_length={limit}: the run would stop with 'Multimodal prompt produced ... "
                "tokens' or 'Image features and image tokens do not match'. Lower max_pixels "
                "(g2rpo-data convert --max-pixels) or raise data.max_prompt_length",
            )
        )
    elif total > 0.9 * limit:
        findings.append(Finding("image_tokens", "warn", f"{how}, within 10% of data.max_prompt_length={limit}"))
    else:
        findings.append(Finding("image_tokens", "ok", f"longest prompt {how} ≤ data.max_prompt_length={limit}"))
    return findings


# ------------------------------------------------------------------------------------------------
# format tags
# ------------------------------------------------------------------------------------------------
def check_format_tags(config, summary: DataSummary) -> list[Finding]:
    """The prompts' think tag, the reward's think tag and the model family agree.

    FAIL: prompts ask for another think tag than the reward's format needs (every format
    reward would be 0). WARN: the reward needs ``<think>`` and the model is a Qwen3-VL
    *Instruct* model, which does not reliably write it even when asked but does write
    ``<thinking>`` (Qwen3-VL #1663, EasyR1 #597); or such a model's prompts do not ask for the
    reward's think tag at all.
    """
    if not uses_project_reward(config):
        return [
            Finding(
                "format_tags",
                "skip",
                "reward.custom_reward_function.path is not the project's reward (pkg://g2rpo_verl.rewards): "
                "its format is unknown",
            )
        ]
    if not summary.samples:
        return [Finding("format_tags", "skip", "no data rows were read (see the data check): no prompts to check")]
    from g2rpo_verl.rewards.settings import settings_from_kwargs

    settings = settings_from_kwargs(dict(config.reward.custom_reward_function.get("reward_kwargs") or {}))
    think, answer = f"<{settings.think_tag}>", f"<{settings.answer_tag}>"
    reward = f"the reward (preset {settings.preset}, think_tag={settings.think_tag})"
    model = str(config.actor_rollout_ref.model.path)
    family = detect_family(model)
    instruct = family is not None and family.name == "qwen3-vl" and "instruct" in model.lower()
    prompts = [s.text for s in summary.samples]
    asking = sum(think in text for text in prompts)
    # think-like tags the prompts ask for instead (a prompt that names the reward's tag is fine)
    others = Counter(
        tag for text in prompts if think not in text for tag in set(re.findall(r"<(think\w*|reason\w*)>", text))
    )
    if others:
        named = ", ".join(f"<{tag}> ({n} of {len(prompts)})" for tag, n in others.most_common())
        return [
            Finding(
                "format_tags",
                "fail",
                f"prompts ask for {named} but {reward} needs {think}…</{settings.think_tag}>{answer}: every format "
                f"reward would be 0. Set reward.custom_reward_function.reward_kwargs.think_tag (or .preset) to match, "
                "or convert the data with g2rpo-data convert --preset/--think-tag",
            )
        ]
    if not settings.format_requires_think:
        return [Finding("format_tags", "ok", f"format reward does not require {think}")]
    if not instruct:
        return [
            Finding("format_tags", "ok", f"format {think}…{answer}; model {model!r} is not a Qwen3-VL Instruct model")
        ]
    findings = []
    if settings.think_tag == "think":
        findings.append(
            Finding(
                "format_tags",
                "warn",
                f"{reward} needs <think> and {model!r} is a Qwen3-VL Instruct model, which does not reliably write "
                "<think> even when asked but does write <thinking> (Qwen3-VL #1663, EasyR1 #597): the format reward "
                "may stay 0. Use reward_kwargs.preset=reference (tag <thinking>) with data converted by the default "
                "g2rpo-data convert --preset reference",
            )
        )
    if prompts and asking < len(prompts):
        findings.append(
            Finding(
                "format_tags",
                "warn",
                f"{len(prompts) - asking} of {len(prompts)} prompts do not ask for {think}…{answer}, {reward} requires "
                f"{think}, and {model!r} is a Qwen3-VL Instruct model, which does not write a think block unless "
                "asked (EasyR1 #597): their format reward would always be 0. Convert with the default prompts "
                "(g2rpo-data convert), or set reward.custom_reward_function.reward_kwargs.format_requires_think=false",
            )
        )
    return findings or [
        Finding("format_tags", "ok", f"every prompt asks for {think}…{answer}, the format {reward} needs ({model!r})")
    ]


# ------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------
def run_checks(
    config,
    gpus: Callable[[], tuple[float | None, str, bool]] | None = None,
    skip: Iterable[str] = (),
    max_rows: int | None = None,
    gpu_memory_gib: float | None = None,
) -> list[Finding]:
    """Every check not in ``skip``; ``gpus`` returns ``(count, source, cluster_wide)``."""
    skip = set(skip)
    unknown = skip - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown check(s) {sorted(unknown)}; the checks are {list(CHECKS)}")
    findings: list[Finding] = []
    if "config" not in skip:
        findings += check_config(config)
    if "gpus" not in skip:
        findings += check_gpus(config, *(gpus or (lambda: detect_gpus(None)))())
    summary = DataSummary()
    if not {"data", "image_tokens", "format_tags"} <= skip:
        data_findings, summary = scan_data(config, max_rows)
        if "data" not in skip:
            findings += data_findings
    if "image_tokens" not in skip:
        findings += check_image_tokens(config, summary, detect_family(str(config.actor_rollout_ref.model.path)))
    if "format_tags" not in skip:
        findings += check_format_tags(config, summary)
    findings += [Finding(*f) for f in cluster_findings(config, skip, gpu_memory_gib)]  # launch/cluster_checks.py
    return findings


class ConfigInputError(ValueError):
    """A ``--config-path`` / ``--config-name`` / override that does not compose; the message is one line."""


def config_dir(config_path: str) -> str:
    """``--config-path`` as verl's ``main_ppo`` reads it.

    Hydra resolves a relative ``--config-path`` against the directory of the file declaring
    ``@hydra.main`` (``verl/trainer/``), not the working directory; so does this. Raises
    :class:`ConfigInputError` when the directory does not exist, saying where it looked.
    """
    from g2rpo_verl.verl_compat.api import verl_config_dir

    path = os.path.expanduser(config_path)
    if os.path.isabs(path):
        resolved = path
    else:
        resolved = os.path.normpath(os.path.join(os.path.dirname(verl_config_dir()), path))
    if not os.path.isdir(resolved):
        hint = (
            ""
            if os.path.isabs(path)
            else f": verl (Hydra) reads a relative --config-path from verl's own trainer directory, not from "
            f"here; pass an absolute path, e.g. --config-path={os.path.abspath(path)}"
        )
        raise ConfigInputError(f"--config-path={config_path}: {resolved} is not a directory{hint}")
    return resolved


def _compose(directory: str, config_name: str, overrides: Sequence[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=directory, version_base=None):
        return compose(config_name=config_name, overrides=list(overrides))


def _override_hint(directory: str, config_name: str, overrides: Sequence[str], key: str) -> str:
    """``did you mean 'a.b.c'?`` from the keys next to ``key`` in the config composed without it."""
    import difflib

    from omegaconf import OmegaConf

    others = [o for o in overrides if o.lstrip("+~").partition("=")[0] != key]
    try:
        config = _compose(directory, config_name, others)
    except Exception:
        return ""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(config, parent) if parent else config
    if key.startswith("g2rpo."):  # the plugin's own keys, whether or not this config lists them
        from g2rpo_verl.config import g2rpo_defaults

        node = OmegaConf.select(OmegaConf.create({"g2rpo": g2rpo_defaults()}), parent)
    if not hasattr(node, "keys"):
        return ""
    guess = difflib.get_close_matches(leaf, [str(k) for k in node.keys()], n=1)
    return f" did you mean '{parent + '.' if parent else ''}{guess[0]}'?" if guess else ""


def load_config(config_path: str, config_name: str, overrides: Sequence[str]):
    """Compose exactly as ``verl.trainer.main_ppo --config-path --config-name overrides`` does.

    Raises :class:`ConfigInputError` (one line, naming the file or key and the fix) for a config
    directory or name that does not exist and for an override that does not apply.
    """
    import re

    from hydra.errors import HydraException, MissingConfigException

    directory = config_dir(config_path)
    overrides = [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]
    name = config_name.removesuffix(".yaml")
    if not os.path.isfile(os.path.join(directory, f"{name}.yaml")):
        import difflib

        there = sorted(p.stem for p in Path(directory).glob("*.yaml"))
        guess = difflib.get_close_matches(name, there, n=1)
        hint = f"did you mean --config-name={guess[0]}? " if guess else ""
        raise ConfigInputError(
            f"--config-name={config_name}: no {name}.yaml in {directory}; {hint}(there: {', '.join(there) or 'none'})"
        )
    try:
        return _compose(directory, name, overrides)
    except MissingConfigException as err:
        raise ConfigInputError(f"--config-name={config_name}: {str(err).splitlines()[0]}") from None
    except HydraException as err:
        text = str(err)
        match = re.search(r"Could not override '([^']+)'", text)
        if match:
            key = match.group(1)
            hint = _override_hint(directory, name, overrides, key)
            raise ConfigInputError(
                f"override {key}=...: {key} is not a key of {name}.yaml;{hint} (to add a new key on purpose "
                f"write +{key}=...)"
            ) from None
        match = re.search(r"Could not append to config. An item is already at '([^']+)'", text)
        if match:
            key = match.group(1)
            raise ConfigInputError(f"override +{key}=...: {key} is already in {name}.yaml; drop the '+'") from None
        raise ConfigInputError(" ".join(text.split())) from None


def _parser() -> argparse.ArgumentParser:
    from g2rpo_verl.cli import HelpFormatter, add_version

    parser = argparse.ArgumentParser(
        prog="g2rpo-preflight",
        description="Check a verl + g2rpo config, its data and the cluster before a long run.\n"
        "Exit status: 0 every check passed (warnings allowed), 1 a check failed, 2 a usage or config error.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--config-path",
        required=True,
        help="directory of the config, as for verl's main_ppo (absolute; a relative one is read from verl/trainer/)",
    )
    parser.add_argument("--config-name", required=True, help="the config file's name, without .yaml")
    parser.add_argument("--gpus", type=float, help="GPUs available in total (skips detection)")
    parser.add_argument(
        "--ray-address",
        default=os.environ.get("RAY_ADDRESS"),
        help="count the GPUs of this Ray cluster (default: $RAY_ADDRESS; unset: this node's CUDA devices)",
    )
    parser.add_argument("--skip", default="", help=f"comma-separated checks to skip, of: {','.join(CHECKS)}")
    parser.add_argument("--max-rows", type=int, help="rows read per data file (default: all)")
    parser.add_argument("--gpu-memory-gib", type=float, help="memory of one GPU (default: this node's GPU 0)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as given to verl")
    return add_version(parser)


def main(argv: Sequence[str] | None = None) -> int:
    from g2rpo_verl.cli import FAILED, OK, USAGE

    parser = _parser()
    args = parser.parse_args(argv)
    skip = [s for s in args.skip.split(",") if s]
    unknown = sorted(set(skip) - set(CHECKS))
    if unknown:
        parser.error(f"--skip {','.join(unknown)}: no such check; the checks are {','.join(CHECKS)}")
    try:
        config = load_config(args.config_path, args.config_name, args.overrides)
    except ConfigInputError as err:
        print(f"g2rpo-preflight: error: {err}", file=sys.stderr)
        return USAGE
    if args.gpus is not None:
        gpus = lambda: (args.gpus, "--gpus", True)  # noqa: E731
    else:
        gpus = lambda: detect_gpus(args.ray_address)  # noqa: E731
    findings = run_checks(config, gpus=gpus, skip=skip, max_rows=args.max_rows, gpu_memory_gib=args.gpu_memory_gib)
    for finding in findings:
        print(finding.line())
    failed = sum(f.level == "fail" for f in findings)
    warned = sum(f.level == "warn" for f in findings)
    skipped = sum(f.level == "skip" for f in findings)
    print(f"g2rpo-preflight: {failed} failed, {warned} warning(s), {skipped} skipped")
    return FAILED if failed else OK


if __name__ == "__main__":
    sys.exit(main())
