"""Watching the project tree with Linux inotify, for kernels we could not preload our interposer into.

The audit hook only sees Python's own ``open()``; files read or written by native code or by child
processes are invisible to it. inotify sees them all, at the price of knowing only *which* file was
closed after reading or writing, not by whom. Events are kept in order and handed out by
:meth:`TreeWatcher.drain`, which the recorder calls at cell boundaries so that each event lands in
the cell during which it happened.

libc is bound with :mod:`ctypes` and ``struct inotify_event`` parsed with :mod:`struct`: no
third-party dependency, nothing to build.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import struct
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = ["WatchEvent", "TreeWatcher", "available", "unavailable_reason"]

# <sys/inotify.h>
IN_MODIFY = 0x00000002
IN_OPEN = 0x00000020
IN_CLOSE_WRITE = 0x00000008
IN_CLOSE_NOWRITE = 0x00000010
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK  # defined as these in the header, on every architecture
IN_CLOEXEC = os.O_CLOEXEC

#: IN_OPEN (a read: seen at the open, so a handle still open at the end of a cell counts, as SQLite keeps
#: one) and IN_MODIFY (a write: content really changed, where IN_CLOSE_WRITE only says "opened for
#: writing", which SQLite and HDF5 also do to read). No IN_ACCESS or IN_CLOSE_*: the kernel merges an event
#: only with an identical one at the tail of the queue, so a loop opening one file 10,000 times queues one
#: IN_OPEN, whereas interleaved OPEN/ACCESS/CLOSE events would never merge and would fill the queue.
#: IN_ONLYDIR and IN_DONT_FOLLOW make a watch fail rather than land on a file, or on a folder outside
#: the tree through a symlink, if a path changes under us; IN_EXCL_UNLINK drops the close of a file
#: already deleted (a temporary file), which would otherwise be reported as a write after its delete.
WATCH_MASK = (IN_OPEN | IN_MODIFY | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
              | IN_DELETE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)

_HEADER = struct.Struct("iIII")  # int wd; uint32_t mask, cookie, len; char name[len] (NUL-padded)
#: Must hold at least one event with the longest name (16 + NAME_MAX + 1 bytes), or read() fails.
_READ_SIZE = 64 * 1024
#: How long a read batch waits for the IN_MOVED_TO of a rename whose IN_MOVED_FROM it has already read.
#: The kernel queues the two halves one after the other within the rename, so the wait is only ever
#: paid when a file or folder really left the tree (or the reader caught the rename halfway through).
MOVE_PAIRING_GRACE = 0.05
#: The reader thread's poll() timeout: a backstop, since stop() also wakes it through a pipe.
_POLL_TIMEOUT_MS = 200
#: How long the reader thread rests after a batch. Reading each event as it comes would defeat the
#: kernel's merging (a loop reading one file 10,000 times queued ~9,600 events instead of 1) and
#: wake the thread, which needs the GIL, thousands of times a second; 10 ms batches stay far from
#: the queue limit (16384 events in 10 ms would take well over a million file closes a second).
_BATCH_PAUSE_MS = 10
#: Folder names never watched (besides any starting with a dot): caches, not analysis files.
SKIPPED_NAMES = frozenset({"__pycache__", "node_modules"})


# -- libc ----------------------------------------------------------------------------------------
_LIBC: ctypes.CDLL | None = None
_LIBC_PROBLEM: str | None = None
_LIBC_LOCK = threading.Lock()


def _libc() -> ctypes.CDLL | None:
    """libc with the three inotify calls bound, loaded once (None, and a reason, when it lacks them)."""
    global _LIBC, _LIBC_PROBLEM
    with _LIBC_LOCK:
        if _LIBC is not None or _LIBC_PROBLEM is not None:
            return _LIBC
        if not sys.platform.startswith("linux"):
            _LIBC_PROBLEM = (f"inotify exists only on Linux and this is {sys.platform}, so files written by "
                             "native code or child processes cannot be watched")
            return None
        try:
            # CDLL(None) is the running program, libc included: the fallback where find_library finds nothing
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        except OSError as exc:
            _LIBC_PROBLEM = f"the C library could not be loaded ({exc}), so the project folder cannot be watched"
            return None
        if not all(hasattr(libc, name) for name in ("inotify_init1", "inotify_add_watch", "inotify_rm_watch")):
            _LIBC_PROBLEM = "this system's C library has no inotify functions, so the project folder cannot be watched"
            return None
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_init1.restype = ctypes.c_int
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        libc.inotify_add_watch.restype = ctypes.c_int
        libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.inotify_rm_watch.restype = ctypes.c_int
        _LIBC = libc
        return libc


def _init_problem(err: int) -> str:
    """Why inotify_init1 failed, in terms of what the user can do about it."""
    if err == errno.EMFILE:
        return ("inotify could not be started: too many inotify instances are open for this user "
                "(raise the sysctl fs.inotify.max_user_instances)")
    if err == errno.ENFILE:
        return "inotify could not be started: the system has run out of open files"
    if err == errno.ENOMEM:
        return "inotify could not be started: the kernel is out of memory"
    if err in (errno.ENOSYS, errno.EINVAL):
        return "inotify could not be started: this kernel (or sandbox) does not provide it"
    return f"inotify could not be started: {os.strerror(err)}"


def _open_inotify() -> int:
    """A fresh non-blocking, close-on-exec inotify descriptor (close-on-exec: child processes must not keep it)."""
    libc = _libc()
    if libc is None:
        raise OSError(errno.ENOSYS, _LIBC_PROBLEM)
    fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, _init_problem(err))
    return fd


def unavailable_reason() -> str | None:
    """Why inotify cannot be used here, in one sentence for the user, or None when it can.

    Tries ``inotify_init1`` for real, so a per-user instance limit already reached is reported too.
    """
    try:
        fd = _open_inotify()
    except OSError as exc:
        return exc.strerror
    os.close(fd)
    return None


def available() -> bool:
    """Whether a :class:`TreeWatcher` can be started in this process now."""
    return unavailable_reason() is None


def _readable(fd: int, timeout: float) -> bool:
    """Whether ``fd`` has data within ``timeout`` seconds (poll, not select: a kernel may hold >1024 fds)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(1, int(timeout * 1000))))


