"""scripts/gpu_check.sh: the GPU checks run end to end in ``--device cpu`` mode and refuse clearly without CUDA.

On a CPU the device-vs-CPU comparisons are trivially equal and peak memory is not measured; what
this checks is that the script runs every check (the entropy-shaped loss and its bf16/fp32
gradient cosine, one gloo rank of FSDP2 around the Qwen3-VL-shaped model with the plugin's loss,
the estimators with ties) and reports them in one table. The numbers on a GPU come from running
the script there (docs/production.md §11).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"


def run(*args, **env):
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env={**os.environ, "PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cpu_mode_runs_every_check_and_prints_one_table(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = run("--device", "cpu", "--sizes", "512", "2048", "--repeat", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["failures"] == []
    rows = result["rows"]
    assert [r["check"] for r in rows] == ["entropy_memory", "entropy_loss", "fsdp_rank", "fsdp_rank"] + [
        "estimators"
    ] * 6
    assert [r["ok"] for r in rows] == [None] + [True] * 9  # peak memory is CUDA-only
    assert float(rows[1]["value"]) >= 0.99  # bf16 vs fp32 gradient cosine
    assert rows[2]["case"].startswith("gloo FSDP2") and rows[3]["value"].split()[0] == rows[3]["value"].split()[2]
    assert proc.stdout.count("check            case") == 1 and "all checks passed" in proc.stdout


def test_a_failed_check_exits_1_and_is_named(tmp_path, monkeypatch):
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_check

    monkeypatch.setattr(gpu_check, "MIN_BF16_COSINE", 1.1)  # a bound no gradient meets
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")  # its gloo rank's rendezvous, restored afterwards
    monkeypatch.setenv("MASTER_PORT", str(gpu_check._free_port()))
    assert gpu_check.main(["--device", "cpu", "--sizes", "512", "--repeat", "1"]) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the default mode would run")
def test_without_cuda_the_default_mode_stops_with_exit_2_and_says_why():
    proc = run()
    assert proc.returncode == 2
    assert "sees no CUDA device" in proc.stderr and "--device cpu" in proc.stderr


def test_without_torch_the_wrapper_names_the_interpreter():
    proc = run(PYTHON="/bin/false")
    assert proc.returncode == 2 and "cannot import torch" in proc.stderr
