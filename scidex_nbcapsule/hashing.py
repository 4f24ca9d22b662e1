"""Digests computed while a file is copied, never from a second read of the disk.

An export needs SHA-256 (fixity) and git's blob SHA-1 (SWHIDs); a BagIt bag needs
SHA-256 and SHA-512. hashlib releases the GIL on large buffers, so the digests run
in parallel threads; big files are copied by the kernel (``copy_file_range``) in
another thread and hashed right behind it, from the copy's pages still in memory.
Small files are read whole, once: the bytes hashed, screened and written are the
same. A 2 GiB file never sits in memory.

Durable writes (``durable=True``) put each file on disk in the thread that wrote it,
so the waits overlap the other threads' copies: ``fdatasync`` right after a small
file, and for a big one writeback started behind each copy step
(``sync_file_range``), so the ``fdatasync`` at its end finds little left to write.
:func:`sync_dirs` and :func:`sync_path` then make the names durable. Only the files
written are flushed, never the whole machine's dirty pages (``os.sync``).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .errors import ExportError, InputFileError

CHUNK = 1 << 20
#: Files from this size on are copied by the kernel and hashed in parallel threads; smaller ones are read whole.
PARALLEL_THRESHOLD = 4 << 20
#: Big files are copied this many bytes at a time, each step hashed as soon as it has landed.
COPY_STEP = 32 << 20
#: git's blob SHA-1: SHA-1 over ``blob <size>\0`` and the content (the Software Heritage content id).
SHA1_GIT = "sha1_git"
EXPORT_ALGORITHMS = ("sha256", SHA1_GIT)

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:  # several export threads may meet their first big file at once
            if _POOL is None:
                _POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="nbcapsule-hash")
    return _POOL


@dataclass(frozen=True)
class Digests:
    size: int
    sha256: str
    sha1_git: str
    mode: int


# -- durable writes ---------------------------------------------------------------------------
#: The file's bytes and size (what reading it back needs), not its timestamps; macOS has only fsync.
_datasync = getattr(os, "fdatasync", os.fsync)
_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range: Callable[[int, int, int, int], int] | None = None


def start_writeback(fd: int, offset: int, count: int) -> None:
    """Have the kernel start writing these bytes to disk now, without waiting (``sync_file_range``): the
    copy and the disk work at once. A hint only; a no-op where the call does not exist."""
    global _sync_file_range
    if _sync_file_range is None:  # ctypes is imported only by an export that needs it
        try:
            import ctypes

            call = ctypes.CDLL(None, use_errno=True).sync_file_range
            call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            _sync_file_range = call
        except (OSError, AttributeError, TypeError):
            _sync_file_range = lambda *args: 0  # noqa: E731
    _sync_file_range(fd, offset, count, _SYNC_FILE_RANGE_WRITE)


def sync_path(path: str | os.PathLike) -> None:
    """fsync a file or folder by name; for a folder, the names in it (files created or renamed there)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_dirs(root: str | os.PathLike) -> None:
    """fsync ``root`` and every folder under it, deepest first, once the files in them are durable."""
    folders = [top for top, _, _ in os.walk(root)]
    for folder in reversed(folders):  # top-down order reversed: a folder after the folders inside it
        sync_path(folder)


