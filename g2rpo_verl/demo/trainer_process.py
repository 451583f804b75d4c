"""Run ``python -m verl.trainer.main_ppo`` as a child process and follow its progress.

The trainer's whole output goes to a log file. The console shows a progress bar over training
steps (tqdm), parsed from verl's console-logger lines ``step:N - key:value - ...`` (Ray
forwards them from the TaskRunner actor, prefixed with the actor's name), one line per
validation with each task's accuracy, and, if it fails, the exception it died of
(:func:`last_exception`). ``verbose`` copies the raw output to the console instead.
"""

from __future__ import annotations

import math
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from g2rpo_verl.verl_compat.api import CONSOLE_SEPARATOR, CONSOLE_STEP_PREFIX

__all__ = ["StepLine", "parse_step_line", "last_exception", "run_trainer", "TrainerRun"]

_STEP_LINE = re.compile(re.escape(CONSOLE_STEP_PREFIX) + r"(\d+)" + re.escape(CONSOLE_SEPARATOR) + r"(.*)$")
# Ray prefixes a remote process's lines with "(ActorName pid=123, ip=...) "
_RAY_PREFIX = re.compile(r"^\(\w+ pid=\d+(?:, ip=[^)]*)?\) ")
_TRACEBACK = "Traceback (most recent call last):"
_HYDRA_HINT = "Set the environment variable HYDRA_FULL_ERROR"
_VAL_ACC = re.compile(r"^val-core/([^/]+)/acc/mean@\d+$")
# verl prints numpy scalars by repr in places: ``np.float64(0.25)``.
_NUMBER = re.compile(r"^(?:np\.\w+\()?([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+|nan|inf))\)?$")


@dataclass
class StepLine:
    """One console-logger line: the step and its ``key -> value`` metrics (floats when numeric)."""

    step: int
    metrics: dict[str, float | str]

    def validation_accuracy(self) -> dict[str, float]:
        """``{data_source: acc}`` of the validation metrics on this line (empty when none)."""
        out = {}
        for key, value in self.metrics.items():
            match = _VAL_ACC.match(key)
            if match and isinstance(value, float):
                out[match.group(1)] = value
        return out


def parse_step_line(line: str) -> StepLine | None:
    """Parse verl's ``step:N - k:v - k:v`` console line (None for any other line).

    verl's console logger may split one step's metrics over several such lines.
    """
    match = _STEP_LINE.search(line.rstrip("\n"))
    if match is None:
        return None
    metrics: dict[str, float | str] = {}
    for item in match.group(2).split(CONSOLE_SEPARATOR):
        key, sep, raw = item.rpartition(":")
        if not sep or not key:
            continue
        number = _NUMBER.match(raw.strip())
        metrics[key.strip()] = float(number.group(1)) if number else raw.strip()
    return StepLine(int(match.group(1)), metrics)


def last_exception(lines: Sequence[str]) -> list[str]:
    """The exception the output's last Python traceback ends with: its ``Type: message`` line
    and the message's continuation lines (stack frames left out). Empty when there is none.

    With Ray the driver's traceback ends in the remote one (``RayTaskError(X)`` then ``X: ...``);
    the innermost exception is the last one printed, and that is what is returned.
    """
    lines = [_RAY_PREFIX.sub("", line.rstrip("\n")) for line in lines]
    starts = [i for i, line in enumerate(lines) if line.strip() == _TRACEBACK]
    if not starts:
        return []
    after_frames: list[list[str]] = []  # message segments since the last stack frame
    in_frame = False
    for line in lines[starts[-1] + 1 :]:
        if line.startswith(_HYDRA_HINT):
            break
        if line.startswith("  File "):
            in_frame, after_frames = True, []
            continue
        if in_frame and line.startswith("    "):
            continue  # the frame's source line and caret markers
        in_frame = False
        if not line.strip():
            continue
        if not line[0].isspace():
            after_frames.append([line])
        elif after_frames:
            after_frames[-1].append(line)
    # the innermost exception is printed right after the last frame; later lines are other output
    return after_frames[0] if after_frames else []


@dataclass
class TrainerRun:
    """Outcome of :func:`run_trainer`: exit code, steps seen, validations seen, output tail, error."""

    returncode: int
    steps: list[int] = field(default_factory=list)
    validations: dict[int, dict[str, float]] = field(default_factory=dict)
    tail: list[str] = field(default_factory=list)
    #: the exception the trainer died of (:func:`last_exception`), empty if none was printed
    error: list[str] = field(default_factory=list)


def _format_validation(step: int, accuracy: Mapping[str, float]) -> str:
    parts = " ".join(f"{source.removeprefix('demo_')}={value:.2f}" for source, value in sorted(accuracy.items()))
    mean = sum(accuracy.values()) / max(1, len(accuracy))
    return f"validation @ step {step}: mean acc {mean:.3f} | {parts}"


def run_trainer(
    cmd: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    log_path: Path,
    total_steps: int,
    verbose: bool = False,
    echo: Callable[[str], None] | None = None,
    tail_lines: int = 80,
) -> TrainerRun:
    """Run ``cmd``; log everything to ``log_path``; show progress (see module docstring)."""
    from tqdm import tqdm

    run = TrainerRun(returncode=-1)
    bar = (
        None if verbose else tqdm(total=total_steps, desc="training", unit="step", dynamic_ncols=True, file=sys.stdout)
    )
    say = echo or (print if bar is None else bar.write)
    tail: list[str] = []
    since_traceback: list[str] = []  # output from the last traceback on (bounded)
    with open(log_path, "a", encoding="utf-8") as log:
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                tail.append(line.rstrip("\n"))
                if len(tail) > tail_lines:
                    del tail[0]
                if _TRACEBACK in line:
                    since_traceback = []
                if len(since_traceback) < 2000:
                    since_traceback.append(line)
                if verbose:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                parsed = parse_step_line(line)
                if parsed is None:
                    continue
                accuracy = parsed.validation_accuracy()
                if accuracy:
                    run.validations[parsed.step] = accuracy
                    say(_format_validation(parsed.step, accuracy))
                if "training/global_step" in parsed.metrics:
                    run.steps.append(parsed.step)
                    if bar is not None:
                        bar.n = min(parsed.step, total_steps)
                        score = parsed.metrics.get("critic/score/mean")
                        if isinstance(score, float) and math.isfinite(score):
                            bar.set_postfix(reward=f"{score:.3f}")
                        bar.refresh()
            run.returncode = proc.wait()
        except KeyboardInterrupt:
            # Let the trainer shut its Ray cluster down; kill it only if it does not.
            proc.send_signal(signal.SIGINT)
            try:
                run.returncode = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                run.returncode = proc.wait()
            raise
        finally:
            if bar is not None:
                bar.close()
            run.tail = tail
            run.error = last_exception(since_traceback)
    return run
