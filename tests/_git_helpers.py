"""Real git repositories in temporary folders for the gitstate, swhid and archive tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.org",
    "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.org",
    "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C",
}


def git(cwd: Path, *args: str, input: bytes | None = None) -> str:
    env = {**os.environ, **GIT_ENV, "HOME": str(cwd)}
    proc = subprocess.run(["git", "-c", "init.defaultBranch=main", "-c", "protocol.file.allow=always", *args],
                          cwd=cwd, env=env, capture_output=True, input=input, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr.decode()}")
    return proc.stdout.decode().strip()


def make_repo(path: Path, files: dict[str, bytes | str] | None = None, *, executable: tuple[str, ...] = (),
              commit: bool = True) -> Path:
    """A repository at ``path`` holding ``files`` (relpath → content), committed unless ``commit`` is False."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q")
    for rel, content in (files or {}).items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else content)
        if rel in executable:
            target.chmod(0o755)
    if files:
        git(path, "add", "-A")
        if commit:
            git(path, "commit", "-q", "-m", "initial")
    return path


DEFAULT_FILES = {
    "analysis.ipynb": '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n',
    "src/lib/helpers.py": "def double(x):\n    return 2 * x\n",
    "src/run.sh": "#!/bin/sh\necho run\n",
    "data/input.csv": "a,b\n1,2\n",
    "README.md": "# demo\n",
}
