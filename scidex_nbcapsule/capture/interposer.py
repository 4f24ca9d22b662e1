"""The ``LD_PRELOAD`` interposer: file access by native code and child processes, seen from inside them.

The audit hook sees only Python's own ``open()``. A small C library
(``interposer.c``), preloaded into a kernel we start, wraps glibc's ``open``,
``fopen``, ``rename``, ``unlink`` and their relatives, and appends one record per
new (operation, path) to a shared ``events`` file. Child processes inherit the
environment, so ``!sort``, ``subprocess`` and ``os.system`` are seen too, each
record carrying the pid of the process that made the call.

The library is compiled on first use with the machine's C compiler and cached;
where that is impossible (not Linux, no compiler) :func:`unavailable_reason`
says what is not seen. Nothing here imports IPython: the CLI and the server
use it as well.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import platform
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import CaptureError

#: The C source; the compiled library's name carries its digest, so an edited source is rebuilt.
SOURCE = Path(__file__).with_name("interposer.c")
#: Only the wrappers are exported; no PLT stubs and no libdl where libc has dlsym: a child process
#: loads the library in about the time an empty one takes. The last entry goes after the source.
CFLAGS = ("-shared", "-fPIC", "-O2", "-Wall", "-fvisibility=hidden", "-fno-plt", "-Wl,--as-needed", "-ldl")

#: Environment variables the library reads at load time.
DIR_ENV = "NBCAPSULE_TRACE_DIR"
SKIP_ENV = "NBCAPSULE_TRACE_SKIP"
#: ``NBCAPSULE_INTERPOSER=0`` switches the layer off; ``NBCAPSULE_INTERPOSER_CACHE`` moves the build folder.
SWITCH_ENV = "NBCAPSULE_INTERPOSER"
CACHE_ENV = "NBCAPSULE_INTERPOSER_CACHE"

_TRACE_PREFIX = "NBCAPSULE_TRACE_"
_OPS = {b"r": "read", b"w": "write", b"a": "update", b"m": "rename", b"u": "unlink"}
_NOT_SEEN = "so file access by native code and child processes is not seen"
#: How the library is named in its cache folder: ``<16 hex of the source's SHA-256>-<machine>.so``.
_OURS = re.compile(r"^[0-9a-f]{16}-[A-Za-z0-9_]+\.so$")
_EPOCH = struct.Struct("=Q")


class InterposerUnavailable(CaptureError):
    """The interposer library cannot be built or is switched off, so a traced session cannot start."""


# ----------------------------------------------------------------- the library

_BUILD_LOCK = threading.Lock()
_BUILT: tuple[Path | None, str | None] | None = None


def _cache_dir() -> Path:
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_cache_dir("scidex-nbcapsule")) / "interposer"


def _compiler() -> list[str] | None:
    """``$CC`` (which may carry flags), else ``cc``, else ``gcc``: the first one found on PATH."""
    candidates = []
    if os.environ.get("CC"):
        try:
            candidates.append(shlex.split(os.environ["CC"]))
        except ValueError:
            pass
    candidates += [["cc"], ["gcc"]]
    for argv in candidates:
        if argv and (found := shutil.which(argv[0])):
            return [found, *argv[1:]]
    return None


def _build() -> tuple[Path | None, str | None]:
    if not sys.platform.startswith("linux"):
        return None, f"the file-access tracer needs Linux (this is {platform.system() or sys.platform}), {_NOT_SEEN}"
    if os.environ.get(SWITCH_ENV, "1") == "0":
        return None, f"the file-access tracer is switched off ({SWITCH_ENV}=0), {_NOT_SEEN}"
    try:
        source = SOURCE.read_bytes()
    except OSError as exc:
        return None, f"the file-access tracer's source {SOURCE} cannot be read ({exc.strerror}), {_NOT_SEEN}"
    folder = _cache_dir()
    key = hashlib.sha256(source + " ".join(CFLAGS).encode()).hexdigest()[:16]
    target = folder / f"{key}-{platform.machine() or 'unknown'}.so"
    if target.is_file():
        return target, None
    cc = _compiler()
    if cc is None:
        return None, f"no C compiler (cc or gcc) was found, {_NOT_SEEN}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return None, f"the tracer's build folder {folder} cannot be created ({exc.strerror}), {_NOT_SEEN}"
    # a private name in the same folder, then one rename: concurrent first uses never see half a library
    partial = folder / f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    argv = [*cc, *CFLAGS[:-1], "-o", str(partial), str(SOURCE), CFLAGS[-1]]
    try:
        done = subprocess.run(argv, env=untraced_env(), cwd=folder, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0 or not partial.is_file():
            lines = [line for line in (done.stderr or done.stdout).splitlines() if "error" in line.lower()]
            detail = (lines or (done.stderr or done.stdout).splitlines() or [f"exit status {done.returncode}"])[0]
            return None, f"compiling the file-access tracer with {cc[0]} failed ({detail.strip()}), {_NOT_SEEN}"
        os.replace(partial, target)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"compiling the file-access tracer with {cc[0]} failed ({exc}), {_NOT_SEEN}"
    finally:
        try:
            partial.unlink()
        except OSError:  # already renamed into place, or never written
            pass
    return target, None


def _built() -> tuple[Path | None, str | None]:
    global _BUILT
    if os.environ.get(SWITCH_ENV, "1") == "0":  # read every time: a runner may switch it off for one kernel
        return None, f"the file-access tracer is switched off ({SWITCH_ENV}=0), {_NOT_SEEN}"
    if _BUILT is None:
        with _BUILD_LOCK:
            if _BUILT is None:
                _BUILT = _build()
    return _BUILT


def library_path() -> Path | None:
    """The compiled library (built on first use, then cached for the process), or None where it cannot be had."""
    return _built()[0]


def unavailable_reason() -> str | None:
    """Why :func:`library_path` is None, in one sentence for users; None when the library is there."""
    return _built()[1]


def _is_ours(entry: str) -> bool:
    """True for an ``LD_PRELOAD`` entry naming this library (this build or an older one)."""
    path = Path(entry)
    if _BUILT is not None and _BUILT[0] is not None and path == _BUILT[0]:
        return True
    return bool(_OURS.match(path.name))


def _preloads(value: str) -> list[str]:
    return [entry for entry in re.split(r"[:\s]+", value) if entry]


def untraced_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default ``os.environ``) without the interposer: for subprocesses the package runs itself."""
    result = {k: v for k, v in (os.environ if env is None else env).items() if not k.startswith(_TRACE_PREFIX)}
    if "LD_PRELOAD" in result:
        kept = [entry for entry in _preloads(result["LD_PRELOAD"]) if not _is_ours(entry)]
        if kept:
            result["LD_PRELOAD"] = ":".join(kept)
        else:
            del result["LD_PRELOAD"]
    return result


