"""The production entry point itself: ``python -m verl.trainer.main_ppo`` with the project's
config and a typo'd estimator stops in verl's driver, before Ray starts, naming the key and the
fix (the plugin's checks wrap the ``validate_config`` its ``main`` calls)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_main_ppo_stops_on_a_typo_before_ray_starts(tmp_path):
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "verl.trainer.main_ppo",
            f"--config-path={ROOT / 'configs'}",
            "--config-name=g2rpo_qwen3vl8b",
            "algorithm.adv_estimator=gs_grp",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "did you mean 'gs_grpo'" in proc.stderr
    assert "ray init kwargs" not in proc.stdout  # run_ppo never started Ray
    print(f"\nmain_ppo stopped after {elapsed:.1f} s (target: within 30 s; timed here, not asserted)")
