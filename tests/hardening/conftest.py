"""Fixtures of the hardening suite (issue 8) and the table of what it tried, printed at the end of the run.

The shared helpers stay in tests/helpers.py and tests/kernel.py; PostgreSQL fixtures (``pg_database``,
``pg_url``) come from tests/conftest.py. Counts are kept here, not in ``helpers.HARDENING_COUNTS``, so this
suite's table stands on its own.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from helpers import make_notebook

#: group -> what -> how many. Printed by ``pytest_terminal_summary`` below, visible even with capture on.
COUNTS: dict[str, Counter] = {}


def count(group: str, what: str, n: int = 1) -> None:
    COUNTS.setdefault(group, Counter())[what] += n


def pytest_terminal_summary(terminalreporter):
    if not COUNTS:
        return
    terminalreporter.section("hardening suite (tests/hardening): cases tried, faults injected, nothing lost")
    for group in sorted(COUNTS):
        terminalreporter.write_line(f"[{group}]")
        for what, value in sorted(COUNTS[group].items()):
            terminalreporter.write_line(f"    {what}: {value}")


@pytest.fixture
def counts():
    return count


@pytest.fixture(scope="session")
def small_crate(tmp_path_factory) -> Path:
    """A real, small exported capsule folder (never modified: tests copy it)."""
    from scidex_nbcapsule import api

    root = tmp_path_factory.mktemp("small") / "project"
    (root / "data").mkdir(parents=True)
    (root / "data" / "in.csv").write_text("a,b\n1,2\n")
    nb = make_notebook(root / "nb.ipynb", "print(open('data/in.csv').read())")
    capsule = api.export(nb, inputs=[root / "data"], dest=root.parent / "caps", license="MIT", progress=False)
    return capsule.path


@pytest.fixture(scope="session")
def small_crate_zip(tmp_path_factory, small_crate) -> Path:
    """The same kind of capsule as a .zip."""
    from scidex_nbcapsule import api

    root = tmp_path_factory.mktemp("smallzip") / "project"
    (root / "data").mkdir(parents=True)
    (root / "data" / "in.csv").write_text("a,b\n1,2\n")
    nb = make_notebook(root / "nb.ipynb", "print(open('data/in.csv').read())")
    return api.export(nb, inputs=[root / "data"], dest=root.parent / "caps", fmt="zip", license="MIT",
                      progress=False).path
