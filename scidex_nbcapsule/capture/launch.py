"""``python -m scidex_nbcapsule.capture.launch -f CONNECTION_FILE``: an ipykernel with capture on from its start.

The "Python 3 (capsule)" kernel spec runs this. The interposer has to be in the
environment before the process starts (the dynamic loader reads LD_PRELOAD once),
so this sets it up and then replaces itself with ``ipykernel_launcher``, which
loads the extension before the first cell. Without a C compiler the kernel still
starts, with the audit hook and the file watcher, and its capsules say so.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from . import interposer
from .paths import environment_prefixes

#: Names the process that owns (and removes at exit) the trace folder it was started with.
OWNER_ENV = "NBCAPSULE_TRACE_OWNER"


#: File in a trace folder naming the pid of the kernel that owns it.
OWNER_FILE = "owner"


def sweep_stale_traces() -> list[Path]:
    """Remove trace folders whose kernel is gone: a kernel killed by its front end never runs its exit handlers."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob("nbcapsule-trace-*"):
        try:
            pid = int((folder / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue  # not a launcher's, or still being set up
        try:
            os.kill(pid, 0)
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, someone else's
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def kernel_command(argv: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "ipykernel_launcher", *argv, "--ext", "scidex_nbcapsule"]


def main(argv: Sequence[str] | None = None) -> None:
    env = dict(os.environ)
    sweep_stale_traces()
    if interposer.DIR_ENV not in env and interposer.library_path() is not None:
        session = interposer.TraceSession.create(skip=environment_prefixes())
        env.update(session.env())
        # exec keeps the pid: the kernel removes the folder at exit, or the next launch once it is gone
        env[OWNER_ENV] = str(os.getpid())
        (session.path / OWNER_FILE).write_text(str(os.getpid()))
    command = kernel_command(sys.argv[1:] if argv is None else argv)
    os.execve(command[0], command, env)


if __name__ == "__main__":  # pragma: no cover - replaced by the kernel
    main()
