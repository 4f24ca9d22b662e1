"""A crate is durable on its own: every file and folder of it is fsynced before the rename that makes it
visible, and the folder holding the new name after it; the machine's other dirty pages are left alone
(no ``sync``/``syncfs``). Checked on a real export run under strace."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import make_notebook
from scidex_nbcapsule.crate import PARTIAL_PREFIX
from scidex_nbcapsule.hashing import PARALLEL_THRESHOLD

STRACE = shutil.which("strace")
pytestmark = pytest.mark.skipif(STRACE is None, reason="strace is not installed")

CHILD = """
import sys
from scidex_nbcapsule import api
api.export(sys.argv[1], inputs=[sys.argv[2]], dest=sys.argv[3], fmt=sys.argv[4], license="MIT", progress=False)
"""

SYNCS = {"fsync", "fdatasync"}
# `1234  fsync(5</a/b>) = 0`, `1234  fsync(5</a/b> <unfinished ...>`, `1234  <... fsync resumed>) = 0`
CALL = re.compile(r"^(?P<pid>\d+)\s+(?P<name>\w+)\((?P<args>.*?)(?:\)\s+=\s+(?P<ret>-?\d+).*| <unfinished \.\.\.>)$")
RESUMED = re.compile(r"^(?P<pid>\d+)\s+<\.\.\. (?P<name>\w+) resumed>.*\)\s+=\s+(?P<ret>-?\d+)")


@dataclass
class Call:
    name: str
    args: str
    ret: int

    @property
    def fd_path(self) -> str:
        """The path strace -y printed for the call's first argument, an fd: ``5</a/b>``."""
        match = re.match(r"\d+<(.*)>", self.args)
        assert match, self.args
        return match.group(1)

    @property
    def rename(self) -> tuple[str, str]:
        names = re.findall(r'"((?:[^"\\]|\\.)*)"', self.args)
        return names[0], names[1]


def _calls(log: Path) -> list[Call]:
    """The traced calls in the order they returned (a call another thread interrupted counts when it ends)."""
    calls, pending = [], {}
    for line in log.read_text().splitlines():
        if match := RESUMED.match(line):
            name, args = pending.pop(match["pid"])
            calls.append(Call(name, args, int(match["ret"])))
        elif match := CALL.match(line):
            if match["ret"] is None:
                pending[match["pid"]] = (match["name"], match["args"])
            else:
                calls.append(Call(match["name"], match["args"], int(match["ret"])))
    assert not pending, pending
    return calls


def _export_traced(project: Path, dest: Path, fmt: str, log: Path) -> list[Call]:
    nb = make_notebook(project / "analysis.ipynb", "print(1)")
    data = project / "data"
    (data / "big.bin").write_bytes(b"\1" * (PARALLEL_THRESHOLD + 12345))  # the kernel copy
    for i in range(30):  # small files read whole, in the I/O threads, in nested folders
        sub = data / f"part{i % 3}" / f"sub{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}.txt").write_text(f"{i}\n" * 100)
    done = subprocess.run([STRACE, "-f", "-y", "-qq", "-e", "trace=sync,syncfs,fsync,fdatasync,rename,renameat,"
                           "renameat2", "-o", str(log), sys.executable, "-c", CHILD, str(nb), str(data), str(dest),
                           fmt], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    calls = _calls(log)
    assert [c for c in calls if c.name in ("sync", "syncfs")] == [], "the whole machine was flushed"
    assert all(c.ret == 0 for c in calls if c.name in SYNCS)
    return calls


def _the_rename(calls: list[Call], final: Path) -> tuple[int, Path]:
    """Where in ``calls`` the partial crate became ``final``, and the partial name."""
    renames = [(i, c.rename) for i, c in enumerate(calls) if c.name.startswith("rename") and c.ret == 0]
    found = [(i, Path(src)) for i, (src, dst) in renames if Path(dst) == final]
    assert len(found) == 1, renames
    index, partial = found[0]
    assert partial.parent == final.parent and partial.name.startswith(PARTIAL_PREFIX)
    return index, partial


def _synced_at(calls: list[Call]) -> dict[str, list[int]]:
    at: dict[str, list[int]] = {}
    for i, call in enumerate(calls):
        if call.name in SYNCS:
            at.setdefault(call.fd_path, []).append(i)
    return at


def test_folder_crate_is_fsynced_file_by_file_then_renamed_then_its_parent(project, tmp_path):
    dest = tmp_path / "new" / "capsules"  # made by the export: its name must last too
    calls = _export_traced(project, dest, "folder", tmp_path / "strace.log")
    (final,) = dest.iterdir()
    renamed, partial = _the_rename(calls, final)
    synced = _synced_at(calls)
    files = sorted(p for p in final.rglob("*") if p.is_file())
    folders = [final, *sorted(p for p in final.rglob("*") if p.is_dir())]
    assert len(files) > 35 and any(f.name == "big.bin" for f in files)
    for path in files + folders:
        before = [i for i in synced.get(str(partial / path.relative_to(final)), []) if i < renamed]
        assert before, f"{path.relative_to(final)} was not fsynced before the rename"
    for folder in folders:  # a folder after everything in it: deepest first
        inside = [max(synced[str(partial / p.relative_to(final))]) for p in folder.iterdir()]
        assert min(synced[str(partial / folder.relative_to(final))]) > max(inside), folder
    for parent in (dest, dest.parent, tmp_path):  # the new name, and the new folders' names
        assert any(i > renamed for i in synced.get(str(parent), [])), f"{parent} not fsynced after the rename"


@pytest.mark.parametrize("fmt", ["zip", "eln"])
def test_zip_crate_is_fsynced_then_renamed_then_its_parent(project, tmp_path, fmt):
    dest = tmp_path / "capsules"
    dest.mkdir()
    calls = _export_traced(project, dest, fmt, tmp_path / "strace.log")
    (final,) = dest.iterdir()
    assert final.suffix == f".{fmt}"
    renamed, partial = _the_rename(calls, final)
    synced = _synced_at(calls)
    assert any(i < renamed for i in synced.get(str(partial), [])), "the zip was not fsynced before the rename"
    assert any(i > renamed for i in synced.get(str(dest), [])), "the folder was not fsynced after the rename"
