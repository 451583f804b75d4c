"""``g2rpo-preflight`` on the usual mistakes: each gives one line naming the option or key and the fix.

A table of bad command lines, each with its exit status and the message it must print; then the
checks that had nothing to check (``[SKIP]`` and why) and the FAIL lines that must name a fix.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from g2rpo_verl.data.data_cli import main as data_main
from g2rpo_verl.launch import preflight

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "onethinker_sample"


def convert(out: Path) -> Path:
    args = ["convert", "--input", str(SAMPLE / "train.json"), "--val", str(SAMPLE / "val.json"), "--out", str(out)]
    assert data_main(args) == 0
    return out


def config(data: Path, *overrides: str):
    base = [f"data.train_files={data / 'train.parquet'}", f"data.val_files={data / 'val.parquet'}"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return compose(config_name="g2rpo_qwen3vl8b", overrides=[*base, *overrides])


CONFIGS = str(ROOT / "configs")
QUICK = ["--gpus", "8", "--skip", "wandb,shared_dirs,model_files,kv_cache,entropy_memory,world_size,attention"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return convert(tmp_path_factory.mktemp("data"))


# (case, argv, exit status, pattern the one-line error on stderr must match)
USAGE_CASES = [
    (
        "a config name that does not exist",
        [f"--config-path={CONFIGS}", "--config-name=g2rpo_qwen3vl"],
        2,
        r"--config-name=g2rpo_qwen3vl: no g2rpo_qwen3vl\.yaml in .*configs; did you mean --config-name=g2rpo_qwen3vl8b\?",
    ),
    (
        "a relative config path (verl reads it from verl/trainer/)",
        ["--config-path=configs", "--config-name=g2rpo_qwen3vl8b"],
        2,
        r"--config-path=configs: .*verl.*trainer.*configs is not a directory: verl \(Hydra\) reads a relative "
        r"--config-path from verl's own trainer directory.*pass an absolute path",
    ),
    (
        "a typo in a plugin key",
        [f"--config-path={CONFIGS}", "--config-name=g2rpo_qwen3vl8b", "g2rpo.entropy.lo=0.1"],
        2,
        r"g2rpo\.entropy\.lo is not a key of g2rpo_qwen3vl8b\.yaml; did you mean 'g2rpo\.entropy\.low'\?",
    ),
    (
        "a + on a key the config already has",
        [f"--config-path={CONFIGS}", "--config-name=g2rpo_qwen3vl8b", "+g2rpo.entropy.low=0.1"],
        2,
        r"\+g2rpo\.entropy\.low=\.\.\.: g2rpo\.entropy\.low is already in g2rpo_qwen3vl8b\.yaml; drop the '\+'",
    ),
]


@pytest.mark.parametrize("case, argv, status, pattern", USAGE_CASES, ids=[c[0] for c in USAGE_CASES])
def test_each_usage_mistake_is_one_line_with_the_fix(capsys, monkeypatch, tmp_path, case, argv, status, pattern):
    monkeypatch.chdir(tmp_path)
    assert preflight.main(argv) == status
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(pattern, err), f"{case}: {pattern!r} not in {err!r}"


def test_an_unknown_skip_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        preflight.main([f"--config-path={CONFIGS}", "--config-name=g2rpo_qwen3vl8b", "--skip", "gpu"])
    assert stop.value.code == 2
    assert "--skip gpu: no such check" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        preflight.main(["--version"])
    assert stop.value.code == 0 and "g2rpo-verl" in capsys.readouterr().out


def test_checks_with_nothing_to_check_say_skip_and_why(tmp_path):
    cfg = config(tmp_path, f"data.train_files={tmp_path / 'missing.parquet'}")
    findings = preflight.run_checks(cfg, gpus=lambda: (8, "--gpus", True), skip=QUICK[-1].split(","))
    by_check = {f.check: f for f in findings}
    assert by_check["image_tokens"].level == "skip" and "no data rows were read" in by_check["image_tokens"].message
    assert by_check["format_tags"].level == "skip" and "no prompts" in by_check["format_tags"].message
    assert "[SKIP] image_tokens:" in by_check["image_tokens"].line()
    data = [f.message for f in findings if f.check == "data" and f.level == "fail"]
    assert any(m.startswith(f"data.train_files: {tmp_path / 'missing.parquet'} does not exist") for m in data), data


def test_the_gpu_fail_names_the_options_that_fix_it(data_dir):
    (finding,) = preflight.check_gpus(config(data_dir), 1, "--gpus", True)
    assert finding.level == "fail" and "--gpus N" in finding.message and "--skip gpus" in finding.message
    (finding,) = preflight.check_gpus(config(data_dir), 0, "this node's CUDA devices", False)
    assert finding.level == "fail" and "--gpus N" in finding.message and "--skip gpus" in finding.message


def test_rows_without_the_task_key_and_unknown_tasks_fail_the_data_check(data_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = pq.read_table(data_dir / "train.parquet").to_pylist()
    for r in records:
        r["extra_info"].pop("problem_type")
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "notask.parquet")
    records = pq.read_table(data_dir / "train.parquet").to_pylist()
    records[2]["extra_info"]["problem_type"] = "geometry-ish"
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "unknown.parquet")
    for name, pattern in (
        ("notask", r"g2rpo\.task_key='problem_type': notask\.parquet row 0 .*g2rpo\.allow_task_fallback=true"),
        ("unknown", r"unknown\.parquet row 2 .*problem type 'geometry-ish' .*has no scorer"),
    ):
        findings, _ = preflight.scan_data(config(data_dir, f"data.train_files={tmp_path / name}.parquet"))
        fails = [f.message for f in findings if f.level == "fail"]
        assert len(fails) == 1 and re.search(pattern, fails[0]), fails
