"""Re-executing a crate's notebook in a fresh kernel, bounded in time, never hanging on a dead kernel."""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..capture import VERIFYING_ENV, as_nbformat, interposer, is_capsule_cell, read_notebook
from ..capture.paths import environment_prefixes

_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class ExecutionProblem:
    """Why re-execution stopped: a cell raised, a timeout, a dead kernel, or a kernel that never started."""

    kind: str  # cell-error | cell-timeout | total-timeout | dead-kernel | kernel-start
    message: str
    cell_index: int | None = None
    cell_id: str | None = None
    source: str | None = None
    traceback: str | None = None
    #: For a cell error: the exception's class name and text (evidence for later checks; not in ``to_dict``).
    ename: str | None = field(default=None, compare=False)
    evalue: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "cell_index": self.cell_index, "cell_id": self.cell_id,
                "source": self.source, "traceback": self.traceback}


@dataclass
class RerunResult:
    notebook: Any
    problem: ExecutionProblem | None
    seconds: float
    #: What the re-run's kernel and its children opened, renamed and deleted (the interposer's record;
    #: empty where it cannot be built).
    accesses: list[Any] = field(default_factory=list)
    #: Whether the interposer traced the run; when not, ``untraced_reason`` says why, in one sentence.
    traced: bool = False
    untraced_reason: str | None = None
    #: Files the kernel machinery itself uses (its connection file): never the notebook's.
    kernel_files: list[str] = field(default_factory=list)


def strip_ansi(text: str) -> str:
    return _ANSI_RE.sub("", text)


def rerun_notebook(path: str | os.PathLike, *, cell_timeout: int = 600, total_timeout: int = 3600,
                   km: Any = None, kernel_name: str | None = None,
                   extra_env: dict[str, str] | None = None) -> RerunResult:
    """Run every analysis cell of ``path`` from its own folder; cells that only drive the capsule are not run.

    Capsule cells (``%capsule export``, ``%capsule verify`` ...) would export,
    register or verify again from inside the check, so they are skipped; the
    verifying flag is set as well for mixed cells. Each cell gets at most
    ``cell_timeout`` seconds and never more than what is left of ``total_timeout``.
    """
    from jupyter_core.utils import run_sync
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    path = Path(path)
    nb = as_nbformat(read_notebook(path))
    started = time.monotonic()
    deadline = started + total_timeout
    env = dict(os.environ)
    env[VERIFYING_ENV] = "1"
    env.update(extra_env or {})
    trace = None
    untraced_reason = None
    if interposer.library_path() is not None:  # the re-run is traced like the export's own run
        trace = interposer.TraceSession.create(skip=environment_prefixes())
        env.update(trace.env())
    else:
        untraced_reason = interposer.unavailable_reason()
    kernel_files: list[str] = []
    client = NotebookClient(nb, timeout=cell_timeout, km=km, allow_errors=False, record_timing=False,
                            kernel_name=kernel_name or nb.metadata.get("kernelspec", {}).get("name", "python3"),
                            resources={"metadata": {"path": str(path.parent)}},
                            startup_timeout=max(10, min(60, total_timeout)))
    problem: ExecutionProblem | None = None
    entered = False

    def where(index: int) -> dict[str, Any]:
        cell = client.nb.cells[index]
        return {"cell_index": index, "cell_id": cell.get("id"), "source": cell.source}

    try:
        with client.setup_kernel(env=env):
            entered = True
            connection_file = getattr(client.km, "connection_file", None)
            if connection_file:
                kernel_files.append(os.path.abspath(connection_file))
            for index, cell in enumerate(client.nb.cells):
                if cell.cell_type != "code" or not cell.source.strip():
                    continue
                if is_capsule_cell(cell.source):
                    cell.outputs = []
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    problem = ExecutionProblem("total-timeout", f"the whole run exceeded {total_timeout} s",
                                               **where(index))
                    break
                client.timeout = max(1, math.ceil(min(cell_timeout, remaining)))
                try:
                    client.execute_cell(cell, index)
                except CellTimeoutError as exc:
                    total = client.timeout < cell_timeout
                    problem = ExecutionProblem(
                        "total-timeout" if total else "cell-timeout",
                        f"the whole run exceeded {total_timeout} s" if total
                        else f"cell {index + 1} ran longer than {cell_timeout} s", traceback=strip_ansi(str(exc)),
                        **where(index))
                    break
                except DeadKernelError as exc:
                    problem = ExecutionProblem("dead-kernel", f"the kernel died while running cell {index + 1}",
                                               traceback=strip_ansi(str(exc)), **where(index))
                    break
                except CellExecutionError as exc:
                    problem = ExecutionProblem(
                        "cell-error", f"cell {index + 1} raised {exc.ename}: {strip_ansi(str(exc.evalue))}",
                        traceback=strip_ansi(exc.traceback or str(exc)), ename=str(exc.ename),
                        evalue=strip_ansi(str(exc.evalue)), **where(index))
                    break
    except Exception as exc:  # noqa: BLE001 - any failure to start or talk to the kernel is a verdict, not a crash
        if problem is None:
            problem = ExecutionProblem("dead-kernel" if entered else "kernel-start",
                                       f"the kernel could not be run: {type(exc).__name__}: {exc}")
    finally:
        accesses = []
        if trace is not None:
            accesses = trace.read_new()
            trace.close(remove=True)
        if km is not None:
            try:
                if run_sync(km.is_alive)() if _is_async(km) else km.is_alive():
                    run_sync(km.shutdown_kernel)(now=True) if _is_async(km) else km.shutdown_kernel(now=True)
            except Exception:  # noqa: BLE001 - best effort; the kernel may already be gone
                pass
    return RerunResult(notebook=client.nb, problem=problem, seconds=time.monotonic() - started, accesses=accesses,
                       traced=trace is not None, untraced_reason=untraced_reason, kernel_files=kernel_files)


def _is_async(km: Any) -> bool:
    from jupyter_client.manager import AsyncKernelManager

    return isinstance(km, AsyncKernelManager)
