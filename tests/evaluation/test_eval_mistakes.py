"""``g2rpo-eval`` on bad input: the file and the missing column named, nothing written; no silent defaults.

The run config (reward kwargs, ``max_response_length``, task key) is found next to a checkpoint
or an HF export the demo wrote (``DIR/hf`` with ``DIR/hydra/.hydra/config.yaml``); when none is
found the command refuses unless ``--config defaults`` asks for the project's defaults.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from g2rpo_verl.evaluation import eval_cli as cli
from g2rpo_verl.evaluation.checkpoint import find_run_config, resolve_model


def hf_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"")
    return path


def demo_workdir(tmp_path: Path) -> Path:
    """A demo work directory's layout: DIR/model, DIR/hf, DIR/hydra/.hydra/config.yaml, DIR/checkpoints."""
    for name in ("model", "hf"):
        hf_dir(tmp_path / name)
    config = tmp_path / "hydra" / ".hydra" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(f"trainer:\n  default_local_dir: {tmp_path / 'checkpoints'}\ndata:\n  max_response_length: 40\n")
    return tmp_path


def test_the_demo_exports_find_their_run_config(tmp_path):
    workdir = demo_workdir(tmp_path)
    config = workdir / "hydra" / ".hydra" / "config.yaml"
    assert find_run_config(resolve_model(workdir / "hf")) == config
    assert find_run_config(resolve_model(workdir / "model")) == config


def test_a_stray_config_of_another_run_is_not_picked(tmp_path):
    hf = hf_dir(tmp_path / "exports" / "hf")
    config = tmp_path / ".hydra" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("trainer:\n  default_local_dir: /somewhere/else/checkpoints\n")
    assert find_run_config(resolve_model(hf)) is None


def wrong_columns(tmp_path: Path) -> Path:
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": "q", "data_source": "x"}]), path)
    return path


def test_without_a_run_config_it_refuses_and_says_how_to_go_on(tmp_path, capsys):
    hf = hf_dir(tmp_path / "m")
    out = tmp_path / "out"
    assert cli.main(["--model", str(hf), "--data", str(wrong_columns(tmp_path)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no run config found" in err and "--config defaults" in err
    assert not out.exists()


def test_wrong_columns_name_the_file_and_the_column_and_leave_no_out(tmp_path, capsys):
    hf = hf_dir(tmp_path / "m")
    out = tmp_path / "out"
    bad = wrong_columns(tmp_path)
    argv = ["--model", str(hf), "--data", str(bad), "--out", str(out), "--config", "defaults"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"--data {bad}: no column 'prompt', 'reward_model'" in err and "nothing was written" in err
    assert "KeyError" not in err and not out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "x.parquet"], "one of the arguments --model --compare --handoff is required"),
        (["--model", "/nonexistent", "--data", "x.parquet"], "--model needs --data FILE... and --out DIR"),
    ],
)
def test_usage_errors_exit_2(argv, message, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as stop:
        code = stop.code
    assert code == 2 and message in capsys.readouterr().err
