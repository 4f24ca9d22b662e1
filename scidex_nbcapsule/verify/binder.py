"""Re-verification anywhere: a ``reverify.ipynb`` for each crate, and Binder links that open it.

The notebook installs nothing: on Binder the crate's own ``binder/``
configuration has already built the recorded environment, so the check runs
against exactly what the crate pins.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from ..capture.notebook import notebook_bytes
from ..errors import ConfigError
from ..manifest import Manifest

REVERIFY_NOTEBOOK = "reverify.ipynb"
BINDER_BASE = "https://mybinder.org/v2"
_GITHUB_RE = re.compile(r"^/(?P<owner>[A-Za-z0-9](?:[A-Za-z0-9-]{0,38}))/(?P<repo>[A-Za-z0-9._-]+?)(?:\.git)?/?$")


def reverify_notebook(manifest: Manifest) -> bytes:
    """The bytes of ``reverify.ipynb``: deterministic, so the same manifest always gives the same file."""
    title = manifest.title.replace("\n", " ")
    cells = [
        _cell("markdown",
            f"# Re-verify: {title}\n\n"
            f"Capsule `{manifest.capsule_id}`. Running this notebook checks that every file of the capsule is "
            "intact (SHA-256 fixity), re-executes "
            f"`{manifest.notebook}` in a fresh kernel from its own folder, and compares every cell output and "
            "output file with what was recorded.\n\n"
            "It installs nothing: on Binder the capsule's `binder/` folder has already built the environment it "
            "records. The verdict is one of `verified`, `verified-within-tolerance`, `mismatch`, `incomplete`, "
            "`execution-failed` or `fixity-failed`."),
        _cell("code",
            "try:\n"
            "    from scidex_nbcapsule.verify import verify\n"
            "except ImportError:\n"
            "    raise SystemExit('scidex-nbcapsule is not installed in this environment: add scidex-nbcapsule to '\n"
            "                     'binder/requirements.txt and rebuild')\n"
            "\n"
            "report = verify('.', record=False)\n"
            "report"),
        _cell("markdown", "The same check from a terminal (exit code 0 means verified):"),
        _cell("code", "!nbcapsule verify . --json"),
    ]
    for index, cell in enumerate(cells):
        cell["id"] = f"reverify-{index}"
    metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                "language_info": {"name": "python"},
                "scidex_nbcapsule": {"capsule_id": manifest.capsule_id, "role": "reverify"}}
    return notebook_bytes({"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5})


def _cell(kind: str, source: str) -> dict[str, Any]:
    """A version 4.5 cell as nbformat's ``new_markdown_cell``/``new_code_cell`` make it."""
    cell: dict[str, Any] = {"cell_type": kind, "metadata": {}, "source": source}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def _check_url(repo_url: str) -> tuple[str, str, str]:
    try:
        parts = urlsplit(repo_url)
    except ValueError as exc:
        raise ConfigError(f"{repo_url!r} is not a URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"repository URL {repo_url!r} must be an http(s) URL",
                          hint="Binder fetches public repositories over https, e.g. https://github.com/owner/repo")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ConfigError("the repository URL carries credentials; refusing to put them in a public link",
                          hint="give the public https URL of the repository, without user or token")
    return parts.scheme, parts.hostname.lower(), parts.path


def binder_urls(repo_url: str, ref: str, path: str) -> dict[str, str]:
    """Binder links opening ``path`` (relative to the repository root) at ``ref``.

    Always a ``git`` link (any public git host); for GitHub also the shorter
    ``gh`` link.
    """
    _scheme, host, repo_path = _check_url(repo_url)
    if not ref or any(c.isspace() for c in ref):
        raise ConfigError(f"git ref {ref!r} is empty or contains spaces")
    labpath = quote(path.lstrip("/"), safe="/")
    urls = {"git": f"{BINDER_BASE}/git/{quote(repo_url, safe='')}/{quote(ref, safe='')}?labpath={labpath}"}
    match = _GITHUB_RE.match(repo_path)
    if host in ("github.com", "www.github.com") and match:
        urls["gh"] = (f"{BINDER_BASE}/gh/{match['owner']}/{match['repo']}/{quote(ref, safe='')}"
                      f"?labpath={labpath}")
    return urls


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else None


def public_url(remote: str) -> str | None:
    """An https URL for a git remote (``git@github.com:o/r.git`` becomes ``https://github.com/o/r``)."""
    scp = re.match(r"^[\w.-]+@([\w.-]+):(.+?)(?:\.git)?/?$", remote)
    if scp:
        return f"https://{scp[1]}/{scp[2]}"
    if remote.startswith(("https://", "http://")):
        parts = urlsplit(remote)
        if parts.username or parts.password:
            return None
        return remote[:-4] if remote.endswith(".git") else remote
    return None


def git_defaults(folder: str | Path) -> dict[str, str | None]:
    """Repository URL (from ``origin``), ref (HEAD commit) and the folder's path in the checkout."""
    folder = Path(folder).resolve()
    top = _git(["rev-parse", "--show-toplevel"], folder)
    if top is None:
        return {"repo": None, "ref": None, "path": None}
    remote = _git(["remote", "get-url", "origin"], folder)
    return {"repo": public_url(remote) if remote else None, "ref": _git(["rev-parse", "HEAD"], folder),
            "path": folder.relative_to(Path(top).resolve()).as_posix()}
