"""The capture corpus in real kernels: every file each notebook reads and writes is in its capsule, with its role.

Each case runs headless (``export_executed``: a fresh ipykernel, capture from
the first cell) twice: with the interposer preloaded, and with it switched off
so that the live-kernel file watcher is the system-level layer. Recall and
precision must both be 1.0, roles included, and every digest must be that of
the file's bytes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from corpus import CASES, Case, available
from scidex_nbcapsule import api

LAYERS = ("interposer", "inotify")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_case(case: Case, base: Path, monkeypatch, layer: str, *extra: str) -> tuple[api.Capsule, Path, Path]:
    folder, outside, notebook = case.build(base)
    monkeypatch.chdir(folder)
    if layer == "inotify":
        monkeypatch.setenv("NBCAPSULE_INTERPOSER", "0")
    include_external = "--include-external" in extra
    capsule = api.export_executed(notebook, export_argv=["--license", "MIT", *extra], license="MIT",
                                  include_external=include_external, progress=False)
    return capsule, folder, outside


def payload_roles(capsule: api.Capsule) -> dict[str, str]:
    manifest = capsule.manifest
    return {f.path: f.role for f in manifest.files
            if f.role in ("input", "output", "code") and f.path != manifest.notebook}


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_file_the_notebook_touches_is_captured_with_its_role(case, layer, tmp_path, monkeypatch):
    if not available(case):
        pytest.fail(f"{case.name} needs {case.needs}: install the [test] extra")
    capsule, folder, outside = run_case(case, tmp_path, monkeypatch, layer)
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
    capsule, folder, outside = run_case(case, tmp_path, monkeypatch, "interposer", "--include-external")
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

