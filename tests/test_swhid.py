"""SWHIDs computed by swh.model agree with git on real repositories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st
from swh.model.swhids import CoreSWHID, QualifiedSWHID

from _git_helpers import DEFAULT_FILES, git, make_repo
from scidex_nbcapsule import swhid
from scidex_nbcapsule.errors import SWHIDError
from scidex_nbcapsule.gitstate import read_git_state
from scidex_nbcapsule.hashing import hash_file
from scidex_nbcapsule.manifest import FileRecord


@pytest.fixture(autouse=True)
def _ceiling(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.fixture
def repo(tmp_path) -> Path:
    files = dict(DEFAULT_FILES)
    files["deep/a/b/c/leaf.txt"] = "leaf\n"
    files["a-b.txt"] = "sorts between a and a/ in git order\n"
    files["a/x.txt"] = "x\n"
    repo = make_repo(tmp_path / "repo", files, executable=("src/run.sh",))
    (repo / "link").symlink_to("README.md")
    git(repo, "add", "link")
    git(repo, "commit", "-q", "-m", "symlink")
    return repo


def ls_files(repo: Path) -> list[tuple[str, int, str]]:
    entries = []
    for line in git(repo, "ls-files", "-s").splitlines():
        meta, path = line.split("\t", 1)
        mode, sha, _stage = meta.split()
        entries.append((path, int(mode, 8), sha))
    return entries


def test_core_swhids_equal_git(repo):
    commit = git(repo, "rev-parse", "HEAD")
    tree = git(repo, "rev-parse", "HEAD^{tree}")
    assert swhid.revision_swhid(commit) == f"swh:1:rev:{commit}"
    assert swhid.tree_swhid(tree) == f"swh:1:dir:{tree}"
    for rel in DEFAULT_FILES:
        digests = hash_file(repo / rel)
        assert swhid.content_swhid(digests.sha1_git) == f"swh:1:cnt:{git(repo, 'hash-object', rel)}"


def test_directory_swhid_equals_write_tree(repo):
    entries = ls_files(repo)
    assert any(mode == 0o100755 for _, mode, _ in entries)
    assert any(mode == 0o120000 for _, mode, _ in entries)
    assert swhid.directory_swhid(entries) == f"swh:1:dir:{git(repo, 'write-tree')}"
    assert swhid.directory_swhid(reversed(entries)) == f"swh:1:dir:{git(repo, 'write-tree')}"


def test_directory_swhid_from_hashing_module(repo):
    entries = []
    for path, _mode, _sha in ls_files(repo):
        if (repo / path).is_symlink():
            continue
        d = hash_file(repo / path)
        entries.append((path, d.mode, d.sha1_git))
    git(repo, "rm", "-q", "--cached", "link")
    assert swhid.directory_swhid(entries) == f"swh:1:dir:{git(repo, 'write-tree')}"


def test_directory_swhid_of_path_matches_git_and_skips_dotgit(repo):
    assert swhid.directory_swhid_of_path(repo) == f"swh:1:dir:{git(repo, 'rev-parse', 'HEAD^{tree}')}"


def test_directory_swhid_rejects_bad_entries():
    sha = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    with pytest.raises(SWHIDError, match="both as a file and as a folder"):
        swhid.directory_swhid([("a", 0o100644, sha), ("a/b", 0o100644, sha)])
    with pytest.raises(SWHIDError, match="listed twice"):
        swhid.directory_swhid([("a", 0o100644, sha), ("a", 0o100644, sha)])
    with pytest.raises(SWHIDError, match="clean relative"):
        swhid.directory_swhid([("../a", 0o100644, sha)])
    with pytest.raises(SWHIDError, match="not a git file mode"):
        swhid.directory_swhid([("a", 0o644, sha)])
    with pytest.raises(SWHIDError, match="hexadecimal"):
        swhid.directory_swhid([("a", 0o100644, "xyz")])


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(
    st.lists(st.text(alphabet="abcAB-_.0é", min_size=1, max_size=4).filter(lambda s: s not in (".", "..")),
             min_size=1, max_size=3).map("/".join),
    st.tuples(st.binary(max_size=20), st.booleans()), min_size=1, max_size=6))
def test_directory_swhid_property(tmp_path_factory, files):
    paths = sorted(files)
    if any(b.startswith(a + "/") for a in paths for b in paths):
        return
    repo = tmp_path_factory.mktemp("prop")
    git(repo, "init", "-q")
    for rel, (content, exe) in files.items():
        target = repo / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        target.chmod(0o755 if exe else 0o644)
    git(repo, "add", "-A")
    entries = [(rel, hash_file(repo / rel).mode, hash_file(repo / rel).sha1_git) for rel in files]
    assert swhid.directory_swhid(entries) == f"swh:1:dir:{git(repo, 'write-tree')}"


def test_parse_and_qualified_roundtrip(repo):
    commit = git(repo, "rev-parse", "HEAD")
    blob = git(repo, "hash-object", "src/lib/helpers.py")
    snp = "swh:1:snp:" + "1" * 40
    text = swhid.qualified(swhid.content_swhid(blob), origin="git@github.com:owner/repo.git", visit=snp,
                           anchor=swhid.revision_swhid(commit), path="src/lib/helpers.py")
    assert text == (f"swh:1:cnt:{blob};origin=https://github.com/owner/repo;visit={snp};"
                    f"anchor=swh:1:rev:{commit};path=/src/lib/helpers.py")
    parsed = swhid.parse(text)
    assert isinstance(parsed, QualifiedSWHID) and str(parsed) == text
    assert QualifiedSWHID.from_string(text) == parsed
    special = swhid.qualified(swhid.content_swhid(blob), anchor=swhid.tree_swhid("2" * 40), path="/a;b c/%.py")
    assert swhid.parse(special).path == b"/a;b c/%.py"


@pytest.mark.parametrize("text, message", [
    ("", "not a SWHID"),
    ("swh:1:cnt:", "invalid object id"),
    ("swh:2:cnt:" + "a" * 40, "version"),
    ("swh:1:ext:" + "a" * 40, "type 'ext'"),
    ("swh:1:ori:" + "a" * 40, "type 'ori'"),
    ("swh:1:emd:" + "a" * 40, "type 'emd'"),
    ("swh:1:cnt:" + "A" * 40, "invalid object id"),
    ("swh:1:cnt:" + "a" * 39, "invalid object id"),
    ("swh:1:cnt:" + "a" * 40 + ";colour=red", "not a valid SWHID"),
    ("swh:1:cnt:" + "a" * 40 + ";visit=swh:1:rev:" + "b" * 40, "not a valid SWHID"),
    ("swh:1:cnt:" + "a" * 40 + ";anchor=swh:1:cnt:" + "b" * 40, "not a valid SWHID"),
    ("swh:1:cnt:" + "a" * 40 + ";lines=x", "not a valid SWHID"),
    ("https://archive.softwareheritage.org/swh:1:cnt:" + "a" * 40, "not a SWHID"),
])
def test_parse_rejects_invalid(text, message):
    with pytest.raises(SWHIDError, match=message):
        swhid.parse(text)


def test_user_input_validation():
    snp = "swh:1:snp:" + "c" * 40
    assert swhid.validate_snapshot(f"  {snp} ") == snp
    for bad in ("swh:1:rev:" + "c" * 40, snp + ";origin=https://x.org/r", "snp:" + "c" * 40):
        with pytest.raises(SWHIDError):
            swhid.validate_snapshot(bad)
    assert swhid.validate_origin("https://github.com/o/r.git") == "https://github.com/o/r"
    assert swhid.validate_origin("git@gitlab.com:g/p.git") == "https://gitlab.com/g/p"
    for bad in ("", "ftp://x.org/r", "/local/repo", "http://localhost/r", "https://u:p@github.com/o/r", "notaurl"):
        with pytest.raises(SWHIDError):
            swhid.validate_origin(bad)
    with pytest.raises(SWHIDError, match="anchor"):
        swhid.qualified("swh:1:cnt:" + "a" * 40, path="/x")
    with pytest.raises(SWHIDError, match="already has qualifiers"):
        swhid.qualified("swh:1:cnt:" + "a" * 40 + ";origin=https://x.org/r")


def _records(folder: Path, roles: dict[str, str]) -> list[FileRecord]:
    records = []
    for rel, role in roles.items():
        d = hash_file(folder / rel)
        records.append(FileRecord(path=rel, role=role, size=d.size, sha256=d.sha256, sha1_git=d.sha1_git, mode=d.mode))
    return records


def test_capsule_swhids_clean_repository(repo, tmp_path):
    state = read_git_state(repo / "analysis.ipynb", [repo / "src/lib/helpers.py", repo / "data/input.csv"])
    # The crate lays files out differently from the repository.
    crate = tmp_path / "crate"
    for src, dst in [("analysis.ipynb", "analysis.ipynb"), ("src/lib/helpers.py", "code/helpers.py"),
                     ("src/run.sh", "code/run.sh"), ("data/input.csv", "inputs/input.csv")]:
        (crate / dst).parent.mkdir(parents=True, exist_ok=True)
        (crate / dst).write_bytes((repo / src).read_bytes())
    (crate / "code/run.sh").chmod(0o755)
    records = _records(crate, {"analysis.ipynb": "code", "code/helpers.py": "code", "code/run.sh": "code",
                               "inputs/input.csv": "input"})
    records.append(FileRecord(path="inputs/huge.bin", role="input", size=1, sha256="0" * 64,
                              sha1_git="d" * 40, linked_from="/data/huge.bin"))
    snp = "swh:1:snp:" + "5" * 40
    ids = swhid.capsule_swhids(records, state, "analysis.ipynb", None, origin="https://github.com/o/r", snapshot=snp)
    json.dumps(ids)
    commit, tree = git(repo, "rev-parse", "HEAD"), git(repo, "rev-parse", "HEAD^{tree}")
    assert ids["revision"] == f"swh:1:rev:{commit}" and ids["directory"] == f"swh:1:dir:{tree}"
    assert ids["payload"] == swhid.directory_swhid_of_path(crate)
    assert ids["files"]["inputs/input.csv"] == f"swh:1:cnt:{git(repo, 'hash-object', 'data/input.csv')}"
    assert ids["files"]["inputs/huge.bin"] == "swh:1:cnt:" + "d" * 40
    nb_blob = git(repo, "hash-object", "analysis.ipynb")
    assert ids["notebook"] == (f"swh:1:cnt:{nb_blob};origin=https://github.com/o/r;visit={snp};"
                               f"anchor=swh:1:rev:{commit};path=/analysis.ipynb")
    assert ids["code"]["code/helpers.py"].endswith(";path=/src/lib/helpers.py")
    # run.sh was not among the used files, so git facts do not cover it: bare content id.
    assert ids["code"]["code/run.sh"] == f"swh:1:cnt:{git(repo, 'hash-object', 'src/run.sh')}"
    assert "analysis.ipynb" not in ids["code"]
    for value in [ids["revision"], ids["directory"], ids["payload"], ids["notebook"], *ids["files"].values(),
                  *ids["code"].values()]:
        QualifiedSWHID.from_string(value)
    for value in [ids["revision"], ids["directory"], ids["payload"]]:
        CoreSWHID.from_string(value)


def test_capsule_swhids_edited_notebook_gets_no_anchor(repo, tmp_path):
    (repo / "analysis.ipynb").write_text('{"cells": [1]}')
    state = read_git_state(repo / "analysis.ipynb", [])
    records = _records(repo, {"analysis.ipynb": "code", "README.md": "provenance"})
    ids = swhid.capsule_swhids(records, state, "analysis.ipynb", "analysis.ipynb", origin=None, snapshot=None)
    assert ids["notebook"] == f"swh:1:cnt:{git(repo, 'hash-object', 'analysis.ipynb')}"
    assert ids["revision"] == f"swh:1:rev:{git(repo, 'rev-parse', 'HEAD')}"


def test_capsule_swhids_without_git(tmp_path):
    (tmp_path / "nb.ipynb").write_text("{}")
    records = _records(tmp_path, {"nb.ipynb": "code"})
    ids = swhid.capsule_swhids(records, None, "nb.ipynb", None, origin=None, snapshot=None)
    assert ids["revision"] is None and ids["directory"] is None
    assert ids["notebook"] == ids["files"]["nb.ipynb"]
    with pytest.raises(SWHIDError, match="not among"):
        swhid.capsule_swhids(records, None, "other.ipynb", None, origin=None, snapshot=None)
    with pytest.raises(SWHIDError):
        swhid.capsule_swhids(records, None, "nb.ipynb", None, origin=None, snapshot="swh:1:rev:" + "a" * 40)
