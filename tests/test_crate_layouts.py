"""The three layouts: folder, RO-Crate zip (metadata at the zip's root) and .eln (one root folder, ELN metadata)."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from helpers import make_notebook, nbcapsule
from scidex_nbcapsule import api
from scidex_nbcapsule.crate import open_crate
from scidex_nbcapsule.crate.layouts import ELN_DATASET_ID, eln_file_paths


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
    kwargs.setdefault("authors", ["Ada Lovelace", "Charles Babbage"])
    return api.export(nb, dest=kwargs.pop("dest", nb.parent.parent / "capsules"), progress=False, **kwargs)


def _zip_metadata(path: Path) -> tuple[list[str], dict[str, Any]]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        meta = next(n for n in names if n.rsplit("/", 1)[-1] == "ro-crate-metadata.json")
        return names, json.loads(archive.read(meta))


def test_zip_is_an_ro_crate_zip_with_metadata_at_its_root(simple, validate):
    from rocrate.rocrate import ROCrate

    capsule = _export(simple, fmt="zip")
    names, metadata = _zip_metadata(capsule.path)
    assert "ro-crate-metadata.json" in names and "capsule.json" in names
    assert not any(n.startswith(capsule.capsule_id) for n in names)
    crate = ROCrate(capsule.path)  # ro-crate-py opens the zip as it is
    assert crate.mainEntity is None or crate.mainEntity.id == "analysis.ipynb"
    assert crate.dereference("analysis.ipynb") is not None and crate.dereference("data/input.csv") is not None
    with open_crate(capsule.path) as opened:
        assert opened.manifest.capsule_id == capsule.capsule_id
        assert opened.checksum == capsule.checksum
    for profile in ("ro-crate-1.1", "process-run-crate-0.5"):
        report = validate(capsule.path, profile=profile)
        assert report.passed, report.issues


def _eln_problems(metadata: dict[str, Any], names: list[str]) -> list[str]:
    """What the ELN file format specification asks of an .eln, checked our own way."""
    problems = []
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) != 1 or not all("/" in n for n in names if n not in (f"{t}/" for t in tops)):
        problems.append(f"not one root folder: {sorted(tops)}")
    top = next(iter(tops))
    graph = metadata["@graph"]
    by_id = {e["@id"]: e for e in graph}
    if len(by_id) != len(graph):
        problems.append("duplicate @id")
    descriptor = by_id["ro-crate-metadata.json"]
    for key in ("version", "sdPublisher"):
        if not isinstance(descriptor.get(key), (str, dict)):
            problems.append(f"descriptor has no {key}")
    publisher = by_id.get(descriptor.get("sdPublisher", {}).get("@id"), {})
    if publisher.get("@type") != "Organization" or not publisher.get("name") or not publisher.get("url"):
        problems.append(f"sdPublisher is not an Organization with name and url: {publisher}")
    for entity in graph:
        where = entity.get("@id")
        if not isinstance(entity.get("@type"), (str, list)):
            problems.append(f"{where}: no @type")
        for key in ("author", "conformsTo", "sdPublisher", "about"):
            if key in entity and not isinstance(entity[key], dict):
                problems.append(f"{where}: {key} is not one object")
        for key in ("identifier", "url", "version", "name", "encodingFormat", "genre", "keywords"):
            if key in entity and not isinstance(entity[key], str):
                problems.append(f"{where}: {key} is not a string")
        if "hasPart" in entity and not isinstance(entity["hasPart"], list):
            problems.append(f"{where}: hasPart is not a list")
        if isinstance(entity.get("hasPart"), list):
            for child in entity["hasPart"]:
                if child.get("@id") not in by_id:
                    problems.append(f"{where}: hasPart names a missing node {child}")
    datasets = [by_id[p["@id"]] for p in by_id["./"]["hasPart"] if by_id[p["@id"]].get("@type") == "Dataset"]
    if not datasets:
        problems.append("no Dataset typed exactly 'Dataset' in the root's hasPart")
    for dataset in datasets:
        for key in ("name", "author", "genre"):
            if key not in dataset:
                problems.append(f"Dataset {dataset['@id']} has no {key}")
        for child in dataset.get("hasPart", []):
            entity = by_id[child["@id"]]
            if entity.get("@type") != "File":
                problems.append(f"{entity['@id']} is typed {entity.get('@type')!r}, not exactly 'File'")
            for key in ("sha256", "contentSize", "encodingFormat", "name"):
                if not isinstance(entity.get(key), str):
                    problems.append(f"{entity['@id']}: no {key} string")
            if f"{top}/{entity['@id']}" not in names:
                problems.append(f"{entity['@id']} is not in the archive")
    return problems


def test_eln_follows_the_eln_file_format(simple, validate):
    capsule = _export(simple, fmt="eln")
    names, metadata = _zip_metadata(capsule.path)
    assert {n.split("/", 1)[0] for n in names} == {capsule.capsule_id}
    assert _eln_problems(metadata, names) == []
    by_id = {e["@id"]: e for e in metadata["@graph"]}
    dataset = by_id[ELN_DATASET_ID]
    assert dataset["name"] == "Test analysis" and dataset["author"] == {"@id": "#person-ada-lovelace"}
    assert len(by_id["./"]["creator"]) == 2  # every author is still named
    # what an importer takes: every file in the crate, with the digests capsule.json records
    imported = set(eln_file_paths(metadata))
    assert {f.path for f in capsule.manifest.files if f.in_crate} | {"capsule.json"} <= imported
    with zipfile.ZipFile(capsule.path) as archive:
        for path in imported:
            data = archive.read(f"{capsule.capsule_id}/{path}")
            assert hashlib.sha256(data).hexdigest() == by_id[path]["sha256"]
            assert by_id[path]["contentSize"] == str(len(data))
    with open_crate(capsule.path) as opened:
        assert opened.manifest.capsule_id == capsule.capsule_id and opened.checksum == capsule.checksum
    for profile in ("ro-crate-1.1", "process-run-crate-0.5"):
        report = validate(capsule.path, profile=profile)
        assert report.passed, report.issues


@pytest.mark.parametrize("fmt", ["zip", "eln"])
def test_verify_reads_both_archive_layouts(simple, fmt):
    from scidex_nbcapsule.verify import verify

    capsule = _export(simple, fmt=fmt)
    report = verify(capsule.path, record=False)
    assert report.fixity == [], report.summary()


def test_old_zip_with_one_top_folder_still_opens(simple, tmp_path, validate):
    capsule = _export(simple)
    old = tmp_path / f"{capsule.capsule_id}.zip"
    with zipfile.ZipFile(old, "w") as archive:
        for path in sorted(capsule.path.rglob("*")):
            if path.is_file():
                archive.write(path, f"{capsule.capsule_id}/{path.relative_to(capsule.path).as_posix()}")
    with open_crate(old) as opened:
        assert opened.manifest.capsule_id == capsule.capsule_id and opened.checksum == capsule.checksum
    assert validate(old).passed


def test_validate_command_accepts_eln_and_bagit_bags(simple, tmp_path, validator_cache, monkeypatch):
    from scidex_nbcapsule.archive import run_archival

    eln = _export(simple, fmt="eln")
    folder = _export(simple)
    bag = run_archival("bagit", folder.path, dest=tmp_path / "bag").location
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    cache = Path(tmp_path / "xdg" / "scidex-nbcapsule")
    cache.mkdir(parents=True)
    for target in (eln.path, Path(bag)):
        result = nbcapsule("validate", str(target), env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith("valid"), result.stdout


def _isolated_tool(name: str, variable: str) -> list[str]:
    """A tool whose dependencies the test environment cannot hold (runcrate's cwl stack; cffconvert 2.0 pins
    jsonschema 3.2): ``$variable`` (its path), else uv's own environment for it (``uvx --from name name``)."""
    import os
    import shutil
    import sys

    if os.environ.get(variable):
        return [os.environ[variable]]
    uvx = Path(sys.executable).with_name("uvx")
    uvx = str(uvx) if uvx.exists() else shutil.which("uvx")
    if not uvx:
        pytest.skip(f"{name} needs its own environment: set {variable} or install uv")
    return [uvx, "--from", name, name]