# ------------------------------------------------- this process's own library

_SYMBOLS: Any = None
_SYMBOLS_LOCK = threading.Lock()


def _symbols() -> Any:
    """``(pause, active)`` from the library preloaded into this process, or ``()`` when it is not there."""
    global _SYMBOLS
    if _SYMBOLS is None:
        with _SYMBOLS_LOCK:
            if _SYMBOLS is None:
                found: Any = ()
                if sys.platform.startswith("linux"):
                    try:
                        import ctypes

                        process = ctypes.CDLL(None)
                        pause = process.nbcapsule_trace_pause
                        pause.argtypes, pause.restype = [ctypes.c_int], None
                        active = process.nbcapsule_trace_active
                        active.argtypes, active.restype = [], ctypes.c_int
                        found = (pause, active)
                    except (OSError, AttributeError, ImportError):
                        found = ()
                _SYMBOLS = found
    return _SYMBOLS


def loaded_in_this_process() -> bool:
    """True when this process runs with the library preloaded (a kernel we started traced)."""
    return bool(_symbols())


def set_thread_paused(on: bool) -> None:
    """Stop (or resume) recording the calling thread's file access: the package's own copying and hashing."""
    symbols = _symbols()
    if symbols:
        symbols[0](1 if on else 0)


def recording_in_this_process() -> bool:
    """True when the preloaded library is configured and records the calling thread's file access."""
    symbols = _symbols()
    return bool(symbols) and bool(symbols[1]())


# ----------------------------------------------------------------- sessions


@dataclass(frozen=True)
class TraceEvent:
    """One record: ``op`` is ``"read"``, ``"write"``, ``"update"`` (opened read-write: ``target`` is
    ``"MTIME:SIZE"`` at the open, so a later change tells it was written), ``"rename"`` (``path`` → ``target``)
    or ``"unlink"``."""

    op: str
    pid: int
    path: str
    target: str | None


def _prefixes(skip: Iterable[str | os.PathLike]) -> list[str]:
    """Absolute prefixes ending in ``/``, in both the given and the resolved spelling (the library does not resolve)."""
    out: list[str] = []
    for entry in skip:
        raw = os.fspath(entry)
        if not raw:
            continue
        for form in (os.path.abspath(raw), os.path.realpath(raw)):
            form = form.rstrip("/") + "/"
            # the variable is colon-separated: such a folder cannot be named, and is simply recorded
            if ":" not in form and form not in out:
                out.append(form)
    return out


