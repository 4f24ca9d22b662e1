"""Recording an analysis while it runs: executed cells, files read and written, the notebook's identity.

An audit hook sees every ``open()`` in the kernel, so files are found without
the user listing them. Python cannot remove audit hooks, so one hook is
installed for the life of the process and forwards to the active recorder;
unloading the extension just detaches the recorder.
"""

from __future__ import annotations

import collections
import fnmatch
import hashlib
import os
import sys
import sysconfig
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .errors import InputFileError, NotebookError, NotebookNotFound, PathOutsideProject
from .manifest import CellRun, Problem, format_time, utc_now

#: Environment variables through which a runner names the notebook a headless kernel executes.
NOTEBOOK_ENV = "NBCAPSULE_NOTEBOOK"
#: ... and the file where it keeps the notebook, outputs included, as executed so far.
SNAPSHOT_ENV = "NBCAPSULE_NOTEBOOK_SNAPSHOT"
#: Papermill-style parameter a notebook may define to name itself.
NOTEBOOK_PARAMETER = "capsule_notebook"

#: Folders never swept in unless a file in them is named explicitly.
IGNORED_PARTS = frozenset({".git", ".ipynb_checkpoints", "__pycache__", ".venv", "venv", "node_modules"})

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def _interpreter_dirs() -> tuple[str, ...]:
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, "/proc", "/dev", "/sys"}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            dirs.add(path)
    return tuple(sorted(os.path.realpath(d) + os.sep for d in dirs))


def find_project_root(start: str | os.PathLike) -> Path:
    """The enclosing git work tree, or ``start`` itself: the boundary of what a capsule may hold."""
    here = Path(start).resolve()
    for candidate in (here, *here.parents):
        if (candidate / ".git").exists():
            return candidate
    return here


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class FileAccess:
    path: Path
    read: bool = False
    written: bool = False
    #: sha256 of the content read, taken the moment the file was opened for writing.
    read_sha256: str | None = None


@dataclass
class Recorder:
    """Everything captured in one kernel session."""

    project_root: Path
    kernel_started: str = field(default_factory=utc_now)
    runs: list[CellRun] = field(default_factory=list)
    declared_inputs: list[Path] = field(default_factory=list)
    declared_outputs: list[Path] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    #: False while nothing should be recorded (the extension is being unloaded, say).
    active: bool = True
    _opened: dict[tuple[str, str], list[bool]] = field(default_factory=dict)
    _read_digests: dict[str, str] = field(default_factory=dict)
    _cwd: str = field(default_factory=os.getcwd)
    #: The audit event comes before ``os.chdir`` changes folder: the new one is read at the next open.
    _cwd_stale: bool = False
    _current: dict[str, Any] | None = None

    # -- audit events --------------------------------------------------
    def on_open(self, path: Any, mode: Any, flags: Any) -> None:
        if isinstance(path, int):
            return
        try:
            path = os.fsdecode(os.fspath(path))  # path-like objects too (even unhashable ones)
        except TypeError:
            return
        if mode is None:
            writing = bool((flags or 0) & _WRITE_FLAGS)
        else:
            writing = "w" in mode or "a" in mode or "x" in mode or "+" in mode
        if self._cwd_stale:
            self._refresh_cwd()
        key = (self._cwd, path)
        seen = self._opened.get(key)
        if seen is None:
            self._opened[key] = [not writing, writing]
            return
        if writing and not seen[1]:
            seen[1] = True
            if seen[0]:
                self._remember_read_version(key)
        elif not writing:
            seen[0] = True

    def on_chdir(self, path: Any) -> None:
        self._cwd_stale = True

    def _refresh_cwd(self) -> None:
        try:
            self._cwd = os.getcwd()
        except OSError:
            pass
        self._cwd_stale = False

    def _remember_read_version(self, key: tuple[str, str]) -> None:
        """A file read earlier is about to be rewritten: keep the digest of what was read."""
        absolute = os.path.join(*key)
        try:
            with open(absolute, "rb") as handle:  # our own read: the recorder is paused below
                digest = hashlib.file_digest(handle, "sha256").hexdigest() if hasattr(hashlib, "file_digest") \
                    else hashlib.sha256(handle.read()).hexdigest()
        except OSError:
            return
        self._read_digests[os.path.realpath(absolute)] = digest

    # -- IPython events ------------------------------------------------
    def pre_run_cell(self, info: Any) -> None:
        if not getattr(info, "store_history", True):
            return  # a front end's or runner's own request, not a notebook cell
        source = getattr(info, "raw_cell", "") or ""
        self._current = {"cell_id": getattr(info, "cell_id", None), "source_sha256": sha256_text(source),
                         "started": utc_now()}

    def post_run_cell(self, result: Any) -> None:
        if not getattr(result.info, "store_history", True):
            return
        current = self._current or {"cell_id": getattr(result.info, "cell_id", None),
                                    "source_sha256": sha256_text(result.info.raw_cell or ""), "started": None}
        self._current = None
        error = result.error_before_exec or result.error_in_exec
        if self.runs and self.runs[-1].status == "unknown" and self.runs[-1].execution_count == result.execution_count:
            self.runs.pop()  # the cell that loaded us was also seen in the history
        self.runs.append(CellRun(
            cell_id=current["cell_id"], execution_count=result.execution_count,
            source_sha256=current["source_sha256"], started=current["started"], ended=utc_now(),
            status="error" if error is not None else "ok",
            error=None if error is None else f"{type(error).__name__}: {error}"[:2000],
        ))

    def current_run(self) -> CellRun | None:
        """The cell running now (the one calling export), as far as it has got."""
        if not self._current:
            return None
        return CellRun(cell_id=self._current["cell_id"], execution_count=None,
                       source_sha256=self._current["source_sha256"], started=self._current["started"],
                       ended=utc_now(), status="ok")

    def backfill_history(self, sources: Iterable[tuple[int, str]]) -> None:
        """Cells that ran before the extension was loaded: known by count and source, not by time."""
        known = {r.execution_count for r in self.runs}
        early = [CellRun(cell_id=None, execution_count=count, source_sha256=sha256_text(src), started=None,
                         ended=None, status="unknown") for count, src in sources if count not in known and src]
        self.runs[:0] = early

    # -- results ---------------------------------------------------------
    def accessed_files(self) -> list[FileAccess]:
        """Files under the project root the analysis opened, interpreter files and ignored folders left out."""
        root = str(self.project_root) + os.sep
        skip = _interpreter_dirs()
        merged: dict[str, FileAccess] = {}
        for (cwd, raw), (was_read, was_written) in list(self._opened.items()):
            absolute = os.path.realpath(os.path.join(cwd, raw))
            if not absolute.startswith(root) or absolute.startswith(skip):
                continue
            rel = absolute[len(root):]
            if any(part in IGNORED_PARTS or part.startswith(".") for part in rel.split(os.sep)[:-1]):
                continue
            if self.is_excluded(rel) or not os.path.isfile(absolute):
                continue
            access = merged.setdefault(absolute, FileAccess(Path(absolute)))
            access.read |= was_read
            access.written |= was_written
            if absolute in self._read_digests:
                access.read_sha256 = self._read_digests[absolute]
        return [merged[k] for k in sorted(merged)]

    def is_excluded(self, relpath: str) -> bool:
        posix = relpath.replace(os.sep, "/")
        return any(fnmatch.fnmatch(posix, pat) or fnmatch.fnmatch(posix.rsplit("/", 1)[-1], pat)
                   for pat in self.excludes)

    def declare(self, paths: Iterable[str | os.PathLike], *, role: str) -> list[Path]:
        """Add files the audit hook cannot see (read by a subprocess, say); folders mean every file below."""
        if self._cwd_stale:
            self._refresh_cwd()
        added = [resolve_in_project(p, self.project_root, base=Path(self._cwd)) for p in paths]
        target = self.declared_inputs if role == "input" else self.declared_outputs
        for path in added:
            if path not in target:
                target.append(path)
        return added


