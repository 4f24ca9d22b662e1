"""The lock of what an analysis needs: closure, sources, index files and hashes, rebuild risks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from scidex_nbcapsule import api, lock

from helpers import make_notebook


def test_imports_in_code_reads_cells_as_python():
    cells = ["import numpy as np, os.path\nfrom pandas.io import parsers", "%matplotlib inline\n!ls\nimport tqdm",
             "from . import local", "def f(:\n  import broken", "if x:\n    import scipy.stats"]
    assert lock.imports_in_code(cells) == {"numpy", "os", "pandas", "tqdm", "scipy"}


def test_closure_follows_requirements_with_markers_and_extras():
    found = lock.closure({"matplotlib"})
    assert {"matplotlib", "numpy", "pillow", "packaging", "python-dateutil", "pyparsing"} <= set(found)
    assert "scidex-nbcapsule" not in found and "pytest" not in found
    assert found["numpy"] == __import__("numpy").__version__


def test_analysis_modules_leave_out_what_the_extension_brings():
    import IPython  # noqa: F401 - loaded, as in every kernel
    import numpy  # noqa: F401

    used = lock.analysis_modules(sys.modules, {"tqdm", "json"})
    assert {"numpy", "tqdm"} <= used
    assert not {"IPython", "rocrate", "json", "scidex_nbcapsule"} & used


PROBE = """
import json, sys
from scidex_nbcapsule import lock
index = lock.PackageIndex(sys.argv[1]) if sys.argv[1] != "off" else None
locked = lock.build_lock(set(sys.argv[2:]), python="3.11", index=index)
print(json.dumps({"summary": locked.summary(), "toml": locked.pylock_toml(), "reqs": locked.requirements_txt(),
                  "packages": {p.name: [p.source, len(p.wheels), p.sdist is not None] for p in locked.packages}}))
