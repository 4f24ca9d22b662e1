"""Shared fixtures: small real notebooks in temporary projects, real kernels, the real RO-Crate validator."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import FIXTURES
from kernel import KernelSession


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
