"""What one kernel session did: the cells it ran and every file access, each tied to the cell it happened in.

The recorder is plain data fed by the capture layers (the audit hook in real
time, a system-level layer at cell boundaries) and by whoever sees cells start
and end (IPython's hooks in a kernel, nbclient's callbacks for other kernels).
:meth:`Recorder.observe` turns the raw accesses into what a capsule records.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..manifest import CellRun, utc_now
from . import audit
from .notebook import sha256_text
from .paths import is_environment_path, is_excluded, normalise, relative_to_root, resolve_in_project

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

#: The capture layers, as ``capture.mechanisms`` names them.
AUDIT_HOOK = "audit-hook"


@dataclass
class Access:
    """One observed file event, as a layer reported it."""

    op: str  # read | write | update | create | rename | delete
    path: str  # absolute, lexically normal, symlinks kept
    segment: int | None  # the cell execution it happened in; None between cells
    layer: str
    target: str | None = None  # rename destination


@dataclass
class FileAccess:
    """Everything the session did to one path."""

    path: Path  # as the analysis used it (symlinks kept)
    read: bool = False
    written: bool = False
    #: sha256 of the content read, taken the moment the file was opened for writing.
    read_sha256: str | None = None
    #: Where a symlink at ``path`` leads (resolved), when it is one or lies below one.
    real: Path | None = None
    layers: set[str] = field(default_factory=set)
    read_in: set[int] = field(default_factory=set)
    written_in: set[int] = field(default_factory=set)


@dataclass
class Observation:
    """The accesses sorted into what a capsule can hold, what lies outside, and what is gone."""

    files: list[FileAccess]  # under the project root, existing now
    external: list[FileAccess]  # read outside the project root, existing now
    missing: list[str]  # read, but gone by now (deleted or renamed away)
    unattributed: list[dict[str, str]]  # seen between cells by a layer that cannot tell who did it


def _changed_since(path: str, when: str | None) -> bool:
    """Whether ``path`` differs from the ``"MTIME:SIZE"`` it had when opened for update."""
    try:
        mtime, size = (when or "").split(":")
        st = os.stat(path)
    except (ValueError, OSError):
        return True  # no baseline, or gone: count the open as a write, as its flags say
    return f"{st.st_mtime_ns // 10**9}.{st.st_mtime_ns % 10**9:09d}" != mtime or str(st.st_size) != size


def _module_dirs() -> set[str]:
    """Folders of every imported module: code the interpreter loaded, not data the analysis read."""
    import sys

    dirs = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str):
            dirs.add(os.path.dirname(os.path.realpath(path)))
    return dirs


class Recorder:
    """Everything captured in one kernel session."""

    def __init__(self, project_root: Path, *, excludes: Iterable[str] = ()) -> None:
        self.project_root = Path(project_root)
        self.kernel_started = utc_now()
        self.runs: list[CellRun] = []
        self.declared_inputs: list[Path] = []
        self.declared_outputs: list[Path] = []
        self.excludes: list[str] = list(excludes)
        #: False while nothing should be recorded (the extension is being unloaded, say).
        self.active = True
        #: The system-level layer (interposer or file watcher), when one runs.
        self.system: Any = None
        self.mechanisms: list[str] = [AUDIT_HOOK]
        self.blind_spots: list[str] = []
        self._opened: dict[tuple[str, str], list[bool]] = {}
        self._read_digests: dict[str, str] = {}
        self._cwd = os.getcwd()
        #: The audit event comes before ``os.chdir`` changes folder: the new one is read at the next open.
        self._cwd_stale = False
        self._current: dict[str, Any] | None = None
        self._segment: int | None = None
        self._segments = 0
        self._cell_opened: set[tuple[str, str, bool]] = set()
        self._audit_events: list[tuple[int | None, str, str, bool]] = []
        self._events: list[Access] = []
        self._unattributed: list[Access] = []
        self._run_segment: dict[int, tuple[CellRun, int]] = {}
        self._quiet = 0
        self._lock = threading.Lock()
        #: Files the kernel machinery itself reads (its connection file, say): never the analysis's.
        self.ignored: set[str] = set()

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
        mark = (self._cwd, path, writing)
        if mark not in self._cell_opened:
            self._cell_opened.add(mark)
            self._audit_events.append((self._segment, self._cwd, path, writing))
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

    def on_rename(self, src: Any, dst: Any, src_dir_fd: Any = None, dst_dir_fd: Any = None) -> None:
        if src_dir_fd is not None or dst_dir_fd is not None:
            return  # relative to a folder descriptor: the system layer reports it with a full path
        source, target = self._absolute(src), self._absolute(dst)
        if source is not None and target is not None:
            self._events.append(Access("rename", source, self._segment, AUDIT_HOOK, target))

    def on_remove(self, path: Any, dir_fd: Any = None) -> None:
        absolute = None if dir_fd is not None else self._absolute(path)
        if absolute is not None:
            self._events.append(Access("delete", absolute, self._segment, AUDIT_HOOK))

    def _absolute(self, path: Any) -> str | None:
        """An audit event's path argument, absolute and normal; None for a descriptor or a non-path."""
        if isinstance(path, int):
            return None
        try:
            raw = os.fsdecode(os.fspath(path))
        except TypeError:
            return None
        if self._cwd_stale:
            self._refresh_cwd()
        return normalise(raw, self._cwd)

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
            with open(absolute, "rb") as handle:  # seen by the hook again as a read: already recorded
                digest = hashlib.file_digest(handle, "sha256").hexdigest() if hasattr(hashlib, "file_digest") \
                    else hashlib.sha256(handle.read()).hexdigest()
        except OSError:
            return
        self._read_digests[os.path.realpath(absolute)] = digest

    # -- the system-level layer -------------------------------------------
    def use_system_layer(self, layer: Any) -> None:
        """Take events from ``layer`` (interposer or watcher) at every cell boundary."""
        self.system = layer
        if layer is not None and layer.name not in self.mechanisms:
            self.mechanisms.append(layer.name)

    def pull_system(self, *, discard: bool = False) -> None:
        """Fetch what the system layer saw since the last call and file it under the current cell."""
        layer = self.system
        if layer is None:
            return
        with self._lock:
            events = layer.pull()
            if discard or self._quiet:
                return
            segment = self._segment
            for op, path, target in events:
                access = Access(op, path, segment, layer.name, target)
                if segment is None and not layer.attributes_by_process:
                    self._unattributed.append(access)
                elif not layer.attributes_by_process and path.endswith(".ipynb"):
                    self._unattributed.append(access)  # notebooks are saved by the front end, not the analysis
                else:
                    self._events.append(access)

    def quiet_begin(self) -> None:
        """The package starts its own I/O: what layers that cannot tell threads apart see now is not the analysis."""
        self.pull_system()
        with self._lock:
            self._quiet += 1

    def quiet_end(self) -> None:
        self.pull_system(discard=True)
        with self._lock:
            self._quiet = max(0, self._quiet - 1)

    # -- cells -----------------------------------------------------------
    def begin_cell(self, cell_id: str | None, source: str) -> None:
        self.pull_system()  # what happened since the last cell belongs to no cell
        self._segments += 1
        self._segment = self._segments
        self._cell_opened = set()
        audit.new_cell()
        if self.system is not None:
            self.system.new_cell()
        self._current = {"cell_id": cell_id, "source_sha256": sha256_text(source), "started": utc_now(),
                         "segment": self._segment}

    def end_cell(self, cell_id: str | None, source: str, execution_count: int | None, error: str | None) -> None:
        self.pull_system()
        current = self._current or {"cell_id": cell_id, "source_sha256": sha256_text(source or ""), "started": None,
                                    "segment": None}
        self._current = None
        self._segment = None
        self._cell_opened = set()
        if self.runs and self.runs[-1].status == "unknown" and self.runs[-1].execution_count == execution_count:
            self.runs.pop()  # the cell that loaded us was also seen in the history
        run = CellRun(cell_id=current["cell_id"], execution_count=execution_count,
                      source_sha256=current["source_sha256"], started=current["started"], ended=utc_now(),
                      status="error" if error is not None else "ok", error=None if error is None else error[:2000])
        self.runs.append(run)
        if current["segment"] is not None:
            self._run_segment[id(run)] = (run, current["segment"])

    # IPython's pre_run_cell / post_run_cell callbacks
    def pre_run_cell(self, info: Any) -> None:
        if not getattr(info, "store_history", True):
            return  # a front end's or runner's own request, not a notebook cell
        self.begin_cell(getattr(info, "cell_id", None), getattr(info, "raw_cell", "") or "")

    def post_run_cell(self, result: Any) -> None:
        if not getattr(result.info, "store_history", True):
            return
        error = result.error_before_exec or result.error_in_exec
        self.end_cell(getattr(result.info, "cell_id", None), result.info.raw_cell or "", result.execution_count,
                      None if error is None else f"{type(error).__name__}: {error}")

    def current_run(self) -> CellRun | None:
        """The cell running now (the one calling export), as far as it has got."""
        if not self._current:
            return None
        run = CellRun(cell_id=self._current["cell_id"], execution_count=None,
                      source_sha256=self._current["source_sha256"], started=self._current["started"],
                      ended=utc_now(), status="ok")
        self._run_segment[id(run)] = (run, self._current["segment"])  # kept alive, so its id is not reused
        return run

    def segment_of(self, run: CellRun) -> int | None:
        entry = self._run_segment.get(id(run))
        return entry[1] if entry is not None and entry[0] is run else None

    def backfill_history(self, sources: Iterable[tuple[int, str]]) -> None:
        """Cells that ran before the extension was loaded: known by count and source, not by time or files."""
        known = {r.execution_count for r in self.runs}
        early = [CellRun(cell_id=None, execution_count=count, source_sha256=sha256_text(src), started=None,
                         ended=None, status="unknown") for count, src in sources if count not in known and src]
        self.runs[:0] = early

    def unobserved_cells(self) -> list[CellRun]:
        """Cells that ran before capture started: what they read and wrote is unknown."""
        return [r for r in self.runs if r.status == "unknown"]

    # -- results ---------------------------------------------------------
    def observe(self) -> Observation:
        """The accesses so far, sorted into project files, files outside, and files gone since."""
        self.pull_system()
        by_path: dict[str, FileAccess] = {}

        def touch(path: str, op: str, segment: int | None, layer: str) -> None:
            access = by_path.get(path)
            if access is None:
                access = by_path[path] = FileAccess(Path(path))
            access.layers.add(layer)
            if op == "read":
                access.read = True
                if segment is not None:
                    access.read_in.add(segment)
            else:
                access.written = True
                if segment is not None:
                    access.written_in.add(segment)

        for segment, cwd, raw, writing in list(self._audit_events):
            touch(normalise(raw, cwd), "write" if writing else "read", segment, AUDIT_HOOK)
        for event in list(self._events):
            if event.op == "rename":
                if event.target:
                    touch(event.target, "write", event.segment, event.layer)  # the final name of an atomic write
            elif event.op == "update":  # opened read-write: written only if it changed since
                touch(event.path, "write" if _changed_since(event.path, event.target) else "read", event.segment,
                      event.layer)
            elif event.op in ("read", "write", "create"):
                touch(event.path, "read" if event.op == "read" else "write", event.segment, event.layer)
        root = self.project_root
        code_dirs = _module_dirs()
        # a file watcher names the file a symlink leads to: that is the same access as through the link
        precise = {os.path.realpath(p): p for p, a in by_path.items() if a.layers - {self._watcher_name()}}
        for path in [p for p, a in by_path.items() if a.layers == {self._watcher_name()}]:
            if precise.get(os.path.realpath(path), path) != path:
                del by_path[path]
        files: list[FileAccess] = []
        external: list[FileAccess] = []
        missing: list[str] = []
        for path in sorted(by_path):
            access = by_path[path]
            if is_environment_path(path) or path in self.ignored:
                continue
            rel = relative_to_root(path, root)
            if rel is not None and self.is_excluded(rel):
                continue
            if not os.path.isfile(path):
                if access.read and not access.written and rel is not None:
                    missing.append(rel)
                continue
            real = os.path.realpath(path)
            access.real = Path(real)
            real_rel = relative_to_root(real, root)
            if real in self._read_digests:
                access.read_sha256 = self._read_digests[real]
            if rel is not None and real_rel is not None:
                if not is_environment_path(real):
                    files.append(access)
            elif access.read and not access.written and not is_environment_path(real) \
                    and os.path.dirname(real) not in code_dirs:
                external.append(access)  # outside the root, or a symlink leading out of it
        unattributed = [{"path": relative_to_root(a.path, root) or a.path, "op": a.op, "layer": a.layer}
                        for a in self._unattributed if not is_environment_path(a.path)]
        return Observation(files=files, external=external, missing=missing, unattributed=unattributed)

    def _watcher_name(self) -> str | None:
        layer = self.system
        return layer.name if layer is not None and not layer.attributes_by_process else None

    def is_excluded(self, relpath: str) -> bool:
        return is_excluded(relpath, self.excludes)

    def declare(self, paths: Iterable[str | os.PathLike], *, role: str) -> list[Path]:
        """Add files no capture layer can see; folders mean every file below."""
        if self._cwd_stale:
            self._refresh_cwd()
        added = [resolve_in_project(p, self.project_root, base=Path(self._cwd)) for p in paths]
        target = self.declared_inputs if role == "input" else self.declared_outputs
        for path in added:
            if path not in target:
                target.append(path)
        return added

    def close(self) -> None:
        if self.system is not None:
            self.system.close()
