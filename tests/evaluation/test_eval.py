"""Tests of ``g2rpo-eval`` (g2rpo_verl.evaluation): metrics, resume, comparison, hand-off, the CLI.

Worked examples and properties run on hand-made records in milliseconds; one module-scoped
fixture builds the demo's tiny Qwen3-VL (a short warm start) and its validation files and
evaluates it in-process (the whole file: about 20 s on 2 cores). The export of a real verl checkpoint and the
demo's base-vs-trained table are checked by the demo's end-to-end test (tests/e2e/test_demo_runs.py),
which trains and checkpoints anyway.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from g2rpo_verl.demo.tasks import TASKS as DEMO_TASKS
from g2rpo_verl.evaluation import eval_cli as cli
from g2rpo_verl.evaluation.aggregates import IOU_THRESHOLDS, compute_metrics, group_metrics
from g2rpo_verl.evaluation.eval_loop import EvalSettings, evaluate
from g2rpo_verl.evaluation.generation import Decoding, select_backend
from g2rpo_verl.evaluation.handoff import LMMS_EVAL_TASKS, VLMEVALKIT_DATA, lmms_eval_commands, write_handoff
from g2rpo_verl.evaluation.paired import compare_records, paired_delta
from g2rpo_verl.evaluation.predictions import PredictionStore
from g2rpo_verl.evaluation.run_config import load_run_config

N_VAL = 4  # validation prompts per demo task in the fixture


def _record(row: int, task: str = "OCR", acc: float = 1.0, sample: int = 0, **reward) -> dict:
    base = {
        "score": 0.9 * acc + 0.1 * reward.get("format", 1.0) + reward.get("structure", 0.5),
        "accuracy": acc,
        "format": 1.0,
        "structure": 0.5,
        "reward_failure": 0.0,
        "problem_type": task,
    }
    base.update(reward)
    return {
        "key": f"f.parquet:{row}#{sample}",
        "file": "/d/f.parquet",
        "row": row,
        "sample": sample,
        "id": row,
        "data_source": f"ds_{task}",
        "task": task,
        "response_tokens": 10 + row,
        "finish_reason": "stop",
        "reward": base,
    }


# ------------------------------------------------------------------------------------------------
# metrics: worked examples and properties
# ------------------------------------------------------------------------------------------------
def test_group_metrics_worked_example():
    records = [
        _record(0, acc=1.0),
        _record(1, acc=0.0, format=0.0, structure=0.0),
        _record(2, acc=0.5, reward_failure=1.0),
        {**_record(3, acc=1.0), "finish_reason": "length"},
    ]
    m = group_metrics(records)
    assert m["prompts"] == m["samples"] == 4
    assert m["accuracy"] == pytest.approx(0.625)
    assert m["format_rate"] == pytest.approx(0.75) and m["structure_rate"] == pytest.approx(0.75)
    assert m["response_length"] == pytest.approx(11.5) and m["truncated_rate"] == pytest.approx(0.25)
    assert m["reward_failures"] == 1 and "grounding" not in m and "pass@1" not in m
    assert m["reward"] == pytest.approx(np.mean([r["reward"]["score"] for r in records]))


def test_grounding_recall_at_thresholds_and_pass_at_n():
    ious = [0.29, 0.3, 0.5, 0.69, 0.7, 1.0]
    records = [_record(i // 2, "spatial grounding", iou, sample=i % 2) for i, iou in enumerate(ious)]
    m = group_metrics(records, n=2)
    g = m["grounding"]
    assert g["samples"] == 6 and g["mean_iou"] == pytest.approx(np.mean(ious))
    assert (g["R@0.3"], g["R@0.5"], g["R@0.7"]) == (pytest.approx(5 / 6), pytest.approx(4 / 6), pytest.approx(2 / 6))
    assert m["prompts"] == 3 and m["mean@2"] == m["accuracy"]
    assert m["pass@2"] == pytest.approx(np.mean([0.3, 0.69, 1.0]))  # best of each prompt's two


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=40))
def test_recall_at_t_is_the_share_of_grounding_samples_with_iou_at_least_t(ious):
    records = [_record(i, "spatial grounding", iou) for i, iou in enumerate(ious)] + [_record(99, "OCR", 0.9)]
    m = compute_metrics(records)
    for group in (m["overall"], m["by_task"]["spatial grounding"]):
        for t in IOU_THRESHOLDS:
            assert group["grounding"][f"R@{t}"] == pytest.approx(sum(iou >= t for iou in ious) / len(ious))
    assert "grounding" not in m["by_task"]["OCR"]


def test_metrics_group_by_data_source_and_by_task():
    records = [_record(0, "OCR", 1.0), _record(1, "OCR", 0.0), _record(2, "math", 1.0)]
    m = compute_metrics(records)
    assert sorted(m["by_task"]) == ["OCR", "math"] and sorted(m["by_data_source"]) == ["ds_OCR", "ds_math"]
    assert m["by_task"]["OCR"]["accuracy"] == 0.5 and m["overall"]["accuracy"] == pytest.approx(2 / 3)


def test_a_reward_without_components_reports_them_as_missing():
    records = [{**_record(0), "reward": {"score": 1.0}}]
    m = group_metrics(records)
    assert m["accuracy"] == 1.0 and m["format_rate"] is None and m["structure_rate"] is None


# ------------------------------------------------------------------------------------------------
# predictions.jsonl
# ------------------------------------------------------------------------------------------------
def test_a_partial_last_line_is_dropped_and_the_file_repaired(tmp_path):
    store = PredictionStore(tmp_path / "p.jsonl")
    store.append([_record(0), _record(1)])
    with store.path.open("ab") as f:
        f.write(b'{"key": "f.parquet:2#0", "resp')  # a crash in the middle of a write
    assert [r["row"] for r in store.load()] == [0, 1]
    assert store.path.read_bytes().endswith(b"}\n")  # truncated to the last complete record
    store.append([_record(2)])
    assert store.done_keys() == {"f.parquet:0#0", "f.parquet:1#0", "f.parquet:2#0"}


def test_a_foreign_line_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"key": "a"}\nnot json\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:2"):
        PredictionStore(path).load()


# ------------------------------------------------------------------------------------------------
# comparison
# ------------------------------------------------------------------------------------------------
def test_paired_delta_worked_examples():
    same = paired_delta([0, 1, 0.5], [0, 1, 0.5])
    assert (same.delta, same.low, same.high) == (0, 0, 0)
    shift = paired_delta([0.1, 0.2, 0.3], [0.3, 0.4, 0.5])  # every pair +0.2: no uncertainty
    assert shift.delta == pytest.approx(0.2) and shift.low == pytest.approx(0.2) and shift.high == pytest.approx(0.2)
    rng = np.random.default_rng(0)
    a = rng.random(200)
    b = a + 0.1 + rng.normal(0, 0.05, 200)
    d = paired_delta(a, b)
    assert d.low < d.delta < d.high and d.low > 0.08 and d.high < 0.12
    # the paired interval is much narrower than the spread of the prompts themselves
    assert d.high - d.low < 0.1 * (a.max() - a.min())


def test_compare_pairs_prompts_per_task_and_counts_unpaired():
    a = [_record(0, "OCR", 0.0), _record(1, "OCR", 1.0), _record(2, "math", 0.0), _record(3, "math", 0.0)]
    b = [_record(0, "OCR", 1.0), _record(1, "OCR", 1.0), _record(2, "math", 1.0)]
    rows = {r.task: r for r in compare_records(a, b)}
    assert rows["OCR"].prompts == 2 and rows["OCR"].accuracy.delta == pytest.approx(0.5)
    assert rows["math"].prompts == 1 and rows["math"].unpaired == 1 and rows["math"].accuracy.delta == 1.0
    assert rows["(all)"].prompts == 3 and rows["(all)"].unpaired == 1
    with pytest.raises(ValueError, match="share no prompt"):
        compare_records(a, [{**_record(9), "file": "/other.parquet"}])


# ------------------------------------------------------------------------------------------------
# hand-off configs
# ------------------------------------------------------------------------------------------------
def test_handoff_configs_point_at_the_exported_model(tmp_path):
    model = tmp_path / "hf"
    model.mkdir()
    with pytest.raises(FileNotFoundError, match="not an HF model directory"):
        write_handoff(model, tmp_path / "out")
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"x")
    paths = write_handoff(model, tmp_path / "out", name="mine", max_new_tokens=64)
    config = json.loads(paths["vlmevalkit"].read_text())
    entry = config["model"]["mine"]
    assert entry["class"] == "Qwen3VLChat" and entry["model_path"] == str(model.resolve())
    assert entry["max_new_tokens"] == 64 and entry["do_sample"] is False
    assert config["data"] == {name: {"class": cls, "dataset": name} for name, cls in VLMEVALKIT_DATA.items()}
    assert {"MathVista_MINI", "MMMU_DEV_VAL"} <= set(config["data"])
    script = paths["lmms_eval"].read_text()
    for cmd, task in zip(lmms_eval_commands(model), LMMS_EVAL_TASKS, strict=True):
        assert cmd[cmd.index("--model") + 1] == "qwen3_vl"
        assert cmd[cmd.index("--model_args") + 1] == f"pretrained={model.resolve()}"
        assert cmd[cmd.index("--tasks") + 1] == task
        assert " ".join(cmd) in script
    assert {"mathvista_testmini", "mmmu_val", "refcoco_bbox_rec_val"} == set(LMMS_EVAL_TASKS)
    from support.tools import shellcheck_binary

    lint = subprocess.run([shellcheck_binary(), str(paths["lmms_eval"])], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout


# ------------------------------------------------------------------------------------------------
# --model forms and the run config next to a checkpoint
# ------------------------------------------------------------------------------------------------
def _fake_checkpoint(root: Path, step: int) -> Path:
    actor = root / "checkpoints" / f"global_step_{step}" / "actor"
    (actor / "huggingface").mkdir(parents=True)
    (actor / "fsdp_config.json").write_text('{"FSDP_version": 2, "world_size": 1}')
    (root / "checkpoints" / "latest_checkpointed_iteration.txt").write_text(str(step))
    return actor


def test_model_forms_resolve_to_the_actor_checkpoint_or_the_hf_directory(tmp_path):
    from g2rpo_verl.evaluation.checkpoint import resolve_model

    actor = _fake_checkpoint(tmp_path, 7)
    for form in (actor, actor.parent, tmp_path / "checkpoints"):
        source = resolve_model(form)
        assert (source.kind, source.path, source.step) == ("checkpoint", actor, 7)
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    (hf / "model.safetensors").write_bytes(b"x")
    assert resolve_model(hf).kind == "hf"
    with pytest.raises(FileNotFoundError, match="neither an HF model directory .* nor a verl checkpoint"):
        resolve_model(tmp_path)
    (tmp_path / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("9")
    with pytest.raises(FileNotFoundError, match="names step '9'"):
        resolve_model(tmp_path / "checkpoints")


def test_the_run_config_is_found_only_when_it_belongs_to_the_checkpoint(tmp_path):
    from g2rpo_verl.evaluation.checkpoint import find_run_config, resolve_model

    actor = _fake_checkpoint(tmp_path, 3)
    source = resolve_model(actor)
    assert find_run_config(source) is None
    config = tmp_path / "hydra" / ".hydra" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(f"trainer:\n  default_local_dir: {tmp_path / 'elsewhere'}\n")
    assert find_run_config(source) is None  # another run's config
    config.write_text(f"trainer:\n  default_local_dir: {tmp_path / 'checkpoints'}\n")
    assert find_run_config(source) == config


# ------------------------------------------------------------------------------------------------
# settings and errors
# ------------------------------------------------------------------------------------------------
def test_decoding_rejects_what_cannot_be_done():
    with pytest.raises(ValueError, match="--n > 1 needs --temperature"):
        Decoding(max_new_tokens=8, n=4)
    with pytest.raises(ValueError, match="--max-new-tokens"):
        Decoding(max_new_tokens=0)
    assert Decoding(max_new_tokens=8).greedy and not Decoding(max_new_tokens=8, n=2, temperature=1.0).greedy


def test_two_data_files_with_one_name_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    files = (str(tmp_path / "a" / "val.parquet"), str(tmp_path / "b" / "val.parquet"))
    settings = EvalSettings(
        model="m", model_dir="m", data=files, decoding=Decoding(max_new_tokens=4), run=load_run_config(None)
    )
    with pytest.raises(ValueError, match=r"file names must be distinct, got \['val.parquet', 'val.parquet'\]"):
        evaluate(settings, tmp_path / "out", progress=False, log=lambda _: None)


def test_run_config_passes_reward_kwargs_through(tmp_path):
    yaml = tmp_path / "config.yaml"
    yaml.write_text(
        "reward:\n  custom_reward_function:\n    path: pkg://g2rpo_verl.rewards\n    name: compute_score\n"
        "    reward_kwargs: {preset: reference, format_weight: 0.2}\n"
        "data: {max_response_length: 77, prompt_key: prompt}\ng2rpo: {task_key: data_source}\n"
    )
    run = load_run_config(yaml)
    assert run.reward_kwargs == {"preset": "reference", "format_weight": 0.2} and run.task_key == "data_source"
    assert run.data["max_response_length"] == 77 and run.describe()["source"] == str(yaml)
    defaults = load_run_config(None)
    assert defaults.reward_path == "pkg://g2rpo_verl.rewards" and defaults.task_key == "problem_type"
    assert "defaults" in defaults.source


# ------------------------------------------------------------------------------------------------
# the demo's tiny model on its validation files
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    from g2rpo_verl.demo.data import write_demo_data
    from g2rpo_verl.demo.model import build_demo_model

    root = tmp_path_factory.mktemp("eval")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = build_demo_model(root / "model", seed=0, warm_start_steps=60, log=lambda _: None)
    data = write_demo_data(root / "data", n_train=len(DEMO_TASKS), n_val_per_task=N_VAL, seed=0)
    yield root, model, data
    torch.set_num_threads(threads)


def _settings(model: Path, data, **kw) -> EvalSettings:
    return EvalSettings(
        model=str(model),
        model_dir=str(model),
        data=tuple(str(p) for p in data.val_files),
        decoding=Decoding(max_new_tokens=32),
        run=load_run_config(None),
        backend="hf",
        batch_size=kw.pop("batch_size", 8),
        **kw,
    )


@pytest.fixture(scope="module")
def tiny_eval(tiny_demo):
    root, model, data = tiny_demo
    out = root / "out"
    result = evaluate(_settings(model, data), out, progress=False, log=lambda _: None)
    return root, model, data, out, result


def test_eval_of_the_demo_model_writes_every_field_per_sample(tiny_eval):
    _, _, data, out, result = tiny_eval
    records = PredictionStore(out / "predictions.jsonl").load()
    assert len(records) == len(DEMO_TASKS) * N_VAL and len({r["key"] for r in records}) == len(records)
    for r in records:
        assert {"data_source", "task", "id", "prompt", "response", "ground_truth", "extra_info", "reward"} <= set(r)
        assert {"score", "accuracy", "format", "structure", "reward_failure"} <= set(r["reward"])
        assert r["prompt"][0]["content"].startswith("<image>") and 1 <= r["response_tokens"] <= 32
    assert sorted(result["by_data_source"]) == sorted(data.val)
    assert sorted(result["by_task"]) == sorted({spec.problem_type for spec in DEMO_TASKS.values()})
    assert "grounding" in result["by_task"]["spatial grounding"]
    report = (out / "report.md").read_text()
    assert "| spatial grounding |" in report and "greedy" in report


def test_metrics_json_is_recomputed_exactly_from_predictions(tiny_eval):
    _, _, _, out, _ = tiny_eval
    saved = json.loads((out / "metrics.json").read_text())
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    again = json.loads(json.dumps(compute_metrics(records)))
    assert {k: saved[k] for k in ("overall", "by_data_source", "by_task")} == again
    grounding = [r for r in records if r["task"] == "spatial grounding"]
    share = sum(r["reward"]["accuracy"] >= 0.5 for r in grounding) / len(grounding)
    assert saved["by_task"]["spatial grounding"]["grounding"]["R@0.5"] == pytest.approx(share)


def test_greedy_responses_are_the_model_s_own_single_prompt_greedy_responses(tiny_eval):
    """Batching and scoring do not change what the model says: row by row through the hf engine."""
    from g2rpo_verl.evaluation.generation import HFBackend
    from g2rpo_verl.evaluation.prompts import PromptBuilder

    _, model, data, out, _ = tiny_eval
    records = {r["key"]: r for r in PredictionStore(out / "predictions.jsonl").load()}
    builder = PromptBuilder(str(model), load_run_config(None))
    backend = HFBackend(str(model), builder.tokenizer, builder.processor)
    path = data.val_files[0]
    for prompt in builder.prompts(path, [0, 3]):
        (alone,) = backend.generate([prompt], Decoding(max_new_tokens=32), 0)[0]
        assert records[f"{Path(path).name}:{prompt.row}#0"]["response"] == alone.text


def test_a_rerun_resumes_after_a_crash_and_refuses_other_settings(tiny_eval, tmp_path):
    root, model, data, out, result = tiny_eval
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    for name in ("settings.json", "predictions.jsonl"):
        (resumed / name).write_bytes((out / name).read_bytes())
    lines = (resumed / "predictions.jsonl").read_bytes().splitlines(keepends=True)
    (resumed / "predictions.jsonl").write_bytes(b"".join(lines[:7]) + lines[7][:30])  # crash mid-record
    again = evaluate(_settings(model, data, batch_size=5), resumed, progress=False, log=lambda _: None)
    keys = lambda p: sorted(json.loads(line)["key"] for line in p.read_text().splitlines())  # noqa: E731
    assert keys(resumed / "predictions.jsonl") == keys(out / "predictions.jsonl")  # each response once
    assert {k: again[k] for k in ("overall", "by_task")} == {k: result[k] for k in ("overall", "by_task")}
    with pytest.raises(ValueError, match=r"max_new_tokens: 32 -> 16"):
        evaluate(
            EvalSettings(**{**_settings(model, data).__dict__, "decoding": Decoding(max_new_tokens=16)}),
            resumed,
            progress=False,
            log=lambda _: None,
        )


def test_vllm_asked_for_but_missing_fails_before_any_model_loads(tiny_demo, tmp_path, capsys, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here: the missing-vllm error cannot occur")
    with pytest.raises(RuntimeError, match="vllm is not installed"):
        select_backend("vllm")
    assert select_backend("auto") == "hf"  # no vLLM (and no GPU): HF generate
    _, model, data = tiny_demo
    loaded = []
    monkeypatch.setattr("g2rpo_verl.cpu.hf_generation.load_hf_model", lambda *a, **k: loaded.append(a))
    out = tmp_path / "o"
    argv = ["--model", str(model), "--data", str(data.val_files[0]), "--out", str(out), "--backend", "vllm"]
    code = cli.main([*argv, "--config", "defaults"])
    assert code == 2 and "--backend vllm: vllm is not installed" in capsys.readouterr().err
    assert not loaded and not out.exists()


def test_cli_evaluates_and_compares(tiny_eval, tmp_path, capsys):
    root, model, data, out, _ = tiny_eval
    files = [str(p) for p in data.val_files[:2]]
    code = cli.main(
        [
            "--model",
            str(model),
            "--data",
            *files,
            "--out",
            str(tmp_path / "cli"),
            "--max-new-tokens",
            "32",
            "--no-progress",
            "--limit",
            "2",
            "--config",
            "defaults",  # a bare HF model: no run config to find, the project's defaults on purpose
        ]
    )
    assert code == 0 and "## Per task" in capsys.readouterr().out
    assert len(PredictionStore(tmp_path / "cli" / "predictions.jsonl").load()) == 4
    assert cli.main(["--compare", str(out), str(tmp_path / "cli")]) == 0
    printed = capsys.readouterr().out
    assert "paired bootstrap" in printed and "+0.000 [+0.000, +0.000]" in printed  # same model, same prompts
    assert cli.main(["--model", str(model), "--data", str(root / "missing.parquet"), "--out", str(tmp_path / "x")]) == 2
    assert "missing.parquet: no such file" in capsys.readouterr().err


def test_sampled_evaluation_reports_mean_and_pass_at_n(tiny_eval, tmp_path):
    _, model, data, _, _ = tiny_eval
    sampled = EvalSettings(
        model=str(model),
        model_dir=str(model),
        data=(str(data.val_files[0]),),
        run=load_run_config(None),
        decoding=Decoding(max_new_tokens=32, n=3, temperature=1.0),
        backend="hf",
        limit=2,
    )
    result = evaluate(sampled, tmp_path / "sampled", progress=False, log=lambda _: None)
    records = PredictionStore(tmp_path / "sampled" / "predictions.jsonl").load()
    assert sorted((r["row"], r["sample"]) for r in records) == [(row, s) for row in range(2) for s in range(3)]
    overall = result["overall"]
    assert overall["prompts"] == 2 and overall["samples"] == 6 and overall["mean@3"] == overall["accuracy"]
    best = [max(r["reward"]["accuracy"] for r in records if r["row"] == row) for row in range(2)]
    assert overall["pass@3"] == pytest.approx(np.mean(best))
