"""Software Heritage identifiers (SWHIDs) for a capsule, its files and the code it came from.

SWHIDs are intrinsic: ``swh:1:cnt`` is git's blob id, ``swh:1:dir`` git's tree
id, ``swh:1:rev`` git's commit id. So a capsule can name its code in the
universal archive before (or without) anyone archiving it, and anyone can
recompute them. All identifier arithmetic is delegated to ``swh.model``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping
from urllib.parse import urlsplit

from swh.model import from_disk
from swh.model.exceptions import ValidationError
from swh.model.model import Directory, DirectoryEntry
from swh.model.swhids import CoreSWHID, ObjectType, QualifiedSWHID

from .errors import SWHIDError
from .gitstate import is_public_url, strip_credentials

if TYPE_CHECKING:
    from .gitstate import GitState
    from .manifest import FileRecord

__all__ = [
    "QualifiedSWHID", "content_swhid", "revision_swhid", "release_swhid", "snapshot_swhid", "directory_swhid",
    "directory_swhid_of_path", "qualified", "parse", "validate_origin", "validate_snapshot", "capsule_swhids",
]

#: The object types a SWHID may name (the SWHID specification, version 1).
ACCEPTED_TYPES = ("cnt", "dir", "rev", "rel", "snp")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_SHAPE = re.compile(r"^swh:(?P<version>[^:;]*):(?P<type>[^:;]*):(?P<id>[^;]*)(?:;.*)?$", re.DOTALL)
_FILE_MODES = {0o100644: "file", 0o100755: "file", 0o120000: "file", 0o160000: "rev"}
_DIR_MODE = 0o040000


def _object_id(hex_id: str, what: str) -> bytes:
    if not isinstance(hex_id, str) or not _HEX40.match(hex_id):
        raise SWHIDError(f"{what} {hex_id!r} is not a 40-character lowercase hexadecimal SHA-1",
                         hint="SWHIDs exist only for SHA-1 git objects; repositories using SHA-256 have none")
    return bytes.fromhex(hex_id)


def _core(object_type: ObjectType, hex_id: str, what: str) -> str:
    return str(CoreSWHID(object_type=object_type, object_id=_object_id(hex_id, what)))


def content_swhid(sha1_git_hex: str) -> str:
    """``swh:1:cnt:`` for a file whose git blob id is ``sha1_git_hex``."""
    return _core(ObjectType.CONTENT, sha1_git_hex, "blob id")


def revision_swhid(commit: str) -> str:
    """``swh:1:rev:`` for a git commit."""
    return _core(ObjectType.REVISION, commit, "commit id")


def release_swhid(tag_object: str) -> str:
    """``swh:1:rel:`` for an annotated git tag object."""
    return _core(ObjectType.RELEASE, tag_object, "tag object id")


def snapshot_swhid(hex_id: str) -> str:
    """``swh:1:snp:`` for a snapshot id as Software Heritage reports it."""
    return _core(ObjectType.SNAPSHOT, hex_id, "snapshot id")


def tree_swhid(tree: str) -> str:
    """``swh:1:dir:`` for a git tree id."""
    return _core(ObjectType.DIRECTORY, tree, "tree id")


def _split_relpath(relpath: str) -> list[str]:
    parts = relpath.split("/")
    if (not relpath or relpath.startswith("/") or "\\" in relpath or "\0" in relpath
            or any(p in ("", ".", "..") for p in parts)):
        raise SWHIDError(f"{relpath!r} is not a clean relative POSIX path",
                         hint="paths must be relative, use '/', and contain no empty, '.' or '..' parts")
    return parts


def _build(node: dict[str, Any]) -> Directory:
    entries = []
    for name, value in node.items():
        encoded = os.fsencode(name)
        if isinstance(value, dict):
            sub = _build(value)
            entries.append(DirectoryEntry(name=encoded, type="dir", target=sub.id, perms=_DIR_MODE))
        else:
            mode, sha1 = value
            entries.append(DirectoryEntry(name=encoded, type=_FILE_MODES[mode], target=sha1, perms=mode))
    return Directory(entries=tuple(entries))


def directory_swhid(entries: Iterable[tuple[str, int, str]]) -> str:
    """``swh:1:dir:`` of the tree git would write for these files: ``(relpath, mode, sha1_git)``.

    Folders are implied by the paths, so an empty folder cannot be expressed
    (git cannot store one either); the result equals ``git write-tree`` over
    the same files with the same modes.
    """
    root: dict[str, Any] = {}
    for relpath, mode, sha1 in entries:
        if mode not in _FILE_MODES:
            raise SWHIDError(f"{relpath!r} has mode {mode:o}, which is not a git file mode",
                             hint="use 100644 (file), 100755 (executable), 120000 (symlink) or 160000 (submodule)")
        target = _object_id(sha1, f"object id of {relpath!r}")
        parts = _split_relpath(relpath)
        node = root
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SWHIDError(f"{'/'.join(parts[:i + 1])!r} is listed both as a file and as a folder")
            node = child
        name = parts[-1]
        if name in node:
            kind = "a folder" if isinstance(node[name], dict) else "a file"
            raise SWHIDError(f"{relpath!r} is listed twice (already {kind})")
        node[name] = (mode, target)
    return str(_build(root).swhid())


def _skip_git(path: bytes, name: bytes, entries: Any) -> bool:
    return name != b".git"


def directory_swhid_of_path(path: str | os.PathLike) -> str:
    """``swh:1:dir:`` of a folder on disk as Software Heritage would compute it, ignoring ``.git``.

    Unlike :func:`directory_swhid`, empty folders count (Software Heritage keeps
    them); a folder that contains only empty folders therefore differs from git's tree.
    """
    path = Path(path)
    if not path.is_dir():
        raise SWHIDError(f"{path} is not a folder, so it has no directory SWHID")
    node = from_disk.Directory.from_disk(path=os.fsencode(path), path_filter=_skip_git, max_content_length=None)
    return str(node.swhid())


def validate_origin(url: str) -> str:
    """A user-supplied origin URL (``--swh-origin``) in the form Software Heritage records.

    Forge ssh/scp addresses become https; anything with credentials, or not
    reachable over http(s), is refused rather than silently published.
    """
    if not isinstance(url, str) or not url.strip():
        raise SWHIDError("the Software Heritage origin URL is empty", hint="pass the repository's public https URL")
    url = url.strip()
    if "://" in url:
        parts = urlsplit(url)
        if parts.username or parts.password:
            raise SWHIDError("the origin URL contains a user name or password; it would be published in the capsule",
                             hint="pass the public URL without credentials, e.g. https://github.com/owner/repo")
    normalised = strip_credentials(url)
    if not is_public_url(normalised):
        raise SWHIDError(f"{url!r} is not a public http(s) repository URL that Software Heritage could archive",
                         hint="pass the repository's public https URL, e.g. https://github.com/owner/repo")
    return normalised


def parse(text: str) -> QualifiedSWHID:
    """Parse a SWHID (qualifiers allowed); anything else is a :class:`SWHIDError` saying what is wrong."""
    if not isinstance(text, str):
        raise SWHIDError(f"a SWHID must be text, not {type(text).__name__}")
    text = text.strip()
    shape = _SHAPE.match(text)
    if not shape:
        raise SWHIDError(f"{text[:200]!r} is not a SWHID",
                         hint="a SWHID looks like swh:1:dir:<40 hex digits>, optionally followed by ;qualifier=value")
    if shape["version"] != "1":
        raise SWHIDError(f"{text[:200]!r} uses SWHID scheme version {shape['version']!r}; only version 1 exists")
    if shape["type"] not in ACCEPTED_TYPES:
        raise SWHIDError(f"{text[:200]!r} names an object of type {shape['type']!r}",
                         hint=f"only these SWHID types are accepted: {', '.join(ACCEPTED_TYPES)}")
    if not _HEX40.match(shape["id"]):
        raise SWHIDError(f"{text[:200]!r} has an invalid object id {shape['id'][:80]!r}",
                         hint="the id must be 40 lowercase hexadecimal digits")
    try:
        return QualifiedSWHID.from_string(text)
    except (ValidationError, ValueError, TypeError) as exc:
        raise SWHIDError(f"{text[:200]!r} is not a valid SWHID: {_message(exc)}",
                         hint="check the qualifiers: origin=URL, visit=swh:1:snp:…, anchor=swh:1:{dir,rev,rel,snp}:…, "
                              "path=/…, lines=N[-M]") from exc


def _message(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        try:
            return "; ".join(exc.messages)
        except Exception:
            pass
    return str(exc)


def validate_snapshot(text: str) -> str:
    """A user-supplied ``--swh-snapshot``: a bare ``swh:1:snp:`` SWHID."""
    parsed = parse(text)
    if parsed.object_type is not ObjectType.SNAPSHOT or parsed.qualifiers():
        raise SWHIDError(f"{text!r} is not a snapshot SWHID",
                         hint="pass the visit's snapshot, swh:1:snp:<40 hex digits>, without qualifiers")
    return str(parsed)


def qualified(core_swhid: str, origin: str | None = None, visit: str | None = None, anchor: str | None = None,
              path: str | None = None, lines: str | None = None) -> str:
    """A qualified SWHID: ``core_swhid`` as found at ``path`` under ``anchor``, in ``origin`` at ``visit``."""
    core = parse(core_swhid)
    if core.qualifiers():
        raise SWHIDError(f"{core_swhid!r} already has qualifiers; pass the core SWHID")
    if path is not None and not path.startswith("/"):
        path = "/" + path
    if path is not None and anchor is None:
        raise SWHIDError("a SWHID path qualifier needs an anchor (the directory, revision or snapshot it is relative to)")
    try:
        result = QualifiedSWHID(
            object_type=core.object_type, object_id=core.object_id,
            origin=validate_origin(origin) if origin else None,
            visit=validate_snapshot(visit) if visit else None,
            anchor=str(parse(anchor)) if anchor else None,
            path=path.encode("utf-8", "surrogateescape") if path is not None else None,
            lines=lines,
        )
    except (ValidationError, ValueError, TypeError) as exc:
        raise SWHIDError(f"cannot qualify {core_swhid}: {_message(exc)}") from exc
    text = str(result)
    parse(text)
    return text


def capsule_swhids(files: Iterable["FileRecord"], git: "GitState | None", notebook_path_in_crate: str,
                   notebook_path_in_repo: str | None = None, origin: str | None = None,
                   snapshot: str | None = None, repo_paths: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every SWHID a capsule records, as a JSON-ready dict for ``capsule.json``'s ``swhids``.

    Keys: ``revision`` and ``directory`` (the commit and its tree; ``None``
    without a commit), ``payload`` (the crate's own files as a directory),
    ``files`` (crate path → ``swh:1:cnt``), ``notebook`` and ``code`` (crate
    path → qualified SWHID), ``origin`` and ``snapshot``.

    A file gets ``anchor``/``path`` qualifiers only when its bytes are exactly
    the blob at that path in the commit; an edited or untracked file gets its
    bare content SWHID, because claiming it lives in the commit would be false.
    ``repo_paths`` maps crate paths to repository paths when they differ and
    the content alone is ambiguous.
    """
    records = list(files)
    origin = validate_origin(origin) if origin else None
    snapshot = validate_snapshot(snapshot) if snapshot else None
    commit = git.commit if git is not None and git.object_format == "sha1" else None
    revision = revision_swhid(commit) if commit else None
    directory = tree_swhid(git.tree) if commit and git.tree else None

    by_path = {r.path: r for r in records}
    contents = {r.path: content_swhid(r.sha1_git) for r in records}
    payload = directory_swhid((r.path, r.mode, r.sha1_git) for r in records if r.linked_from is None)

    head_blobs = dict(git.head_blobs) if git is not None and commit else {}
    if notebook_path_in_repo is None and git is not None:
        notebook_path_in_repo = git.notebook_path
    mapping = dict(repo_paths or {})
    if notebook_path_in_repo:
        mapping.setdefault(notebook_path_in_crate, notebook_path_in_repo)

    def locate(record: "FileRecord") -> str | None:
        wanted = mapping.get(record.path)
        if wanted is not None:
            return wanted if head_blobs.get(wanted) == record.sha1_git else None
        if head_blobs.get(record.path) == record.sha1_git:
            return record.path
        matches = sorted(p for p, blob in head_blobs.items() if blob == record.sha1_git)
        same_name = [p for p in matches if p.rsplit("/", 1)[-1] == record.path.rsplit("/", 1)[-1]]
        if len(same_name) == 1:
            return same_name[0]
        return matches[0] if len(matches) == 1 else None

    def qualify(record: "FileRecord") -> str:
        repo_path = locate(record) if revision else None
        if repo_path is None:
            return contents[record.path]
        return qualified(contents[record.path], origin=origin, visit=snapshot, anchor=revision, path="/" + repo_path)

    notebook = by_path.get(notebook_path_in_crate)
    if notebook is None:
        raise SWHIDError(f"the notebook {notebook_path_in_crate!r} is not among the capsule's files",
                         hint="pass the notebook's path inside the crate, as recorded in the manifest")
    code = {r.path: qualify(r) for r in records if r.role == "code" and r.path != notebook_path_in_crate}
    return {
        "revision": revision,
        "directory": directory,
        "payload": payload,
        "files": contents,
        "notebook": qualify(notebook),
        "code": code,
        "origin": origin,
        "snapshot": snapshot,
    }
