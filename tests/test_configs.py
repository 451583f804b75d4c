"""Every production config under configs/ composes on verl's ppo_trainer and validates.

Each config is composed with Hydra exactly as ``python -m verl.trainer.main_ppo
--config-path=<abs>/configs --config-name=<name>`` does (primary config + verl's config dir
from its ``hydra.searchpath``), then checked the way verl checks it at start-up
(``validate_config``, the dataclasses of the actor / rollout / algorithm sections,
interpolations resolved), plus the plugin's own sections. A key that verl's defaults do not
have is a typo unless it is one of the plugin's documented extension points.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from g2rpo_verl.config import FilterBand, load_filter_band, load_g2rpo_config
from g2rpo_verl.rewards.settings import settings_from_kwargs

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
PRIMARY = {"g2rpo_qwen3vl8b": "gs_grpo", "gsgdpo_qwen3vl8b": "gs_gdpo", "grpo_qwen3vl8b": "grpo"}
BASE = "qwen3vl8b_base"
# keys verl's ppo_trainer does not define but reads (or lets plugins read)
EXTENSION_POINTS = (
    "g2rpo.",
    "reward.custom_reward_function.reward_kwargs.",
    "trainer.v1.sampler.sampler_kwargs.",
    "algorithm.gdpo_reward_keys",
    "algorithm.gdpo_reward_weights",
    "hydra.",
    # verl's free-form dicts (default {}), passed to the HF processor / vLLM's engine as they are
    "data.mm_processor_kwargs.",
    "actor_rollout_ref.rollout.engine_kwargs.vllm.",
)


def compose_config(name: str, overrides: list[str] | None = None):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name=name, overrides=overrides or [])


@pytest.fixture(scope="module")
def verl_defaults():
    import verl.trainer.config as verl_config

    with initialize_config_dir(config_dir=str(Path(verl_config.__file__).parent), version_base=None):
        return compose(config_name="ppo_trainer")


@pytest.fixture(scope="module", params=sorted(PRIMARY))
def composed(request):
    return request.param, compose_config(request.param)


def test_the_config_dir_holds_the_base_and_three_variants():
    assert {BASE, *PRIMARY} <= {p.stem for p in CONFIG_DIR.glob("*.yaml")}


def _leaf_keys(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("defaults",):
                continue
            yield from _leaf_keys(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip(".")


def _has_key(cfg, dotted: str) -> bool:
    parent, _, leaf = dotted.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return OmegaConf.is_dict(node) and leaf in node.keys()  # `in node` is False for `???` values


@pytest.mark.parametrize("name", [BASE, *sorted(PRIMARY)])
def test_every_key_set_exists_in_verl_or_is_an_extension_point(name, verl_defaults):
    raw = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    unknown = [
        key for key in _leaf_keys(raw) if not key.startswith(EXTENSION_POINTS) and not _has_key(verl_defaults, key)
    ]
    assert not unknown, f"{name}.yaml sets keys verl's ppo_trainer does not have (typo?): {unknown}"


def test_composes_and_validates_like_verl_main(composed):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    from g2rpo_verl.verl_hooks.driver_checks import unwrapped

    validate_config = unwrapped(validate_config)  # verl's own; the plugin's driver checks also read the data
    name, cfg = composed
    assert cfg.algorithm.adv_estimator == PRIMARY[name]
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)
    algorithm = omega_conf_to_dataclass(cfg.algorithm)
    assert algorithm.filter_groups.enable and algorithm.filter_groups.metric == "accuracy"
    OmegaConf.to_container(cfg, resolve=True)  # verl's TaskRunner resolves everything
    # KL off: verl builds no reference model and no critic
    assert not need_reference_policy(cfg) and not need_critic(cfg)


def test_plugin_sections_validate(composed):
    name, cfg = composed
    g2rpo = load_g2rpo_config(cfg)
    assert g2rpo.task_key == "problem_type" and g2rpo.length.enable and g2rpo.entropy.enable
    # the paper's entropy recipe: one band for every task, fixed beta (the adaptive controller and
    # per-task bands are the demo's, docs/shaping.md)
    entropy = g2rpo.entropy
    assert (entropy.controller, entropy.beta, entropy.band(), entropy.per_task) == ("fixed", 0.02, (0.2, 0.6), {})
    settings = settings_from_kwargs(dict(cfg.reward.custom_reward_function.reward_kwargs))
    assert settings.preset == "reference" and settings.think_tag == "thinking"
    assert (settings.accuracy_weight, settings.format_weight, settings.structure_weight) == (0.9, 0.1, 1.0)
    assert load_filter_band(cfg) == FilterBand(0.01, 0.99)
    if name == "gsgdpo_qwen3vl8b":
        from g2rpo_verl.config import gdpo_components

        names, weights = gdpo_components(cfg.algorithm)
        assert names == ["accuracy", "format", "structure", "length"] and len(weights) == 4
        assert g2rpo.length.mode == "component"
    else:
        assert g2rpo.length.mode == "reward"


def test_reference_recipe(composed):
    _, cfg = composed
    arr, actor, rollout = cfg.actor_rollout_ref, cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    assert cfg.data.train_batch_size == 512 and rollout.n == 8 and rollout.temperature == 1.0
    assert actor.ppo_mini_batch_size == 128
    assert actor.optim.lr == 2e-6 and actor.optim.optimizer == "AdamW" and actor.optim.weight_decay == 1e-2
    assert actor.grad_clip == 1.0 and actor.optim.clip_grad == 1.0
    assert actor.fsdp_config.dtype == "bfloat16" and rollout.dtype == "bfloat16"
    assert (actor.clip_ratio_low, actor.clip_ratio_high, actor.clip_ratio_c) == (0.2, 0.3, 3.0)
    assert actor.loss_agg_mode == "token-mean"
    assert not actor.use_kl_loss and not cfg.algorithm.use_kl_in_reward
    assert (cfg.data.max_prompt_length, cfg.data.max_response_length) == (16384, 4096)
    assert rollout.prompt_length == 16384 and rollout.response_length == 4096
    assert (rollout.val_kwargs.temperature, rollout.val_kwargs.top_p, rollout.val_kwargs.n) == (0.7, 0.95, 1)
    assert rollout.val_kwargs.do_sample
    assert cfg.trainer.n_gpus_per_node == 8 and rollout.name == "vllm" and actor.strategy == "fsdp"
    assert arr.model.path == "Qwen/Qwen3-VL-8B-Instruct" and cfg.data.image_patch_size == 16
    assert cfg.reward.custom_reward_function.path == "pkg://g2rpo_verl.rewards"
    # the longest sequence fits a dynamic-batch micro-batch
    assert actor.ppo_max_token_len_per_gpu >= cfg.data.max_prompt_length + cfg.data.max_response_length


def test_variants_differ_only_where_they_must():
    flat = {
        name: {k: v for k, v in _flatten(OmegaConf.to_container(compose_config(name), resolve=False)).items()}
        for name in PRIMARY
    }
    base = flat["g2rpo_qwen3vl8b"]

    def diff(name):
        other = flat[name]
        return sorted(k for k in base.keys() | other.keys() if base.get(k) != other.get(k))

    assert diff("grpo_qwen3vl8b") == ["algorithm.adv_estimator", "trainer.experiment_name"]
    assert diff("gsgdpo_qwen3vl8b") == [
        "algorithm.adv_estimator",
        "algorithm.gdpo_reward_keys",
        "algorithm.gdpo_reward_weights",
        "g2rpo.length.mode",
        "trainer.experiment_name",
    ]


def _flatten(node, prefix=""):
    out = {}
    if isinstance(node, dict):
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    else:
        out[prefix.rstrip(".")] = repr(node)
    return out


def test_a_typo_in_the_plugin_section_fails():
    cfg = compose_config("g2rpo_qwen3vl8b", ["++g2rpo.entropy.betta=0.1"])
    with pytest.raises(ValueError, match="betta"):
        load_g2rpo_config(cfg)


def test_verl_main_composes_the_config_from_the_command_line():
    """The documented command line: ``--config-path=<abs>/configs --config-name=...`` (``--cfg job``
    prints the composed config instead of running)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "verl.trainer.main_ppo",
            f"--config-path={CONFIG_DIR}",
            "--config-name=g2rpo_qwen3vl8b",
            "--cfg",
            "job",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = yaml.safe_load(proc.stdout)
    assert printed["algorithm"]["adv_estimator"] == "gs_grpo" and printed["g2rpo"]["length"]["enable"]