# -- events --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WatchEvent:
    """One thing that happened to a file in the tree.

    ``op`` is ``"read"`` (opened), ``"write"`` (its content changed, or it was moved in from outside
    the tree), ``"create"``, ``"rename"`` (``path`` to ``target``,
    both in the tree) or ``"delete"`` (deleted, or moved out of the tree).
    """

    op: str
    path: str
    target: str | None
    #: time.monotonic() when the event was read from the kernel (not when it happened: at most one
    #: read batch earlier, so good enough to order events against cell boundaries, not for timing).
    time: float


@dataclass
class _Move:
    """The first half of a rename, waiting for its IN_MOVED_TO."""

    old: str
    is_dir: bool
    #: a file's "delete" placeholder in the event list; for a folder, the first event read after it
    index: int


def _below(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + os.sep)


def _reprefix(path: str, old: str, new: str) -> str:
    return new + path[len(old):] if _below(path, old) else path


class TreeWatcher:
    """An inotify watch on a folder and every folder below it, followed as folders come and go.

    Files only are reported; folder events just add, move and drop watches. A daemon thread keeps
    draining the kernel's queue (so it does not overflow during a long cell), and :meth:`drain`
    reads whatever is still pending, so everything that happened before the call is in its result.
    """

    def __init__(self, root: Path, *, skip: Callable[[str], bool] = lambda p: False,
                 on_thread_start: Callable[[], None] | None = None) -> None:
        # real path: the recorder compares against resolved paths, and inotify follows the symlink anyway
        self.root = os.path.realpath(os.fspath(root))
        self._skip = skip
        self._on_thread_start = on_thread_start
        #: True once the kernel reported IN_Q_OVERFLOW: some events were lost.
        self.overflowed = False
        #: Folders that could not be watched (the watch limit, permissions), nor anything below them.
        self.unwatched: list[str] = []
        self._lock = threading.Lock()  # the fd, the watch tables and the event list
        self._fd = -1
        self._wake: tuple[int, int] | None = None
        self._dirs: dict[int, str] = {}   # wd -> folder
        self._wds: dict[str, int] = {}    # folder -> wd
        #: In order; None marks an event struck out within the current batch (see _folder_left).
        self._events: list[WatchEvent | None] = []
        self._tombstones = False
        #: Renames whose IN_MOVED_FROM was read in this batch but not yet their IN_MOVED_TO, by cookie.
        self._pending: dict[int, _Move] = {}
        self._moving: list[_Move] = []  # those of folders
        #: (wd, name) of files a scan of a new folder reported as created: their own IN_CREATE, queued
        #: if they appeared between adding the watch and the scan, is dropped. Only lives for one batch.
        self._scanned: set[tuple[int, bytes]] = set()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._thread_error: BaseException | None = None
        self._stopping = False
        self._life = threading.Lock()  # start() and stop() against each other
        self._started = False
        self._stopped = False

    # -- life cycle --------------------------------------------------------------------------------
    def start(self) -> TreeWatcher:
        """Watch the tree and start the reader thread; raises OSError if inotify or the root cannot be used."""
        with self._life:
            if self._started:
                raise RuntimeError("a TreeWatcher can be started only once")
            self._started = True
        self._fd = _open_inotify()
        try:
            wd = _LIBC.inotify_add_watch(self._fd, os.fsencode(self.root), WATCH_MASK)
            if wd < 0:
                err = ctypes.get_errno()
                raise OSError(err, f"the project folder {self.root} cannot be watched: {os.strerror(err)}")
            self._register(wd, self.root)
            self._watch_tree(self.root, report=False, now=time.monotonic())
            self._wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._thread = threading.Thread(target=self._run, name="nbcapsule-inotify", daemon=True)
            self._thread.start()
            self._ready.wait()
            if self._thread_error is not None:
                raise self._thread_error
        except BaseException:
            self._shut()
            raise
        return self

    def stop(self) -> None:
        """Stop watching (idempotent). Events already queued are kept for a last :meth:`drain`."""
        with self._life:
            if self._stopped or not self._started:
                self._stopped = True
                return
            self._stopped = True
        self._shut()

    def _shut(self) -> None:
        self._stopped = True
        self._stopping = True
        if self._wake is not None:
            try:
                os.write(self._wake[1], b"x")
            except OSError:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            if self._fd >= 0:
                self._read_batch()
                os.close(self._fd)  # drops every watch at once
                self._fd = -1
            self._dirs.clear()
            self._wds.clear()
            if self._wake is not None:
                for fd in self._wake:
                    os.close(fd)
                self._wake = None

    def __enter__(self) -> TreeWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- results -----------------------------------------------------------------------------------
    def drain(self) -> list[WatchEvent]:
        """Every event so far, in order, and forget them: read the kernel's queue first, synchronously.

        Whatever was closed, created, moved or deleted before this call (by this process, or by a
        child process that has exited) is already in the kernel's queue, so it is in the result.
        """
        with self._lock:
            if self._fd >= 0:
                self._read_batch()
            events, self._events = self._events, []
        return events

    # -- the reader thread -------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            if self._on_thread_start is not None:
                self._on_thread_start()
        except BaseException as exc:  # re-raised by start() in the caller's thread
            self._thread_error = exc
            self._ready.set()
            return
        self._ready.set()
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake[0], select.POLLIN)
        resting = select.poll()  # the pause between batches: only stop() ends it early
        resting.register(self._wake[0], select.POLLIN)
        while not self._stopping:
            ready = poller.poll(_POLL_TIMEOUT_MS)
            if self._stopping:
                return
            if any(fd == self._fd for fd, _ in ready):
                with self._lock:
                    if self._fd >= 0:
                        self._read_batch()
                resting.poll(_BATCH_PAUSE_MS)

    # -- reading (self._lock held) -----------------------------------------------------------------
    def _read_batch(self) -> None:
        """Read until the queue is empty, pairing the two halves of each rename on the way."""
        deadline: float | None = None
        while True:
            self._read_available()
            if not self._pending:
                break
            now = time.monotonic()
            if deadline is None:
                deadline = now + MOVE_PAIRING_GRACE
            if now >= deadline or not _readable(self._fd, deadline - now):
                break
        # no IN_MOVED_TO: moved out of the tree (a file's "delete" placeholder stands)
        for move in self._pending.values():
            if move.is_dir:
                self._folder_left(move)
        self._pending.clear()
        self._moving.clear()
        if self._tombstones:
            self._events = [e for e in self._events if e is not None]
            self._tombstones = False
        self._scanned.clear()

    def _read_available(self) -> None:
        while True:
            try:
                data = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                return
            now = time.monotonic()
            offset, size = 0, len(data)
            while offset + _HEADER.size <= size:
                wd, mask, cookie, length = _HEADER.unpack_from(data, offset)
                start = offset + _HEADER.size
                name = data[start:start + length].split(b"\0", 1)[0]
                offset = start + length
                self._handle(wd, mask, cookie, name, now)

    def _handle(self, wd: int, mask: int, cookie: int, name: bytes, now: float) -> None:
        if mask & IN_Q_OVERFLOW:
            self.overflowed = True
            return
        if mask & IN_IGNORED:  # the watch is gone (folder deleted, moved away and unwatched, unmounted)
            self._forget(wd)
            return
        folder = self._dirs.get(wd)
        if folder is None or not name:
            # a watch dropped already, or the watched folder itself (listed, deleted: IN_IGNORED follows)
            return
        path = os.path.join(folder, os.fsdecode(name))
        if mask & IN_ISDIR:
            # below a folder whose rename is half-read we do not know where it is: rescanned if it stays
            if not (self._moving and self._in_flight(folder)):
                self._handle_folder(mask, cookie, path, now)
            return
        # (a file event below a folder whose rename is half-read carries the old path: fixed on pairing)
        if mask & IN_OPEN:
            self._emit("read", path, None, now)
        elif mask & IN_MODIFY:
            self._emit("write", path, None, now)
        elif mask & IN_CREATE:
            if (wd, name) in self._scanned:
                self._scanned.discard((wd, name))
            else:
                self._emit("create", path, None, now)
        elif mask & IN_DELETE:
            self._scanned.discard((wd, name))
            self._emit("delete", path, None, now)
        elif mask & IN_MOVED_FROM:
            self._scanned.discard((wd, name))
            # "delete" unless the IN_MOVED_TO with the same cookie turns up in this batch
            self._pending[cookie] = _Move(path, False, len(self._events))
            self._events.append(WatchEvent("delete", path, None, now))
        elif mask & IN_MOVED_TO:
            move = self._pending.pop(cookie, None) if cookie else None
            placeholder = self._events[move.index] if move is not None and not move.is_dir else None
            if placeholder is not None:
                self._events[move.index] = WatchEvent("rename", placeholder.path, path, placeholder.time)
            else:
                self._emit("write", path, None, now)  # moved in from outside the tree

    def _handle_folder(self, mask: int, cookie: int, path: str, now: float) -> None:
        if mask & IN_CREATE:
            self._watch_tree(path, report=True, now=now)
        elif mask & IN_MOVED_FROM:
            move = _Move(path, True, len(self._events))
            self._pending[cookie] = move
            self._moving.append(move)
        elif mask & IN_MOVED_TO:
            move = self._pending.pop(cookie, None) if cookie else None
            if move is not None and move.is_dir and move.old in self._wds:
                self._moving.remove(move)
                if self._skipped(path):
                    self._folder_left(move)  # renamed to a hidden or skipped name
                else:
                    self._folder_moved(move, path, now)
            else:  # moved in from outside, or from a folder we do not watch
                if move is not None and move.is_dir:
                    self._moving.remove(move)
                self._watch_tree(path, report=True, now=now)
        # IN_DELETE of a folder: its own watch reports IN_IGNORED, which drops it

    def _in_flight(self, folder: str) -> bool:
        return any(_below(folder, move.old) for move in self._moving)

    def _folder_moved(self, move: _Move, new: str, now: float) -> None:
        """A watched folder renamed within the tree: same watches, new paths, also for events already read.

        Then the folders below it are listed again: a folder created in it just before the rename
        could not be watched by its old path (inotify_add_watch failed, ENOENT), and one moved out of
        it while the rename was half-read still has a watch to drop.
        """
        old = move.old
        self._rename_below(old, new)
        for i in range(move.index, len(self._events)):
            e = self._events[i]
            if e is not None and (_below(e.path, old) or (e.target is not None and _below(e.target, old))):
                self._events[i] = WatchEvent(e.op, _reprefix(e.path, old, new),
                                             None if e.target is None else _reprefix(e.target, old, new), e.time)
        visited: set[int] = set()
        self._watch_tree(new, report=True, now=now, rescan=True, visited=visited)
        for wd, _ in self._watches_below(new):
            if wd not in visited:
                self._forget(wd)
                _LIBC.inotify_rm_watch(self._fd, wd)

    def _folder_left(self, move: _Move) -> None:
        """A watched folder left the tree (or took a skipped name): what happened in it since is not ours."""
        old = move.old
        self._unwatch_below(old)
        for i in range(move.index, len(self._events)):
            e = self._events[i]
            if e is None:
                continue
            path_in = _below(e.path, old)
            target_in = e.target is not None and _below(e.target, old)
            if path_in and (e.target is None or target_in):
                self._events[i] = None
                self._tombstones = True
            elif path_in:  # renamed from the departed folder into the tree: it arrived
                self._events[i] = WatchEvent("write", e.target, None, e.time)
            elif target_in:  # renamed into the departed folder: it left
                self._events[i] = WatchEvent("delete", e.path, None, e.time)

    def _emit(self, op: str, path: str, target: str | None, now: float) -> None:
        """Append an event, unless it repeats the last one (the kernel merges those, unless it was read in between)."""
        if self._events:
            last = self._events[-1]
            if last is not None and last.path == path and last.target == target:
                if last.op == op or (op == "read" and last.op == "create"):
                    return  # a repeat, or the open that comes with a create
                if op == "write" and last.op == "read":
                    self._events[-1] = WatchEvent(op, path, target, now)  # that open was to write
                    return
        self._events.append(WatchEvent(op, path, target, now))

    # -- watch management (self._lock held, or before the thread starts) ----------------------------
    def _skipped(self, folder: str) -> bool:
        name = os.path.basename(folder)
        if name.startswith(".") or name in SKIPPED_NAMES:
            return True
        try:
            return bool(self._skip(folder))
        except Exception:  # noqa: BLE001 - a failing filter must not cost the events of the batch being read
            return False  # watching too much is the safe side: the recorder filters again

    def _add_watch(self, folder: str) -> int | None:
        """The watch descriptor for ``folder``, or None (recorded in ``unwatched`` unless it vanished)."""
        wd = _LIBC.inotify_add_watch(self._fd, os.fsencode(folder), WATCH_MASK)
        if wd >= 0:
            return wd
        err = ctypes.get_errno()
        if err not in (errno.ENOENT, errno.ENOTDIR) and folder not in self.unwatched:
            self.unwatched.append(folder)  # ENOSPC (fs.inotify.max_user_watches), EACCES, ...
        return None

    def _watch_tree(self, top: str, *, report: bool, now: float, rescan: bool = False,
                    visited: set[int] | None = None) -> None:
        """Watch ``top`` and the folders below it; with ``report``, files found are ``create`` events.

        The watch goes on before the folder is listed, so a file is either listed or reported by the
        kernel (or both: the scanned set drops the duplicate), never lost. Folders already watched
        are left alone, or with ``rescan`` only searched for new folders below them.
        """
        stack = [top]
        while stack:
            folder = stack.pop()
            known = False
            if folder == self.root:  # watched by start(), whatever its name
                wd = self._wds[folder]
            else:
                if self._skipped(folder):
                    continue
                wd = self._add_watch(folder)
                if wd is None:
                    continue
                known = wd in self._dirs
                if known:  # seen already (through its parent's listing and then its own event, say)
                    if self._dirs[wd] != folder:
                        self._rename_below(self._dirs[wd], folder)
                    if not rescan:
                        continue
                else:
                    self._register(wd, folder)
            if visited is not None:
                visited.add(wd)
            try:
                with os.scandir(folder) as listing:
                    entries = sorted(listing, key=lambda e: e.name)
            except OSError:
                continue  # gone already: its events, if any, said so
            subfolders = []
            for entry in entries:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if is_dir:
                    subfolders.append(entry.path)
                elif report and not known:
                    self._scanned.add((wd, os.fsencode(entry.name)))
                    self._emit("create", entry.path, None, now)
            stack.extend(reversed(subfolders))  # depth first, in name order

    def _register(self, wd: int, folder: str) -> None:
        self._dirs[wd] = folder
        self._wds[folder] = wd

    def _forget(self, wd: int) -> None:
        folder = self._dirs.pop(wd, None)
        if folder is not None and self._wds.get(folder) == wd:
            del self._wds[folder]

    def _watches_below(self, folder: str) -> list[tuple[int, str]]:
        return [(wd, f) for wd, f in self._dirs.items() if _below(f, folder)]

    def _rename_below(self, old: str, new: str) -> None:
        """A watched folder moved within the tree: the same watches now name the new paths."""
        for wd, folder in self._watches_below(old):
            self._forget(wd)
            self._register(wd, new + folder[len(old):])

    def _unwatch_below(self, folder: str) -> None:
        """A watched folder left the tree (or took a skipped name): what happens in it is not ours."""
        for wd, _ in self._watches_below(folder):
            self._forget(wd)
            _LIBC.inotify_rm_watch(self._fd, wd)  # its IN_IGNORED is then dropped as unknown