def resolve_in_project(path: str | os.PathLike, root: Path, *, base: Path | None = None) -> Path:
    """The real path of ``path``, which must exist and lie under ``root`` (symlinks followed)."""
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        candidate = (base or Path.cwd()) / candidate
    if not candidate.exists() and not candidate.is_symlink():
        raise InputFileError(f"{path} does not exist", hint="check the path; declared files must exist when you export")
    real = candidate.resolve()
    if not real.exists():
        raise InputFileError(f"{path} is a symlink to {real}, which does not exist")
    if real != root and root not in real.parents:
        what = "is a symlink that escapes" if candidate.is_symlink() or real != candidate.absolute() else "lies outside"
        raise PathOutsideProject(f"{path} {what} the project root {root}",
                                 hint="copy the file into the project, or export from a folder that contains it")
    return real


# -- the process-wide audit hook --------------------------------------------
_RECORDER: Recorder | None = None
_HOOK_INSTALLED = False


_THREAD = threading.local()


#: ``open()`` modes that only read (the audit hook's fast path).
_READ_MODES = frozenset(("r", "rb", "rt", "br", "tr"))
#: Paths, as given to ``open()``, already recorded as read from the current folder: reading one again
#: changes nothing, so the hook returns after one set lookup (the common case in a loop over files).
_FAST_READS: set = set()


def _audit(event: str, args: tuple) -> None:
    # runs on every audit event in the kernel: keep the common paths short
    if event == "open":
        try:
            if args[0] in _FAST_READS and args[1] in _READ_MODES:
                return
        except TypeError:  # an unhashable path-like: take the slow path
            pass
        recorder = _RECORDER
        if recorder is not None and recorder.active and not getattr(_THREAD, "paused", False):
            recorder.on_open(*args)
            if args[1] in _READ_MODES and isinstance(args[0], str):
                _FAST_READS.add(args[0])
    elif event == "os.chdir":
        _FAST_READS.clear()
        recorder = _RECORDER
        if recorder is not None:
            recorder.on_chdir(*args)