def test_runcrate_reads_the_zip_as_it_is(simple):
    """runcrate, in its own environment, reports the run from the zip."""
    import subprocess

    capsule = _export(simple, fmt="zip")
    result = subprocess.run([*_isolated_tool("runcrate", "NBCAPSULE_TEST_RUNCRATE"), "report", str(capsule.path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "analysis.ipynb" in result.stdout and "data/input.csv" in result.stdout
    assert "results/out.txt" in result.stdout




@pytest.mark.parametrize("identifier", [None, "https://doi.org/10.5281/zenodo.1234", "10.5281/zenodo.99",
                                        "https://example.org/analysis/1"])
def test_citation_cff_is_a_valid_dataset_citation(simple, identifier):
    import subprocess

    import yaml

    capsule = _export(simple, identifier=identifier)
    cff_path = capsule.path / "CITATION.cff"
    result = subprocess.run([*_isolated_tool("cffconvert", "NBCAPSULE_TEST_CFFCONVERT"), "--validate", "-i",
                             str(cff_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    cff = yaml.safe_load(cff_path.read_text())
    assert cff["type"] == "dataset"
    kinds = {i["type"]: i["value"] for i in cff["identifiers"]}
    if identifier and "10." in identifier:
        assert cff["doi"] == identifier.removeprefix("https://doi.org/") == kinds["doi"]
    elif identifier:
        assert kinds["url"] == identifier and "doi" not in cff
    assert kinds["swh"].startswith("swh:1:cnt:") and ";" not in kinds["swh"]
