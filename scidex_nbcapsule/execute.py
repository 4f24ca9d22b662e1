"""Running a notebook headlessly in a fresh kernel (nbclient), with capture on from the first cell.

This is the CI path (``nbcapsule export --execute``, ``%capsule export --rerun``,
``make demo``): the kernel is told which notebook it runs, runs with the
interposer library preloaded when it can be built (so native code and child
processes are seen), and a snapshot of the notebook with the outputs so far is
saved after every cell, as a front end's autosave would. An IPython kernel loads
the extension and exports itself; any other kernel (IRkernel, say) is recorded
from outside, through the system-level layer and nbclient's cell callbacks.
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

from . import errors
from .capture import (NOTEBOOK_ENV, SNAPSHOT_ENV, Recorder, as_nbformat, find_project_root, interposer, read_notebook,
                      system)
from .capture.paths import environment_prefixes
from .capture.recorder import AUDIT_HOOK
from .errors import ExecutionFailed, NotebookError

RESULT_MARK = "__nbcapsule_result__"
ERROR_MARK = "__nbcapsule_error__"


@dataclass
class RunResult:
    notebook: Any
    error: str | None
    capsule: dict[str, Any] | None
    seconds: float
    #: For a kernel that cannot record itself: what was recorded from outside.
    recorder: Recorder | None = None


def _export_code(export_argv: list[str] | None) -> str:
    """Code the kernel runs after the last cell: export (unless the notebook did), report it or the error."""
    argv = json.dumps(export_argv or [])
    return (
        "import json as _j, shlex as _s\n"
        "from scidex_nbcapsule import magics as _m, errors as _e\n"
        "_ip = get_ipython()\n"
        "_cm = next((st[0] for st in _m._STATE.values()), None)\n"
        "_cap = _cm.last if _cm is not None else None\n"
        "_note = None\n"
        "try:\n"
        f"    if _cap is None:\n        _cap = _cm.export_from_argv({argv})\n"
        f"    elif {argv}:\n        _note = 'the notebook exported itself with its own %capsule export; the export "
        "options given to the runner were not used'\n"
        "    _d = _cap.to_dict() if _cap is not None else None\n"
        "    if _d is not None and _note:\n        _d['notices'].append(_note)\n"
        f"    print({RESULT_MARK!r} + _j.dumps(_d))\n"
        "except _e.CapsuleError as _x:\n"
        f"    print({ERROR_MARK!r} + _j.dumps({{'type': type(_x).__name__, 'message': _x.message, "
        "'hint': _x.hint}))\n"
    )


def is_ipython_kernel(kernel_name: str) -> bool:
    """True for kernels that can load the extension themselves (ipykernel and its kernel specs)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel as exc:
        raise ExecutionFailed(f"no Jupyter kernel named {kernel_name!r} is installed",
                              hint="install it, or change the notebook's kernel (jupyter kernelspec list)") from exc
    return spec.language.lower() == "python" and any("ipykernel" in part or "scidex_nbcapsule" in part
                                                     for part in spec.argv)


