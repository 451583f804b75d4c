"""``g2rpo-data convert``: OneThinker JSON -> verl parquet, errors, atomic output."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from g2rpo_verl.data import ConvertOptions, RecordError, convert_record
from g2rpo_verl.data.data_cli import main
from g2rpo_verl.data.writer import split_per_task, task_file_name, write_outputs

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "onethinker_sample"


def record(**changes):
    base = {
        "problem_id": "p1",
        "problem": "<image> How many dots?",
        "data_type": "image",
        "problem_type": "numerical",
        "task_type": "general_vqa",
        "options": [],
        "data_source": "src",
        "answer": "<answer>7</answer>",
        "images": ["images/dots7.png"],
    }
    base.update(changes)
    return base


OPTS = ConvertOptions(image_root=SAMPLE)


def test_sample_data_is_small_and_complete():
    size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert size < 200_000
    for name in ("train.json", "val.json"):
        for rec in json.loads((SAMPLE / name).read_text()):
            convert_record(rec, 0, "train", OPTS)  # every sample record converts


def test_row_matches_verl_multimodal_dataset():
    row = convert_record(record(), 3, "train", OPTS)
    assert row["prompt"][0]["role"] == "user"
    assert row["prompt"][0]["content"].startswith("<image> How many dots?")
    assert "<thinking> </thinking>" in row["prompt"][0]["content"]  # the reference preset's tag
    assert "only the number" in row["prompt"][0]["content"]  # the numerical instruction
    (image,) = row["images"]
    assert image == {"image": str((SAMPLE / "images/dots7.png").resolve()), "min_pixels": 3136, "max_pixels": 1048576}
    assert row["reward_model"] == {"style": "rule", "ground_truth": "7"}
    assert row["data_source"] == "src" and row["ability"] == "general_vqa"
    assert row["extra_info"] == {
        "problem_id": "p1",
        "problem_type": "numerical",
        "task_type": "general_vqa",
        "options": [],
        "data_type": "image",
        "index": 3,
        "split": "train",
    }


def test_verl_builds_the_chat_messages_from_the_row():
    from verl.utils.dataset.rl_dataset import RLHFDataset

    row = convert_record(
        record(problem="<image> <image> Compare.", images=["images/dots3.png", "images/dots7.png"]), 0, "train", OPTS
    )
    ds = RLHFDataset.__new__(RLHFDataset)  # only the message builder, no tokenizer / processor files
    ds.image_key, ds.video_key, ds.audio_key, ds.processor = "images", "videos", "audios", object()
    messages = ds._build_messages(json.loads(json.dumps(row)), "prompt")
    kinds = [part["type"] for part in messages[0]["content"]]
    assert kinds == ["image", "text", "image", "text"]
    assert messages[0]["content"][0]["max_pixels"] == 1048576


@pytest.mark.parametrize(
    "problem_type,answer,asks",
    [
        ("spatial grounding", '<answer>{"boxes": [1, 2, 3, 4]}</answer>', 'JSON with the key "boxes"'),
        ("multiple choice", "<answer>B</answer>", "only the letter of the correct option"),
        ("OCR", "<answer>STOP</answer>", "exactly as it is written"),
        ("math", "<answer>\\frac{1}{2}</answer>", "a number or a LaTeX expression"),
    ],
)
def test_default_prompts_ask_for_each_problem_types_answer_with_the_presets_tag(problem_type, answer, asks):
    rec = record(problem_type=problem_type, answer=answer)
    reference = convert_record(rec, 0, "train", OPTS)["prompt"][0]["content"]
    assert asks in reference and "<thinking> </thinking>" in reference and "<answer> </answer>" in reference
    strict = convert_record(rec, 0, "train", ConvertOptions(image_root=SAMPLE, preset="strict"))["prompt"][0]["content"]
    assert "<think> </think>" in strict and asks in strict
    custom = convert_record(rec, 0, "train", ConvertOptions(image_root=SAMPLE, think_tag="reasoning"))["prompt"][0][
        "content"
    ]
    assert "<reasoning> </reasoning>" in custom


def test_the_grounding_example_is_what_the_reference_reward_reads():
    """Each prompt's example answer, given back, is read by the reward: full score (1.5) under
    ``reference`` for every type the authors' reward scores. Free-form is not one of them
    (``unscored_types: zero``, docs/rewards.md): there the example still earns format and
    structure (0.1 + 0.5) but no accuracy, as in the paper's reward, and the full 1.5 with
    ``unscored_types: free_form`` (strict's value)."""
    from g2rpo_verl.data.onethinker import ANSWER_FORMS
    from g2rpo_verl.rewards import compute_score
    from g2rpo_verl.rewards.accuracy import FREE_FORM

    for problem_type, (_, example) in ANSWER_FORMS.items():
        out = compute_score(
            "s",
            f"<thinking>r</thinking><answer>{example}</answer>",
            example,
            {"problem_type": problem_type},
            preset="reference",
        )
        assert (out["format"], out["structure"], out["reward_failure"]) == (1.0, 0.5, 0.0), problem_type
        assert out["accuracy"] == (0.0 if problem_type == FREE_FORM else 1.0), problem_type
        scored = compute_score(
            "s",
            f"<thinking>r</thinking><answer>{example}</answer>",
            example,
            {"problem_type": problem_type},
            preset="reference",
            unscored_types="free_form",
        )
        assert scored["score"] == pytest.approx(1.5), problem_type


def test_bad_preset_or_tag_is_an_error():
    with pytest.raises(ValueError, match="preset"):
        ConvertOptions(preset="paper")
    with pytest.raises(ValueError, match="think_tag"):
        ConvertOptions(think_tag="<think>")


def test_problem_type_is_canonicalised_and_options_appended():
    row = convert_record(
        record(problem_type="multiple_choice", options=["A. red", "B. blue"], problem="<image> Which colour?"),
        0,
        "train",
        ConvertOptions(image_root=SAMPLE, format_prompt=""),
    )
    assert row["extra_info"]["problem_type"] == "multiple choice"
    assert row["prompt"][0]["content"] == "<image> Which colour?\nOptions:\nA. red\nB. blue"
    row = convert_record(record(options=["A. red"], problem="<image> Which? A. red"), 0, "train", OPTS)
    assert row["prompt"][0]["content"].count("A. red") == 1  # already in the question


def test_embedded_images_carry_bytes():
    row = convert_record(record(), 0, "train", ConvertOptions(image_root=SAMPLE, embed_images=True))
    assert row["images"][0]["bytes"] == (SAMPLE / "images/dots7.png").read_bytes()
    assert "image" not in row["images"][0]


@pytest.mark.parametrize(
    "changes, field, message",
    [
        ({"images": ["images/nope.png"]}, "images[0]", "image file not found"),
        ({"problem_type": "poetry"}, "problem_type", "unknown problem type 'poetry'"),
        ({"problem": "How many dots?"}, "problem", "no <image> placeholder for 1 image"),
        ({"problem": "<image> <image> x"}, "problem", "2 <image> placeholder(s) for 1 image"),
        ({"answer": ""}, "answer", "missing or empty"),
        ({"answer": "<answer> </answer>"}, "answer", "empty <answer> block"),
        ({"task_type": None}, "task_type", "non-empty string"),
        ({"options": "A, B"}, "options", "list of strings"),
        ({"data_type": "video"}, "data_type", "only 'image'"),
    ],
)
def test_errors_name_record_id_and_field(changes, field, message):
    with pytest.raises(RecordError, match=re.escape(f"record 5 (problem_id='p1'), field '{field}'")) as err:
        convert_record(record(**changes), 5, "train", OPTS)
    assert message in str(err.value)


def test_split_per_task_is_stratified_and_seeded():
    rows = [{"t": t, "i": i} for i, t in enumerate("a" * 10 + "b" * 3 + "c")]
    train, val = split_per_task(rows, lambda r: r["t"], 0.2, seed=1)
    assert sorted(r["t"] for r in val) == ["a", "a", "b"]  # 2 of 10, >=1 of 3, none of a single row
    assert len(train) + len(val) == len(rows)
    assert split_per_task(rows, lambda r: r["t"], 0.2, seed=1) == (train, val)
    with pytest.raises(ValueError, match="val-fraction"):
        split_per_task(rows, lambda r: r["t"], 1.0, seed=0)


def test_task_file_name():
    assert task_file_name("spatial grounding") == "val_spatial_grounding.parquet"
    assert task_file_name("multiple choice") == "val_multiple_choice.parquet"


def test_cli_converts_the_sample(tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(["convert", "--input", str(SAMPLE / "train.json"), "--val", str(SAMPLE / "val.json"), "--out", str(out)])
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"] == ["train.parquet", "val.parquet", "val_OCR.parquet", "val_numerical.parquet"]
    assert manifest["max_images_per_sample"] == 2 and manifest["rows"]["train.parquet"] == 6
    train = pd.read_parquet(out / "train.parquet")
    assert list(train.columns) == ["data_source", "prompt", "images", "ability", "reward_model", "extra_info"]
    ocr = pd.read_parquet(out / "val_OCR.parquet")
    assert len(ocr) == 1 and ocr.iloc[0]["extra_info"]["split"] == "val"
    assert not list(out.glob(".*tmp"))


def test_cli_val_fraction_and_jsonl(tmp_path):
    records = json.loads((SAMPLE / "train.json").read_text())
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records * 4) + "\n")
    shutil.copytree(SAMPLE / "images", tmp_path / "images")
    out = tmp_path / "out"
    assert main(["convert", "--input", str(jsonl), "--val-fraction", "0.25", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"]["train.parquet"] + manifest["rows"]["val.parquet"] == 24
    assert set(manifest["tasks"]["val"]) == set(manifest["tasks"]["train"])  # every task validated


def test_cli_bad_records_write_nothing_and_keep_old_output(tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(["convert", "--input", str(SAMPLE / "train.json"), "--val", str(SAMPLE / "val.json"), "--out", str(out)])
        == 0
    )
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = json.loads((SAMPLE / "train.json").read_text())
    bad[2]["problem_type"] = "haiku"
    bad[4]["images"] = ["images/missing.png"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    shutil.copytree(SAMPLE / "images", tmp_path / "images")
    assert main(["convert", "--input", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "record 2 (problem_id='ocr-0001'), field 'problem_type'" in err
    assert "record 4 (problem_id='count-0001'), field 'images[0]': image file not found" in err
    assert "2 bad record(s); nothing written" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_write_outputs_is_all_or_nothing(tmp_path, monkeypatch):
    from g2rpo_verl.data import writer

    (tmp_path / "train.parquet").write_bytes(b"old")
    calls = []

    def failing(rows, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        path.write_bytes(b"new")

    monkeypatch.setattr(writer, "_write_parquet", failing)
    with pytest.raises(OSError, match="disk full"):
        write_outputs(tmp_path, {"train.parquet": [{}], "val.parquet": [{}]}, {})
    assert (tmp_path / "train.parquet").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.parquet"]  # no temp files left


def test_stale_task_files_of_an_earlier_conversion_are_removed(tmp_path):
    out = tmp_path / "out"
    args = ["convert", "--input", str(SAMPLE / "train.json"), "--out", str(out)]
    assert main([*args, "--val", str(SAMPLE / "val.json")]) == 0
    assert (out / "val_OCR.parquet").exists()
    only_count = [r for r in json.loads((SAMPLE / "val.json").read_text()) if r["problem_type"] == "numerical"]
    val = SAMPLE.parent / "onethinker_sample" / "val.json"
    tmp_val = tmp_path / "val.json"
    tmp_val.write_text(json.dumps(only_count))
    shutil.copytree(SAMPLE / "images", tmp_path / "images")
    assert main([*args, "--val", str(tmp_val)]) == 0
    assert not (out / "val_OCR.parquet").exists() and (out / "val_numerical.parquet").exists()
    assert val.exists()


def test_cli_a_task_key_no_record_has_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert", "--input", str(SAMPLE / "train.json"), "--task-key", "task_typ", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--task-key 'task_typ'" in err and "problem_id=" in err and "nothing written" in err
    assert not out.exists()
