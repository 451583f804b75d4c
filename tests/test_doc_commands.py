"""Every ``g2rpo-compare`` / ``g2rpo-train`` command in README.md and docs/ runs as written, in its dry-run form.

Each command (backslash continuations joined, ``# comments`` dropped) is parsed by the command's
own argument parser and its run config(s) composed and checked exactly as the command does
before it builds anything (``g2rpo-compare``: every arm, :func:`arm_problems`; ``g2rpo-train`` /
``python -m g2rpo_verl.demo`` / ``make demo ARGS=...``: :func:`check_run_config`). Placeholders
in ``[brackets]`` are dropped; nothing is built or run.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
STARTS = ("g2rpo-compare ", "g2rpo-train", "python -m g2rpo_verl.demo ", "make demo ARGS=")


def doc_commands() -> list[tuple[str, str]]:
    """``(page:line, command)`` for each indented command line starting with one of :data:`STARTS`."""
    out = []
    for page in PAGES:
        lines = page.read_text().splitlines()
        i = 0
        while i < len(lines):
            text = lines[i].strip()
            if (
                lines[i].startswith("    ")
                and text.startswith(STARTS)
                and not text.startswith("python -m g2rpo_verl.demo.smoke")
            ):
                where, command = f"{page.name}:{i + 1}", text
                while command.split("#")[0].rstrip().endswith("\\") and i + 1 < len(lines):
                    i += 1
                    command = command.split("#")[0].rstrip()[:-1] + " " + lines[i].strip()
                out.append((where, re.sub(r"\s#.*$", "", command)))
            i += 1
    return out


COMMANDS = doc_commands()


def test_the_docs_hold_commands_to_check():
    assert len(COMMANDS) >= 5, COMMANDS


def _argv(command: str) -> tuple[str, list[str]]:
    if command.startswith("make demo ARGS="):
        return "train", shlex.split(shlex.split(command[len("make demo ") :])[0].partition("=")[2])
    words = [w for w in shlex.split(command) if not re.fullmatch(r"\[.*\]", w)]
    if words[0] == "g2rpo-compare":
        return "compare", words[1:]
    return "train", words[1:] if words[0] == "g2rpo-train" else words[3:]


@pytest.mark.parametrize("where, command", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_each_documented_command_composes_and_passes_the_checks(where, command, tmp_path):
    kind, argv = _argv(command)
    if kind == "compare":
        from g2rpo_verl.compare.compare_cli import _parser, arm_problems, parse_arms
        from g2rpo_verl.compare.profiles import PROFILES

        args = _parser().parse_intermixed_args(argv)
        common = [*(PROFILES[args.profile].overrides if args.profile else ()), *args.overrides]
        assert arm_problems(tmp_path, parse_arms(args.estimators, args.arm), common, args.config) == [], where
    else:
        from g2rpo_verl.demo.data import data_paths
        from g2rpo_verl.demo.overrides import DEFAULT_CONFIG, demo_overrides
        from g2rpo_verl.demo.run import _parser, check_run_config

        args = _parser().parse_intermixed_args(argv)
        overrides = demo_overrides(
            tmp_path, tmp_path / "model", data_paths(tmp_path / "data"), args.overrides, args.config or DEFAULT_CONFIG
        )
        check_run_config(overrides)