def attach(recorder: Recorder) -> None:
    global _RECORDER, _HOOK_INSTALLED
    if not _HOOK_INSTALLED:
        sys.addaudithook(_audit)
        _HOOK_INSTALLED = True
    _FAST_READS.clear()
    _RECORDER = recorder


def detach() -> None:
    global _RECORDER
    _RECORDER = None
    _FAST_READS.clear()


def current_recorder() -> Recorder | None:
    return _RECORDER


def pause_this_thread() -> None:
    """Stop recording this thread's opens for good: for worker threads that only do the package's own I/O."""
    _THREAD.paused = True


#: Threads the package copies and hashes files with: enough to keep a cold disk busy, few enough for 2 cores.
IO_THREADS = 4


def io_pool(workers: int = IO_THREADS) -> ThreadPoolExecutor:
    """Worker threads for the package's own file I/O, whose opens are never recorded as the analysis's."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nbcapsule-io", initializer=pause_this_thread)


def ordered_map(executor: ThreadPoolExecutor | None, fn: Callable[[Any], Any], items: Iterable[Any], *,
                window: int = 64) -> Iterator[Any]:
    """``fn`` over ``items`` in order, at most ``window`` calls in flight (tens of thousands of futures cost memory).

    Closing the iterator early cancels what has not started and waits for what has.
    """
    if executor is None:
        yield from map(fn, items)
        return
    pending: collections.deque = collections.deque()
    try:
        for item in items:
            pending.append(executor.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        for future in pending:
            if not future.cancelled():
                future.exception()  # wait; its error, if any, is not the one to report


class paused:
    """Stop recording this thread's opens while the package does its own I/O (hashing, copying, writing).

    Only the calling thread is paused: cells the user runs while a toolbar action works
    in the background are still recorded.
    """

    def __init__(self) -> None:
        self.was = False

    def __enter__(self) -> "paused":
        self.was = getattr(_THREAD, "paused", False)
        _THREAD.paused = True
        return self

    def __exit__(self, *exc: object) -> None:
        _THREAD.paused = self.was


# -- which notebook is this ----------------------------------------------------
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


# -- execution-order analysis -----------------------------------------------------
def is_capsule_cell(source: str) -> bool:
    """Cells that drive the capsule itself; they do not count as analysis."""
    lines = [line.strip() for line in source.splitlines() if line.strip() and not line.strip().startswith("#")]
    return bool(lines) and all(line.startswith(("%capsule", "%load_ext scidex_nbcapsule", "%reload_ext scidex_nbcapsule"))
                               for line in lines)


def analyse_order(nb: Any, runs: list[CellRun], *, current: CellRun | None = None,
                  saved_at: float | None = None) -> list[Problem]:
    """Execution-order problems in ``nb`` given what this kernel ran."""
    problems: list[Problem] = []
    by_id = {r.cell_id: r for r in runs if r.cell_id}
    by_source: dict[str, list[CellRun]] = {}
    for run in runs:
        by_source.setdefault(run.source_sha256, []).append(run)
    last_counts: list[tuple[int, str, str | None]] = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        label = f"cell {index + 1}" + (f" (id {cell.get('id')})" if cell.get("id") else "")
        cell_id = cell.get("id")
        digest = sha256_text(cell.source)
        if current is not None and (digest == current.source_sha256 or (cell_id and cell_id == current.cell_id)):
            continue
        run = by_id.get(cell_id) if cell_id else None
        if run is not None and run.source_sha256 != digest:
            problems.append(Problem("edited-after-run", f"{label} was edited after it last ran; its outputs may not "
                                    "match its code", cell_id))
        if run is None:
            matches = by_source.get(digest)
            run = matches[-1] if matches else None
        saved_count = cell.get("execution_count")
        if run is None:
            if saved_count is not None:
                problems.append(Problem("kernel-restarted", f"{label} shows output from execution {saved_count}, which "
                                        "did not happen in this kernel session (was the kernel restarted?)", cell_id))
            else:
                problems.append(Problem("never-run", f"{label} was never run in this kernel session", cell_id))
            continue
        if run.status == "error":
            problems.append(Problem("cell-error", f"{label} raised {run.error}", cell_id))
        if run.execution_count is not None:
            last_counts.append((run.execution_count, label, cell_id))
    highest = None
    for count, label, cell_id in last_counts:
        if highest is not None and count < highest[0]:
            problems.append(Problem("out-of-order", f"{label} last ran as execution {count}, before {highest[1]} above "
                                    f"it (execution {highest[0]}): re-run the notebook top to bottom", cell_id))
        if highest is None or count > highest[0]:
            highest = (count, label)
    ended = [r.ended for r in runs if r.ended]
    if saved_at is not None and ended:
        saved = format_time(datetime.fromtimestamp(saved_at, timezone.utc))
        if saved < max(ended):
            problems.append(Problem("stale-notebook", "the notebook file on disk was saved before the last cell ran: "
                                    "its outputs are stale; save the notebook and export again"))
    return problems