def replace_file(dest: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` under a private name beside ``dest`` (parents created), then rename it over ``dest``:
    readers, in this process or another, see the old file or the new one, never half of one."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        partial.write_bytes(data)
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)


def write_file(dest: str | os.PathLike, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` to ``dest`` (parents created), on disk before returning when ``durable``."""
    _write_all(data, Path(dest), 0o666, durable)


def git_mode(st_mode: int) -> int:
    """The mode git (and Software Heritage) record for a file."""
    if stat.S_ISLNK(st_mode):
        return 0o120000
    return 0o100755 if st_mode & 0o111 else 0o100644


def _hashers(algorithms: Sequence[str], size: int) -> list:
    hashers = []
    for name in algorithms:
        if name == SHA1_GIT:
            hasher = hashlib.sha1()
            hasher.update(b"blob %d\0" % size)
        else:
            hasher = hashlib.new(name)
        hashers.append(hasher)
    return hashers


def _digests(algorithms: Sequence[str], hashers: list) -> dict[str, str]:
    return {name: hasher.hexdigest() for name, hasher in zip(algorithms, hashers)}


def _export_digests(found: dict[str, str], size: int, st_mode: int) -> Digests:
    return Digests(size, found["sha256"], found[SHA1_GIT], git_mode(st_mode))


def digest_bytes(data: bytes, algorithms: Sequence[str] = EXPORT_ALGORITHMS) -> dict[str, str]:
    hashers = _hashers(algorithms, len(data))
    for hasher in hashers:
        hasher.update(data)
    return _digests(algorithms, hashers)


def hash_bytes(data: bytes) -> Digests:
    return _export_digests(digest_bytes(data), len(data), 0o100644)


def _open_source(source: Path):
    try:
        handle = open(source, "rb", buffering=0)
        st = os.fstat(handle.fileno())
    except FileNotFoundError as exc:
        raise InputFileError(f"{source} does not exist", hint="check the path, or remove it from the capsule's inputs") from exc
    except IsADirectoryError as exc:
        raise InputFileError(f"{source} is a directory, not a file") from exc
    except PermissionError as exc:
        raise InputFileError(f"{source} cannot be read: permission denied",
                             hint="make it readable, or exclude it with --exclude") from exc
    return handle, st


def _changed(name: str, before: int, after: int, doing: str = "read") -> InputFileError:
    return InputFileError(f"{name} changed while it was being {doing} ({before} → {after} bytes)",
                          hint="wait until the analysis has finished writing it, then export again")


class _Feeder:
    """Feeds chunks to several hashers: the first in this thread, the others in the pool.

    Two buffers take turns: the next chunk is read into one while the pool still hashes the other.
    """

    def __init__(self, hashers: list) -> None:
        self.hashers = hashers
        self.buffers = [bytearray(CHUNK), bytearray(CHUNK)]
        self.turn = 0
        self.pending: list = []

    def buffer(self, limit: int = CHUNK) -> memoryview:
        return memoryview(self.buffers[self.turn])[:limit]

    def feed(self, chunk: memoryview) -> None:
        self.finish()
        self.pending = [_pool().submit(h.update, chunk) for h in self.hashers[1:]]
        self.hashers[0].update(chunk)
        self.turn ^= 1

    def finish(self) -> None:
        for fut in self.pending:
            fut.result()
        self.pending = []


def _hash_stream(handle, st: os.stat_result, algorithms: Sequence[str]) -> dict[str, str]:
    size = st.st_size
    hashers = _hashers(algorithms, size)
    total = 0
    if size >= PARALLEL_THRESHOLD:
        if hasattr(os, "posix_fadvise"):
            try:
                os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)  # larger read-ahead
            except OSError:
                pass
        feeder = _Feeder(hashers)
        while count := handle.readinto(view := feeder.buffer()):
            feeder.feed(view[:count])
            total += count
        feeder.finish()
    else:
        data = _read_all(handle, st)
        for hasher in hashers:
            hasher.update(data)
        total = len(data)
    if total != size:
        raise _changed(handle.name, size, total)
    return _digests(algorithms, hashers)


def hash_file(source: str | os.PathLike) -> Digests:
    handle, st = _open_source(Path(source))
    with handle:
        return _export_digests(_hash_stream(handle, st, EXPORT_ALGORITHMS), st.st_size, st.st_mode)


def read_small(source: str | os.PathLike) -> tuple[bytes, os.stat_result]:
    """The whole content of a file below :data:`PARALLEL_THRESHOLD`, read once, and its ``stat``.

    The bytes read are the bytes hashed, screened and written: nothing can change between those steps.
    """
    handle, st = _open_source(Path(source))
    with handle:
        return _read_all(handle, st), st


def _read_all(handle, st: os.stat_result) -> bytes:
    fd = handle.fileno()
    parts: list[bytes] = []
    total = 0
    while total <= st.st_size:
        block = os.read(fd, st.st_size - total + 1)  # one byte more than expected: growth shows
        if not block:
            break
        parts.append(block)
        total += len(block)
    if total != st.st_size:
        raise _changed(handle.name, st.st_size, total)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _mode(st: os.stat_result) -> int:
    """The source's permissions, at least readable and writable by us (the umask applies, as with ``cp``)."""
    return stat.S_IMODE(st.st_mode) | 0o600


def _create(dest: Path, mode: int) -> int:
    """Open ``dest`` for writing with ``mode`` (less the umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(dest, flags, mode)
    except FileNotFoundError:  # parents are made only when missing: no mkdir per file
        dest.parent.mkdir(parents=True, exist_ok=True)
        return os.open(dest, flags, mode)


def _write_error(dest: Path, exc: OSError) -> ExportError:
    return ExportError(f"could not write {dest}: {exc.strerror or exc}",
                       hint="check free space and permissions in the destination folder")


def _write_all(data: bytes, dest: Path, mode: int, durable: bool) -> None:
    try:
        fd = _create(dest, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                _datasync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise _write_error(dest, exc) from exc


def store(data: bytes, dest: str | os.PathLike, st: os.stat_result, *, durable: bool = False) -> Digests:
    """Write ``data`` (read by :func:`read_small` with ``st``) to ``dest`` and return its digests."""
    _write_all(data, Path(dest), _mode(st), durable)
    return _export_digests(digest_bytes(data), len(data), st.st_mode)


def _kernel_copy(src: int, dst: int, offset: int, count: int) -> int:
    """Copy ``count`` bytes at ``offset`` inside the kernel (no trip through Python buffers)."""
    try:
        return os.copy_file_range(src, dst, count, offset, offset)
    except (AttributeError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    data = os.pread(src, min(count, CHUNK), offset)
    return os.pwrite(dst, data, offset) if data else 0


class _Copier(threading.Thread):
    """Copies a file in :data:`COPY_STEP` steps and says how far it has got; with ``writeback``, each step
    starts on its way to disk as soon as it is copied."""

    def __init__(self, src: int, dst: int, size: int, writeback: bool = False) -> None:
        super().__init__(name="nbcapsule-copy", daemon=True)
        self.src, self.dst, self.size, self.writeback = src, dst, size, writeback
        self.copied = 0
        self.finished = False
        self.error: BaseException | None = None
        self.stop = False
        self.cond = threading.Condition()

    def run(self) -> None:
        try:
            while self.copied < self.size and not self.stop:
                count = _kernel_copy(self.src, self.dst, self.copied, min(COPY_STEP, self.size - self.copied))
                if not count:
                    break  # the source shrank: the size check reports it
                if self.writeback:
                    start_writeback(self.dst, self.copied, count)
                with self.cond:
                    self.copied += count
                    self.cond.notify()
        except BaseException as exc:  # handed to the hashing thread, which raises it
            self.error = exc
        finally:
            with self.cond:
                self.finished = True
                self.cond.notify()

    def wait_past(self, position: int) -> int:
        with self.cond:
            while self.copied <= position and not self.finished:
                self.cond.wait()
            if self.error is not None:
                raise self.error
            return self.copied


def _copy_large(handle, st: os.stat_result, dest: Path, algorithms: Sequence[str], durable: bool) -> dict[str, str]:
    """Copy in the kernel while the copy's bytes are hashed right behind it.

    The digests are of the bytes in the copy (read back while its pages are still in memory), and
    the hashes run in their own threads while another copies: on a 2 GiB file this is faster than
    ``openssl dgst`` followed by ``cp``.
    """
    size = st.st_size
    hashers = _hashers(algorithms, size)
    feeder = _Feeder(hashers)
    hashed = 0
    with os.fdopen(_create(dest, _mode(st)), "wb") as out, open(dest, "rb") as back:
        copier = _Copier(handle.fileno(), out.fileno(), size, writeback=durable)
        copier.start()
        try:
            while hashed < size:
                copied = copier.wait_past(hashed)
                if copied <= hashed:
                    break
                while hashed < copied:
                    view = feeder.buffer(min(CHUNK, copied - hashed))
                    count = os.preadv(back.fileno(), [view], hashed)
                    if not count:
                        raise ExportError(f"{dest} is shorter than what was copied into it",
                                          hint="something else is writing in the destination folder; export again")
                    feeder.feed(view[:count])
                    hashed += count
            feeder.finish()
        finally:
            copier.stop = True
            copier.join()
        if copier.error is None and durable:
            _datasync(out.fileno())
    if copier.error is not None:
        raise copier.error
    after = os.fstat(handle.fileno())
    if hashed != size or after.st_size != size or after.st_mtime_ns != st.st_mtime_ns:
        raise _changed(handle.name, size, after.st_size, "copied")
    return _digests(algorithms, hashers)


def copy_with_digests(source: str | os.PathLike, dest: str | os.PathLike,
                      algorithms: Sequence[str] = EXPORT_ALGORITHMS, *,
                      durable: bool = False) -> tuple[dict[str, str], os.stat_result]:
    """Copy ``source`` to ``dest`` (parents created) and return the digests of the bytes copied, and the source's stat.

    ``algorithms`` are hashlib names or :data:`SHA1_GIT`; ``durable``: the copy is on disk when this returns.
    """
    source, dest = Path(source), Path(dest)
    handle, st = _open_source(source)
    with handle:
        if st.st_size < PARALLEL_THRESHOLD:
            data = _read_all(handle, st)
            _write_all(data, dest, _mode(st), durable)
            return digest_bytes(data, algorithms), st
        try:
            return _copy_large(handle, st, dest, algorithms, durable), st
        except OSError as exc:
            raise _write_error(dest, exc) from exc


def copy_and_hash(source: str | os.PathLike, dest: str | os.PathLike, *, durable: bool = False) -> Digests:
    """Copy ``source`` to ``dest`` (parents created) and return the digests of the bytes copied."""
    found, st = copy_with_digests(source, dest, durable=durable)
    return _export_digests(found, st.st_size, st.st_mode)


def sha256_file(path: str | os.PathLike) -> str:
    return hash_file(path).sha256
