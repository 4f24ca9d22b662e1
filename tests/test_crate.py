"""The crate as a stranger sees it: validator verdict, digests, layout, atomic writes, safe reading."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

from helpers import make_notebook
from scidex_nbcapsule import api
from scidex_nbcapsule.crate import PARTIAL_PREFIX, open_crate
from scidex_nbcapsule.errors import (CrateError, DestinationExists, InputFileError, NotebookError,
                                     PathOutsideProject, UnsafeArchive)


@pytest.fixture
def simple(project: Path) -> Path:
    nb = make_notebook(project / "analysis.ipynb", "x = open('data/input.csv').read()", "print(len(x))")
    (project / "results").mkdir()
    (project / "results" / "out.txt").write_text("result\n")
    return nb


def _export(nb: Path, **kwargs) -> api.Capsule:
    kwargs.setdefault("inputs", [nb.parent / "data"])
    kwargs.setdefault("outputs", [nb.parent / "results"])
    kwargs.setdefault("license", "MIT")
    kwargs.setdefault("authors", ["Ada Lovelace"])
    return api.export(nb, dest=kwargs.pop("dest", nb.parent.parent / "capsules"), progress=False, **kwargs)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_crate_passes_the_validator_at_required_severity(simple, validate):
    capsule = _export(simple)
    for profile in ("ro-crate-1.1", "process-run-crate-0.5", "workflow-ro-crate-1.0", "workflow-run-crate-0.5"):
        report = validate(capsule.path, profile=profile)
        assert report.passed, report.issues
        assert report.issues == []


def test_recommended_findings_are_only_the_known_ones(simple, validate):
    """What the validator still says at RECOMMENDED severity; the issue note lists these."""
    capsule = _export(simple)
    checks = {issue["check"] for issue in validate(capsule.path, severity="RECOMMENDED").issues}
    # the crate-relative notebook's id, and the authors given without an affiliation
    assert checks <= {"process-run-crate-0.5_5.1", "ro-crate-1.1_30.2", "ro-crate-1.1_30.3"}


def test_every_file_has_correct_digests_in_both_manifests(simple):
    capsule = _export(simple)
    metadata = json.loads((capsule.path / "ro-crate-metadata.json").read_text())
    entities = {e["@id"]: e for e in metadata["@graph"]}
    on_disk = {p.relative_to(capsule.path).as_posix() for p in capsule.path.rglob("*") if p.is_file()}
    listed = {f.path for f in capsule.manifest.files}
    assert on_disk == listed | {"capsule.json", "ro-crate-metadata.json", "ro-crate-preview.html"}
    for record in capsule.manifest.files:
        path = capsule.path / record.path
        assert record.sha256 == _sha256(path)
        assert record.size == path.stat().st_size
        assert entities[record.path]["sha256"] == record.sha256
        assert entities[record.path]["contentSize"] == str(record.size)
        swhid = entities[entities[record.path]["identifier"]["@id"]]
        assert swhid["@type"] == "PropertyValue" and swhid["propertyID"] == "https://www.swhid.org/"
        assert swhid["value"] == record.swhid and "url" not in swhid  # not in any archived commit
    assert entities["capsule.json"]["sha256"] == _sha256(capsule.path / "capsule.json")
    assert capsule.manifest.file("data/input.csv").sha256 == _sha256(simple.parent / "data" / "input.csv")


def test_metadata_declares_profile_action_and_software(simple):
    capsule = _export(simple)
    metadata = json.loads((capsule.path / "ro-crate-metadata.json").read_text())
    assert metadata["@context"] == ["https://w3id.org/ro/crate/1.1/context",
                                    "https://w3id.org/ro/terms/workflow-run/context"]
    graph = {e["@id"]: e for e in metadata["@graph"]}
    root = graph["./"]
    # no kernel recorded the cells: a workflow run, not a provenance run crate
    assert root["conformsTo"] == [{"@id": "https://w3id.org/ro/wfrun/process/0.5"},
                                  {"@id": "https://w3id.org/ro/wfrun/workflow/0.5"},
                                  {"@id": "https://w3id.org/workflowhub/workflow-ro-crate/1.0"}]
    assert root["mainEntity"] == {"@id": "analysis.ipynb"}
    assert root["license"] == {"@id": "https://spdx.org/licenses/MIT"}
    assert graph[root["author"]["@id"]]["name"] == "Ada Lovelace"
    parts = {p["@id"] for p in root["hasPart"]}
    assert {"analysis.ipynb", "data/input.csv", "results/out.txt", "capsule.json"} <= parts
    notebook = graph["analysis.ipynb"]
    assert notebook["@type"] == ["File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"]
    assert notebook["encodingFormat"] == "application/x-ipynb+json"
    assert graph[notebook["programmingLanguage"]["@id"]]["name"] == "Python"
    action = graph[root["mentions"]["@id"]]
    assert action["@type"] == "CreateAction"
    assert action["instrument"] == {"@id": "analysis.ipynb"}
    assert action["object"] == {"@id": "data/input.csv"}
    assert action["result"] == {"@id": "results/out.txt"}
    assert action["actionStatus"] == "http://schema.org/CompletedActionStatus"
    assert "Z" not in action["startTime"] and "." not in action["startTime"]
    apps = [e for e in metadata["@graph"] if e.get("@type") == "SoftwareApplication"]
    assert apps and all({"name", "version", "url"} <= set(e) for e in apps)
    assert any(e["name"].startswith("CPython") for e in apps)


def test_capsule_json_follows_its_schema_and_its_digest(simple):
    from scidex_nbcapsule.manifest import Manifest, validate as validate_manifest

    capsule = _export(simple)
    raw = json.loads((capsule.path / "capsule.json").read_text())
    validate_manifest(raw)
    assert Manifest.from_dict(raw).manifest_digest == raw["manifest_digest"]
    assert raw["capsule_id"].startswith("capsule-") and raw["schema_version"] == "1.0"
    assert raw["environment_digest"] == capsule.manifest.environment_digest


def test_environment_requirements_binder_and_citation(simple):
    import yaml

    capsule = _export(simple)
    env = json.loads((capsule.path / "environment.json").read_text())
    assert env["python"]["version"] and env["kernel"]["language"] == "python"
    assert "nbformat" in env["packages"]
    reqs = (capsule.path / "binder" / "requirements.txt").read_text().splitlines()
    # what the analysis needs, then the verifier the crate carries; not the kernel's whole environment
    assert reqs[:-1] == (capsule.path / "requirements.txt").read_text().splitlines()
    assert not any(line.startswith("nbformat==") for line in reqs)
    assert reqs[-1].startswith("binder/scidex_nbcapsule-") and (capsule.path / reqs[-1]).is_file()
    assert (capsule.path / "binder" / "runtime.txt").read_text().startswith("python-3.")
    cff = yaml.safe_load((capsule.path / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["title"] == "Test analysis"
    assert cff["authors"][0]["family-names"] == "Lovelace"
    html = (capsule.path / "ro-crate-preview.html").read_text()
    assert "Test analysis" in html and "<html" in html.lower()


def test_identifier_becomes_cite_as(simple):
    capsule = _export(simple, identifier="https://doi.org/10.5281/zenodo.1234")
    root = next(e for e in json.loads((capsule.path / "ro-crate-metadata.json").read_text())["@graph"]
                if e["@id"] == "./")
    assert root["cite-as"] == "https://doi.org/10.5281/zenodo.1234"


@pytest.mark.parametrize("fmt", ["zip", "eln"])
def test_zip_has_metadata_at_its_root_and_eln_one_root_folder(simple, fmt, validate):
    capsule = _export(simple, fmt=fmt)
    assert capsule.path.suffix == f".{fmt}"
    with zipfile.ZipFile(capsule.path) as archive:
        names = archive.namelist()
    tops = {name.split("/", 1)[0] for name in names}
    if fmt == "zip":
        assert "ro-crate-metadata.json" in names and capsule.capsule_id not in tops
    else:
        assert tops == {capsule.capsule_id}
    with open_crate(capsule.path) as opened:
        assert opened.manifest.capsule_id == capsule.capsule_id
        assert opened.checksum == capsule.checksum
    assert validate(capsule.path).passed


def test_hidden_and_cache_folders_are_not_swept_in(simple):
    data = simple.parent / "data"
    for name in (".git", ".ipynb_checkpoints", "__pycache__", ".hidden"):
        (data / name).mkdir()
        (data / name / "junk.txt").write_text("junk")
    paths = {f.path for f in _export(simple).manifest.files}
    assert not any("junk" in p for p in paths)
    named = _export(simple, inputs=[data / ".hidden" / "junk.txt"])
    assert "data/.hidden/junk.txt" in {f.path for f in named.manifest.files}


def test_existing_capsule_is_never_overwritten(simple, tmp_path):
    first = _export(simple, dest=tmp_path / "out")
    before = sorted(p.name for p in (tmp_path / "out").iterdir())
    from scidex_nbcapsule.crate import _check_destination

    with pytest.raises(DestinationExists, match="never overwritten"):
        _check_destination(tmp_path / "out", first.capsule_id, "folder")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before


def test_link_large_records_digest_and_location(simple):
    big = simple.parent / "data" / "big.bin"
    big.write_bytes(os.urandom(300_000))
    capsule = _export(simple, link_large=100_000)
    record = capsule.manifest.file("data/big.bin")
    assert record.linked_from == big.as_uri() and record.sha256 == _sha256(big)
    assert not (capsule.path / "data" / "big.bin").exists()


@pytest.mark.parametrize("case", ["corrupt", "missing", "outside", "symlink", "unreadable", "not-notebook"])
def test_bad_input_gives_one_clear_error_and_no_partial_crate(project, tmp_path, case):
    nb = make_notebook(project / "a.ipynb", "print(1)")
    dest = tmp_path / "dest"
    kwargs: dict = {}
    expected: type[Exception]
    if case == "corrupt":
        nb.write_text('{"cells": [ oops')
        expected, words = NotebookError, "not a valid .ipynb"
    elif case == "missing":
        kwargs["inputs"] = [project / "nope.csv"]
        expected, words = InputFileError, "nope.csv does not exist"
    elif case == "outside":
        other = tmp_path / "elsewhere.csv"
        other.write_text("1")
        kwargs["inputs"] = [other]
        expected, words = PathOutsideProject, "outside the project root"
    elif case == "symlink":
        other = tmp_path / "target.csv"
        other.write_text("1")
        (project / "link.csv").symlink_to(other)
        kwargs["inputs"] = [project / "link.csv"]
        expected, words = PathOutsideProject, "symlink that escapes"
    elif case == "unreadable":
        locked = project / "data" / "locked.csv"
        locked.write_text("x")
        locked.chmod(0)
        kwargs["inputs"] = [locked]
        expected, words = InputFileError, "cannot be read"
        if os.geteuid() == 0:
            return _unreadable_without_root_powers(nb, locked, dest)
    else:
        nb = project / "data" / "input.csv"
        expected, words = NotebookError, "not a notebook"
    with pytest.raises(expected, match=words) as info:
        api.export(nb, dest=dest, license="MIT", progress=False, **kwargs)
    assert str(info.value)
    assert not dest.exists() or list(dest.iterdir()) == []


UNREADABLE = """
import sys
from scidex_nbcapsule import api
from scidex_nbcapsule.errors import InputFileError
try:
    api.export(sys.argv[1], inputs=[sys.argv[2]], dest=sys.argv[3], license="MIT", progress=False)
