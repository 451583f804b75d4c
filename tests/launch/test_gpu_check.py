"""scripts/gpu_check.sh: the GPU checks run end to end in ``--device cpu`` mode and refuse clearly without CUDA.

On a CPU the device-vs-CPU comparisons are trivially equal; what this checks is that the script
runs every check (estimators with ties, the bf16 Qwen3-VL entropy-shaped loss) and reports them.
The numbers on a GPU come from running the script there (docs/production.md).
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
        ["bash", str(SCRIPT), *args], env={**os.environ, "PYTHON": sys.executable, **env},
        capture_output=True, text=True, timeout=300,
    )


def test_cpu_mode_runs_every_check_and_writes_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = run("--device", "cpu", "--sizes", "512", "2048", "--repeat", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["failures"] == []
    assert [(r["check"], r["n"]) for r in result["estimators"]] == [
        (name, n) for n in (512, 2048) for name in ("gaussianize", "gs_grpo", "gs_gdpo")
    ]
    assert all(r["max_abs_diff"] == 0 and r["ties_identical"] for r in result["estimators"])
    loss = result["loss"]
    assert loss["finite"] and loss["vision_params_with_grad"] > 0 and loss["text_params_with_grad"] > 0
    assert loss["max_abs_grad_diff_vs_definition"] <= 0.05 * loss["max_abs_grad"]
    assert "all checks passed" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the default mode would run")
def test_without_cuda_the_default_mode_stops_with_exit_2_and_says_why():
    proc = run()
    assert proc.returncode == 2
    assert "sees no CUDA device" in proc.stderr and "--device cpu" in proc.stderr


def test_without_torch_the_wrapper_names_the_interpreter():
    proc = run(PYTHON="/bin/false")
    assert proc.returncode == 2 and "cannot import torch" in proc.stderr