def run_notebook(path: str | os.PathLike, *, capture: bool = True, export_argv: list[str] | None = None,
                 cell_timeout: int = 600, kernel_name: str | None = None, cwd: str | os.PathLike | None = None,
                 extra_env: dict[str, str] | None = None, allow_errors: bool = False) -> RunResult:
    """Execute ``path`` top to bottom; with ``capture``, record it and (IPython) export at the end."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    import nbformat

    path = Path(path).resolve()
    nb = as_nbformat(read_notebook(path))
    kernel_name = kernel_name or nb.metadata.get("kernelspec", {}).get("name", "python3")
    self_recording = capture and is_ipython_kernel(kernel_name)
    started = time.monotonic()
    snapshot = Path(tempfile.mkstemp(prefix="nbcapsule-run-", suffix=".ipynb")[1])
    env = dict(os.environ)
    env.update(extra_env or {})
    session = None
    recorder = None
    if capture:
        env[NOTEBOOK_ENV] = str(path)
        env[SNAPSHOT_ENV] = str(snapshot)
        if interposer.library_path() is not None:
            session = interposer.TraceSession.create(skip=environment_prefixes())
            env.update(session.env())
        if not self_recording:
            recorder = Recorder(find_project_root(Path(cwd) if cwd else path.parent))
            layer, spots = system.host_layer(recorder.project_root, session)
            recorder.use_system_layer(layer)
            recorder.mechanisms.remove(AUDIT_HOOK)  # nothing runs inside this kernel
            recorder.blind_spots += spots

    def save(**_: Any) -> None:
        tmp = snapshot.with_suffix(".tmp")
        nbformat.write(client.nb, str(tmp))
        os.replace(tmp, snapshot)

    def cell_starts(cell: Any, cell_index: int, **_: Any) -> None:
        if cell.cell_type == "code":
            recorder.begin_cell(cell.get("id"), cell.source)

    def cell_ends(cell: Any, cell_index: int, execute_reply: dict | None = None, **_: Any) -> None:
        if cell.cell_type == "code":
            content = (execute_reply or {}).get("content", {})
            error = f"{content.get('ename')}: {content.get('evalue')}" if content.get("status") == "error" else None
            recorder.end_cell(cell.get("id"), cell.source, content.get("execution_count"), error)
        save()

    hooks: dict[str, Any] = {}
    if recorder is not None:
        hooks = {"on_cell_execute": cell_starts, "on_cell_executed": cell_ends}
    elif capture:
        hooks = {"on_cell_executed": save}
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name=kernel_name, allow_errors=allow_errors,
                            resources={"metadata": {"path": str(Path(cwd) if cwd else path.parent)}}, **hooks)
    error = None
    capsule = None
    try:
        save()
        with client.setup_kernel(env=env):
            if recorder is not None and client.km.connection_file:
                recorder.ignored.add(os.path.abspath(client.km.connection_file))
            if self_recording:
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
            if self_recording and error is None:
                capsule = _collect_capsule(client, export_argv, cell_timeout)
        if recorder is not None:
            recorder.pull_system()
    finally:
        snapshot.unlink(missing_ok=True)
        snapshot.with_suffix(".tmp").unlink(missing_ok=True)
        if recorder is not None:
            recorder.close()
        if session is not None:
            session.close(remove=True)
    return RunResult(notebook=client.nb, error=error, capsule=capsule, seconds=time.monotonic() - started,
                     recorder=recorder)


def _collect_capsule(client: Any, export_argv: list[str] | None, timeout: int) -> dict[str, Any] | None:
    out: list[str] = []
    errors_seen: list[str] = []

    def hook(msg: dict) -> None:
        kind = msg["header"]["msg_type"]
        if kind == "stream":
            out.append(msg["content"]["text"])
        elif kind == "error":
            errors_seen.append("\n".join(msg["content"].get("traceback", [])) or msg["content"].get("evalue", ""))

    run_sync(client.kc.execute_interactive)(_export_code(export_argv), store_history=False, output_hook=hook,
                                            timeout=timeout)
    if errors_seen:
        raise ExecutionFailed("the export in the kernel failed:\n" + _strip_ansi(errors_seen[-1]))
    for line in "".join(out).splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
        if line.startswith(ERROR_MARK):
            raise _relayed(json.loads(line[len(ERROR_MARK):]))
    raise NotebookError("the kernel did not report the capsule it exported")


def _relayed(data: dict[str, Any]) -> errors.CapsuleError:
    """The kernel's own CapsuleError, raised again here with its class, message and hint."""
    kind = getattr(errors, str(data.get("type")), None)
    if not (isinstance(kind, type) and issubclass(kind, errors.CapsuleError)):
        kind = errors.CapsuleError
    return kind(str(data.get("message")), hint=data.get("hint"))


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)
