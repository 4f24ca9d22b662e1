"""Shared fixtures: small real notebooks in temporary projects, real kernels, the real RO-Crate validator."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import quote

import pytest

from helpers import FIXTURES
from kernel import KernelSession

#: PostgreSQL gets one database per test session (random name, dropped at the end) and one schema per
#: test. When the server is unreachable those tests are skipped locally but fail when ``CI=true``.
PG_ADMIN_URL = os.environ.get("SCIDEX_NBCAPSULE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def pytest_configure(config):
    os.environ.setdefault("GIT_AUTHOR_NAME", "Test Author")
    os.environ.setdefault("GIT_AUTHOR_EMAIL", "author@example.org")
    os.environ.setdefault("GIT_COMMITTER_NAME", "Test Author")
    os.environ.setdefault("GIT_COMMITTER_EMAIL", "author@example.org")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty project folder (no git) with a data file."""
    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    (root / "data" / "input.csv").write_text("x,y\n1,2\n3,4\n")
    return root


@pytest.fixture
def kernel(project: Path):
    """A real ipykernel started in ``project``, driven like a front end (cell ids in metadata)."""
    session = KernelSession(cwd=project)
    yield session
    session.close()


@pytest.fixture(scope="session")
def validator_cache(tmp_path_factory) -> Path:
    """roc-validator's HTTP cache seeded with the published JSON-LD contexts (offline)."""
    from scidex_nbcapsule.validation import seed_cache

    cache = tmp_path_factory.mktemp("validator") / "http-cache"
    return seed_cache(cache, FIXTURES / "jsonld-contexts")


@pytest.fixture
def validate(validator_cache):
    from scidex_nbcapsule.validation import validate_crate

    def run(crate: Path, *, profile: str = "process-run-crate-0.5", severity: str = "REQUIRED"):
        return validate_crate(crate, profile=profile, severity=severity, cache_path=validator_cache, seed=False)

    return run


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
