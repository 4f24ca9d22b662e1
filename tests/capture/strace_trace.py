"""strace as the truth of file access: a kernel spec that runs ipykernel under ``strace -f``, and a reader
of its log that lists the project files opened, created or renamed into place, with how."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

_CALL = re.compile(r'^(?P<pid>\d+) +(?P<name>\w+)\((?P<args>.*)\) += (?P<ret>-?\d+)(?:<(?P<fdpath>[^>]*)>)?')
_RESUMED = re.compile(r'^\d+ +<\.\.\. \w+ resumed>(?P<rest>.*)$')
_CWD = re.compile(r'AT_FDCWD<(?P<cwd>[^>]*)>')
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")


KERNEL_NAME = "python3-strace"


def install_kernel_spec(folder: Path, trace: Path) -> None:
    """A kernel spec under ``folder/kernels`` (put ``folder`` on JUPYTER_PATH) whose kernel logs to ``trace``."""
    spec = folder / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    argv = ["strace", "-f", "-qq", "-y", "-s", "4096", "-o", str(trace),
            "-e", "trace=open,openat,creat,rename,renameat,renameat2,chdir",
            sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "Python 3 (strace)",
                                                  "language": "python"}))


def strace_files(trace: Path, root: Path, exclude: Path) -> dict[str, str]:
    """Project files (by real path, relative to ``root``) that strace saw touched, with their role."""
    cwd: dict[str, str] = {}
    touched: dict[str, str] = {}

    def note(path: str, role: str) -> None:
        real = os.path.realpath(path)
        rel = os.path.relpath(real, root)
        if rel.startswith("..") or Path(real).is_relative_to(exclude) or not os.path.isfile(real):
            return
        if any(part.startswith(".") or part == "__pycache__" for part in Path(rel).parts[:-1]):
            return
        rank = ("read", "written", "output")
        if rank.index(role) > rank.index(touched.get(rel, "read")):
            touched[rel] = role
        touched.setdefault(rel, role)

    pending: dict[str, str] = {}
    for line in trace.read_text(errors="replace").splitlines():
        # -f interleaves threads: "PID call(args <unfinished ...>" ... "PID <... call resumed>rest"
        pid = line.split(" ", 1)[0]
        if line.endswith("<unfinished ...>"):
            pending[pid] = line[: -len("<unfinished ...>")].rstrip()
            continue
        resumed = _RESUMED.match(line)
        if resumed:
            line = pending.pop(pid, "") + resumed["rest"]
        match = _CALL.match(line)
        if not match or int(match["ret"]) < 0:
            continue
        pid, name, args = match["pid"], match["name"], match["args"]
        where = _CWD.search(args)
        if where:
            cwd[pid] = where["cwd"]
        strings = _STRING.findall(args)
        if name in ("open", "openat", "creat") and match["fdpath"] and "O_DIRECTORY" not in args:
            writing = name == "creat" or any(flag in args for flag in _WRITE_FLAGS)
            note(match["fdpath"], "written" if writing else "read")
        elif name.startswith("rename") and len(strings) >= 2:
            base = cwd.get(pid, str(root))
            note(os.path.join(base, strings[-1]), "output")
        elif name == "chdir" and strings:
            cwd[pid] = os.path.normpath(os.path.join(cwd.get(pid, str(root)), strings[0]))
    return touched
