"""The process-wide audit hook: every Python ``open()``, rename and delete in the kernel, sent to the recorder.

Python cannot remove audit hooks, so one hook is installed for the life of the
process and forwards to the active recorder; unloading the extension just
detaches the recorder. The package's own I/O is kept out with :class:`paused`,
which also pauses the system-level layers for the calling thread.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from . import interposer

_RECORDER: Any = None
_HOOK_INSTALLED = False
_THREAD = threading.local()

#: ``open()`` modes that only read (the audit hook's fast path).
_READ_MODES = frozenset(("r", "rb", "rt", "br", "tr"))
#: Paths, as given to ``open()``, already recorded as read from the current folder in the current cell:
#: reading one again changes nothing, so the hook returns after one set lookup (a loop over files).
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
    elif event == "os.rename" or event == "os.remove":
        recorder = _RECORDER
        if recorder is not None and recorder.active and not getattr(_THREAD, "paused", False):
            if event == "os.rename":
                recorder.on_rename(*args)
            else:
                recorder.on_remove(*args)


def attach(recorder: Any) -> None:
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


def current_recorder() -> Any:
    return _RECORDER


def new_cell() -> None:
    """A cell starts: its first read of each file must reach the recorder, for per-cell attribution."""
    _FAST_READS.clear()


def pause_this_thread() -> None:
    """Stop recording this thread's opens for good: for worker threads that only do the package's own I/O."""
    _THREAD.paused = True
    interposer.set_thread_paused(True)


class paused:
    """Stop recording this thread's file access while the package does its own I/O (hashing, copying, writing).

    Only the calling thread is paused in the audit hook and the interposer: cells the user runs
    while a toolbar action works in the background are still recorded. A file watcher cannot tell
    threads apart, so what it sees meanwhile is set aside as the package's own.
    """

    def __init__(self) -> None:
        self.was = False
        self.recorder: Any = None

    def __enter__(self) -> "paused":
        self.was = getattr(_THREAD, "paused", False)
        _THREAD.paused = True
        if not self.was:
            interposer.set_thread_paused(True)
            self.recorder = _RECORDER
            if self.recorder is not None:
                self.recorder.quiet_begin()
        return self

    def __exit__(self, *exc: object) -> None:
        _THREAD.paused = self.was
        if not self.was:
            interposer.set_thread_paused(False)
            if self.recorder is not None:
                self.recorder.quiet_end()
