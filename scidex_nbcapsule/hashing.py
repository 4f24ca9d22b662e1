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


def _stream(handle, st, sinks) -> tuple[str, str, int]:
    size = st.st_size
    sha256, sha1 = _hashers(size)
    parallel = size >= PARALLEL_THRESHOLD
    pending: list = []
    total = 0
    while True:
        chunk = handle.read(CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if parallel:
            for fut in pending:
                fut.result()
            pending = [_pool().submit(sha256.update, chunk), _pool().submit(sha1.update, chunk)]
        else:
            sha256.update(chunk)
            sha1.update(chunk)
        for sink in sinks:
            sink(chunk)
    for fut in pending:
        fut.result()
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


def copy_and_hash(source: str | os.PathLike, dest: str | os.PathLike) -> Digests:
    """Copy ``source`` to ``dest`` (parents created) and return the digests of the bytes copied."""
    source, dest = Path(source), Path(dest)
    handle, st = _open_source(source)
    with handle:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "wb") as out:
                sha256, sha1, size = _stream(handle, st, [out.write])
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
