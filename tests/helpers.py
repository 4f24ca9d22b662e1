"""Helpers the tests share: small real notebooks, the console script, a copy of the demo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


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