def test_rollout_context_pixel_bounds_and_modalities(composed):
    """rollout.max_model_len = prompt + response (unset, verl takes 262,144 from the model);
    data.mm_processor_kwargs are the paper's pixel bounds and the HF image processor honours them
    at call time, as verl calls it; vLLM gets images only (video: 0)."""
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from verl.utils.config import omega_conf_to_dataclass

    _, cfg = composed
    rollout = omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)
    assert rollout.max_model_len == cfg.data.max_prompt_length + cfg.data.max_response_length == 20480
    kwargs = dict(cfg.data.mm_processor_kwargs)
    assert kwargs == {"min_pixels": 3136, "max_pixels": 1048576}
    # Qwen3-VL's image processor: 16-px patches merged 2 x 2 (a 32-px token), and the model's own
    # bounds (preprocessor_config.json: 65536..16777216 pixels), which the kwargs override
    processor = Qwen2VLImageProcessorPil(
        patch_size=16, merge_size=2, size={"shortest_edge": 65536, "longest_edge": 16777216}
    )
    big = processor(images=[Image.new("RGB", (4000, 3000))], **kwargs, return_tensors="pt")
    t, h, w = big["image_grid_thw"][0].tolist()
    assert t * h * w // 4 <= 1024 < t * h * w  # ≤ 1024 tokens per image at max_pixels 1024²
    unbounded = processor(images=[Image.new("RGB", (4000, 3000))], return_tensors="pt")
    assert unbounded["image_grid_thw"][0].prod() > big["image_grid_thw"][0].prod()
    vllm = rollout.engine_kwargs["vllm"]
    assert vllm["limit_mm_per_prompt"] == {"image": 4, "video": 0} and rollout.limit_images is None
    # verl's build_cli_args_from_config JSON-encodes dicts (importing it needs vLLM): a plain dict here
    assert type(vllm["limit_mm_per_prompt"]) is dict


