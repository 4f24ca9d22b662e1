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


class NotebookNode(dict):
    """A notebook read from JSON: a dict whose keys also read and write as attributes (``nb.cells``,
    ``cell.source``), as nbformat's NotebookNode, which :func:`as_nbformat` turns it into for nbclient."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


def _node(value: Any) -> Any:
    if isinstance(value, dict):
        return NotebookNode((k, _node(v)) for k, v in value.items())
    if isinstance(value, list):
        return [_node(v) for v in value]
    return value


#: Output fields that nbformat stores split into lines on disk and joins on reading.
_SPLIT_MIMES = ("application/javascript", "image/svg+xml")


def _joined(bundle: dict[str, Any]) -> None:
    for key, value in bundle.items():
        if isinstance(value, list) and (key.startswith("text/") or key in _SPLIT_MIMES):
            bundle[key] = "".join(value)


def _rejoin(nb: NotebookNode) -> None:
    """Multi-line text as one string, and no transient fields: what ``nbformat.read`` gives for version 4."""
    for key in ("orig_nbformat", "orig_nbformat_minor", "signature"):
        nb.metadata.pop(key, None)
    for cell in nb.cells:
        cell.metadata.pop("trusted", None)
        if isinstance(cell.get("source"), list):
            cell["source"] = "".join(cell["source"])
        for attachment in (cell.get("attachments") or {}).values():
            _joined(attachment)
        if cell.get("cell_type") != "code":
            continue
        for output in cell.get("outputs", []):
            kind = output.get("output_type", "")
            if kind in ("execute_result", "display_data"):
                _joined(output.get("data", {}))
            elif kind and isinstance(output.get("text", ""), list):
                output["text"] = "".join(output["text"])


_SCHEMA_CHECKS: dict[int, Any] = {}


def _schema_check(minor: int) -> Any:
    """nbformat's own JSON Schema for 4.``minor``, compiled by fastjsonschema (as nbformat does), read from
    nbformat's files without importing nbformat, whose import pulls in jsonschema (seconds)."""
    import importlib.util
    import json

    import fastjsonschema

    minor = min(max(minor, 0), 5)
    if minor not in _SCHEMA_CHECKS:
        spec = importlib.util.find_spec("nbformat")
        if spec is None or not spec.submodule_search_locations:
            raise NotebookError("nbformat is not installed", hint="pip install nbformat")
        folder = Path(list(spec.submodule_search_locations)[0], "v4")
        schema = json.loads((folder / f"nbformat.v4.{minor}.schema.json").read_text("utf-8"))
        _SCHEMA_CHECKS[minor] = fastjsonschema.compile(schema)
    return _SCHEMA_CHECKS[minor]


def read_notebook(path: Path) -> NotebookNode:
    """The notebook at ``path``, checked against nbformat's schema, as a :class:`NotebookNode`.

    Version 4 notebooks (every Jupyter since 2015) are read here, quickly; older ones go through
    nbformat's converter.
    """
    import json

    import fastjsonschema

    try:
        data = json.loads(Path(path).read_bytes())
    except FileNotFoundError as exc:
        raise NotebookError(f"notebook {path} does not exist", hint="check the path") from exc
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise NotebookError(f"notebook {path} is not a valid .ipynb file: {exc}",
                            hint="open it in Jupyter and save it again, or restore it from version control") from exc
    except OSError as exc:
        raise NotebookError(f"notebook {path} cannot be read: {exc.strerror or exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("nbformat"), int):
        raise NotebookError(f"notebook {path} is not a valid .ipynb file: it says no nbformat version",
                            hint="open it in Jupyter and save it again, or restore it from version control")
    if data["nbformat"] != 4:
        return _read_converted(path)
    minor = data.get("nbformat_minor")
    try:
        _schema_check(minor if isinstance(minor, int) else 5)(data)
    except fastjsonschema.JsonSchemaException as exc:
        raise NotebookError(f"notebook {path} does not follow the nbformat schema: {exc}",
                            hint="open it in Jupyter and save it again") from exc
    ids = [cell.get("id") for cell in data["cells"] if "id" in cell]
    if len(set(ids)) != len(ids):
        raise NotebookError(f"notebook {path} gives two cells the same id",
                            hint="open it in Jupyter and save it again (Jupyter gives each cell its own id)")
    nb = _node(data)
    _rejoin(nb)
    return nb


def _read_converted(path: Path) -> NotebookNode:
    import nbformat

    try:
        nb = nbformat.read(str(path), as_version=4)
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        raise NotebookError(f"notebook {path} does not follow the nbformat schema: {exc.message}",
                            hint="open it in Jupyter and save it again") from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise NotebookError(f"notebook {path} is not a valid .ipynb file: {exc}",
                            hint="open it in Jupyter and save it again, or restore it from version control") from exc
    return _node(nb)


def _split(bundle: dict[str, Any]) -> None:
    for key, value in bundle.items():
        if isinstance(value, str) and (key.startswith("text/") or key in _SPLIT_MIMES):
            bundle[key] = value.splitlines(True)


def notebook_bytes(nb: dict[str, Any]) -> bytes:
    """``nb`` as ``nbformat.write`` saves it (text split into lines, keys sorted, one-space indent), without
    importing nbformat."""
    import copy
    import json

    disk = copy.deepcopy(dict(nb))
    for cell in disk.get("cells", []):
        if isinstance(cell.get("source"), str):
            cell["source"] = cell["source"].splitlines(True)
        for attachment in (cell.get("attachments") or {}).values():
            _split(attachment)
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            if output.get("output_type") in ("execute_result", "display_data"):
                _split(output.get("data", {}))
            elif output.get("output_type") == "stream" and isinstance(output.get("text"), str):
                output["text"] = output["text"].splitlines(True)
    text = json.dumps(disk, indent=1, sort_keys=True, separators=(",", ": "), ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def as_nbformat(nb: NotebookNode) -> Any:
    """The same notebook as nbformat's NotebookNode, for nbclient and ``nbformat.write``."""
    import nbformat

    return nbformat.from_dict(nb)


def is_capsule_cell(source: str) -> bool:
    """Cells that drive the capsule itself; they do not count as analysis."""
    lines = [line.strip() for line in source.splitlines() if line.strip() and not line.strip().startswith("#")]
    return bool(lines) and all(line.startswith(("%capsule", "%load_ext scidex_nbcapsule", "%reload_ext scidex_nbcapsule"))
                               for line in lines)
