"""The corpus's expectations checked against the system: strace -f of the same notebooks in a real kernel.

The kernel (and every child it starts) runs under ``strace -f``; the project
files strace saw opened, created or renamed into place are the ground truth.
They must equal what each case says its code touches, and what the capsule
holds, so neither the hand-written expectations nor the capture can drift.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from corpus import CASES, available
from scidex_nbcapsule import api

pytestmark = pytest.mark.skipif(shutil.which("strace") is None and os.environ.get("CI") != "true",
                                reason="strace is not installed (Debian package strace; .ci/run installs it)")

_CALL = re.compile(r'^(?P<pid>\d+) +(?P<name>\w+)\((?P<args>.*)\) += (?P<ret>-?\d+)(?:<(?P<fdpath>[^>]*)>)?')
_RESUMED = re.compile(r'^\d+ +<\.\.\. \w+ resumed>(?P<rest>.*)$')
_CWD = re.compile(r'AT_FDCWD<(?P<cwd>[^>]*)>')
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")


def _kernel_spec(folder: Path, trace: Path) -> None:
    spec = folder / "kernels" / "python3-strace"
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


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_strace_sees_what_the_case_expects_and_the_capsule_holds(case, tmp_path, monkeypatch):
    if not available(case):
        pytest.fail(f"{case.name} needs {case.needs}: install the [test] extra")
    folder, outside, notebook = case.build(tmp_path / "run")
    specs = tmp_path / "jupyter"
    trace = tmp_path / "strace.txt"
    _kernel_spec(specs, trace)
    monkeypatch.setenv("JUPYTER_PATH", str(specs))
    monkeypatch.chdir(folder)
    capsule = api.export_executed(notebook, export_argv=["--license", "MIT"], license="MIT", progress=False,
                                  kernel_name="python3-strace")
    seen = strace_files(trace, folder.resolve(), exclude=capsule.path.parent.resolve())
    seen.pop(notebook.name, None)  # read by the export itself, and packed anyway
    expected_real = {os.path.relpath(os.path.realpath(folder / p), folder.resolve()): role
                     for p, role in case.expected.items()}
    assert set(seen) == set(expected_real), "strace saw other project files than the case expects"
    for path, how in seen.items():
        # strace cannot tell a read-write open that changed nothing (SQLite reading) from a write
        allowed = {"read": {"input"}, "output": {"output"}, "written": {"input", "output"}}[how]
        assert expected_real[path] in allowed, f"{path}: strace saw it {how}, the case says {expected_real[path]}"
    held = {os.path.relpath(os.path.realpath(folder / (f.link_target or f.path)), folder.resolve()): f.role
            for f in capsule.manifest.files if f.role in ("input", "output", "code")
            and f.path != capsule.manifest.notebook}
    assert held == expected_real
