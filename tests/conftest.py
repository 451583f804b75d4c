"""Shared test configuration.

Layout: ``tests/<subpackage>/`` mirrors ``g2rpo_verl/<subpackage>/``; ``tests/e2e/`` holds the
files whose every test drives the real verl pipeline (all marked ``e2e`` here); a real run inside
a topic file carries ``@pytest.mark.e2e`` itself. ``make test-fast`` deselects ``e2e``.
``tests/support/`` holds helpers shared by test files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

E2E_DIR = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if E2E_DIR in Path(item.fspath).parents:
            item.add_marker(pytest.mark.e2e)
