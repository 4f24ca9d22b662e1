"""Capture inside a real kernel: cell runs, files read and written, order problems, hooks, discovery."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import nbformat
import pytest

from kernel import crate_manifest as _manifest, export_in_kernel as _export
from helpers import make_notebook


def _notebook_from_cells(path: Path, cells: list[tuple[str, str, int | None]]) -> None:
    """Save a notebook as a front end would: cell ids, sources and execution counts."""
    nb = nbformat.v4.new_notebook()
    for cell_id, source, count in cells:
        cell = nbformat.v4.new_code_cell(source, id=cell_id)
        cell.execution_count = count
        nb.cells.append(cell)
    nbformat.write(nb, str(path))


def test_files_read_and_written_are_found_without_help(kernel, project):
    nb = project / "analysis.ipynb"
    cells = [("load", "%load_ext scidex_nbcapsule", 1),
             ("read", "data = open('data/input.csv').read()", 2),
             ("write", "import pathlib; pathlib.Path('out').mkdir(exist_ok=True)\n"
                       "open('out/result.txt', 'w').write(data.upper())", 3)]
    for cell_id, source, _ in cells:
        kernel.ok(source, cell_id)
    _notebook_from_cells(nb, cells)
    capsule = _export(kernel, "--notebook", str(nb), "--license", "MIT")
    roles = {f["path"]: f["role"] for f in capsule["files"]}
    assert roles["data/input.csv"] == "input"
    assert roles["out/result.txt"] == "output"
    assert roles["analysis.ipynb"] == "code"
    # nothing from the interpreter or outside the project
    assert all(not p.startswith(("/", "..")) for p in roles)
    assert not any("site-packages" in p or p.endswith(".py") for p in roles)
    digests = {f["path"]: f["sha256"] for f in capsule["files"]}
    assert digests["data/input.csv"] == hashlib.sha256((project / "data/input.csv").read_bytes()).hexdigest()
    assert digests["out/result.txt"] == hashlib.sha256((project / "out/result.txt").read_bytes()).hexdigest()
    manifest = _manifest(capsule)
    assert [c["cell_id"] for c in manifest["execution"]["cells"]][:3] == ["load", "read", "write"]
    assert manifest["execution"]["problems"] == []


def test_file_read_then_rewritten_is_an_output_with_the_read_digest(kernel, project):
    target = project / "data" / "input.csv"
    before = hashlib.sha256(target.read_bytes()).hexdigest()
    kernel.ok("%load_ext scidex_nbcapsule")
    kernel.ok("text = open('data/input.csv').read()")
    kernel.ok("open('data/input.csv', 'w').write(text + '5,6\\n')")
    nb = make_notebook(project / "nb.ipynb", "print(1)")
    capsule = _export(kernel, "--notebook", str(nb))
    record = next(f for f in _manifest(capsule)["files"] if f["path"] == "data/input.csv")
    assert record["role"] == "output"
    assert record["read_sha256"] == before
    assert record["sha256"] == hashlib.sha256(target.read_bytes()).hexdigest() != before


def test_declared_files_excludes_and_outside_paths(kernel, project, tmp_path):
    (project / "extra").mkdir()
    (project / "extra" / "a.txt").write_text("a")
    (project / "extra" / "b.log").write_text("b")
    outside = tmp_path / "outside.txt"
    outside.write_text("secretless but outside")
    kernel.ok("%load_ext scidex_nbcapsule")
    kernel.ok(f"open({str(outside)!r}).read()")
    kernel.ok("%capsule input extra --exclude '*.log'")
    result = kernel.run(f"%capsule input {outside}")
    assert result["status"] == "error" and "outside the project root" in result["text"]
    nb = make_notebook(project / "nb.ipynb", "print(1)")
    capsule = _export(kernel, "--notebook", str(nb))
    paths = {f["path"] for f in capsule["files"]}
    assert "extra/a.txt" in paths
    assert "extra/b.log" not in paths
    assert not any("outside" in p for p in paths)


def test_out_of_order_edited_never_run_and_error_are_reported(kernel, project):
    nb = project / "order.ipynb"
    kernel.ok("%load_ext scidex_nbcapsule", "c0")
    kernel.ok("b = 2", "c2")            # the second cell runs first
    kernel.ok("a = 1", "c1")
    kernel.ok("x = 'old'", "c3")        # then edited on disk without re-running
    kernel.run("raise ValueError('boom')", "c5")
    _notebook_from_cells(nb, [("c0", "%load_ext scidex_nbcapsule", 1), ("c1", "a = 1", 3), ("c2", "b = 2", 2),
                              ("c3", "x = 'new'", 4), ("c4", "never = True", None),
                              ("c5", "raise ValueError('boom')", 5)])
    kernel.ok("%capsule status --notebook " + str(nb))
    capsule = _export(kernel, "--notebook", str(nb))
    kinds = {(p["kind"], p["cell_id"]) for p in _manifest(capsule)["execution"]["problems"]}
    assert ("out-of-order", "c2") in kinds
    assert ("edited-after-run", "c3") in kinds
    assert ("never-run", "c4") in kinds
    assert ("cell-error", "c5") in kinds
    assert _manifest(capsule)["execution"]["status"] == "failed"
    metadata = json.loads((Path(capsule["crate"]) / "ro-crate-metadata.json").read_text())
    action = next(e for e in metadata["@graph"] if e.get("@type") == "CreateAction")
    assert "out-of-order" in action["disambiguatingDescription"] or "before" in action["disambiguatingDescription"]


def test_status_shows_problems(kernel, project):
    nb = project / "s.ipynb"
    kernel.ok("%load_ext scidex_nbcapsule", "a")
    _notebook_from_cells(nb, [("a", "%load_ext scidex_nbcapsule", 1), ("b", "y = 1", None)])
    result = kernel.ok(f"%capsule status --notebook {nb}")
    html = result["data"][0]["text/html"]
    assert "never-run" in html and "1 cell runs" in html


def test_kernel_restart_is_detected(kernel, project):
    nb = project / "restart.ipynb"
    kernel.ok("%load_ext scidex_nbcapsule", "a")
    kernel.ok("value = 41", "b")
    kernel.restart()
    kernel.ok("%load_ext scidex_nbcapsule", "a")
    _notebook_from_cells(nb, [("a", "%load_ext scidex_nbcapsule", 1), ("b", "value = 41", 2),
                              ("c", "print(value + 1)", 3)])
    capsule = _export(kernel, "--notebook", str(nb))
    problems = _manifest(capsule)["execution"]["problems"]
    assert {p["kind"] for p in problems} >= {"kernel-restarted"}
    assert any(p["cell_id"] == "c" and p["kind"] == "kernel-restarted" for p in problems)


def test_stale_notebook_on_disk_is_warned(kernel, project):
    nb = project / "stale.ipynb"
    _notebook_from_cells(nb, [("a", "%load_ext scidex_nbcapsule", 1), ("b", "z = 3", 2)])
    old = time.time() - 3600
    os.utime(nb, (old, old))
    kernel.ok("%load_ext scidex_nbcapsule", "a")
    kernel.ok("z = 3", "b")
    out = kernel.ok("import json\n_c = get_ipython().run_line_magic('capsule', 'export --notebook " + str(nb) + "')")
    assert "stale" in out["text"]


def test_unload_removes_every_hook(kernel):
    kernel.ok("%load_ext scidex_nbcapsule")
    before = kernel.ok("ip = get_ipython(); print(len(ip.events.callbacks['pre_run_cell']), "
                       "len(ip.events.callbacks['post_run_cell']), 'capsule' in ip.magics_manager.magics['line'])")
    assert before["text"].split()[2] == "True"
    kernel.ok("%unload_ext scidex_nbcapsule")
    after = kernel.ok("print(len(ip.events.callbacks['pre_run_cell']), len(ip.events.callbacks['post_run_cell']), "
                      "'capsule' in ip.magics_manager.magics['line'])")
    b, a = before["text"].split(), after["text"].split()
    assert int(a[0]) == int(b[0]) - 1 and int(a[1]) == int(b[1]) - 1 and a[2] == "False"
    check = kernel.ok("from scidex_nbcapsule import capture; print(capture.current_recorder())")
    assert check["text"].strip() == "None"
    kernel.ok("%load_ext scidex_nbcapsule")
    assert kernel.ok("%capsule --help")["text"]


def test_help_explains_every_subcommand(kernel):
    kernel.ok("%load_ext scidex_nbcapsule")
    text = kernel.ok("%capsule --help")["text"]
    for sub in ("export", "status", "input", "output", "exclude", "register", "verify", "archive", "toolbar"):
        assert f"%capsule {sub}" in text
    assert "--license" in text and "--zip" in text
    doc = kernel.ok("print(get_ipython().find_line_magic('capsule').__doc__)")["text"]
    assert "%capsule export" in doc
    bad = kernel.run("%capsule export --no-such-flag")
    assert bad["status"] == "error" and "unrecognized arguments" in bad["text"]


def test_notebook_is_found_from_the_front_end(project):
    from kernel import KernelSession

    nb = make_notebook(project / "sub" / "found.ipynb", "print(1)")
    session = KernelSession(cwd=project / "sub", env={"JPY_SESSION_NAME": str(nb)})
    try:
        session.ok("%load_ext scidex_nbcapsule")
        capsule = _export(session)
        assert capsule["notebook"] == "found.ipynb"  # no git: the kernel's folder is the project root
    finally:
        session.close()


def test_missing_notebook_says_how_to_name_it(kernel):
    kernel.ok("%load_ext scidex_nbcapsule")
    result = kernel.run("%capsule export")
    assert result["status"] == "error"
    assert "UsageError" in result["text"] and "--notebook PATH" in result["text"]


@pytest.mark.parametrize("variable, name", [("__vsc_ipynb_file__", "vs.ipynb"), ("capsule_notebook", "pm.ipynb")],
                         ids=["vscode", "papermill-parameter"])
def test_a_kernel_variable_names_the_notebook(kernel, project, variable, name):
    nb = make_notebook(project / name, "print(2)")
    kernel.ok("%load_ext scidex_nbcapsule")
    kernel.ok(f"{variable} = {str(nb)!r}")
    assert _export(kernel)["notebook"] == name


def test_history_before_load_is_kept(kernel, project):
    kernel.ok("early = 1")
    kernel.ok("%load_ext scidex_nbcapsule")
    nb = make_notebook(project / "h.ipynb", "early = 1")
    cells = _manifest(_export(kernel, "--notebook", str(nb)))["execution"]["cells"]
    assert cells[0]["status"] == "unknown" and cells[0]["execution_count"] == 1
    assert [c["execution_count"] for c in cells[:2]] == [1, 2]


@pytest.mark.parametrize("flag,mode", [("w", "write"), ("r", "read")])
def test_audit_hook_records_os_level_opens(kernel, project, flag, mode):
    kernel.ok("%load_ext scidex_nbcapsule")
    if mode == "read":
        kernel.ok("import os; fd = os.open('data/input.csv', os.O_RDONLY); os.close(fd)")
    else:
        kernel.ok("import os; fd = os.open('made.bin', os.O_WRONLY | os.O_CREAT); os.write(fd, b'x'); os.close(fd)")
    nb = make_notebook(project / "o.ipynb", "pass")
    roles = {f["path"]: f["role"] for f in _export(kernel, "--notebook", str(nb))["files"]}
    assert roles.get("data/input.csv" if mode == "read" else "made.bin") == ("input" if mode == "read" else "output")


def test_reads_repeated_across_folders_and_unhashable_paths_are_all_recorded(kernel, project):
    # the audit hook's fast path skips a file already recorded as read: it must not skip a file that has the
    # same relative name in another folder, a later write, or a path-like object that cannot be hashed
    (project / "sub").mkdir()
    (project / "sub" / "data").mkdir()
    (project / "sub" / "data" / "input.csv").write_text("other,1\n")
    kernel.ok("%load_ext scidex_nbcapsule")
    kernel.ok("import os\nfor _ in range(3):\n    open('data/input.csv').read()\n"
              "os.chdir('sub')\nopen('data/input.csv').read()\nos.chdir('..')")
    kernel.ok("open('data/input.csv', 'a').write('3,4\\n')\nopen('data/input.csv').read()")
    kernel.ok("import os\nclass Unhashable(os.PathLike):\n    __hash__ = None\n"
              "    def __init__(self, p): self.p = p\n    def __fspath__(self): return self.p\n"
              "    def __eq__(self, other): return False\n"
              "import io\nio.open(Unhashable('data/other.txt'), 'w').write('x')")  # IPython's open() hashes paths
    files = {r.path.relative_to(project).as_posix(): r for r in _accessed(kernel, project)}
    assert files["sub/data/input.csv"].read and not files["sub/data/input.csv"].written
    assert files["data/input.csv"].read and files["data/input.csv"].written
    assert files["data/other.txt"].written


def _accessed(kernel, project):
    import pickle

    out = kernel.ok("import pickle, base64\nfrom scidex_nbcapsule import capture\n"
                    "print('P' + base64.b64encode(pickle.dumps(capture.current_recorder().observe().files)).decode())")
    import base64

    line = next(line for line in out["text"].splitlines() if line.startswith("P"))
    return pickle.loads(base64.b64decode(line[1:]))