"""


def _site_with(tmp_path: Path) -> Path:
    """Two hand-installed distributions as pip leaves them: one editable, one from a git repository."""
    site = tmp_path / "site"
    if site.exists():
        return site
    for name, module, direct in (
            ("capsule-probe-editable", "probe_editable", {"url": f"file://{tmp_path}/src", "dir_info": {"editable": True}}),
            ("capsule-probe-vcs", "probe_vcs", {"url": "https://example.org/probe.git",
                                               "vcs_info": {"vcs": "git", "commit_id": "a" * 40}})):
        info = site / f"{name.replace('-', '_')}-1.0.dist-info"
        info.mkdir(parents=True)
        (site / f"{module}.py").write_text("")
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (info / "top_level.txt").write_text(module + "\n")
        (info / "RECORD").write_text(f"{module}.py,,\n")
        (info / "direct_url.json").write_text(json.dumps(direct))
    return site


def _probe(tmp_path: Path, index: str, *modules: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(_site_with(tmp_path)), XDG_CACHE_HOME=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", PROBE, index, *modules], capture_output=True, text=True, env=env,
                         check=True, timeout=120)
    return json.loads(out.stdout)


def test_the_index_gives_files_and_hashes_and_risks_are_named(tmp_path):
    found = _probe(tmp_path, lock.DEFAULT_INDEX, "tqdm", "probe_editable", "probe_vcs")
    assert found["packages"]["tqdm"][0] == "index" and found["packages"]["tqdm"][1] >= 1
    assert found["packages"]["capsule-probe-editable"][0] == "directory"
    assert found["packages"]["capsule-probe-vcs"][0] == "vcs"
    risks = " ".join(found["summary"]["rebuild_risks"])
    assert "capsule-probe-editable is installed in editable mode" in risks
    assert "capsule-probe-vcs is installed from git" in risks
    doc = tomllib.loads(found["toml"])
    assert doc["lock-version"] == "1.0" and doc["requires-python"] == "==3.11.*"
    by_name = {p["name"]: p for p in doc["packages"]}
    tqdm = by_name["tqdm"]
    assert all(len(w["hashes"]["sha256"]) == 64 and w["url"].startswith("https://") for w in tqdm["wheels"])
    assert by_name["capsule-probe-editable"]["directory"]["editable"] is True
    assert by_name["capsule-probe-vcs"]["vcs"]["commit-id"] == "a" * 40
    assert "tqdm==" in found["reqs"] and "capsule-probe-vcs==1.0" in found["reqs"]


def test_a_version_the_index_does_not_offer_is_a_risk(tmp_path):
    site = _site_with(tmp_path)
    info = site / "capsule_probe_gone-0.0.1.dist-info"
    info.mkdir()
    (site / "probe_gone.py").write_text("")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: capsule-probe-gone\nVersion: 0.0.1\n")
    (info / "top_level.txt").write_text("probe_gone\n")
    env = dict(os.environ, PYTHONPATH=str(site), XDG_CACHE_HOME=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", PROBE, lock.DEFAULT_INDEX, "probe_gone"], capture_output=True,
                         text=True, env=env, check=True, timeout=120)
    found = json.loads(out.stdout)
    assert "capsule-probe-gone 0.0.1 is not offered by https://pypi.org/simple" in found["summary"]["rebuild_risks"]
    assert "capsule-probe-gone==0.0.1" in found["toml"]  # named in the header comment, not as a bare entry
    assert not any(p["name"] == "capsule-probe-gone" for p in tomllib.loads(found["toml"])["packages"])


def test_no_index_or_a_dead_one_is_said_not_guessed(tmp_path):
    off = _probe(tmp_path, "off", "tqdm")
    assert off["packages"]["tqdm"][0] == "unknown" and "no package index asked" in off["summary"]["notices"][0]
    dead = _probe(tmp_path, "http://127.0.0.1:9/simple", "tqdm")
    assert "could not be reached" in dead["summary"]["notices"][0]
    assert dead["summary"]["with_hashes"] == 0 and "tqdm==" in dead["reqs"]


def test_export_writes_the_lock_the_verifier_and_carries_project_locks(project, tmp_path):
    nb = make_notebook(project / "a.ipynb", "import tqdm\nprint(1)")
    (project / "uv.lock").write_text("version = 1\n")
    capsule = api.export(nb, dest=tmp_path / "caps", license="MIT", progress=False)
    root = capsule.path
    doc = tomllib.loads((root / "pylock.toml").read_text())
    assert "tqdm" in {p["name"] for p in doc["packages"]}
    assert (root / "requirements.txt").read_text().startswith("tqdm==")
    binder = (root / "binder" / "requirements.txt").read_text().splitlines()
    wheel = binder[-1]
    assert wheel.startswith("binder/scidex_nbcapsule-") and (root / wheel).is_file()
    assert (root / "environment" / "uv.lock").read_text() == "version = 1\n"
    summary = capsule.manifest.environment_lock
    assert summary["carried"] == ["environment/uv.lock"] and summary["verifier"] == wheel
    roles = {f.path: f.role for f in capsule.manifest.files}
    assert roles["pylock.toml"] == roles[wheel] == "environment"
    # the full freeze stays in environment.json, for the record
    recorded = json.loads((root / "environment.json").read_text())
    assert "pytest" in recorded["packages"] and "pytest" not in (root / "requirements.txt").read_text()


def test_the_verifier_wheel_is_the_same_bytes_each_time_and_installs(tmp_path):
    from scidex_nbcapsule import verifier_wheel
    import zipfile

    name, first = verifier_wheel.build_wheel()
    assert verifier_wheel.build_wheel() == (name, first)
    path = tmp_path / name
    path.write_bytes(first)
    names = zipfile.ZipFile(path).namelist()
    assert "scidex_nbcapsule/api.py" in names and "scidex_nbcapsule/contexts/ro-crate-1.1-context.jsonld" in names
    assert not any("__pycache__" in n for n in names)
    assert any(n.endswith(".dist-info/RECORD") for n in names)
    assert any(n.endswith("etc/jupyter/jupyter_server_config.d/scidex_nbcapsule.json") for n in names)
    # pip itself checks the RECORD and the metadata when it inspects the wheel
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--report", "-",
                           "--quiet", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["install"][0]["metadata"]["name"] == "scidex-nbcapsule"


def test_rebuild_says_which_carried_locks_it_did_not_use(tmp_path):
    from scidex_nbcapsule.verify.environment import _build, _lock_file, _python_of

    crate = tmp_path / "crate"
    (crate / "environment").mkdir(parents=True)
    (crate / "environment" / "uv.lock").write_text("version = 1\n")
    (crate / "requirements.txt").write_text("")
    (crate / "binder").mkdir()
    (crate / "binder" / "runtime.txt").write_text(f"python-{sys.version_info[0]}.{sys.version_info[1]}\n")
    warnings: list[str] = []
    _build(crate, _lock_file(crate), tmp_path / "venv", timeout=600, warnings=warnings)
    assert _python_of(tmp_path / "venv").exists()
    assert warnings == ["the project's own lock files (uv.lock) travel in environment/ for their tools; this environment was "
                        "built from requirements.txt"]
