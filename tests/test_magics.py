"""The %capsule shell end to end in a real kernel: export, register, verify, archive."""

from __future__ import annotations

from pathlib import Path

import nbformat

from helpers import make_notebook


def _saved_with_outputs(path: Path) -> Path:
    """The notebook as the front end saves it after the cells ran: sources, counts and outputs."""
    make_notebook(path, "%load_ext scidex_nbcapsule", "total = sum(range(10))\nprint(total)")
    nb = nbformat.read(str(path), as_version=4)
    nb.cells[1].execution_count, nb.cells[2].execution_count = 1, 2
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="45\n")]
    nbformat.write(nb, str(path))
    return path


def test_export_register_verify_archive_from_the_magic(kernel, project, tmp_path):
    db = f"sqlite:///{tmp_path / 'registry.sqlite3'}"
    kernel.ok("%load_ext scidex_nbcapsule")
    kernel.ok("total = sum(range(10))\nprint(total)")
    nb = _saved_with_outputs(project / "m.ipynb")
    out = kernel.ok(f"_c = get_ipython().run_line_magic('capsule', 'export --notebook {nb} --license MIT')\n"
                    "print(_c.capsule_id)")
    capsule_id = out["text"].strip().splitlines()[-1]
    registered = kernel.ok(f"%capsule register --db {db}")
    assert f"registered: {capsule_id} (version 1)" in registered["text"]
    again = kernel.ok(f"%capsule register --db {db}")
    assert f"already registered: {capsule_id}" in again["text"]
    verified = kernel.ok(f"_r = get_ipython().run_line_magic('capsule', 'verify {capsule_id} --db {db}')\n"
                         "print('VERDICT', _r.verdict)")
    assert "VERDICT verified" in verified["text"]
    bag = kernel.ok(f"_b = get_ipython().run_line_magic('capsule', 'archive --to bagit --dest {tmp_path / 'bag'}')\n"
                    "print('BAG', _b.status, _b.location)")
    assert "BAG succeeded" in bag["text"] and (tmp_path / "bag" / "bagit.txt").exists()
    from scidex_nbcapsule.registry import open_registry

    with open_registry(db) as registry:
        history = registry.history(capsule_id)
    assert [v["verdict"] for v in history["verifications"]] == ["verified"]


def test_register_without_an_export_says_what_to_do(kernel):
    kernel.ok("%load_ext scidex_nbcapsule")
    result = kernel.run("%capsule register")
    assert result["status"] == "error" and "run %capsule export first" in result["text"]