class TraceSession:
    """A trace folder: ``events`` (what traced processes append) and ``epoch`` (a shared counter).

    One session per traced kernel. The creator hands :meth:`env` to the kernel's
    process; the kernel finds the same folder with :meth:`from_env`. Reading uses
    ``os.pread`` on a descriptor opened once, so polling never reaches the
    package's audit hook (which sees every Python ``open()``).
    """

    def __init__(self, path: Path, skip: Iterable[str] = ()) -> None:
        self.path = Path(path)
        self.skip: tuple[str, ...] = tuple(_prefixes(skip))
        self._lock = threading.Lock()
        self._pending = b""
        self._read_to = 0
        self._offset = 0
        self._map: mmap.mmap | None = None
        self._fd = os.open(self.path / "events", os.O_RDONLY | os.O_CLOEXEC)
        try:
            epoch_fd = os.open(self.path / "epoch", os.O_RDWR | os.O_CLOEXEC)
            try:
                self._map = mmap.mmap(epoch_fd, _EPOCH.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            finally:
                os.close(epoch_fd)
        except (OSError, ValueError):
            os.close(self._fd)
            raise

    @classmethod
    def create(cls, skip: Iterable[str] = ()) -> "TraceSession":
        """A new, empty trace folder under the temporary directory."""
        path = Path(tempfile.mkdtemp(prefix="nbcapsule-trace-"))
        try:
            os.close(os.open(path / "events", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            fd = os.open(path / "epoch", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, bytes(_EPOCH.size))
            finally:
                os.close(fd)
            return cls(path, skip)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "TraceSession | None":
        """The session named by ``NBCAPSULE_TRACE_DIR``: how a traced kernel finds its own; None if there is none."""
        folder = environ.get(DIR_ENV)
        if not folder:
            return None
        try:
            return cls(Path(folder), [p for p in environ.get(SKIP_ENV, "").split(":") if p])
        except (OSError, ValueError):
            return None

    def env(self) -> dict[str, str]:
        """What a child process needs to be traced into this session (merge it into its environment)."""
        library = library_path()
        if library is None:
            raise InterposerUnavailable(f"A traced kernel cannot be started: {unavailable_reason()}.",
                                        hint=f"install a C compiler (cc or gcc), or set {SWITCH_ENV}=0 to run "
                                             "without the file-access tracer")
        others = [entry for entry in _preloads(os.environ.get("LD_PRELOAD", "")) if not _is_ours(entry)]
        return {
            "LD_PRELOAD": ":".join([str(library), *others]),
            DIR_ENV: str(self.path),
            SKIP_ENV: ":".join(self.skip),
        }

    @property
    def offset(self) -> int:
        """Bytes of ``events`` consumed so far (a partly written record at the end is not counted)."""
        return self._offset

    def read_new(self) -> list[TraceEvent]:
        """The events appended since the last call, in file order."""
        with self._lock:
            if self._fd < 0:
                return []
            chunks = [self._pending]
            while True:
                chunk = os.pread(self._fd, 1 << 20, self._read_to)
                if not chunk:
                    break
                chunks.append(chunk)
                self._read_to += len(chunk)
            data = b"".join(chunks)
            events, used = _parse(data)
            self._pending = data[used:]
            self._offset = self._read_to - len(self._pending)
            return events

    def next_epoch(self) -> None:
        """Make every traced process record its accesses again from now on: a new cell begins."""
        with self._lock:
            if self._map is None:
                return
            (value,) = _EPOCH.unpack_from(self._map, 0)
            _EPOCH.pack_into(self._map, 0, (value + 1) & 0xFFFFFFFFFFFFFFFF)

    def close(self, remove: bool = True) -> None:
        """Stop reading; with ``remove``, delete the folder too (pass False for a session found by :meth:`from_env`)."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self._map is not None:
                self._map.close()
                self._map = None
        if remove:
            shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> "TraceSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TraceSession({str(self.path)!r}, offset={self._offset})"


def _parse(data: bytes) -> tuple[list[TraceEvent], int]:
    """Complete records in ``data`` and how many bytes they take; a damaged record is skipped field by field."""
    fields = data.split(b"\0")
    complete = len(fields) - 1  # the last piece has no terminator yet
    events: list[TraceEvent] = []
    i = 0
    used = 0
    decode = os.fsdecode
    while i + 4 <= complete:
        op, pid, path, target = fields[i], fields[i + 1], fields[i + 2], fields[i + 3]
        kind = _OPS.get(op)
        if kind is None or not pid.isdigit() or not path.startswith(b"/"):
            # not the start of a record (a torn write): resynchronise one field further on
            used += len(fields[i]) + 1
            i += 1
            continue
        events.append(TraceEvent(kind, int(pid), decode(path), decode(target) if target else None))
        used += len(op) + len(pid) + len(path) + len(target) + 4
        i += 4
    return events, used
