"""The preflight's cluster checks (g2rpo_verl/launch/cluster_checks.py): each fails on the config
a first GPU run would die of and passes on the fixed one, naming the key and the fix.

The model's shape is Qwen3-VL-8B-Instruct's ``config.json`` (its numbers, written here: no hub
access), in a local model directory or a stand-in Hugging Face cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from g2rpo_verl.launch import cluster_checks as cc
from g2rpo_verl.launch.preflight import CHECKS, run_checks

ROOT = Path(__file__).resolve().parents[2]
# Qwen/Qwen3-VL-8B-Instruct config.json (the fields the estimates read)
QWEN3_VL_8B = {
    "architectures": ["Qwen3VLForConditionalGeneration"],
    "model_type": "qwen3_vl",
    "text_config": {
        "model_type": "qwen3_vl_text",
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 151936,
        "max_position_embeddings": 262144,
        "tie_word_embeddings": False,
        "dtype": "bfloat16",
    },
    "vision_config": {
        "depth": 27,
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "patch_size": 16,
        "out_hidden_size": 4096,
    },
    "tie_word_embeddings": False,
}
SHAPE = cc.ModelShape(QWEN3_VL_8B)
H100 = 80.0


def config(*overrides: str, name: str = "g2rpo_qwen3vl8b"):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return compose(config_name=name, overrides=list(overrides))


def levels(findings):
    return [f.level for f in findings]


def messages(findings, level="fail"):
    return " | ".join(f.message for f in findings if f.level == level)


def test_every_cluster_check_is_registered_in_the_preflight():
    assert set(cc.CLUSTER_CHECKS) <= set(CHECKS)


def test_the_model_shape_read_from_config_json():
    assert (SHAPE.layers, SHAPE.kv_heads, SHAPE.head_dim, SHAPE.vocab) == (36, 8, 128, 151936)
    assert SHAPE.kv_bytes_per_token("bfloat16") == 2 * 36 * 8 * 128 * 2 == 144 * 1024
    # ~8.6e9 parameters (8.8e9 published, the estimate omits norms and the merger): 16 GiB in bf16
    assert 8.3e9 < SHAPE.parameters() < 9.0e9 and 15.5 < SHAPE.weight_bytes / cc.GIB < 17


# --- world size -----------------------------------------------------------------------------
@pytest.mark.parametrize("nnodes", [3, 5, 6, 7])
def test_world_sizes_that_do_not_divide_the_mini_batch_fail(nnodes):
    findings = cc.check_world_size(config(f"trainer.nnodes={nnodes}"))
    assert "fail" in levels(findings)
    text = messages(findings)
    assert "actor.ppo_mini_batch_size=128 × rollout.n=8 = 1024" in text and f"{8 * nnodes} GPUs" in text
    assert "train_mini_batch" in text  # names verl's assert


@pytest.mark.parametrize("nnodes", [1, 2, 4, 8])
def test_world_sizes_that_divide_pass(nnodes):
    (finding,) = cc.check_world_size(config(f"trainer.nnodes={nnodes}"))
    assert finding.level == "ok" and f"{1024 // (8 * nnodes)} per rank" in finding.message


def test_three_nodes_pass_with_batch_sizes_a_multiple_of_three():
    bad = cc.check_world_size(config("trainer.nnodes=3"))
    assert "a multiple of 3" in messages(bad)
    assert "ppo_mini_batch_size=96 with data.train_batch_size=384 (4 mini-batches per step)" in messages(bad)
    good = cc.check_world_size(
        config("trainer.nnodes=3", "data.train_batch_size=384", "actor_rollout_ref.actor.ppo_mini_batch_size=96")
    )
    assert levels(good) == ["ok"]


def test_micro_batches_without_dynamic_batch_size_and_rollout_parallelism():
    fixed = [
        "actor_rollout_ref.actor.use_dynamic_bsz=false",
        "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=false",
        "actor_rollout_ref.ref.log_prob_use_dynamic_bsz=false",
    ]
    bad = cc.check_world_size(
        config(
            *fixed,
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=48",
            "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=48",
        )
    )
    text = messages(bad)
    assert "ppo_micro_batch_size_per_gpu=48 does not divide the 128 rows" in text
    assert "rollout.log_prob_micro_batch_size_per_gpu=48 does not divide the 512 rows" in text
    good = cc.check_world_size(
        config(
            *fixed,
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16",
            "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=32",
        )
    )
    assert levels(good) == ["ok"]
    tp3 = cc.check_world_size(config("actor_rollout_ref.rollout.tensor_model_parallel_size=3"))
    assert "tensor_model_parallel_size=3" in messages(tp3)
    assert levels(cc.check_world_size(config("actor_rollout_ref.rollout.tensor_model_parallel_size=2"))) == ["ok"]


# --- W&B -------------------------------------------------------------------------------------
@pytest.fixture
def no_wandb(monkeypatch, tmp_path):
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    return tmp_path / "netrc"


def test_wandb_without_credentials_fails_naming_the_three_routes(no_wandb):
    (finding,) = cc.check_wandb(config())
    assert finding.level == "fail"
    assert all(
        s in finding.message for s in ("WANDB_API_KEY", "wandb login", "WANDB_MODE=offline", "trainer.logger=[console]")
    )


def test_wandb_passes_with_a_key_a_login_or_offline(no_wandb, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert levels(cc.check_wandb(config())) == ["ok"]
    monkeypatch.delenv("WANDB_MODE")
    no_wandb.write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    no_wandb.chmod(0o600)
    assert levels(cc.check_wandb(config())) == ["ok"]
    no_wandb.unlink()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert levels(cc.check_wandb(config())) == ["ok"]
    monkeypatch.delenv("WANDB_API_KEY")
    assert levels(cc.check_wandb(config("trainer.logger=[console]"))) == ["ok"]


# --- shared directories --------------------------------------------------------------------
def test_relative_checkpoint_dir_with_several_nodes_fails():
    (finding,) = cc.check_shared_dirs(config("trainer.nnodes=2"))
    assert (
        finding.level == "fail" and "trainer.default_local_dir='checkpoints/g2rpo/g2rpo_qwen3vl8b'" in finding.message
    )
    bad = cc.check_shared_dirs(
        config("trainer.nnodes=2", "trainer.default_local_dir=/shared/ck", "trainer.rollout_data_dir=dumps")
    )
    assert levels(bad) == ["fail"] and "trainer.rollout_data_dir='dumps'" in bad[0].message
    assert levels(cc.check_shared_dirs(config("trainer.nnodes=2", "trainer.default_local_dir=/shared/ck"))) == ["ok"]
    assert levels(cc.check_shared_dirs(config("trainer.nnodes=1"))) == ["ok"]


# --- KV cache --------------------------------------------------------------------------------
def test_kv_cache_unset_max_model_len_is_262k_and_does_not_fit_an_h100():
    cfg = config("actor_rollout_ref.rollout.max_model_len=null")
    findings = cc.check_kv_cache(cfg, H100, SHAPE)
    assert levels(findings) == ["fail"]
    assert "max_position_embeddings" in findings[0].message and "262,144" in findings[0].message
    assert "max_model_len=20480" in findings[0].message  # the fix: prompt + response


def test_kv_cache_recipe_fits_an_h100_and_a_small_gpu_fails():
    (ok,) = cc.check_kv_cache(config(), H100, SHAPE)
    assert ok.level == "ok" and "144 KiB/token" in ok.message and "20,480" in ok.message
    (small,) = cc.check_kv_cache(config(), 32.0, SHAPE)  # 0.6 × 32 = 19.2 GiB < 16 weights + 4 reserve
    assert small.level == "fail" and "gpu_memory_utilization" in small.message
    short = cc.check_kv_cache(config("actor_rollout_ref.rollout.max_model_len=8192"), H100, SHAPE)
    assert levels(short) == ["fail"] and "max_model_len=20480" in short[0].message


def test_kv_cache_without_gpu_memory_or_model_config_warns(monkeypatch):
    monkeypatch.setattr(cc, "detect_gpu_memory_gib", lambda: (None, "no GPU on this node"))
    (warn,) = cc.check_kv_cache(config(), None, SHAPE)
    assert warn.level == "warn" and "--gpu-memory-gib" in warn.message


# --- model files -----------------------------------------------------------------------------
def _hf_cache(root: Path, repo: str) -> Path:
    """A Hugging Face cache holding only ``repo``'s config.json (the layout huggingface_hub reads)."""
    folder = root / "hub" / f"models--{repo.replace('/', '--')}"
    snap = folder / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(QWEN3_VL_8B))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    return root


