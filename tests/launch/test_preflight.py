"""``g2rpo-preflight``: each check passes on a good config / data and fails with the right message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from g2rpo_verl.data.data_cli import main as data_main
from g2rpo_verl.launch import preflight
from g2rpo_verl.launch.cluster_checks import CLUSTER_CHECKS
from g2rpo_verl.launch.preflight import (
    check_config,
    check_format_tags,
    check_gpus,
    check_image_tokens,
    run_checks,
    scan_data,
)
from g2rpo_verl.launch.vision import FAMILIES, detect_family, image_tokens, max_image_tokens

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "onethinker_sample"
QWEN3, QWEN25 = FAMILIES["qwen3-vl"], FAMILIES["qwen2.5-vl"]


def convert(out: Path, *extra: str, src: Path = SAMPLE) -> Path:
    args = ["convert", "--input", str(src / "train.json"), "--val", str(src / "val.json"), "--out", str(out), *extra]
    assert data_main(args) == 0
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return convert(tmp_path_factory.mktemp("data"))


def config(data: Path, *overrides: str):
    base = [
        f"data.train_files={data / 'train.parquet'}",
        f"data.val_files=[{data / 'val_OCR.parquet'},{data / 'val_numerical.parquet'}]",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return compose(config_name="g2rpo_qwen3vl8b", overrides=[*base, *overrides])


def levels(findings):
    return [(f.check, f.level) for f in findings]


def only(findings, level):
    return [f.message for f in findings if f.level == level]


# --- vision arithmetic ---------------------------------------------------------------------
def test_image_tokens_follow_qwen_vl_patch_and_merge_sizes():
    assert detect_family("Qwen/Qwen3-VL-8B-Instruct") is QWEN3
    assert detect_family("/models/Qwen2.5-VL-7B-Instruct") is QWEN25
    assert detect_family("Qwen/Qwen2-VL-2B").patch_size == 14
    assert detect_family("meta-llama/Llama-3-8B") is None
    # 1024² at max_pixels 1024²: Qwen3-VL 32-px tokens -> 32 × 32, Qwen2.5-VL 28-px -> 36 × 36
    assert image_tokens(1024, 1024, QWEN3, 3136, 1048576) == 1024 + 2
    assert image_tokens(1024, 1024, QWEN25, 3136, 1048576) == 36 * 36 + 2
    assert max_image_tokens(QWEN3, 1048576) == 1026 and max_image_tokens(QWEN25, 1048576) == 1337 + 2
    assert image_tokens(10, 10, QWEN3, 3136, 1048576) == 4 + 2  # min_pixels scales tiny images up


def test_family_from_a_local_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    assert detect_family(str(tmp_path)) is QWEN25


# --- config --------------------------------------------------------------------------------
def test_config_check(data_dir):
    assert levels(check_config(config(data_dir))) == [("config", "ok")]
    bad = check_config(config(data_dir, "++g2rpo.entropy.betta=1"))
    assert levels(bad) == [("config", "fail")] and "betta" in bad[0].message
    bad = check_config(config(data_dir, "trainer.v1.sampler.sampler_kwargs.filter_band.low=0.999"))
    assert "filter_band needs finite low < high" in bad[0].message
    bad = check_config(config(data_dir, "actor_rollout_ref.actor.loss_agg_mode=token-meen"))  # verl's own check
    assert bad[0].level == "fail" and "Invalid loss_agg_mode: token-meen" in bad[0].message
    bad = check_config(config(data_dir, "+reward.custom_reward_function.reward_kwargs.fromat_weight=0.2"))  # a typo
    assert bad[0].level == "fail" and "reward_kwargs.fromat_weight is not a reward setting" in bad[0].message


# --- gpus ----------------------------------------------------------------------------------
def test_gpu_check(data_dir):
    one = config(data_dir)
    four = config(data_dir, "trainer.nnodes=4")
    assert levels(check_gpus(one, 8, "Ray", True)) == [("gpus", "ok")]
    assert "(8 unused)" in check_gpus(one, 16, "Ray", True)[0].message
    fail = check_gpus(four, 24, "Ray cluster at auto", True)[0]
    assert fail.level == "fail" and "has 24 GPUs but trainer.nnodes=4 × trainer.n_gpus_per_node=8 = 32" in fail.message
    assert check_gpus(four, 32, "Ray", True)[0].level == "ok"
    local = check_gpus(four, 8, "this node's CUDA devices", False)[0]
    assert local.level == "warn" and "other 3 node(s) were not checked" in local.message
    assert check_gpus(one, 0, "this node's CUDA devices", False)[0].level == "fail"
    assert check_gpus(one, None, "torch.cuda unavailable", False)[0].level == "warn"


# --- data ----------------------------------------------------------------------------------
def test_data_check_passes_on_converted_data(data_dir):
    findings, summary = scan_data(config(data_dir))
    assert levels(findings) == [("data", "ok")] and len(summary.samples) == 8


def test_data_check_failures(data_dir, tmp_path):
    import pandas as pd

    findings, _ = scan_data(config(data_dir, f"data.train_files={tmp_path / 'nope.parquet'}"))
    assert any("nope.parquet does not exist" in m for m in only(findings, "fail"))

    df = pd.read_parquet(data_dir / "train.parquet")
    df.drop(columns=["reward_model"]).to_parquet(tmp_path / "nocol.parquet")
    findings, _ = scan_data(config(data_dir, f"data.train_files={tmp_path / 'nocol.parquet'}"))
    assert any("lacks the column(s) ['reward_model']" in m for m in only(findings, "fail"))

    broken = df.copy()
    broken.at[0, "images"] = [{"image": str(tmp_path / "gone.png"), "min_pixels": 3136, "max_pixels": 1048576}]
    broken.at[1, "prompt"] = [{"role": "user", "content": "no placeholder here"}]
    extra = dict(broken.at[2, "extra_info"])
    extra.pop("problem_type")
    broken.at[2, "extra_info"] = extra
    broken.to_parquet(tmp_path / "broken.parquet")
    findings, _ = scan_data(config(data_dir, f"data.train_files={tmp_path / 'broken.parquet'}"))
    fails = only(findings, "fail")
    assert any("row 0 (problem_id=chart-0001): images[0] file not found" in m for m in fails)
    assert any("row 1 (problem_id=ground-0001): 0 <image> placeholder(s) for 1 image(s)" in m for m in fails)
    assert any("g2rpo.task_key='problem_type': broken.parquet row 2 (problem_id=ocr-0001) has no" in m for m in fails)
    # verl's grpo without the task-level shaping groups nothing by task: no task key needed
    findings, _ = scan_data(
        config(
            data_dir,
            f"data.train_files={tmp_path / 'broken.parquet'}",
            "algorithm.adv_estimator=grpo",
            "g2rpo.length.enable=false",
            "g2rpo.entropy.enable=false",
        )
    )
    assert not any("task_key" in m for m in only(findings, "fail"))


# --- image tokens --------------------------------------------------------------------------
def test_image_budget(data_dir):
    cfg = config(data_dir)
    _, summary = scan_data(cfg)
    assert levels(check_image_tokens(cfg, summary, QWEN3)) == [("image_tokens", "ok")]
    cfg = config(data_dir, "data.max_prompt_length=100")
    fail = check_image_tokens(cfg, summary, QWEN3)
    assert levels(fail) == [("image_tokens", "fail")]
    assert "ground-0001" in fail[0].message and "> data.max_prompt_length=100" in fail[0].message  # the longest prompt
    assert "Image features and image tokens do not match" in fail[0].message


def test_image_budget_uses_real_sizes_and_pixel_bounds(tmp_path):
    shutil.copytree(SAMPLE, tmp_path / "src")
    Image.new("RGB", (2048, 1536), "white").save(tmp_path / "src/images/bars.png")  # a large chart
    big = convert(tmp_path / "big", src=tmp_path / "src")
    cfg = config(big, "data.max_prompt_length=1300")
    records = json.loads((tmp_path / "src/train.json").read_text())
    assert records[0]["images"] == ["images/bars.png"]
    _, summary = scan_data(config(big))
    # 2048×1536 scaled into 1024² pixels on the 32-px grid: 27 × 36 = 972 tokens (+2), plus ~160 of text
    ok = check_image_tokens(cfg, summary, QWEN3)[0]
    assert ok.level == "ok" and "1 image(s) = 974 tokens" in ok.message
    tight = check_image_tokens(config(big, "data.max_prompt_length=1000"), summary, QWEN3)
    assert tight[-1].level == "fail" and "chart-0001" in tight[-1].message
    # no max_pixels in the data: qwen-vl-utils' default would allow 16384 tokens per image
    unbounded = config(tmp_path / "big")
    for sample in summary.samples:
        for image in sample.images:
            image.pop("max_pixels")
    warn = check_image_tokens(unbounded, summary, QWEN3)
    assert any(f.level == "warn" and "have no max_pixels" in f.message for f in warn)


def test_patch_size_mismatch_and_unknown_family(data_dir):
    cfg = config(data_dir, "data.image_patch_size=14")
    _, summary = scan_data(cfg)
    assert any("uses 16-px patches" in m for m in only(check_image_tokens(cfg, summary, QWEN3), "warn"))
    assert only(check_image_tokens(cfg, summary, None), "warn")[0].startswith("unknown vision family")


# --- format tags ---------------------------------------------------------------------------
def test_format_tags(data_dir, tmp_path):
    # the shipped recipe: reference preset (<thinking>), prompts converted with the default preset
    cfg = config(data_dir)
    _, summary = scan_data(cfg)
    assert levels(check_format_tags(cfg, summary)) == [("format_tags", "ok")]

    plain = convert(tmp_path / "plain", "--format-prompt", "")
    cfg = config(plain)
    _, summary = scan_data(cfg)
    warn = check_format_tags(cfg, summary)
    assert levels(warn) == [("format_tags", "warn")]
    assert "8 of 8 prompts do not ask for <thinking>" in warn[0].message and "EasyR1 #597" in warn[0].message
    relaxed = config(plain, "+reward.custom_reward_function.reward_kwargs.format_requires_think=false")
    assert check_format_tags(relaxed, summary)[0].level == "ok"
    thinking = config(plain, "actor_rollout_ref.model.path=Qwen/Qwen3-VL-8B-Thinking")
    assert check_format_tags(thinking, summary)[0].level == "ok"


def test_format_tags_prompt_reward_and_model_must_agree(data_dir, tmp_path):
    _, reference_prompts = scan_data(config(data_dir))  # they ask for <thinking>
    strict = config(data_dir, "reward.custom_reward_function.reward_kwargs.preset=strict")
    fail = check_format_tags(strict, reference_prompts)
    assert levels(fail) == [("format_tags", "fail")]
    assert "prompts ask for <thinking> (8 of 8)" in fail[0].message and "needs <think>" in fail[0].message
    # the mismatch fails for any model: the format reward would be 0 whatever the model writes
    other_model = config(
        data_dir,
        "reward.custom_reward_function.reward_kwargs.preset=strict",
        "actor_rollout_ref.model.path=org/any-vlm",
    )
    assert check_format_tags(other_model, reference_prompts)[0].level == "fail"

    # <think> asked for and required, but Qwen3-VL Instruct does not reliably write it
    think_data = convert(tmp_path / "think", "--preset", "strict")
    _, think_prompts = scan_data(config(think_data))
    warn = check_format_tags(strict, think_prompts)
    assert levels(warn) == [("format_tags", "warn")]
    assert "does not reliably write <think>" in warn[0].message and "preset=reference" in warn[0].message
    thinking_model = config(
        think_data,
        "reward.custom_reward_function.reward_kwargs.preset=strict",
        "actor_rollout_ref.model.path=Qwen/Qwen3-VL-8B-Thinking",
    )
    assert check_format_tags(thinking_model, think_prompts)[0].level == "ok"


# --- driver --------------------------------------------------------------------------------
def test_run_checks_and_cli(data_dir, capsys, monkeypatch):
    # the cluster checks have their own tests (tests/launch/test_cluster_checks.py); skipped by name here
    cluster = ",".join(CLUSTER_CHECKS)
    findings = run_checks(config(data_dir), gpus=lambda: (8.0, "test", True), skip=CLUSTER_CHECKS)
    assert [f.level for f in findings] == ["ok"] * 5
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert {f.check for f in run_checks(config(data_dir), gpus=lambda: (8.0, "test", True))} >= set(CLUSTER_CHECKS)
    with pytest.raises(ValueError, match="unknown check"):
        run_checks(config(data_dir), skip=["gpu"])
    args = [
        f"--config-path={ROOT / 'configs'}",
        "--config-name=g2rpo_qwen3vl8b",
        f"data.train_files={data_dir / 'train.parquet'}",
        f"data.val_files={data_dir / 'val.parquet'}",
    ]
    args += ["--skip", cluster]
    assert preflight.main([*args, "--gpus", "8"]) == 0
    assert preflight.main([*args, "--gpus", "4"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] gpus: --gpus has 4 GPUs but trainer.nnodes=1 × trainer.n_gpus_per_node=8 = 8" in out
    assert "g2rpo-preflight: 1 failed, 0 warning(s)" in out
    assert preflight.main([*args[:-1], f"{cluster},gpus"]) == 0
