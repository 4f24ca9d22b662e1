"""One read pass per file: SHA-256 (fixity) and git's blob SHA-1 (SWHID) while the copy is written.

hashlib releases the GIL on large buffers, so the two digests run in worker
threads while the main thread writes; a 2 GiB file never sits in memory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .errors import ExportError, InputFileError

CHUNK = 1 << 20
#: Below this size one thread does everything: thread hand-offs cost more than they save.
PARALLEL_THRESHOLD = 4 << 20

_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="nbcapsule-hash")
    return _POOL


@dataclass(frozen=True)
class Digests:
    size: int
    sha256: str
    sha1_git: str
    mode: int


def git_mode(st_mode: int) -> int:
    """The mode git (and Software Heritage) record for a file."""
    if stat.S_ISLNK(st_mode):
        return 0o120000
    return 0o100755 if st_mode & 0o111 else 0o100644


def _hashers(size: int):
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1()
    sha1.update(b"blob %d\0" % size)
    return sha256, sha1


def hash_bytes(data: bytes) -> Digests:
    sha256, sha1 = _hashers(len(data))
    sha256.update(data)
    sha1.update(data)
    return Digests(len(data), sha256.hexdigest(), sha1.hexdigest(), 0o100644)


def _open_source(source: Path):
    try:
        handle = open(source, "rb")
        st = os.fstat(handle.fileno())
    except FileNotFoundError as exc:
        raise InputFileError(f"{source} does not exist", hint="check the path, or remove it from the capsule's inputs") from exc
    except IsADirectoryError as exc:
        raise InputFileError(f"{source} is a directory, not a file") from exc
    except PermissionError as exc:
        raise InputFileError(f"{source} cannot be read: permission denied",
                             hint="make it readable, or exclude it with --exclude") from exc
    return handle, st


#: For big files, ask the kernel to start writing the copy out every this many bytes (see :func:`copy_and_hash`).
WRITEBACK_EVERY = 64 << 20


def _stream(handle, st, sinks) -> tuple[str, str, int]:
    size = st.st_size
    sha256, sha1 = _hashers(size)
    parallel = size >= PARALLEL_THRESHOLD
    if parallel and hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)  # larger read-ahead
        except OSError:
            pass
    pending: list = []
    total = 0
    if parallel:
        # two buffers in turn: the next chunk is read into one while the threads hash the other, and no
        # megabyte-sized bytes object is allocated (and page-faulted in) per chunk
        buffers = [bytearray(CHUNK), bytearray(CHUNK)]
        turn = 0
        while True:
            view = memoryview(buffers[turn])
            count = handle.readinto(view)
            if not count:
                break
            chunk = view[:count]
            total += count
            for fut in pending:
                fut.result()
            pending = [_pool().submit(sha256.update, chunk), _pool().submit(sha1.update, chunk)]
            for sink in sinks:
                sink(chunk)
            turn ^= 1
        for fut in pending:
            fut.result()
    else:
        while True:
            # ask for what is left (+1 to see the end): a CHUNK-sized request allocates a megabyte per call
            chunk = handle.read(min(CHUNK, max(size - total, 0) + 1))
            if not chunk:
                break
            total += len(chunk)
            sha256.update(chunk)
            sha1.update(chunk)
            for sink in sinks:
                sink(chunk)
    if total != size:
        raise InputFileError(f"{handle.name} changed size while it was being read ({size} → {total} bytes)",
                             hint="wait until the analysis has finished writing it, then export again")
    return sha256.hexdigest(), sha1.hexdigest(), total


def hash_file(source: str | os.PathLike) -> Digests:
    source = Path(source)
    handle, st = _open_source(source)
    with handle:
        sha256, sha1, size = _stream(handle, st, [])
    return Digests(size, sha256, sha1, git_mode(st.st_mode))


def _writeback(out):
    """A sink that, every :data:`WRITEBACK_EVERY` bytes, has the kernel start writing what was copied so far.

    POSIX_FADV_DONTNEED on dirty pages starts their write-out without waiting for it (Linux), so the disk
    writes while we still read, instead of everything queueing for the sync before the crate is renamed;
    the copy's pages also leave the page cache instead of pushing out the user's.
    """
    state = {"pending": 0, "flushed": 0}

    def sink(chunk: bytes) -> None:
        state["pending"] += len(chunk)
        if state["pending"] >= WRITEBACK_EVERY:
            out.flush()
            try:
                os.posix_fadvise(out.fileno(), state["flushed"], state["pending"], os.POSIX_FADV_DONTNEED)
            except OSError:
                pass
            state["flushed"] += state["pending"]
            state["pending"] = 0

    return sink


def copy_and_hash(source: str | os.PathLike, dest: str | os.PathLike) -> Digests:
    """Copy ``source`` to ``dest`` (parents created) and return the digests of the bytes copied."""
    source, dest = Path(source), Path(dest)
    handle, st = _open_source(source)
    with handle:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "wb") as out:
                sinks = [out.write]
                if st.st_size >= 2 * WRITEBACK_EVERY and hasattr(os, "posix_fadvise"):
                    sinks.append(_writeback(out))
                sha256, sha1, size = _stream(handle, st, sinks)
        except OSError as exc:
            raise ExportError(f"could not write {dest}: {exc.strerror or exc}",
                              hint="check free space and permissions in the destination folder") from exc
    try:
        shutil.copymode(source, dest)
    except OSError:
        pass
    return Digests(size, sha256, sha1, git_mode(st.st_mode))


def sha256_file(path: str | os.PathLike) -> str:
    return hash_file(path).sha256