@pytest.fixture
def hf_home(monkeypatch, tmp_path):
    import huggingface_hub.constants as constants

    home = tmp_path / "hf"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return home


def test_offline_with_a_hub_id_not_in_the_cache_fails(hf_home, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (finding,) = cc.check_model_files(config())
    assert finding.level == "fail" and "HF_HUB_OFFLINE" in finding.message and "--local-dir" in finding.message
    _hf_cache(hf_home, "Qwen/Qwen3-VL-8B-Instruct")
    assert levels(cc.check_model_files(config())) == ["ok"]
    # and the estimates read the cached config.json
    assert cc.load_model_shape("Qwen/Qwen3-VL-8B-Instruct").vocab == 151936


def test_a_local_model_path_must_hold_config_and_weights(tmp_path, hf_home):
    missing = cc.check_model_files(config(f"actor_rollout_ref.model.path={tmp_path / 'nope'}"))
    assert levels(missing) == ["fail"] and "missing directory" in missing[0].message
    model = tmp_path / "Qwen3-VL-8B-Instruct"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(QWEN3_VL_8B))
    assert "no *.safetensors" in messages(cc.check_model_files(config(f"actor_rollout_ref.model.path={model}")))
    (model / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 17_530_000_000}}))
    (model / "model-00001-of-00004.safetensors").write_bytes(b"\0" * 16)
    assert levels(cc.check_model_files(config(f"actor_rollout_ref.model.path={model}"))) == ["ok"]
    assert abs(cc.load_model_shape(str(model)).weight_bytes - 17_530_000_000) == 0  # the index's size


