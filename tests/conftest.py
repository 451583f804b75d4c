"""Shared test configuration.

Layout: ``tests/<subpackage>/`` mirrors ``g2rpo_verl/<subpackage>/``; ``tests/e2e/`` holds every
test that drives the real verl pipeline (each marked ``e2e`` here); ``make test-fast`` deselects
them. ``tests/support/`` holds helpers shared by test files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

E2E_DIR = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if E2E_DIR in Path(item.fspath).parents:
            item.add_marker(pytest.mark.e2e)
