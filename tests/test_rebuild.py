"""A capsule rebuilds its environment from its own lock, on a machine that never saw the project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from helpers import copy_demo, make_notebook, nbcapsule

ANALYSIS = ("import csv, tqdm\n"
            "rows = list(csv.reader(open('data.csv')))\n"
            "open('total.txt', 'w').write(str(sum(int(r[1]) for r in rows[1:])))\n"
            "print(len(rows), tqdm.__name__)")


def _uv_cache() -> str:
    done = subprocess.run([str(Path(sys.executable).with_name("uv")), "cache", "dir"], capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A capsule made here, then only its crate copied to a folder of its own."""
    base = tmp_path_factory.mktemp("rebuild")
    project = base / "project"
    make_notebook(project / "analysis.ipynb", ANALYSIS)
    (project / "data.csv").write_text("name,value\na,1\nb,2\n")
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    done = nbcapsule("export", str(project / "analysis.ipynb"), "--execute", "--license", "MIT", "--dest",
                     str(base / "made"), "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    crate = Path(json.loads(done.stdout)["crate"])
    alone = base / "elsewhere" / crate.name
    shutil.copytree(crate, alone)
    shutil.rmtree(project)
    return alone


def _env(tmp_path: Path) -> dict[str, str]:
    # a cache of our own for environments, but uv's download cache stays warm
    return {"XDG_CACHE_HOME": str(tmp_path / "cache"), "UV_CACHE_DIR": _uv_cache()}


@pytest.mark.slow
def test_rebuild_from_the_crate_alone_then_verify_there(exported, tmp_path):
    env = _env(tmp_path)
    done = nbcapsule("rebuild", str(exported), "--json", env=env)
    assert done.returncode == 0, done.stderr
    built = json.loads(done.stdout)
    assert built["built"] is True and Path(built["python"]).is_file()
    python = built["python"]
    where = subprocess.run([python, "-c", "import tqdm, scidex_nbcapsule, sys; print(scidex_nbcapsule.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert where.startswith(built["prefix"]), where  # the crate's own verifier wheel, not this checkout
    again = json.loads(nbcapsule("rebuild", str(exported), "--json", env=env, check=True).stdout)
    assert again["built"] is False and again["prefix"] == built["prefix"]
    listed = json.loads(nbcapsule("env", "list", "--json", env=env, check=True).stdout)
    assert [item["digest"] for item in listed] == [built["digest"]]

    verified = nbcapsule("verify", str(exported), "--fresh-env", "--json", "--no-record", env=env)
    report = json.loads(verified.stdout)
    assert verified.returncode == 0 and report["verdict"] == "verified", verified.stdout[-3000:]
    assert any("reused from the cache" in note for note in report["notes"]), report["notes"]

    assert "removed 1 environment" in nbcapsule("env", "prune", env=env, check=True).stdout
    assert json.loads(nbcapsule("env", "list", "--json", env=env, check=True).stdout) == []


@pytest.mark.slow
def test_rebuild_into_a_folder_and_without_the_network(exported, tmp_path):
    into = tmp_path / "venv"
    env = _env(tmp_path)
    done = nbcapsule("rebuild", str(exported), "--into", str(into), env=env)
    assert done.returncode == 0 and (into / "bin" / "python").exists(), done.stderr
    assert nbcapsule("rebuild", str(exported), "--into", str(into), env=env).returncode == 2  # not over a build
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("cutting the network needs unshare and root")
    offline = {**env, "UV_CACHE_DIR": str(tmp_path / "empty-uv-cache"), "XDG_CACHE_HOME": str(tmp_path / "c2")}
    cut = subprocess.run(["unshare", "-n", str(Path(sys.executable).with_name("nbcapsule")), "rebuild",
                          str(exported)], capture_output=True, text=True, env={**os.environ, **offline}, timeout=600)
    assert cut.returncode == 2, cut.stderr
    assert "Traceback" not in cut.stderr and "package index could not be reached" in cut.stderr, cut.stderr


@pytest.fixture(scope="module")
def demo_crate(tmp_path_factory) -> Path:
    """The demo notebook's own capsule, exported as make demo does (matplotlib among its pins)."""
    base = tmp_path_factory.mktemp("demo")
    notebook = copy_demo(base)
    done = nbcapsule("export", str(notebook), "--execute", "--license", "CC0-1.0", "--dest", str(base / "caps"),
                     "--json", cwd=notebook.parent)
    assert done.returncode == 0, done.stderr
    return Path(json.loads(done.stdout)["crate"])


@pytest.mark.slow
@pytest.mark.parametrize("which", ["test capsule", "demo capsule"])
def test_pip_resolves_the_binder_requirements_as_they_stand(which, request, tmp_path):
    crate = request.getfixturevalue("exported" if which == "test capsule" else "demo_crate")
    fresh = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=True).create(fresh)
    done = subprocess.run([str(fresh / "bin" / "python"), "-m", "pip", "install", "--dry-run", "--quiet", "-r",
                           "binder/requirements.txt"], cwd=crate, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (crate / "binder" / "requirements.txt").read_text().splitlines()
    assert "scidex-nbcapsule==" not in "\n".join(lines)  # no index holds this version: the crate carries it
    if which == "demo capsule":
        import tomllib

        locked = {p["name"] for p in tomllib.loads((crate / "pylock.toml").read_text())["packages"]}
        assert {"matplotlib", "numpy"} <= locked and any(line.startswith("matplotlib==") for line in lines)
