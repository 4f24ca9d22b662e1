"""Git facts read from real repositories built in temporary folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from _git_helpers import DEFAULT_FILES, git, make_repo
from scidex_nbcapsule import gitstate
from scidex_nbcapsule.errors import GitError
from scidex_nbcapsule.gitstate import no_repository_reason, read_git_state, strip_credentials


@pytest.fixture(autouse=True)
def _ceiling(tmp_path, monkeypatch):
    # Never let git climb out of the test folder into a repository around it.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture
def repo(tmp_path) -> Path:
    return make_repo(tmp_path / "repo", DEFAULT_FILES, executable=("src/run.sh",))


def test_clean_repository(repo):
    state = read_git_state(repo / "analysis.ipynb", [repo / "data/input.csv", repo / "src/lib/helpers.py"])
    assert state is not None
    assert state.root == repo.resolve()
    assert state.commit == git(repo, "rev-parse", "HEAD")
    assert state.tree == git(repo, "rev-parse", "HEAD^{tree}")
    assert state.branch == "main" and not state.detached
    assert not state.shallow and not state.is_submodule
    assert not state.dirty and state.changed_files == [] and state.patch is None
    assert state.untracked_used == []
    assert state.notebook_path == "analysis.ipynb"
    assert state.head_blobs["data/input.csv"] == git(repo, "hash-object", "data/input.csv")
    assert state.reproducible_from_commit
    data = state.to_dict()
    json.dumps(data)
    assert data["patch_file"] is None and "root" not in data


def test_dirty_tree_staged_and_untracked(repo):
    (repo / "src/lib/helpers.py").write_text("def double(x):\n    return x + x\n")
    (repo / "new.py").write_text("print(1)\n")
    git(repo, "add", "new.py")
    (repo / "data/extra.csv").write_text("x\n")
    (repo / ".gitignore").write_text("ignored.csv\n")
    (repo / "ignored.csv").write_text("secret-ish\n")
    state = read_git_state(repo / "analysis.ipynb",
                           [repo / "data/extra.csv", repo / "ignored.csv", repo / "data/input.csv", Path("/etc/hostname")])
    assert state.dirty
    assert sorted(state.changed_files) == ["new.py", "src/lib/helpers.py"]
    assert state.untracked_used == ["data/extra.csv", "ignored.csv"]
    assert state.outside_repo == ["/etc/hostname"]
    assert state.patch is not None and b"return x + x" in state.patch and b"new.py" in state.patch
    assert state.to_dict()["patch_file"] == gitstate.DEFAULT_PATCH_FILE
    assert state.to_dict(patch_file="provenance/changes.patch")["patch_file"] == "provenance/changes.patch"
    assert not state.reproducible_from_commit
    # The patch recreates the working tree from the commit.
    clone = repo.parent / "clone"
    git(repo.parent, "clone", "-q", str(repo), str(clone))
    git(clone, "apply", "--index", input=state.patch)
    assert (clone / "src/lib/helpers.py").read_text() == (repo / "src/lib/helpers.py").read_text()
    assert (clone / "new.py").exists()


def test_binary_change_in_patch(repo):
    (repo / "data/blob.bin").write_bytes(bytes(range(256)))
    git(repo, "add", "data/blob.bin")
    git(repo, "commit", "-q", "-m", "binary")
    (repo / "data/blob.bin").write_bytes(bytes(reversed(range(256))))
    state = read_git_state(repo / "analysis.ipynb", [])
    assert b"GIT binary patch" in state.patch


def test_not_a_repository(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "nb.ipynb").write_text("{}")
    assert read_git_state(folder / "nb.ipynb", []) is None
    assert no_repository_reason(folder / "nb.ipynb") == "not in a git repository"


def test_git_missing(tmp_path, monkeypatch, repo):
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    assert read_git_state(repo / "analysis.ipynb", []) is None
    assert "git is not installed" in no_repository_reason(repo / "analysis.ipynb")


def test_repository_without_commits(tmp_path):
    repo = make_repo(tmp_path / "fresh", {"nb.ipynb": "{}", "a.py": "x = 1\n"}, commit=False)
    state = read_git_state(repo / "nb.ipynb", [repo / "a.py"])
    assert state.commit is None and state.tree is None
    assert state.branch == "main"
    assert sorted(state.changed_files) == ["a.py", "nb.ipynb"]
    assert state.untracked_used == []
    assert state.head_blobs == {}
    assert not state.reproducible_from_commit


def test_detached_head(repo):
    commit = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "--detach", commit)
    state = read_git_state(repo / "analysis.ipynb", [])
    assert state.detached and state.branch is None and state.commit == commit


def test_shallow_clone(repo, tmp_path):
    (repo / "README.md").write_text("second\n")
    git(repo, "commit", "-qam", "second")
    clone = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(clone))
    state = read_git_state(clone / "analysis.ipynb", [])
    assert state.shallow
    assert state.commit == git(repo, "rev-parse", "HEAD")
    assert state.origin_url == f"file://{repo}"
    assert state.public_origin is None
    assert state.to_dict()["origin_url"] is None and not state.to_dict()["origin_public"]
    assert state.has_remote and state.to_dict()["has_remote"]


def test_submodule(repo, tmp_path):
    outer = make_repo(tmp_path / "outer", {"top.txt": "top\n"})
    git(outer, "submodule", "add", "-q", str(repo), "sub")
    git(outer, "commit", "-qm", "add submodule")
    sub = outer / "sub"
    state = read_git_state(sub / "analysis.ipynb", [sub / "data/input.csv"])
    assert state.is_submodule and state.superproject == outer.resolve()
    assert state.root == sub.resolve()
    assert state.commit == git(repo, "rev-parse", "HEAD")
    assert state.notebook_path == "analysis.ipynb"
    outer_state = read_git_state(outer / "top.txt", [])
    assert not outer_state.is_submodule


def test_no_remote(repo):
    state = read_git_state(repo / "analysis.ipynb", [])
    assert not state.has_remote and state.origin_url is None and state.remote_name is None


def test_remote_password_never_leaks(repo):
    git(repo, "remote", "add", "origin", "https://alice:hunter2-SECRET@gitlab.com/group/project.git?private_token=TOK")
    state = read_git_state(repo / "analysis.ipynb", [])
    assert state.has_remote and state.remote_name == "origin"
    assert state.origin_url == "https://gitlab.com/group/project"
    text = json.dumps(state.to_dict()) + repr(state)
    for secret in ("hunter2", "SECRET", "alice", "TOK"):
        assert secret not in text


def test_upstream_remote_preferred(repo):
    git(repo, "remote", "add", "origin", "git@github.com:me/fork.git")
    git(repo, "remote", "add", "upstream", "ssh://git@codeberg.org:22/team/project.git")
    git(repo, "config", "branch.main.remote", "upstream")
    state = read_git_state(repo / "analysis.ipynb", [])
    assert state.remote_name == "upstream"
    assert state.origin_url == "https://codeberg.org/team/project"
    assert state.public_origin == state.origin_url
    assert state.to_dict()["origin_public"] and state.to_dict()["origin_url"] == state.origin_url


def test_notebook_in_subfolder_and_untracked_notebook(repo):
    (repo / "notebooks").mkdir()
    nb = repo / "notebooks" / "draft.ipynb"
    nb.write_text("{}")
    state = read_git_state(nb, [])
    assert state.notebook_path == "notebooks/draft.ipynb"
    assert state.untracked_used == ["notebooks/draft.ipynb"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to give the repository away")
def test_dubious_ownership_is_a_clear_error(repo):
    for path in [repo, *repo.rglob("*")]:
        os.lchown(path, 65534, 65534)
    with pytest.raises(GitError, match="safe.directory"):
        read_git_state(repo / "analysis.ipynb", [])


@pytest.mark.parametrize("url, expected", [
    ("git@github.com:owner/repo.git", "https://github.com/owner/repo"),
    ("ssh://git@gitlab.com/group/sub/repo.git", "https://gitlab.com/group/sub/repo"),
    ("git+ssh://git@bitbucket.org/team/repo", "https://bitbucket.org/team/repo"),
    ("https://ghp_TOKEN@github.com/owner/repo.git", "https://github.com/owner/repo"),
    ("https://user:pass@GitHub.com/owner/repo/", "https://github.com/owner/repo"),
    ("https://user:pass@git.example.org:8443/x/y.git", "https://git.example.org:8443/x/y.git"),
    ("git@git.example.org:x/y.git", "ssh://git.example.org/x/y.git"),
    ("https://example.org/r.git?token=abc#frag", "https://example.org/r.git"),
    ("/srv/git/repo.git", "/srv/git/repo.git"),
    ("file:///srv/git/repo", "file:///srv/git/repo"),
])
def test_strip_credentials(url, expected):
    assert strip_credentials(url) == expected
