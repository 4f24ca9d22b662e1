"""The system-level capture layer: which one runs in this kernel, and what it cannot see.

The audit hook sees only Python's own ``open()``. File access by native code
(HDF5, SQLite, Arrow) and by child processes is seen by one of two layers:

- the **interposer**, an ``LD_PRELOAD`` library in kernels that we start
  (``nbcapsule export --execute``, verification, the "Python 3 (capsule)" kernel
  spec), inherited by child processes and exact about who did what;
- the **file watcher** (Linux inotify) over the project tree, for kernels a front
  end started without it: it sees every process, so it attributes by time and
  sets aside what happened between cells.

Where neither runs, the capsule says so in ``capture.blind_spots``.
"""

from __future__ import annotations

import atexit
import os
import re
from pathlib import Path
from typing import Protocol

from . import inotify, interposer
from .launch import OWNER_ENV

INTERPOSER = "interposer"
WATCHER = "inotify"

#: Folders that are capsules: the package writes them, the analysis does not.
_CAPSULE_DIR = re.compile(r"^capsule-[0-9a-f]{8}-[0-9a-f-]{27}(\.zip|\.eln)?$")

AUDIT_ONLY_BLIND_SPOT = ("files opened by native code (HDF5, SQLite, Arrow, netCDF) and by child processes "
                         "(!commands, subprocess, os.system) are not seen")
INTERPOSER_BLIND_SPOT = ("statically linked or setuid programs, programs that make system calls directly (Go), and "
                         "child processes started with an environment without LD_PRELOAD are not seen")
WATCHER_BLIND_SPOT = ("the file watcher cannot tell which process opened a file: accesses are attributed to the cell "
                      "running at the time, those between cells are listed as unattributed and not packed; files "
                      "outside the project root are seen only when Python opens them")


class SystemLayer(Protocol):
    name: str
    #: True when each event is known to come from the kernel or its children (not any process).
    attributes_by_process: bool

    def pull(self) -> list[tuple[str, str, str | None]]: ...
    def new_cell(self) -> None: ...
    def blind_spots(self) -> list[str]: ...
    def close(self) -> None: ...


class InterposerLayer:
    """Events the preloaded library wrote for this kernel and its children."""

    name = INTERPOSER
    attributes_by_process = True

    def __init__(self, session: interposer.TraceSession, *, owned: bool = False) -> None:
        self.session = session
        self.owned = owned

    def pull(self) -> list[tuple[str, str, str | None]]:
        ops = {"unlink": "delete"}
        return [(ops.get(e.op, e.op), e.path, e.target) for e in self.session.read_new()]

    def new_cell(self) -> None:
        self.session.next_epoch()

    def blind_spots(self) -> list[str]:
        return [INTERPOSER_BLIND_SPOT]

    def close(self) -> None:
        self.session.close(remove=self.owned)


class WatcherLayer:
    """Events inotify reported for the project tree, from whichever process."""

    name = WATCHER
    attributes_by_process = False

    def __init__(self, root: Path) -> None:
        from .audit import pause_this_thread

        self.watcher = inotify.TreeWatcher(root, skip=lambda p: bool(_CAPSULE_DIR.match(os.path.basename(p))),
                                           on_thread_start=pause_this_thread)
        self.watcher.start()

    def pull(self) -> list[tuple[str, str, str | None]]:
        return [(e.op, e.path, e.target) for e in self.watcher.drain()]

    def new_cell(self) -> None:
        pass

    def blind_spots(self) -> list[str]:
        spots = [WATCHER_BLIND_SPOT]
        if self.watcher.overflowed:
            spots.append("the file watcher's event queue overflowed: some file accesses were lost")
        if self.watcher.unwatched:
            shown = ", ".join(self.watcher.unwatched[:5])
            spots.append(f"{len(self.watcher.unwatched)} folder(s) could not be watched (e.g. {shown}); raise "
                         "fs.inotify.max_user_watches")
        return spots

    def close(self) -> None:
        self.watcher.stop()


def start_layer(root: Path) -> tuple[SystemLayer | None, list[str]]:
    """The best system-level layer for this process, and the blind spots when there is none."""
    if interposer.loaded_in_this_process():
        session = interposer.TraceSession.from_env()
        if session is not None:
            owned = os.environ.get(OWNER_ENV) == str(os.getpid())
            if owned:
                atexit.register(session.close, remove=True)
            return InterposerLayer(session, owned=owned), []
    reasons = []
    why = interposer.unavailable_reason() if os.environ.get(interposer.DIR_ENV) else None
    if why:
        reasons.append(why)
    watcher = _watcher(root, reasons)
    if watcher is not None:
        return watcher, []
    return None, [AUDIT_ONLY_BLIND_SPOT + " (" + "; ".join(reasons) + ")"]


def host_layer(root: Path, session: interposer.TraceSession | None) -> tuple[SystemLayer | None, list[str]]:
    """The layer for a kernel recorded from outside (not IPython): its trace, or a watcher of its project."""
    if session is not None:
        return InterposerLayer(session), []
    reasons = [interposer.unavailable_reason() or "the interposer is not available"]
    watcher = _watcher(root, reasons)
    if watcher is not None:
        return watcher, []
    return None, [AUDIT_ONLY_BLIND_SPOT.replace("are not seen", "are not seen, nor anything else this kernel "
                                                "does") + " (" + "; ".join(reasons) + ")"]


def _watcher(root: Path, reasons: list[str]) -> WatcherLayer | None:
    """A file watcher of ``root`` when one can run; otherwise why not, added to ``reasons``."""
    if os.environ.get("NBCAPSULE_INOTIFY", "1") == "0":
        reasons.append("the file watcher is switched off (NBCAPSULE_INOTIFY=0)")
        return None
    if not inotify.available():
        reasons.append(inotify.unavailable_reason() or "the file watcher is not available")
        return None
    try:
        return WatcherLayer(root)
    except OSError as exc:
        reasons.append(f"the file watcher could not start: {exc}")
        return None
