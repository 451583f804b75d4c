"""What every console script shares: ``--version``, help with defaults, one exit-code convention.

Exit codes of ``g2rpo-data``, ``g2rpo-preflight``, ``g2rpo-train``, ``g2rpo-eval`` and
``g2rpo-compare``: 0 success; 1 the work itself failed (a failed preflight check, a trainer
that stopped, a failed comparison run); 2 a usage or input error (a bad option or override,
a missing or malformed file, a config key that does not exist) — reported in one block naming
the option, key or file and the fix, before anything is built, started or written; 130
interrupted. Imports nothing from the rest of the package.
"""

from __future__ import annotations

import argparse

__all__ = ["OK", "FAILED", "USAGE", "INTERRUPTED", "HelpFormatter", "add_version", "version"]

OK, FAILED, USAGE, INTERRUPTED = 0, 1, 2, 130


def version() -> str:
    """``g2rpo-verl X (verl Y)`` from the installed packages' metadata (nothing is imported)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    def of(name: str) -> str:
        try:
            return installed(name)
        except PackageNotFoundError:
            return "not installed"

    return f"g2rpo-verl {of('g2rpo-verl')} (verl {of('verl')})"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks; appends ``(default: X)`` to options that have one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or "%(default)" in text or not action.option_strings:
            return text
        if action.default in (None, False, [], argparse.SUPPRESS) or isinstance(action.default, bool):
            return text
        return f"{text} (default: %(default)s)"


def add_version(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--version`` (prints :func:`version`, exits 0)."""
    parser.add_argument("--version", action="version", version=f"%(prog)s: {version()}")
    return parser
