"""The capture corpus in real kernels: every file each notebook reads and writes is in its capsule, with its role.

Each case runs headless (``export_executed``: a fresh ipykernel, capture from
the first cell) with the interposer preloaded, its kernel and children under
``strace -f``: the project files strace saw must equal the case's expectations,
so neither the hand-written expectations nor the capture can drift from the
system. The cases where native code or child processes touch files run again
with the interposer switched off, so that the file watcher is the system-level
layer. Recall and precision must both be 1.0, roles included, and every digest
must be that of the file's bytes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

import strace_trace
from corpus import CASES, Case, available
from scidex_nbcapsule import api

#: Cases whose files native code or child processes open, renames and links: where the layers differ.
WATCHER_CASES = ("pandas-parquet", "h5py", "sqlite3", "netcdf", "shell-commands", "subprocess", "atomic-rename",
                 "symlinks")
RUNS = [pytest.param(c, "interposer", id=f"{c.name}-interposer") for c in CASES] + \
       [pytest.param(c, "inotify", id=f"{c.name}-inotify") for c in CASES if c.name in WATCHER_CASES]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_case(case: Case, base: Path, monkeypatch, layer: str, *, include_external: bool = False,
             strace_log: Path | None = None) -> tuple[api.Capsule, Path, Path]:
    folder, outside, notebook = case.build(base / "run")
    monkeypatch.chdir(folder)
    if layer == "inotify":
        monkeypatch.setenv("NBCAPSULE_INTERPOSER", "0")
    kernel_name = None
    if strace_log is not None:
        strace_trace.install_kernel_spec(base / "jupyter", strace_log)
        monkeypatch.setenv("JUPYTER_PATH", str(base / "jupyter"))
        kernel_name = strace_trace.KERNEL_NAME
    capsule = api.export_executed(notebook, license="MIT", include_external=include_external,
                                  progress=False, kernel_name=kernel_name)
    return capsule, folder, outside


def check_against_strace(case: Case, capsule: api.Capsule, folder: Path, log: Path) -> None:
    """strace's project files equal the case's expectations; their roles agree as far as strace can tell."""
    seen = strace_trace.strace_files(log, folder.resolve(), exclude=capsule.path.parent.resolve())
    seen.pop(capsule.manifest.notebook, None)  # read by the export itself, and packed anyway
    expected_real = {os.path.relpath(os.path.realpath(folder / p), folder.resolve()): role
                     for p, role in case.expected.items()}
    assert set(seen) == set(expected_real), "strace saw other project files than the case expects"
    for path, how in seen.items():
        # strace cannot tell a read-write open that changed nothing (SQLite reading) from a write
        allowed = {"read": {"input"}, "output": {"output"}, "written": {"input", "output"}}[how]
        assert expected_real[path] in allowed, f"{path}: strace saw it {how}, the case says {expected_real[path]}"


def payload_roles(capsule: api.Capsule) -> dict[str, str]:
    manifest = capsule.manifest
    return {f.path: f.role for f in manifest.files
            if f.role in ("input", "output", "code") and f.path != manifest.notebook}


@pytest.mark.parametrize(("case", "layer"), RUNS)
def test_every_file_the_notebook_touches_is_captured_with_its_role(case, layer, tmp_path, monkeypatch):
    if not available(case):
        pytest.fail(f"{case.name} needs {case.needs}: install the [test] extra")
    traced = layer == "interposer"
    if traced and shutil.which("strace") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("strace is missing: .ci/run installs Debian's strace")
        pytest.skip("strace is not installed (Debian package strace)")
    log = tmp_path / "strace.txt" if traced else None
    capsule, folder, outside = run_case(case, tmp_path, monkeypatch, layer, strace_log=log)
    if log is not None:
        check_against_strace(case, capsule, folder, log)
    manifest = capsule.manifest
    got = payload_roles(capsule)
    expected = case.expected
    right = {p for p in got if expected.get(p) == got[p]}
    recall = len(right) / len(expected) if expected else 1.0
    precision = len(right) / len(got) if got else 1.0
    assert got == expected, f"recall {recall:.2f}, precision {precision:.2f}"
    assert layer in manifest.capture["mechanisms"] and "audit-hook" in manifest.capture["mechanisms"]
    for record in manifest.files:
        if record.path in expected:  # the crate holds the bytes the digest names, which are the file's bytes
            assert record.sha256 == _sha256(capsule.path / record.path) == _sha256(folder / record.path)
    assert {f.path: f.link_target for f in manifest.files if f.link_target} == case.links
    externals = {os.path.realpath(e["path"]): e for e in manifest.external_inputs}
    assert set(externals) == {os.path.realpath(outside / p) for p in case.external}
    for real, entry in externals.items():
        assert entry["sha256"] == _sha256(Path(real)) and entry["size"] == Path(real).stat().st_size
    if case.external:
        assert any("--include-external" in n for n in capsule.notices)
    # every access is tied to the cell execution it happened in
    cells = [c for c in manifest.execution.cells if c.execution_count is not None]
    reads = {p for c in cells for p in c.reads}
    writes = {p for c in cells for p in c.writes}
    for path, role in expected.items():
        assert path in (writes if role == "output" else reads), f"{path} is in no cell's {role} list"
    assert manifest.execution.problems == [] or all(p.kind != "late-capture" for p in manifest.execution.problems)


def test_accesses_are_attributed_to_the_cell_that_made_them(tmp_path, monkeypatch):
    case = next(c for c in CASES if c.name == "shell-commands")
    capsule, _, _ = run_case(case, tmp_path, monkeypatch, "interposer")
    cells = {c.execution_count: c for c in capsule.manifest.execution.cells if c.execution_count}
    assert cells[1].reads == ["data/in.txt"] and cells[1].writes == ["results/sorted.txt"]
    assert cells[2].reads == ["data/other.txt"] and cells[2].writes == ["results/copy.txt"]
    assert cells[3].reads == ["results/sorted.txt"] and cells[3].writes == []


def test_include_external_packs_outside_files_with_their_original_path(tmp_path, monkeypatch):
    case = next(c for c in CASES if c.name == "absolute-outside")
    capsule, folder, outside = run_case(case, tmp_path, monkeypatch, "interposer", include_external=True)
    original = str(outside / "reference.csv")
    record = next(f for f in capsule.manifest.files if f.original_path == original)
    assert record.path == "external/" + original.lstrip("/") and record.role == "input"
    assert (capsule.path / record.path).read_bytes() == (outside / "reference.csv").read_bytes()
    entry = capsule.manifest.external_inputs[0]
    assert entry["path"] == original and entry["included_as"] == record.path


def test_nothing_outside_the_root_is_packed_without_the_flag(tmp_path, monkeypatch):
    case = next(c for c in CASES if c.name == "sibling-data")
    capsule, folder, outside = run_case(case, tmp_path, monkeypatch, "interposer")
    assert not any(f.path.startswith("external/") or f.original_path for f in capsule.manifest.files)
    assert not (capsule.path / "external").exists()
    assert [e["path"] for e in capsule.manifest.external_inputs] == [str(folder.parent / "data/raw.csv")]

