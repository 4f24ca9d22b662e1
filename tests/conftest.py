"""Shared fixtures: small real notebooks in temporary projects, real kernels, the real RO-Crate validator."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from kernel import KernelSession

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def pytest_configure(config):
    os.environ.setdefault("GIT_AUTHOR_NAME", "Test Author")
    os.environ.setdefault("GIT_AUTHOR_EMAIL", "author@example.org")
    os.environ.setdefault("GIT_COMMITTER_NAME", "Test Author")
    os.environ.setdefault("GIT_COMMITTER_EMAIL", "author@example.org")


def make_notebook(path: Path, *cells: str, markdown_title: str | None = "Test analysis") -> Path:
    """Write a notebook whose code cells are ``cells`` (dedented); ``# md:`` cells become markdown."""
    nb = nbformat.v4.new_notebook()
    if markdown_title:
        nb.cells.append(nbformat.v4.new_markdown_cell(f"# {markdown_title}"))
    for source in cells:
        source = textwrap.dedent(source).strip("\n")
        if source.startswith("# md:"):
            nb.cells.append(nbformat.v4.new_markdown_cell(source[5:].strip()))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(source))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


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


def nbcapsule(*args: str, cwd: Path | None = None, env: dict | None = None, check: bool = False):
    """Run the real console script."""
    exe = Path(sys.executable).with_name("nbcapsule")
    full_env = dict(os.environ, **(env or {}))
    result = subprocess.run([str(exe), *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"nbcapsule {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def copy_demo(dest: Path) -> Path:
    """The demo notebook and its data in a fresh folder (so tests never write into the source tree)."""
    target = dest / "notebooks"
    shutil.copytree(ROOT / "notebooks", target, ignore=shutil.ignore_patterns("capsules", "results", ".ipynb*"))
    return target / "demo.ipynb"
