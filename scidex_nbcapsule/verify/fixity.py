"""Fixity: are the crate's bytes the ones it was sealed with?

A crate records every file twice, in ``capsule.json`` (digest-sealed) and in
``ro-crate-metadata.json`` (what other RO-Crate tools read); both must agree
with the bytes on disk, and nothing may be missing or smuggled in. Nothing is
re-run on a crate that fails here.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..crate import CRATE_OWN_FILES, MANIFEST_FILE, METADATA_FILE, OpenedCrate
from ..errors import CapsuleError
from ..hashing import sha256_file


@dataclass
class FixityProblem:
    """One bad file: ``kind`` is missing | extra | size | sha256 | metadata | manifest | link | unreadable."""

    path: str
    kind: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _metadata_files(metadata: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["@id"]: e for e in metadata.get("@graph", []) if isinstance(e, dict) and isinstance(e.get("@id"), str)}


def _on_disk(root: Path) -> tuple[dict[str, Path], list[str]]:
    """Regular files under ``root`` by POSIX path, and the paths that are links (never followed)."""
    files: dict[str, Path] = {}
    links: list[str] = []
    for dirpath, dirs, names in os.walk(root, followlinks=False):
        for name in list(dirs):
            full = Path(dirpath, name)
            if full.is_symlink():
                links.append(full.relative_to(root).as_posix())
                dirs.remove(name)
        for name in names:
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                links.append(rel)
            else:
                files[rel] = full
    return files, sorted(links)


def _size_of(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: contentSize Infinity (json reads it)
        return None


def check_fixity(opened: OpenedCrate) -> list[FixityProblem]:
    """Every disagreement between the bytes, ``capsule.json`` and ``ro-crate-metadata.json``, one per file."""
    root = opened.root
    manifest = opened.manifest
    entities = _metadata_files(opened.metadata)
    on_disk, links = _on_disk(root)
    problems = [FixityProblem(p, "link", f"{p} is a symbolic link; crates hold regular files only") for p in links]
    digests: dict[str, tuple[int, str]] = {}

    def actual(path: str) -> tuple[int, str] | None:
        if path not in digests:
            full = on_disk[path]
            try:
                digests[path] = (full.stat().st_size, sha256_file(full))
            except (OSError, CapsuleError) as exc:
                problems.append(FixityProblem(path, "unreadable", f"{path} cannot be read: {exc}"))
                return None
        return digests[path]

    listed = set()
    for record in manifest.files:
        listed.add(record.path)
        if not record.in_crate:
            continue
        if record.path not in on_disk:
            problems.append(FixityProblem(record.path, "missing", f"{record.path} is listed in capsule.json but "
                                          "is not in the crate"))
            continue
        found = actual(record.path)
        if found is None:
            continue
        size, sha = found
        if size != record.size:
            problems.append(FixityProblem(record.path, "size", f"{record.path} has {size} bytes; capsule.json "
                                          f"records {record.size}"))
        elif sha != record.sha256:
            problems.append(FixityProblem(record.path, "sha256", f"{record.path} has sha256 {sha}; capsule.json "
                                          f"records {record.sha256}"))
        problems += _against_metadata(record.path, entities.get(record.path), size, sha)
    if MANIFEST_FILE in on_disk:
        found = actual(MANIFEST_FILE)
        if found is not None:
            problems += _against_metadata(MANIFEST_FILE, entities.get(MANIFEST_FILE), *found)
    for path in sorted(on_disk):
        if path not in listed and path not in CRATE_OWN_FILES:
            problems.append(FixityProblem(path, "extra", f"{path} is in the crate but not listed in capsule.json"))
    return problems


def _against_metadata(path: str, entity: dict[str, Any] | None, size: int, sha: str) -> list[FixityProblem]:
    if entity is None:
        return [FixityProblem(path, "metadata", f"{path} is not described in {METADATA_FILE}")]
    problems = []
    recorded_size = _size_of(entity.get("contentSize"))
    if recorded_size is None or recorded_size != size:
        problems.append(FixityProblem(path, "metadata", f"{path} has {size} bytes; {METADATA_FILE} records "
                                      f"contentSize {entity.get('contentSize')!r}"))
    elif entity.get("sha256") != sha:
        problems.append(FixityProblem(path, "metadata", f"{path} has sha256 {sha}; {METADATA_FILE} records "
                                      f"{entity.get('sha256')!r}"))
    return problems
