"""Tests of the embedded default (g2rpo_verl.demo): tasks, data, config, progress, metrics, plots.

The demo's real runs (``python -m g2rpo_verl.demo`` as ``g2rpo-train`` runs it) are
tests/e2e/test_demo_runs.py.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from g2rpo_verl.demo import data as demo_data
from g2rpo_verl.demo import tasks
from g2rpo_verl.demo.overrides import demo_overrides, flatten, format_value, load_config, override_value
from g2rpo_verl.demo.run_metrics import load_metrics, merge_run_metrics, series, task_names, validation_summary
from g2rpo_verl.demo.trainer_process import parse_step_line
from g2rpo_verl.rewards import compute_score

SOURCES = list(tasks.TASKS)


# ------------------------------------------------------------------------------------------------
# tasks and data
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", SOURCES)
def test_each_task_draws_a_deterministic_image_and_an_answer_its_reward_accepts(source):
    a = [tasks.make_sample(source, random.Random(5)) for _ in range(3)]
    b = [tasks.make_sample(source, random.Random(5)) for _ in range(3)]
    assert [s.image.tobytes() for s in a] == [s.image.tobytes() for s in b]
    rng = random.Random(1)
    for _ in range(30):
        sample = tasks.make_sample(source, rng)
        assert sample.image.size == (tasks.IMAGE_SIZE, tasks.IMAGE_SIZE) and sample.image.mode == "RGB"
        assert sample.question.startswith("<image>") and tasks.TASKS[source].instruction in sample.question
        assert tasks.task_of_prompt(sample.question) == source
        info = {"problem_type": sample.problem_type, "options": sample.options}
        right = compute_score(source, sample.response, sample.answer, info)
        assert right["accuracy"] == 1.0 and right["format"] == 1.0 and right["structure"] == 0.5
        assert right["problem_type"] == sample.problem_type
        wrong = compute_score(source, "<think></think><answer>zebra</answer>", sample.answer, info)
        assert wrong["accuracy"] < 1.0


def test_grounding_boxes_are_on_the_0_1000_scale_and_cover_the_drawn_shape():
    rng = random.Random(2)
    for _ in range(20):
        sample = tasks.make_sample("demo_grounding", rng)
        box = json.loads(sample.answer)["boxes"]
        assert all(v % 250 == 0 and 0 <= v <= 1000 for v in box) and box[0] < box[2] and box[1] < box[3]
        pixels = np.asarray(sample.image).astype(int)
        ink = np.argwhere((pixels != tasks.BACKGROUND).any(axis=-1))  # (row, col) of drawn pixels
        scale = tasks.IMAGE_SIZE / 1000
        assert ink[:, 1].min() >= box[0] * scale and ink[:, 1].max() < box[2] * scale
        assert ink[:, 0].min() >= box[1] * scale and ink[:, 0].max() < box[3] * scale


def test_counting_draws_as_many_dots_as_the_answer():
    from scipy import ndimage

    rng = random.Random(3)
    for _ in range(20):
        sample = tasks.make_sample("demo_counting", rng)
        ink = (np.asarray(sample.image) != tasks.BACKGROUND).any(axis=-1)
        assert ndimage.label(ink)[1] == int(sample.answer)


def test_dataset_files_are_verl_parquet_with_one_validation_file_per_task(tmp_path):
    written = demo_data.write_demo_data(tmp_path / "a", n_train=12, n_val_per_task=3, seed=4)
    again = demo_data.write_demo_data(tmp_path / "b", n_train=12, n_val_per_task=3, seed=4)
    many = demo_data.write_demo_data(tmp_path / "c", n_train=6, n_val_per_task=20, seed=4)
    for source in SOURCES:  # the validation during training: the first prompts of each task's file
        head = pd.read_parquet(many.val_step[source])
        assert len(head) == demo_data.N_VAL_STEP_PER_TASK < 20
        full = pd.read_parquet(many.val[source]).head(demo_data.N_VAL_STEP_PER_TASK)
        assert [r[0]["bytes"] for r in head.images] == [r[0]["bytes"] for r in full.images]
        assert list(head.extra_info.map(lambda e: e["index"])) == list(range(demo_data.N_VAL_STEP_PER_TASK))
    assert demo_data.find_demo_data(tmp_path / "a") == written
    assert demo_data.find_demo_data(tmp_path / "missing") is None
    train = pd.read_parquet(written.train)
    assert written.train.read_bytes() == again.train.read_bytes()  # seeded: identical files
    assert len(train) == 12 and list(train.data_source[: len(SOURCES)]) == SOURCES  # tasks interleave row by row
    assert {"prompt", "images", "data_source", "reward_model", "extra_info", "ability"} <= set(train.columns)
    train_images = {row[0]["bytes"] for row in train.images}
    for source, path in written.val.items():
        val = pd.read_parquet(path)
        assert len(val) == 3 and set(val.data_source) == {source}
        assert set(val.extra_info.map(lambda e: e["split"])) == {"val"}
        assert not {row[0]["bytes"] for row in val.images} <= train_images  # a separate seed stream
    row = train.iloc[2]  # demo_attribute: options travel in extra_info
    assert row.extra_info["problem_type"] == "multiple choice" and len(row.extra_info["options"]) == 4
    assert row.extra_info["split"] == "train" and row.reward_model["ground_truth"] in "ABCD"
    image = tasks.Image.open(io.BytesIO(row.images[0]["bytes"]))
    assert image.size == (64, 64) and row.prompt[0]["content"].startswith("<image>")


# ------------------------------------------------------------------------------------------------
# config -> overrides
# ------------------------------------------------------------------------------------------------
def test_format_value_speaks_hydra():
    assert format_value(True) == "true" and format_value(None) == "null" and format_value(2e-4) == "0.0002"
    assert format_value("pkg://a.b") == "pkg://a.b" and format_value("true") == "'true'"
    assert format_value("it's x") == "'it\\'s x'"
    assert format_value([1, "a"]) == "[1,a]" and format_value({"a": {"b": 1}}) == "{a:{b:1}}"


def test_flatten_keeps_non_identifier_keys_in_one_dict_literal():
    flat = flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {"multiple choice": {"x": 1}, "num": {"x": 2}}})
    assert flat == ["++a.b=1", "++a.c.d=[1,2]", "++e={multiple choice:{x:1},num:{x:2}}"]


def test_demo_config_composes_with_verls_config_and_user_overrides_win(tmp_path):
    from hydra import compose, initialize_config_module

    from g2rpo_verl.config import load_g2rpo_config
    from g2rpo_verl.rewards.settings import settings_from_kwargs

    paths = demo_data.data_paths(tmp_path)
    user = ["algorithm.adv_estimator=grpo", "trainer.total_training_steps=3"]
    overrides = demo_overrides(tmp_path, tmp_path / "model", paths, user)
    assert override_value(overrides, "algorithm.adv_estimator") == "grpo"
    assert override_value(overrides, "trainer.total_training_steps") == "3"
    with initialize_config_module("verl.trainer.config", version_base=None):
        cfg = compose("ppo_trainer", overrides=[o for o in overrides if not o.startswith("++hydra.")])
    assert cfg.algorithm.adv_estimator == "grpo" and cfg.trainer.device == "cpu"
    assert cfg.data.custom_cls.name == "VisionRLHFDataset" and cfg.data.trust_remote_code
    # verl validates on the first prompts of each task; the greedy table at the end uses all of them
    assert list(cfg.data.val_files) == [str(paths.val_step[s]) for s in SOURCES]
    assert cfg.actor_rollout_ref.rollout.name == "hf" and cfg.trainer.save_freq > 0
    g2rpo = load_g2rpo_config(cfg)  # the plugin's section validates
    assert g2rpo.length.enable and g2rpo.entropy.enable
    assert g2rpo.length.rule("multiple choice").profile == "perception"
    assert g2rpo.length.rule("math").profile == "reasoning"
    # every task's band from its own starting entropy, [H0/2, 2·H0], held by the adaptive controller
    entropy = g2rpo.entropy
    assert entropy.controller == "adaptive" and entropy.band_rule == "start" and not entropy.per_task
    assert (entropy.start_low, entropy.start_high, entropy.start_steps) == (0.67, 1.5, 3)
    assert load_config()["algorithm"]["adv_estimator"] == "gs_grpo"
    # the demo scores with the strict preset (its warm start writes <think>; docs/rewards.md)
    reward = settings_from_kwargs(dict(cfg.reward.custom_reward_function.reward_kwargs))
    assert reward.preset == "strict" and reward.think_tag == "think"


@pytest.mark.parametrize(
    ("estimator", "mode", "keys"),
    [
        ("gs_grpo", "reward", None),
        ("grpo", "reward", None),
        ("gs_gdpo", "component", ["accuracy", "format", "structure", "length"]),
    ],
)
def test_each_estimator_gets_a_length_shaping_setting_the_plugin_accepts(tmp_path, estimator, mode, keys):
    from hydra import compose, initialize_config_module

    from g2rpo_verl.config import gdpo_components, load_g2rpo_config

    paths = demo_data.data_paths(tmp_path)
    overrides = demo_overrides(tmp_path, tmp_path / "model", paths, [f"algorithm.adv_estimator={estimator}"])
    with initialize_config_module("verl.trainer.config", version_base=None):
        cfg = compose("ppo_trainer", overrides=[o for o in overrides if not o.startswith("++hydra.")])
    assert load_g2rpo_config(cfg).length.mode == mode
    if keys:
        assert gdpo_components(cfg.algorithm) == (keys, [0.9, 0.1, 1.0, 0.1])
    # the user still wins over what the command adds
    mine = demo_overrides(tmp_path, tmp_path / "m", paths, ["algorithm.adv_estimator=gdpo", "g2rpo.length.enable=true"])
    assert override_value(mine, "g2rpo.length.enable") == "true"


# ------------------------------------------------------------------------------------------------
# progress parsing, metrics, plots
# ------------------------------------------------------------------------------------------------
def test_console_lines_are_parsed_with_numpy_reprs_and_ray_prefixes():
    line = "(TaskRunnerV1 pid=7) step:4 - training/global_step:4 - val-core/demo_ocr/acc/mean@2:np.float64(0.5) - x:abc"
    parsed = parse_step_line(line)
    assert parsed.step == 4 and parsed.metrics["training/global_step"] == 4.0 and parsed.metrics["x"] == "abc"
    assert parsed.validation_accuracy() == {"demo_ocr": 0.5}
    assert parse_step_line("no metrics here") is None


def test_runs_merge_per_step_with_the_later_run_winning(tmp_path):
    first, second = tmp_path / "metrics_1.jsonl", tmp_path / "metrics_2.jsonl"
    first.write_text(
        "\n".join(json.dumps({"step": s, "data": {"a": s, "task_math/reward/total": 0.1 * s}}) for s in (1, 2, 3))
        + "\n{broken"
    )
    second.write_text(json.dumps({"step": 2, "data": {"a": 20, "val-core/demo_math/acc/mean@2": 0.5}}) + "\n")
    merged = merge_run_metrics([first, second], tmp_path / "metrics.jsonl")
    assert merged[2] == {"a": 20, "task_math/reward/total": 0.2, "val-core/demo_math/acc/mean@2": 0.5}
    assert load_metrics([tmp_path / "metrics.jsonl"]) == merged
    assert series(merged, "a") == ([1, 2, 3], [1.0, 20.0, 3.0]) and task_names(merged) == ["math"]


def _synthetic_run(workdir: Path, steps: int = 6) -> dict:
    rng = np.random.default_rng(0)
    metrics = {}
    for step in range(steps + 1):
        data = {}
        if step % 3 == 0:
            data.update({f"val-core/{s}/acc/mean@2": float(rng.random()) for s in SOURCES})
        if step > 0:
            for task in ("spatial_grounding", "numerical", "multiple_choice", "OCR", "math", "regression"):
                data.update(
                    {
                        f"task_{task}/reward/total": float(rng.random()),
                        f"task_{task}/length/mean": float(rng.integers(5, 20)),
                        f"task_{task}/entropy": float(rng.random()),
                        f"task_{task}/entropy/band_low": 0.2,
                        f"task_{task}/entropy/band_high": 0.6 if task != "math" else 0.8,
                        f"task_{task}/length/direction": {"math": 1.0, "numerical": 0.0}.get(task, -1.0),
                        f"task_{task}/length/bound_b": 8.0 + step if task == "math" else 0.0,
                        f"task_{task}/length/bound_c": 12.0 + step if task == "math" else 30.0 - step,
                    }
                )
            # a rollout dump as verl writes it: uid <group>_<rollout>_<output>
            rows = []
            sample_rng = random.Random(step)
            for g in range(2 * len(SOURCES)):
                sample = tasks.make_sample(SOURCES[g % len(SOURCES)], sample_rng)
                for r in range(8):
                    rows.append(
                        {
                            "input": sample.question,
                            "output": "",
                            "score": float(rng.random() > 0.5),
                            "uid": f"u{step}-{g}_{r}_0",
                        }
                    )
            (workdir / "rollouts").mkdir(parents=True, exist_ok=True)
            (workdir / "rollouts" / f"{step}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        metrics[step] = data
    return metrics


def test_plots_are_written_from_metrics_and_rollout_dumps(tmp_path):
    from g2rpo_verl.demo.plots import advantages_by_task, draw_all, load_rollout_batches

    metrics = _synthetic_run(tmp_path)
    paths = draw_all(tmp_path, metrics, entropy_band=(0.2, 0.6), estimator="gs_grpo")
    assert [p.name for p in paths] == ["training_curves.png", "advantages.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
    batches = load_rollout_batches(tmp_path / "rollouts", tasks.task_of_prompt)
    assert len(batches) == 6 and all(len(b) == 16 * len(SOURCES) for b in batches)
    by_task = advantages_by_task(batches)
    assert sorted(by_task) == sorted(SOURCES)
    for values in by_task.values():
        assert len(values["GRPO"]) == len(values["G²RPO"]) == 6 * 16
        assert abs(values["G²RPO"].mean()) < 1e-6  # G²RPO: zero-sum per task in every batch
        assert np.abs(values["G²RPO"]).max() <= 2.5  # |A| <= Φ⁻¹(1 - 0.5/16) ≈ 1.86


def test_shaping_summary_reports_each_tasks_share_in_band_and_length_change():
    from g2rpo_verl.demo.run_metrics import shaping_summary, task_shaping

    metrics = {}
    for step in range(1, 31):
        metrics[step] = {
            # math: outside the band for the first 15 steps, inside after; lengths 10 -> 20
            "task_math/reward/total": 0.5,
            "task_math/entropy": 0.9 if step <= 15 else 0.4,
            "task_math/entropy/band_low": 0.2,
            "task_math/entropy/band_high": 0.6,
            "task_math/length/mean": 10.0 if step <= 5 else 20.0,
            "task_math/length/direction": 1.0,
            # OCR (perception) got longer: the target is missed and the summary says so
            "task_OCR/reward/total": 0.5,
            "task_OCR/entropy": 0.3,
            "task_OCR/entropy/band_low": 0.2,
            "task_OCR/entropy/band_high": 0.6,
            "task_OCR/length/mean": 8.0 + step,
            "task_OCR/length/direction": -1.0,
        }
    math_row, ocr_row = task_shaping(metrics, "math"), task_shaping(metrics, "OCR")
    assert math_row.in_band_last == 15 / 20 and math_row.in_band == 0.5
    assert (math_row.length_first, math_row.length_last, math_row.profile) == (10.0, 20.0, "reasoning")
    assert math_row.length_met is True
    assert ocr_row.in_band_last == 1.0 and ocr_row.length_first == 11.0 and ocr_row.length_last == 33.5
    assert ocr_row.length_met is False
    lines = shaping_summary(metrics)
    assert "last 20 steps" in lines[0]
    assert any(
        line.strip().startswith("math") and "75%" in line and "x2.00" in line and ": yes" in line for line in lines
    )
    assert any(line.strip().startswith("OCR") and "shorter wanted: NO" in line for line in lines)
    assert shaping_summary({1: {"task_math/reward/total": 0.1}}) == []


def test_a_run_with_shaping_off_is_judged_against_the_band_its_rule_would_have_set():
    from g2rpo_verl.config import EntropyShapingConfig
    from g2rpo_verl.demo.run_metrics import replay_bands, task_shaping

    # counting's entropy falls from 0.12 to 0.03 with the shaping off: below [H0/1.5, 1.5·H0]
    h = [0.12, 0.11, 0.13] + [0.03] * 20
    metrics = {s + 1: {"task_numerical/reward/total": 0.5, "task_numerical/entropy": v} for s, v in enumerate(h)}
    cfg = EntropyShapingConfig(band_rule="start", start_steps=3, start_low=0.67, start_high=1.5)
    replayed = replay_bands(metrics, cfg)
    assert "task_numerical/entropy/band_low" not in replayed[2] and "task_numerical/entropy/band_low" not in metrics[3]
    assert replayed[3]["task_numerical/entropy/band_low"] == pytest.approx(0.67 * 0.12)
    assert replayed[23]["task_numerical/entropy/band_high"] == pytest.approx(1.5 * 0.12)
    assert task_shaping(replayed, "numerical").in_band_last == 0.0  # left its band: the collapse shaping prevents
    # a logged band (shaping on) is kept as it is
    metrics[5]["task_numerical/entropy/band_low"] = 0.0
    assert replay_bands(metrics, cfg)[5]["task_numerical/entropy/band_low"] == 0.0


def test_validation_summary_compares_first_and_last_validation():
    metrics = {
        0: {"val-core/demo_ocr/acc/mean@2": 0.25, "val-aux/demo_ocr/reward/mean@2": 0.5},
        5: {"x": 1.0},
        10: {"val-core/demo_ocr/acc/mean@2": 0.75, "val-aux/demo_ocr/reward/mean@2": 1.25},
    }
    lines = validation_summary(metrics)
    assert "step 0 -> step 10 (mean@2 per prompt)" in lines[0]
    assert "accuracy 0.250 -> 0.750 (+0.500)" in lines[1] and "reward 0.500 -> 1.250 (+0.750)" in lines[1]
    assert validation_summary({0: metrics[0]}) == []


def test_the_demo_reads_the_last_step_from_verls_checkpoint_tracker(tmp_path):
    from verl.utils.checkpoint.checkpoint_manager import get_checkpoint_tracker_filename

    from g2rpo_verl.demo.run import last_checkpoint_step

    assert last_checkpoint_step(tmp_path) is None
    Path(get_checkpoint_tracker_filename(str(tmp_path))).write_text("30")
    assert last_checkpoint_step(tmp_path) == 30


def test_wandb_is_used_only_when_configured(tmp_path):
    from g2rpo_verl.demo.run import trainer_environment, wandb_configured

    netrc = tmp_path / "netrc"
    assert not wandb_configured({"NETRC": str(netrc)})
    assert wandb_configured({"WANDB_API_KEY": "k", "NETRC": str(netrc)})
    assert not wandb_configured({"WANDB_API_KEY": "k", "WANDB_MODE": "disabled"})
    netrc.write_text("machine api.wandb.ai login user password k\n")
    assert wandb_configured({"NETRC": str(netrc)})
    env = trainer_environment(tmp_path, tmp_path / "m.jsonl", use_wandb=False)
    assert env["WANDB_MODE"] == "disabled" and env["VERL_FILE_LOGGER_PATH"] == str(tmp_path / "m.jsonl")
    assert env["VERL_PLATFORM"] == "cpu"


# ------------------------------------------------------------------------------------------------
# the demo model
# ------------------------------------------------------------------------------------------------
def test_demo_model_is_a_tiny_qwen3_vl_that_verl_can_load(tmp_path):
    from verl.utils.tokenizer import hf_processor

    from g2rpo_verl.cpu.hf_generation import load_hf_model
    from g2rpo_verl.demo.model import build_demo_model, sample_messages

    out = build_demo_model(tmp_path / "model", seed=0, warm_start_steps=2, log=lambda _: None)
    model = load_hf_model(str(out))
    assert model.config.model_type == "qwen3_vl" and sum(p.numel() for p in model.parameters()) < 2_000_000
    processor = hf_processor(str(out), trust_remote_code=True)
    sample = tasks.make_sample("demo_counting", random.Random(0))
    text = processor.apply_chat_template(sample_messages(sample), add_generation_prompt=True, tokenize=False)
    ids = processor(text=[text], images=[sample.image], return_tensors="pt")["input_ids"][0]
    assert int((ids == processor.image_token_id).sum()) == 4 and len(ids) <= 96
    # every warm-start response, with its closing EOS, fits the demo's max_response_length
    from g2rpo_verl.demo.model import response_variants
    from g2rpo_verl.demo.overrides import load_config

    limit = load_config()["data"]["max_response_length"]
    rng = random.Random(1)
    for source in SOURCES:
        for text in response_variants(tasks.make_sample(source, rng)).values():
            assert len(processor.tokenizer(text, add_special_tokens=False)["input_ids"]) + 1 <= limit, text
    assert build_demo_model(tmp_path / "model", seed=0, warm_start_steps=2, log=lambda _: None) == out  # reused


def test_paired_runs_pool_the_prompts_of_every_seed_pair(tmp_path, capsys):
    from g2rpo_verl.demo.paired_runs import main, pooled_records

    def write(run: str, accuracies: list[float]) -> Path:
        out = tmp_path / run / "eval" / "trained"
        out.mkdir(parents=True)
        rows = [
            {"key": f"k{i}", "file": f"/x/{run}/val_demo_math.parquet", "row": i, "task": "math"}
            | {"reward": {"accuracy": a, "score": a}}
            for i, a in enumerate(accuracies)
        ]
        (out / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return tmp_path / run

    a = [write("on0", [1, 0]), write("on1", [1, 1])]
    b = [write("off0", [0, 0]), write("off1", [1, 0])]
    # the same file name and row in two seeds are two prompts, not one
    assert len({(r["file"], r["row"]) for r in pooled_records(a, "trained")}) == 4
    assert main(["--a", *map(str, a), "--b", *map(str, b), "--names", "on", "off"]) == 0
    out = capsys.readouterr().out
    assert "| (all) | 4 | 0.750 | 0.250 | -0.500" in out
    with pytest.raises(SystemExit):
        main(["--a", str(a[0]), "--b", *map(str, b)])
