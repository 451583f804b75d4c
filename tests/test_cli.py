"""Every console script: ``--version``, help (with defaults) for every option, exit 2 for usage errors.

The scripts are read from pyproject.toml's ``[project.scripts]``, so a new one is covered.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def entry(name: str):
    module, _, func = SCRIPTS[name].partition(":")
    return importlib.import_module(module), func


def parsers(name: str) -> list[argparse.ArgumentParser]:
    module, _ = entry(name)
    top = module._parser()
    subs = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    return [top, *(p for s in subs for p in s.choices.values())]


def test_every_console_script_is_listed():
    assert set(SCRIPTS) == {"g2rpo-data", "g2rpo-preflight", "g2rpo-train", "g2rpo-eval", "g2rpo-compare"}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_version(name, capsys):
    module, func = entry(name)
    with pytest.raises(SystemExit) as stop:
        getattr(module, func)(["--version"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{name}: g2rpo-verl ") and "(verl " in out


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_option_has_help_and_shows_its_default(name):
    for parser in parsers(name):
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
            default = action.default
            if (
                action.option_strings
                and default not in (None, False, [], argparse.SUPPRESS)
                and not isinstance(default, bool)
            ):
                assert str(default) in text, f"{name}: the default of {action.option_strings} is not in --help"


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_a_usage_error_exits_2_with_the_usage(name, capsys):
    module, func = entry(name)
    with pytest.raises(SystemExit) as stop:
        getattr(module, func)(["--no-such-option"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and f"{name}: error: " in err


def test_train_help_tells_how_to_resume():
    assert "resumes from the last checkpoint" in " ".join(parsers("g2rpo-train")[0].format_help().split())
