"""Registry fixtures: every test runs on SQLite and on the real PostgreSQL server.

PostgreSQL gets one database per test session (random name, dropped at the end)
and one schema per test. When the server is unreachable the PostgreSQL cases
are skipped locally but fail when ``CI=true``.
"""

from __future__ import annotations

import os
import secrets
from urllib.parse import quote

import pytest

from scidex_nbcapsule.registry import open_registry

PG_ADMIN_URL = os.environ.get("SCIDEX_NBCAPSULE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def pg_database():
    """URL of a fresh PostgreSQL database for this session."""
    import psycopg

    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    name = f"nbcapsule_test_{secrets.token_hex(6)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_database):
    """A URL whose search_path is an empty schema of its own, dropped after the test."""
    import psycopg

    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield f"{pg_database}?options={quote(f'-csearch_path={schema}')}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


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