def test_g2rpo_defaults_yaml_is_the_plugins_defaults():
    """configs/g2rpo_defaults.yaml (in every project config's defaults) holds every plugin key, as G2RPOConfig."""
    from g2rpo_verl.config import g2rpo_defaults

    assert yaml.safe_load((CONFIG_DIR / "g2rpo_defaults.yaml").read_text()) == {"g2rpo": g2rpo_defaults()}, (
        "configs/g2rpo_defaults.yaml is stale: regenerate it with the command in its header"
    )


@pytest.mark.parametrize("name", [*sorted(PRIMARY), "cpu_tiny"])
def test_every_plugin_key_takes_a_plain_override(name):
    from g2rpo_verl.config import g2rpo_defaults

    leaves = [
        k
        for k in _leaf_keys({"g2rpo": g2rpo_defaults()})
        if not k.endswith(("per_task", "tasks", "weights", "neutral"))
    ]
    cfg = compose_config(name)
    assert all(_has_key(cfg, key) for key in leaves), [k for k in leaves if not _has_key(cfg, k)]
    cfg = compose_config(name, ["g2rpo.entropy.low=0.1", "g2rpo.length.weight=0.2", "g2rpo.diagnostics.grad_every=3"])
    assert (cfg.g2rpo.entropy.low, cfg.g2rpo.length.weight, cfg.g2rpo.diagnostics.grad_every) == (0.1, 0.2, 3)
