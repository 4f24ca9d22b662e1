"""Capture from the first cell: late loading said out loud, `nbcapsule enable`, the capsule kernel spec,
non-IPython kernels recorded from outside, and errors from a headless export with their real reason."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

from helpers import make_notebook, nbcapsule
from kernel import KernelSession, crate_manifest as _manifest, export_in_kernel as _export


def test_a_late_load_says_how_many_cells_ran_unobserved(kernel, project):
    (project / "data" / "later.txt").write_text("later\n")
    kernel.ok("early = open('data/input.csv').read()")
    kernel.ok("x = 2")
    loaded = kernel.ok("%load_ext scidex_nbcapsule")
    assert "2 cell(s) ran before capture started" in loaded["text"]
    status = kernel.ok("%capsule status")
    html = "".join(d.get("text/html", "") for d in status["data"])
    assert "2 cell(s) ran before capture started" in html and "No execution-order problems" not in html
    kernel.ok("later = open('data/later.txt').read()")
    nb = make_notebook(project / "nb.ipynb", "early = open('data/input.csv').read()", "x = 2",
                       "%load_ext scidex_nbcapsule", "later = open('data/later.txt').read()")
    capsule = _export(kernel, "--notebook", str(nb))
    manifest = _manifest(capsule)
    roles = {f["path"]: f["role"] for f in capsule["files"]}
    assert roles.get("data/later.txt") == "input"
    assert "data/input.csv" not in roles  # read before capture: unknown, and said so rather than guessed
    assert manifest["capture"]["late_cells"] == 2
    assert any(p["kind"] == "late-capture" for p in manifest["execution"]["problems"])
    assert any("ran before capture started" in n for n in capsule["notices"])


def test_export_rerun_gives_the_complete_capsule_a_late_session_cannot(kernel, project):
    kernel.ok("early = open('data/input.csv').read()")
    kernel.ok("%load_ext scidex_nbcapsule")
    nb = make_notebook(project / "nb.ipynb", "early = open('data/input.csv').read()",
                       "import subprocess\nsubprocess.run(['cp', 'data/input.csv', 'data/copy.csv'], check=True)")
    capsule = _export(kernel, "--rerun", "--notebook", str(nb), "--license", "MIT")
    manifest = _manifest(capsule)
    roles = {f["path"]: f["role"] for f in capsule["files"]}
    assert roles["data/input.csv"] == "input" and roles["data/copy.csv"] == "output"
    assert manifest["capture"]["late_cells"] == 0 and "interposer" in manifest["capture"]["mechanisms"]
    assert [c["execution_count"] for c in manifest["execution"]["cells"]] == [1, 2]
    executed = json.loads((Path(capsule["crate"]) / "nb.ipynb").read_text())
    assert [c.get("execution_count") for c in executed["cells"] if c["cell_type"] == "code"] == [1, 2]
    # the fresh kernel's files are its capsule's, not this late session's
    status = kernel.ok("%capsule status")
    assert "copy.csv" not in "".join(d.get("text/html", "") for d in status["data"])


def test_a_live_kernel_without_the_interposer_watches_the_tree(kernel, project):
    kernel.ok("%load_ext scidex_nbcapsule")
    kernel.ok("!sort data/input.csv -o data/sorted.csv", "sort")
    kernel.ok("import sqlite3\nc = sqlite3.connect('data/made.sqlite'); c.execute('create table t (x)')\n"
              "c.commit(); c.close()", "db")
    nb = make_notebook(project / "nb.ipynb", "!sort data/input.csv -o data/sorted.csv")
    capsule = _export(kernel, "--notebook", str(nb))
    manifest = _manifest(capsule)
    roles = {f["path"]: f["role"] for f in capsule["files"]}
    assert roles["data/input.csv"] == "input" and roles["data/sorted.csv"] == "output"
    assert roles["data/made.sqlite"] == "output"
    assert manifest["capture"]["mechanisms"] == ["audit-hook", "inotify"]
    assert any("file watcher" in spot for spot in manifest["capture"]["blind_spots"])
    cells = {c["cell_id"]: c for c in manifest["execution"]["cells"]}
    assert cells["sort"]["writes"] == ["data/sorted.csv"] and cells["db"]["writes"] == ["data/made.sqlite"]


def test_what_happens_between_cells_is_not_packed_by_the_watcher(kernel, project):
    kernel.ok("%load_ext scidex_nbcapsule")
    kernel.ok("x = 1")
    (project / "data" / "edited-meanwhile.txt").write_text("another program wrote this between cells")
    kernel.ok("y = 2")
    nb = make_notebook(project / "nb.ipynb", "x = 1", "y = 2")
    capsule = _export(kernel, "--notebook", str(nb))
    assert "data/edited-meanwhile.txt" not in {f["path"] for f in capsule["files"]}
    unattributed = _manifest(capsule)["capture"]["unattributed"]
    assert {"path": "data/edited-meanwhile.txt", "op": "create", "layer": "inotify"} in unattributed or \
        any(u["path"] == "data/edited-meanwhile.txt" for u in unattributed)


def test_enable_starts_capture_with_every_kernel_and_disable_stops_it(project, tmp_path):
    ipython_dir = tmp_path / "ipython"
    env = {"IPYTHONDIR": str(ipython_dir)}
    done = nbcapsule("enable", env=env, check=True)
    assert "50-scidex-nbcapsule.py" in done.stdout
    session = KernelSession(cwd=project, env=env)
    try:
        session.ok("data = open('data/input.csv').read()")
        nb = make_notebook(project / "nb.ipynb", "data = open('data/input.csv').read()")
        capsule = _export(session, "--notebook", str(nb))  # no %load_ext: the extension was already there
        manifest = _manifest(capsule)
        assert {f["path"]: f["role"] for f in capsule["files"]}["data/input.csv"] == "input"
        assert manifest["capture"]["late_cells"] == 0
        assert not any(p["kind"] == "late-capture" for p in manifest["execution"]["problems"])
    finally:
        session.close()
    undone = nbcapsule("disable", env=env, check=True)
    assert "removed" in undone.stdout
    assert not list(ipython_dir.rglob("50-scidex-nbcapsule.py"))
    assert "was not enabled" in nbcapsule("disable", env=env, check=True).stdout


def test_the_capsule_kernel_spec_preloads_the_interposer(project, tmp_path, monkeypatch):
    prefix = tmp_path / "prefix"
    installed = nbcapsule("kernel", "install", "--prefix", str(prefix), check=True)
    assert "python3-capsule" in installed.stdout
    spec = json.loads((prefix / "share/jupyter/kernels/python3-capsule/kernel.json").read_text())
    assert spec["display_name"] == "Python 3 (capsule)" and spec["argv"][0] == sys.executable
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share/jupyter"))  # where the client looks for kernel specs
    session = KernelSession(cwd=project, kernel_name="python3-capsule")
    try:
        session.ok("import subprocess\nsubprocess.run(['cp', 'data/input.csv', 'data/copy.csv'], check=True)", "cp")
        nb = make_notebook(project / "nb.ipynb", "import subprocess")
        capsule = _export(session, "--notebook", str(nb))
        manifest = _manifest(capsule)
        assert manifest["capture"]["mechanisms"] == ["audit-hook", "interposer"]
        assert {f["path"]: f["role"] for f in capsule["files"]}["data/copy.csv"] == "output"
        trace_dir = session.ok("import os; print(os.environ['NBCAPSULE_TRACE_DIR'])")["text"].strip()
    finally:
        session.close()
    # a kernel killed by its front end cannot clean up: the next launch removes what it left
    from scidex_nbcapsule.capture.launch import sweep_stale_traces

    assert Path(trace_dir) in sweep_stale_traces() or not Path(trace_dir).exists()
    assert not Path(trace_dir).exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("R") is None and os.environ.get("CI") != "true",
                    reason="IRkernel needs Debian's r-base-core and r-cran-irkernel (.ci/run installs them)")
def test_an_r_notebook_exported_headless_has_its_files(tmp_path):
    project = tmp_path / "rproject"
    (project / "data").mkdir(parents=True)
    (project / "data" / "in.csv").write_text("x,y\n1,2\n3,4\n")
    (project / "data" / "words.txt").write_text("pear\napple\n")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "ir", "display_name": "R", "language": "R"}
    nb.cells = [nbformat.v4.new_markdown_cell("# An R analysis"),
                nbformat.v4.new_code_cell("d <- read.csv('data/in.csv')"),
                nbformat.v4.new_code_cell("dir.create('results')\nwrite.csv(d * 2, 'results/doubled.csv')"),
                nbformat.v4.new_code_cell("system('sort data/words.txt -o results/sorted.txt')")]
    nbformat.write(nb, str(project / "analysis.ipynb"))
    result = nbcapsule("export", "analysis.ipynb", "--execute", "--json", "--license", "MIT", cwd=project)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    roles = {f["path"]: f["role"] for f in data["files"] if f["role"] in ("input", "output")}
    assert roles == {"data/in.csv": "input", "data/words.txt": "input", "results/doubled.csv": "output",
                     "results/sorted.txt": "output"}
    for f in data["files"]:
        if f["path"] in roles:
            assert f["sha256"] == hashlib.sha256((project / f["path"]).read_bytes()).hexdigest()
    manifest = json.loads((Path(data["crate"]) / "capsule.json").read_text())
    assert manifest["capture"]["mechanisms"] == ["interposer"]
    cells = [c for c in manifest["execution"]["cells"]]
    assert [c["execution_count"] for c in cells] == [1, 2, 3] and all(c["status"] == "ok" for c in cells)
    assert cells[1]["writes"] == ["results/doubled.csv"] and cells[2]["reads"] == ["data/words.txt"]
    assert json.loads((Path(data["crate"]) / "analysis.ipynb").read_text())["cells"][1]["execution_count"] == 1


@pytest.mark.parametrize("bad", [["--input", "no-such-file.csv"], ["--swh-origin", "not a url"]],
                         ids=["missing-input-checked-before-the-run", "bad-origin-found-inside-the-kernel"])
def test_a_bad_option_gives_the_same_error_with_and_without_execute(bad, tmp_path):
    project = tmp_path / "p"
    nb = make_notebook(project / "nb.ipynb", "x = 1")
    plain = nbcapsule("export", str(nb), *bad, cwd=project)
    executed = nbcapsule("export", str(nb), "--execute", *bad, cwd=project)
    assert plain.returncode == executed.returncode == 2
    assert executed.stderr.strip().splitlines()[-2:] == plain.stderr.strip().splitlines()[-2:]
    assert "Traceback" not in executed.stderr and "did not report" not in executed.stderr
