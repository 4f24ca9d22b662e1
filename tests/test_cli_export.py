"""``nbcapsule export``: the contract other tools script against, and its errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from helpers import copy_demo, make_notebook, nbcapsule
from test_redaction import PG_URL


def test_json_contract_and_folder_inputs(project, tmp_path):
    nb = make_notebook(project / "a.ipynb", "print(1)")
    (project / "out").mkdir()
    (project / "out" / "r.txt").write_text("r")
    result = nbcapsule("export", str(nb), "--input", str(project / "data"), "--output", str(project / "out"),
                       "--dest", str(tmp_path / "caps"), "--license", "CC0-1.0", "--title", "T", "--json", check=True)
    data = json.loads(result.stdout)
    assert {"capsule_id", "crate", "checksum", "files"} <= set(data)
    files = {f["path"]: f for f in data["files"]}
    assert files["data/input.csv"]["role"] == "input" and files["out/r.txt"]["role"] == "output"
    assert files["data/input.csv"]["sha256"] == hashlib.sha256((project / "data/input.csv").read_bytes()).hexdigest()
    assert Path(data["crate"]).is_dir() and data["crate"].startswith(str(tmp_path / "caps"))


def test_zip_flag_and_default_license_notice(project, tmp_path):
    nb = make_notebook(project / "a.ipynb", "print(1)")
    result = nbcapsule("export", str(nb), "--dest", str(tmp_path), "--zip", check=True)
    assert ".zip" in result.stdout
    assert "no license given" in result.stdout and "CC-BY-4.0" in result.stdout


def test_errors_are_one_line_with_an_exit_code(project, tmp_path):
    bad = project / "bad.ipynb"
    bad.write_text("not json")
    result = nbcapsule("export", str(bad), "--dest", str(tmp_path / "d"))
    assert result.returncode == 2
    assert result.stderr.startswith("nbcapsule: error: notebook") and "Traceback" not in result.stderr
    nb = make_notebook(project / "a.ipynb", "print(1)")
    result = nbcapsule("export", str(nb), "--input", str(tmp_path), "--dest", str(tmp_path / "d"))
    assert result.returncode == 2 and "outside the project root" in result.stderr
    result = nbcapsule("export", str(nb), "--license", "not a license!", "--dest", str(tmp_path / "d"))
    assert result.returncode == 2 and "SPDX" in result.stderr
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())


def test_secret_file_next_to_notebook_is_withheld_and_can_be_included(project, tmp_path):
    nb = make_notebook(project / "a.ipynb", "print(1)")
    (project / "data" / "db.ini").write_text(f"url = {PG_URL}\n")
    result = nbcapsule("export", str(nb), "--input", str(project / "data"), "--dest", str(tmp_path / "c"),
                       "--json", check=True)
    data = json.loads(result.stdout)
    assert "data/db.ini" not in {f["path"] for f in data["files"]}
    assert data["withheld"][0]["what"] == "data/db.ini" and "--allow-secret" in data["withheld"][0]["how_to_include"]
    crate = Path(data["crate"])
    assert all("hunter2" not in p.read_text(errors="ignore") for p in crate.rglob("*") if p.is_file())
    result = nbcapsule("export", str(nb), "--input", str(project / "data"), "--allow-secret",
                       str(project / "data" / "db.ini"), "--dest", str(tmp_path / "c"), "--json", check=True)
    assert "data/db.ini" in {f["path"] for f in json.loads(result.stdout)["files"]}


def test_execute_runs_the_demo_and_validates(tmp_path):
    """The headless path `make demo` uses, on a copy of the demo: digests of inputs and outputs are right."""
    nb = copy_demo(tmp_path)
    result = nbcapsule("export", str(nb), "--execute", "--validate", "--json", cwd=nb.parent, check=True)
    data = json.loads(result.stdout)
    assert data["validation"]["passed"], data["validation"]["issues"]
    files = {f["path"]: f for f in data["files"]}
    # no git repository here, so the notebook's folder is the project root
    assert files["data/stations.csv"]["role"] == "input"
    for rel in ("results/summary.csv", "results/temperature.png"):
        assert files[rel]["role"] == "output"
        on_disk = nb.parent / rel
        assert files[rel]["sha256"] == hashlib.sha256(on_disk.read_bytes()).hexdigest()
    assert data["problems"] == []
    executed = json.loads((Path(data["crate"]) / "demo.ipynb").read_text())
    outputs = [o for c in executed["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert any("180 measurements" in "".join(o.get("text", "")) for o in outputs)
