"""Recording an analysis while it runs: executed cells, every file read and written, the notebook's identity.

Layers, each in its own module: the audit hook (``audit``, Python's ``open()``),
the system-level layer (``system``: the ``interposer`` library or the ``inotify``
file watcher, for native code and child processes), the recorder that ties each
access to its cell (``recorder``), the rules of what belongs to the analysis
(``paths``), notebook discovery (``notebook``), execution-order analysis (``order``)
and the package's own I/O threads (``iopool``). Nothing here imports IPython.
"""

from __future__ import annotations

from .audit import attach, current_recorder, detach, pause_this_thread, paused
from .iopool import IO_THREADS, io_pool, ordered_map
from .notebook import (NOTEBOOK_ENV, NOTEBOOK_PARAMETER, SNAPSHOT_ENV, VERIFYING_ENV, NotebookNode, as_nbformat,
                       find_notebook, is_capsule_cell, notebook_bytes, read_notebook, sha256_text)
from .order import analyse_order
from .paths import IGNORED_PARTS, find_project_root, is_environment_path, is_excluded, resolve_in_project
from .recorder import Access, FileAccess, Observation, Recorder

__all__ = [
    "Access", "analyse_order", "as_nbformat", "attach", "current_recorder", "detach", "FileAccess",
    "find_notebook", "find_project_root", "IGNORED_PARTS", "io_pool", "IO_THREADS", "is_capsule_cell",
    "is_environment_path", "is_excluded", "notebook_bytes", "NOTEBOOK_ENV", "NOTEBOOK_PARAMETER",
    "NotebookNode", "Observation", "ordered_map", "pause_this_thread", "paused", "read_notebook", "Recorder",
    "resolve_in_project", "sha256_text", "SNAPSHOT_ENV", "VERIFYING_ENV",
]
