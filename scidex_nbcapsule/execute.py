"""Running a notebook headlessly in a fresh kernel (nbclient), optionally with capture on.

This is the CI path (``nbcapsule export --execute``, ``make demo``): the kernel
is told which notebook it runs, and a snapshot of the notebook with the
outputs so far is saved after every cell, as a front end's autosave would.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_core.utils import run_sync

from .capture import NOTEBOOK_ENV, SNAPSHOT_ENV, read_notebook
from .errors import ExecutionFailed, NotebookError

RESULT_MARK = "__nbcapsule_result__"


@dataclass
class RunResult:
    notebook: Any
    error: str | None
    capsule: dict[str, Any] | None
    seconds: float


def _export_code(export_argv: list[str] | None) -> str:
    argv = json.dumps(export_argv or [])
    return (
        "import json as _j, shlex as _s\n"
        "from scidex_nbcapsule import magics as _m\n"
        "_ip = get_ipython()\n"
        "_cm = next((st[0] for st in _m._STATE.values()), None)\n"
        "_cap = _cm.last if _cm is not None else None\n"
        "_note = None\n"
        f"if _cap is None:\n    _cap = _ip.run_line_magic('capsule', 'export ' + _s.join({argv}))\n"
        f"elif {argv}:\n    _note = 'the notebook exported itself with its own %capsule export; the export options "
        "given to the runner were not used'\n"
        "_d = _cap.to_dict() if _cap is not None else None\n"
        "if _d is not None and _note:\n    _d['notices'].append(_note)\n"
        f"print({RESULT_MARK!r} + _j.dumps(_d))\n"
    )


def run_notebook(path: str | os.PathLike, *, capture: bool = True, export_argv: list[str] | None = None,
                 cell_timeout: int = 600, kernel_name: str | None = None, cwd: str | os.PathLike | None = None,
                 extra_env: dict[str, str] | None = None, allow_errors: bool = False) -> RunResult:
    """Execute ``path`` top to bottom; with ``capture``, load the extension first and export at the end."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    import nbformat

    path = Path(path).resolve()
    nb = read_notebook(path)
    started = time.monotonic()
    snapshot = Path(tempfile.mkstemp(prefix="nbcapsule-run-", suffix=".ipynb")[1])
    env = dict(os.environ)
    env.update(extra_env or {})
    if capture:
        env[NOTEBOOK_ENV] = str(path)
        env[SNAPSHOT_ENV] = str(snapshot)

    def save(**_: Any) -> None:
        tmp = snapshot.with_suffix(".tmp")
        nbformat.write(client.nb, str(tmp))
        os.replace(tmp, snapshot)

    client = NotebookClient(nb, timeout=cell_timeout, kernel_name=kernel_name or nb.metadata.get(
        "kernelspec", {}).get("name", "python3"), allow_errors=allow_errors,
        resources={"metadata": {"path": str(Path(cwd) if cwd else path.parent)}},
        on_cell_executed=save if capture else None)
    error = None
    capsule = None
    try:
        save()
        with client.setup_kernel(env=env):
            if capture:
                reply = run_sync(client.kc.execute_interactive)("%load_ext scidex_nbcapsule", store_history=False,
                                                      timeout=cell_timeout)
                if reply["content"]["status"] != "ok":
                    raise ExecutionFailed("the kernel could not load scidex_nbcapsule",
                                          hint="install scidex-nbcapsule in the kernel's environment")
            try:
                for index, cell in enumerate(client.nb.cells):
                    client.execute_cell(cell, index)
            except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
                error = str(exc)
            if capture and error is None:
                capsule = _collect_capsule(client, export_argv, cell_timeout)
    finally:
        snapshot.unlink(missing_ok=True)
        snapshot.with_suffix(".tmp").unlink(missing_ok=True)
    return RunResult(notebook=client.nb, error=error, capsule=capsule, seconds=time.monotonic() - started)


def _collect_capsule(client: Any, export_argv: list[str] | None, timeout: int) -> dict[str, Any] | None:
    out: list[str] = []
    errors: list[str] = []

    def hook(msg: dict) -> None:
        kind = msg["header"]["msg_type"]
        if kind == "stream":
            out.append(msg["content"]["text"])
        elif kind == "error":
            errors.append("\n".join(msg["content"].get("traceback", [])) or msg["content"].get("evalue", ""))

    run_sync(client.kc.execute_interactive)(_export_code(export_argv), store_history=False, output_hook=hook, timeout=timeout)
    if errors:
        raise ExecutionFailed("the export in the kernel failed:\n" + _strip_ansi(errors[-1]))
    for line in "".join(out).splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    raise NotebookError("the kernel did not report the capsule it exported")


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)
