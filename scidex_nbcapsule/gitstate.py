"""Git facts about the repository a notebook lives in, read once at export time.

A capsule names the exact commit its code came from, says whether the working
tree differed from it (and ships the difference as a patch), and lists the
files the analysis used that git does not know about: those are exactly the
parts a reader cannot get back from the repository alone.

Everything goes through the ``git`` command line (no shell, ``LC_ALL=C``) so
the answers are the ones the user's own git would give.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import GitError

#: Forges whose ssh/scp remotes have a well-known public https form.
KNOWN_FORGES = ("github.com", "gitlab.com", "bitbucket.org", "codeberg.org")
#: Name under which :meth:`GitState.to_dict` refers to the uncommitted changes.
DEFAULT_PATCH_FILE = "git-uncommitted.patch"
GIT_TIMEOUT = 60

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SCP_RE = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>[^@/:\[\]]+|\[[^\]]+\]):(?P<path>(?!//).*)$")


class _NoGit(Exception):
    """git is not installed or not runnable; callers report it as 'no repository'."""


def _run(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(LC_ALL="C", LANG="C", GIT_TERMINAL_PROMPT="0", GIT_OPTIONAL_LOCKS="0")
    # NBCAPSULE_TRACE_DIR: git reads the work tree for us, not for the analysis; untraced, it records nothing
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_PREFIX", "NBCAPSULE_TRACE_DIR"):
        env.pop(name, None)
    cmd = ["git", "-C", str(cwd), "-c", "core.quotepath=off", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, env=env, timeout=GIT_TIMEOUT, stdin=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise _NoGit("git is not installed (the `git` command was not found)") from exc
    except PermissionError as exc:
        raise _NoGit(f"git cannot be run: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise GitError(f"`git {' '.join(args[:2])}` in {cwd} did not answer within {GIT_TIMEOUT} s",
                       hint="check that the repository is not locked or on a hung network drive") from exc
    if check and proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip() or f"exit status {proc.returncode}"
        raise GitError(f"`git {' '.join(args[:2])}` failed in {cwd}: {message}",
                       hint="run the same git command yourself to see what is wrong with the repository")
    return proc


def _text(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout.decode("utf-8", "surrogateescape").strip()


def _nul_list(data: bytes) -> list[str]:
    return [p.decode("utf-8", "surrogateescape") for p in data.split(b"\0") if p]


def _start_dir(notebook: Path) -> Path:
    notebook = Path(notebook).expanduser()
    start = notebook if notebook.is_dir() else notebook.parent
    return start.resolve() if start.exists() else start


def _toplevel(notebook: Path) -> tuple[Path | None, str | None]:
    """The work tree root, or ``None`` and the reason there is none."""
    start = _start_dir(notebook)
    if not start.is_dir():
        return None, f"{start} does not exist"
    try:
        proc = _run(start, "rev-parse", "--is-inside-work-tree", "--show-toplevel", check=False)
    except _NoGit as exc:
        return None, str(exc)
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip()
        if "not a git repository" in message:
            return None, "not in a git repository"
        if "dubious ownership" in message:
            raise GitError(f"git refuses to read the repository at {start}: it belongs to another user",
                           hint=f"if you trust it, run: git config --global --add safe.directory {start}")
        raise GitError(f"git could not read the repository at {start}: {message}",
                       hint="run `git status` there to see what is wrong")
    lines = _text(proc).splitlines()
    if not lines or lines[0] != "true" or len(lines) < 2:
        return None, "inside a git directory but not in a work tree (bare repository or .git folder)"
    return Path(lines[1]).resolve(), None


def no_repository_reason(notebook: Path) -> str | None:
    """Why ``notebook`` has no git facts (``"not in a git repository"``, git missing), or ``None`` if it has."""
    return _toplevel(notebook)[1]


def strip_credentials(url: str) -> str:
    """``url`` without user, password, token, query or fragment; known forges in their https form.

    Remote URLs routinely embed access tokens (``https://TOKEN@github.com/...``),
    so nothing between the scheme and ``@`` survives, and neither does a query
    string. ssh and scp-style remotes of public forges become the https address
    Software Heritage uses as origin (``https://github.com/owner/repo``).
    """
    url = url.strip()
    if not url:
        return url
    scp = _SCP_RE.match(url) if "://" not in url else None
    if scp and not re.match(r"^[A-Za-z]:[\\/]", url):
        host, path = scp.group("host").lower(), scp.group("path").lstrip("/")
        if host in KNOWN_FORGES:
            return _forge_https(host, path)
        return f"ssh://{host}/{path}"
    if "://" not in url:
        return url  # a local path: no credentials to strip
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if host in KNOWN_FORGES and scheme in ("ssh", "git+ssh", "git", "http", "https"):
        return _forge_https(host, parts.path.lstrip("/"))
    netloc = host
    if ":" in host:
        netloc = f"[{host}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((scheme, netloc, parts.path, "", ""))


def _forge_https(host: str, path: str) -> str:
    path = path.rstrip("/")
    if path.endswith(".git"):
        path = path[:-4]
    return f"https://{host}/{path}"


def is_public_url(url: str | None) -> bool:
    """True for an http(s) address another machine could reach (what Software Heritage can archive)."""
    if not url or "://" not in url:
        return False
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host or parts.username or parts.password:
        return False
    return host not in ("localhost", "127.0.0.1", "::1") and not host.endswith(".local")


@dataclass
class GitState:
    """What git says about the notebook's repository at export time."""

    root: Path
    commit: str | None
    tree: str | None
    branch: str | None
    detached: bool
    shallow: bool
    is_submodule: bool
    superproject: Path | None
    origin_url: str | None
    remote_name: str | None
    has_remote: bool
    dirty: bool
    changed_files: list[str] = field(default_factory=list)
    untracked_used: list[str] = field(default_factory=list)
    #: The notebook's path relative to ``root`` (POSIX), the ``path`` of its qualified SWHID.
    notebook_path: str | None = None
    #: Blob ids at HEAD of the notebook and the used files git tracks (repo path → sha1_git).
    head_blobs: dict[str, str] = field(default_factory=dict)
    #: Used files outside the repository, as given (they are in the crate, not in git).
    outside_repo: list[str] = field(default_factory=list)
    object_format: str = "sha1"
    patch: bytes | None = None

    @property
    def has_commits(self) -> bool:
        return self.commit is not None

    @property
    def reproducible_from_commit(self) -> bool:
        """True when the commit alone (no patch, no extra files) holds everything the analysis read."""
        return self.commit is not None and not self.dirty and not self.untracked_used

    @property
    def public_origin(self) -> str | None:
        """The origin URL if Software Heritage could archive it (http/https, not local)."""
        return self.origin_url if is_public_url(self.origin_url) else None

    def to_dict(self, patch_file: str | None = DEFAULT_PATCH_FILE) -> dict[str, Any]:
        """JSON-ready facts for ``capsule.json``; local paths (root, file remotes) and the patch bytes are left out.

        ``origin_url`` is only a candidate ``codeRepository`` when ``origin_public`` is true.

        ``patch_file`` is the crate path the writer stores :attr:`patch` under;
        it is only mentioned when there is a patch.
        """
        return {
            "commit": self.commit,
            "tree": self.tree,
            "branch": self.branch,
            "detached": self.detached,
            "shallow": self.shallow,
            "is_submodule": self.is_submodule,
            "origin_url": self.origin_url if self.origin_url and "://" in self.origin_url
            and not self.origin_url.startswith("file:") else None,
            "origin_public": self.public_origin is not None,
            "remote_name": self.remote_name,
            "has_remote": self.has_remote,
            "dirty": self.dirty,
            "changed_files": list(self.changed_files),
            "untracked_used": list(self.untracked_used),
            "notebook_path": self.notebook_path,
            "object_format": self.object_format,
            "reproducible_from_commit": self.reproducible_from_commit,
            "patch_file": patch_file if self.patch is not None else None,
        }


def read_git_state(notebook: Path, used_files: list[Path]) -> GitState | None:
    """Git facts for ``notebook``'s repository, or ``None`` when it is not in one (see :func:`no_repository_reason`).

    ``used_files`` are the files the analysis read or wrote; those git does not
    track come back in :attr:`GitState.untracked_used`, relative to the root.
    """
    root, _reason = _toplevel(notebook)
    if root is None:
        return None
    object_format = _text(_run(root, "rev-parse", "--show-object-format", check=False)) or "sha1"
    hex_re = _HEX64 if object_format == "sha256" else _HEX40

    head = _run(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
    commit = _text(head) if head.returncode == 0 else None
    if commit is not None and not hex_re.match(commit):
        raise GitError(f"git answered an unexpected commit id {commit!r} in {root}")
    tree = _text(_run(root, "rev-parse", "HEAD^{tree}")) if commit else None

    symref = _run(root, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    branch = _text(symref) if symref.returncode == 0 else None
    detached = branch is None

    shallow = _text(_run(root, "rev-parse", "--is-shallow-repository", check=False)) == "true"
    superproject_text = _text(_run(root, "rev-parse", "--show-superproject-working-tree", check=False))
    superproject = Path(superproject_text) if superproject_text else None

    remote_name, origin_url, has_remote = _remote(root, branch)

    base = commit or _text(_run(root, "hash-object", "-t", "tree", "--stdin", check=False))
    diff_opts = ("--no-ext-diff", "--no-textconv", "--no-color", "--no-renames", "--ignore-submodules=none")
    changed = _nul_list(_run(root, "diff", "--name-only", "-z", *diff_opts, base, "--").stdout)
    patch = _run(root, "diff", "--binary", "--full-index", *diff_opts, base, "--").stdout if changed else None

    notebook_abs = _absolute(Path(notebook))
    candidates: list[str] = []
    outside: list[str] = []
    for path in [notebook_abs, *(_absolute(Path(p)) for p in used_files)]:
        try:
            rel = path.relative_to(root).as_posix()
        except ValueError:
            if path != notebook_abs:
                outside.append(str(path))
            continue
        if rel not in candidates and not rel.startswith(".git/") and rel != ".git":
            candidates.append(rel)
    notebook_rel = notebook_abs.relative_to(root).as_posix() if _inside(notebook_abs, root) else None

    tracked = set(_nul_list(_run(root, "ls-files", "-z", "--full-name", "--", *(":(literal)" + c for c in candidates)).stdout)) if candidates else set()
    untracked = [c for c in candidates if c not in tracked]
    head_blobs = _head_blobs(root, commit, sorted(tracked)) if commit and tracked else {}

    return GitState(
        root=root,
        commit=commit,
        tree=tree,
        branch=branch,
        detached=detached,
        shallow=shallow,
        is_submodule=superproject is not None,
        superproject=superproject,
        origin_url=origin_url,
        remote_name=remote_name,
        has_remote=has_remote,
        dirty=bool(changed),
        changed_files=changed,
        untracked_used=untracked,
        notebook_path=notebook_rel,
        head_blobs=head_blobs,
        outside_repo=outside,
        object_format=object_format,
        patch=patch,
    )


def _absolute(path: Path) -> Path:
    """Absolute path with symlinked parent folders resolved (the file itself is kept as named)."""
    path = path.expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    return path.parent.resolve() / path.name


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _remote(root: Path, branch: str | None) -> tuple[str | None, str | None, bool]:
    """(remote name, credential-free URL, whether any remote exists): the branch's upstream, else origin."""
    remotes = _text(_run(root, "remote", check=False)).splitlines()
    if not remotes:
        return None, None, False
    name = None
    if branch:
        configured = _text(_run(root, "config", "--get", f"branch.{branch}.remote", check=False))
        if configured in remotes:
            name = configured
    if name is None:
        name = "origin" if "origin" in remotes else sorted(remotes)[0]
    proc = _run(root, "remote", "get-url", name, check=False)
    url = strip_credentials(_text(proc)) if proc.returncode == 0 else None
    return name, url or None, True


def _head_blobs(root: Path, commit: str, paths: list[str]) -> dict[str, str]:
    out = _run(root, "ls-tree", "-z", "--full-tree", commit, "--", *paths).stdout
    blobs: dict[str, str] = {}
    for entry in out.split(b"\0"):
        if not entry:
            continue
        meta, _, name = entry.partition(b"\t")
        parts = meta.split()
        if len(parts) == 3 and parts[1] == b"blob":
            blobs[name.decode("utf-8", "surrogateescape")] = parts[2].decode()
    return blobs
