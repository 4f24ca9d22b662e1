"""Which notebook a kernel runs, reading it safely, and which of its cells drive the capsule itself."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from ..errors import NotebookError, NotebookNotFound

#: Environment variables through which a runner names the notebook a headless kernel executes.
NOTEBOOK_ENV = "NBCAPSULE_NOTEBOOK"
#: ... and the file where it keeps the notebook, outputs included, as executed so far.
SNAPSHOT_ENV = "NBCAPSULE_NOTEBOOK_SNAPSHOT"
#: Set in the kernel that verification re-runs a notebook in, so that the notebook's own
#: ``%capsule export`` does not export again while it is being checked.
VERIFYING_ENV = "NBCAPSULE_VERIFYING"
#: Papermill-style parameter a notebook may define to name itself.
NOTEBOOK_PARAMETER = "capsule_notebook"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def find_notebook(user_ns: dict[str, Any] | None = None, *, root_dir: str | None = None) -> Path:
    """The notebook this kernel runs, as the front end or runner told us."""
    user_ns = user_ns or {}
    candidates: list[tuple[str, str]] = []
    if os.environ.get(NOTEBOOK_ENV):
        candidates.append((NOTEBOOK_ENV, os.environ[NOTEBOOK_ENV]))
    if isinstance(user_ns.get(NOTEBOOK_PARAMETER), str):
        candidates.append((NOTEBOOK_PARAMETER, user_ns[NOTEBOOK_PARAMETER]))
    if isinstance(user_ns.get("__vsc_ipynb_file__"), str):
        candidates.append(("__vsc_ipynb_file__", user_ns["__vsc_ipynb_file__"]))
    if os.environ.get("JPY_SESSION_NAME"):
        name = os.environ["JPY_SESSION_NAME"]
        candidates.append(("JPY_SESSION_NAME", name))
        if root_dir is None:
            root_dir = os.environ.get("JPY_SERVER_ROOT") or os.environ.get("NBCAPSULE_SERVER_ROOT")
        if root_dir and not os.path.isabs(name):
            candidates.append(("JPY_SESSION_NAME", os.path.join(root_dir, name)))
    for _, value in candidates:
        path = Path(value).expanduser()
        if path.suffix == ".ipynb" and path.is_file():
            return path.resolve()
        if not path.is_absolute() and Path(os.getcwd(), path.name).is_file() and path.suffix == ".ipynb":
            return Path(os.getcwd(), path.name).resolve()
    told = ", ".join(f"{k}={v!r}" for k, v in candidates) or "nothing"
    raise NotebookNotFound(
        f"cannot tell which notebook this kernel runs (the front end told us {told})",
        hint="pass it explicitly: %capsule export --notebook PATH  (or nbcapsule export PATH)")


def read_notebook(path: Path, *, as_version: int = 4):
    import nbformat

    try:
        with open(path, encoding="utf-8") as handle:
            nb = nbformat.read(handle, as_version=as_version)
    except FileNotFoundError as exc:
        raise NotebookError(f"notebook {path} does not exist", hint="check the path") from exc
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise NotebookError(f"notebook {path} is not a valid .ipynb file: {exc}",
                            hint="open it in Jupyter and save it again, or restore it from version control") from exc
    except OSError as exc:
        raise NotebookError(f"notebook {path} cannot be read: {exc.strerror or exc}") from exc
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        raise NotebookError(f"notebook {path} does not follow the nbformat schema: {exc.message}",
                            hint="open it in Jupyter and save it again") from exc
    return nb


def is_capsule_cell(source: str) -> bool:
    """Cells that drive the capsule itself; they do not count as analysis."""
    lines = [line.strip() for line in source.splitlines() if line.strip() and not line.strip().startswith("#")]
    return bool(lines) and all(line.startswith(("%capsule", "%load_ext scidex_nbcapsule", "%reload_ext scidex_nbcapsule"))
                               for line in lines)
