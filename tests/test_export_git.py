"""Exports inside real git repositories: the crate's SWHIDs are the ones git and swh.model compute."""

from __future__ import annotations

import json
from pathlib import Path

import bagit
import pytest
from swh.model.swhids import QualifiedSWHID

from _git_helpers import git, make_repo
from helpers import make_notebook
from scidex_nbcapsule import api


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = make_repo(tmp_path / "repo", {"data/input.csv": "a,b\n1,2\n", "lib/helpers.py": "X = 1\n"})
    make_notebook(root / "analysis.ipynb", "print(open('data/input.csv').read())")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "notebook")
    git(root, "remote", "add", "origin", "https://analyst:s3cr3t-pw@github.com/lab/analysis.git")
    return root


def _export(root: Path, tmp_path: Path, **kwargs) -> api.Capsule:
    return api.export(root / "analysis.ipynb", inputs=[root / "data"], dest=tmp_path / "caps", license="MIT",
                      progress=False, **kwargs)


def test_swhids_equal_what_git_computes(repo, tmp_path):
    capsule = _export(repo, tmp_path)
    m = capsule.manifest
    assert m.git_commit == git(repo, "rev-parse", "HEAD")
    assert m.git_tree_hash == git(repo, "rev-parse", "HEAD^{tree}")
    assert m.swhids["revision"] == f"swh:1:rev:{m.git_commit}"
    assert m.swhids["directory"] == f"swh:1:dir:{m.git_tree_hash}"
    for record in m.files:
        blob = git(repo, "hash-object", str(capsule.path / record.path))
        assert record.sha1_git == blob
        core = QualifiedSWHID.from_string(record.swhid)
        assert str(core.object_id.hex()) == blob and core.object_type.name == "CONTENT"
    for value in [m.swhids["revision"], m.swhids["directory"], m.swhids["payload"], m.swhids["notebook"]]:
        QualifiedSWHID.from_string(value)
    # the notebook, unmodified since the commit, carries its anchored, qualified SWHID
    notebook = m.swhids["notebook"]
    assert m.file("analysis.ipynb").swhid == notebook
    assert ";anchor=swh:1:rev:" in notebook and ";path=/analysis.ipynb" in notebook
    assert ";origin=https://github.com/lab/analysis" in notebook
    for text in (capsule.path / "capsule.json", capsule.path / "ro-crate-metadata.json",
                 capsule.path / "CITATION.cff"):
        assert "s3cr3t-pw" not in text.read_text()
    metadata = json.loads((capsule.path / "ro-crate-metadata.json").read_text())
    repo_entity = next(e for e in metadata["@graph"] if e["@id"] == "#source-repository")
    assert repo_entity["codeRepository"] == "https://github.com/lab/analysis"
    graph = {e["@id"]: e for e in metadata["@graph"]}
    ids = [graph[i["@id"]] for i in repo_entity["identifier"]]
    assert {"PropertyValue"} == {i["@type"] for i in ids} and {"https://www.swhid.org/"} == {i["propertyID"] for i in ids}
    revision = next(i for i in ids if i["value"] == m.swhids["revision"])
    assert revision["url"] == f"https://archive.softwareheritage.org/{m.swhids['revision']}"  # a public origin
    # the notebook's bytes are the blob in that commit: its SWHID resolves; the input's bare SWHID does not
    nb_id = graph[graph["analysis.ipynb"]["identifier"]["@id"]]
    assert nb_id["value"] == notebook and nb_id["url"] == f"https://archive.softwareheritage.org/{notebook}"
    assert "url" not in graph[graph["data/input.csv"]["identifier"]["@id"]]
    # the page links the archive for the notebook only
    page = (capsule.path / "ro-crate-preview.html").read_text()
    assert f'href="https://archive.softwareheritage.org/{notebook}"' in page.replace("&amp;", "&")
    assert page.count('href="https://archive.softwareheritage.org/') == 1


def test_dirty_tree_is_never_hidden(repo, tmp_path):
    (repo / "data" / "input.csv").write_text("a,b\n9,9\n")
    (repo / "data" / "untracked.csv").write_text("u\n")
    capsule = _export(repo, tmp_path)
    m = capsule.manifest
    assert m.git["dirty"] is True and "data/input.csv" in m.git["changed_files"]
    assert "data/untracked.csv" in m.git["untracked_used"]
    patch = capsule.path / m.git["patch_file"]
    assert "+9,9" in patch.read_text()
    # the edited file is no longer the blob in the commit: bare content SWHID, no false anchor
    assert m.file("data/input.csv").swhid.startswith("swh:1:cnt:") and ";" not in m.file("data/input.csv").swhid
    # the RO-Crate says so too: the working tree's state, the changed and the untracked file
    graph = {e["@id"]: e for e in json.loads((capsule.path / "ro-crate-metadata.json").read_text())["@graph"]}
    source = graph["#source-repository"]
    assert source["creativeWorkStatus"] == "dirty working tree"
    assert "data/input.csv" in source["description"] and "data/untracked.csv" in source["description"]
    assert m.git["patch_file"] in source["description"]
    assert "Untracked in git" in graph["data/untracked.csv"]["description"]
    assert "Changed since the analysed commit" in graph["data/input.csv"]["description"]
    assert graph["analysis.ipynb"]["isPartOf"] == {"@id": "#source-repository"}


def test_no_repository_is_said_in_the_crate(project, tmp_path):
    nb = make_notebook(project / "a.ipynb", "print(1)")
    capsule = api.export(nb, dest=tmp_path / "c", license="MIT", progress=False)
    assert capsule.manifest.git == {"repository": None, "reason": "not in a git repository"}
    assert capsule.manifest.git_commit is None and capsule.manifest.swhids["revision"] is None


def test_user_swh_references_are_checked_and_recorded(repo, tmp_path):
    from scidex_nbcapsule.errors import SWHIDError

    snapshot = "swh:1:snp:" + "ab" * 20
    capsule = _export(repo, tmp_path, swh_origin="https://github.com/lab/analysis", swh_snapshot=snapshot)
    assert capsule.manifest.swh_snapshot_id == snapshot
    assert f";visit={snapshot}" in capsule.manifest.swhids["notebook"]
    with pytest.raises(SWHIDError):
        _export(repo, tmp_path, swh_snapshot="swh:1:ext:" + "ab" * 20)


def test_bagit_export_validates_and_still_passes_the_crate_validator(repo, tmp_path, validate):
    from helpers import nbcapsule

    result = nbcapsule("export", str(repo / "analysis.ipynb"), "--input", str(repo / "data"), "--dest",
                       str(tmp_path / "b"), "--license", "MIT", "--bagit", "--json", check=True)
    data = json.loads(result.stdout)
    bag_path = Path(data["crate"] + ".bag")
    bag = bagit.Bag(str(bag_path))
    bag.validate()
    assert (bag_path / "bagit.txt").read_text().startswith("BagIt-Version: 1.0")
    assert (bag_path / "manifest-sha512.txt").exists() and (bag_path / "tagmanifest-sha512.txt").exists()
    uuid = data["capsule_id"][len("capsule-"):]
    assert f"External-Identifier: urn:uuid:{uuid}" in (bag_path / "bag-info.txt").read_text()
    assert validate(bag_path / "data").passed