except InputFileError as exc:
    print("INPUT-ERROR", exc)
    sys.exit(3)
"""


def _unreadable_without_root_powers(nb: Path, locked: Path, dest: Path) -> None:
    """Root reads every file; a child without CAP_DAC_OVERRIDE/READ_SEARCH meets the permission error."""
    import shutil

    setpriv = shutil.which("setpriv")
    assert setpriv, "util-linux setpriv is needed to test unreadable files as root"
    result = subprocess.run([setpriv, "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-c",
                             UNREADABLE, str(nb), str(locked), str(dest)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "locked.csv cannot be read: permission denied" in result.stdout.lower()
    assert not dest.exists() or list(dest.iterdir()) == []


def test_killed_export_leaves_nothing_and_next_export_cleans_up(simple, tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    stale = dest / f"{PARTIAL_PREFIX}999999-capsule-x"
    stale.mkdir()
    (stale / "half.txt").write_text("half")
    capsule = _export(simple, dest=dest)
    assert [p.name for p in dest.iterdir()] == [capsule.capsule_id]


def _zip(path: Path, members: list[tuple[str, bytes, int | None]]) -> Path:
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as archive:
        warnings.simplefilter("ignore")  # the duplicate member is the point
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            archive.writestr(info, data)
    return path


@pytest.mark.parametrize("name,mode,words", [
    ("../evil.txt", None, "climbs out"), ("/etc/evil.txt", None, "absolute"),
    ("c/link", stat.S_IFLNK | 0o777, "symbolic link"), ("c/dup.txt", None, "appears twice")])
def test_hostile_zip_members_are_refused(tmp_path, name, mode, words):
    members = [("c/ro-crate-metadata.json", b"{}", None), (name, b"/etc/passwd", mode)]
    if words == "appears twice":
        members.append((name, b"again", None))
    path = _zip(tmp_path / "bad.zip", members)
    with pytest.raises(UnsafeArchive, match=words):
        with open_crate(path):
            pass
    assert not (tmp_path / "evil.txt").exists()


def test_zip_bomb_is_refused_before_unpacking(tmp_path):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("c/ro-crate-metadata.json", "{}")
        archive.writestr("c/zeros.bin", b"\0" * (50 << 20))
    with pytest.raises(UnsafeArchive, match="compression ratio|more than"):
        with open_crate(path, max_bytes=10 << 20):
            pass


def test_tampered_crate_metadata_is_a_crate_error(simple):
    capsule = _export(simple)
    (capsule.path / "capsule.json").write_text(
        (capsule.path / "capsule.json").read_text().replace('"MIT"', '"GPL-3.0"'))
    with pytest.raises(CrateError, match="altered"):
        with open_crate(capsule.path):
            pass
    (capsule.path / "ro-crate-metadata.json").write_text("{not json")
    with pytest.raises(CrateError, match="not valid JSON"):
        with open_crate(capsule.path):
            pass


@pytest.mark.slow
def test_repo2docker_would_install_the_binder_requirements(simple):
    capsule = _export(simple)
    exe = Path(sys.executable).with_name("repo2docker")
    result = subprocess.run([str(exe), "--no-build", "--debug", str(capsule.path)], capture_output=True, text=True,
                            timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "binder/requirements.txt" in output
    assert "python3.1" in output or "python=3.1" in output


def test_long_exports_show_a_progress_bar(simple, monkeypatch, capsys):
    monkeypatch.setattr(api, "PROGRESS_FILES", 1)
    seen: list[tuple[int, int]] = []
    api.export(simple, inputs=[simple.parent / "data"], dest=simple.parent.parent / "p1", license="MIT",
               progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1][0] == seen[-1][1]
    api.export(simple, inputs=[simple.parent / "data"], dest=simple.parent.parent / "p2", license="MIT",
               progress=True)
    assert "nbcapsule export" in capsys.readouterr().err
