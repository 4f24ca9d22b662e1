"""Registry fixtures: every test runs on SQLite and on the real PostgreSQL server
(``pg_database``/``pg_url`` come from tests/conftest.py)."""

from __future__ import annotations

import pytest

from scidex_nbcapsule.registry import open_registry

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path}/registry.sqlite3"


@pytest.fixture(params=BACKENDS)
def db_url(request):
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def registry(db_url):
    reg = open_registry(db_url)
    yield reg
    reg.close()