# --- attention -------------------------------------------------------------------------------
def test_flash_attention_without_flash_attn_fails_naming_both_routes():
    missing = lambda: "ModuleNotFoundError: No module named 'flash_attn'"  # noqa: E731
    (finding,) = cc.check_attention(config(), flash_attn_error=missing)
    assert finding.level == "fail" and "flash-attn==2.8.3 --no-build-isolation" in finding.message
    assert "attn_implementation=sdpa actor_rollout_ref.model.use_remove_padding=false" in finding.message
    assert levels(cc.check_attention(config(), flash_attn_error=lambda: None)) == ["ok"]
    sdpa = [f"+{cc.ATTN_KEY}=sdpa"]
    assert levels(cc.check_attention(config(*sdpa), flash_attn_error=missing)) == ["warn"]  # still packed
    fixed = cc.check_attention(
        config(*sdpa, "actor_rollout_ref.model.use_remove_padding=false"), flash_attn_error=missing
    )
    assert levels(fixed) == ["ok"]


# --- exact-entropy memory --------------------------------------------------------------------
def test_entropy_memory_eager_warns_naming_the_keys_compiled_passes():
    eager = cc.check_entropy_memory(config("actor_rollout_ref.actor.fsdp_config.use_torch_compile=false"), H100, SHAPE)
    assert levels(eager) == ["warn"]
    assert "20480 × vocab 151,936 × 2 B" in eager[0].message and "use_torch_compile=true" in eager[0].message
    assert "17.4 GiB" in eager[0].message  # 3 × 5.8 GiB of logits
    (ok,) = cc.check_entropy_memory(config(), H100, SHAPE)
    assert ok.level == "ok" and "5.8 GiB per GPU" in ok.message
    padded = cc.check_entropy_memory(config("actor_rollout_ref.model.use_remove_padding=false"), H100, SHAPE)
    assert levels(padded) == ["warn"] and "use_remove_padding=false" in padded[0].message
    sampled = cc.check_entropy_memory(config("++g2rpo.entropy.estimator=sampled"), H100, SHAPE)
    assert levels(sampled) == ["ok"] and "not used" in sampled[0].message


# --- through the preflight's driver --------------------------------------------------------
def test_run_checks_includes_the_cluster_checks_and_skips_them_by_name(no_wandb, hf_home):
    _hf_cache(hf_home, "Qwen/Qwen3-VL-8B-Instruct")
    skip = ["config", "gpus", "data", "image_tokens", "format_tags"]
    findings = run_checks(config("trainer.nnodes=3"), skip=skip, gpu_memory_gib=H100)
    by_check = {f.check: f.level for f in findings if f.level == "fail"}
    assert set(by_check) - {"attention"} == {"world_size", "wandb", "shared_dirs"}  # no flash-attn on CPU machines
    findings = run_checks(
        config("trainer.nnodes=3"), skip=[*skip, "world_size", "wandb", "shared_dirs", "attention"], gpu_memory_gib=H100
    )
    assert {f.check for f in findings} == {"kv_cache", "model_files", "entropy_memory"}
    assert all(f.level == "ok" for f in findings)
