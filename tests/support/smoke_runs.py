"""The real verl pipeline from a test: ``python -m g2rpo_verl.demo.smoke`` and the metrics it logs."""

import json
import os
import subprocess
import sys
from pathlib import Path


def run_smoke(workdir: Path, *overrides: str) -> dict[int, dict]:
    """Run the smoke command in ``workdir`` with Hydra ``overrides``; ``{step: metrics}``.

    Asserts exit code 0 (showing the output's tails) and that verl's file logger
    (``workdir/metrics.jsonl``) logged every step once.
    """
    cmd = [sys.executable, "-m", "g2rpo_verl.demo.smoke", "--workdir", str(workdir), *overrides]
    # the metrics must land in workdir, whatever the calling environment sets
    env = {k: v for k, v in os.environ.items() if k != "VERL_FILE_LOGGER_PATH"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    by_step = {record["step"]: record["data"] for record in records}
    assert len(by_step) == len(records), f"a step was logged twice: {[r['step'] for r in records]}"
    return by_step
