"""Real sealed manifests and small real crate folders for the registry tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scidex_nbcapsule.hashing import hash_bytes
from scidex_nbcapsule.manifest import FileRecord, Manifest, Person, new_capsule_id, utc_now
from scidex_nbcapsule.registry import open_registry

NOTEBOOK = b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n'


def file_record(path: str, data: bytes, role: str = "input") -> FileRecord:
    d = hash_bytes(data)
    return FileRecord(path=path, role=role, size=d.size, sha256=d.sha256, sha1_git=d.sha1_git)


def make_manifest(title: str = "Test analysis", *, notebook: str = "analysis.ipynb",
                  authors: list[Person] | None = None, payload: dict[str, bytes] | None = None,
                  git: dict[str, Any] | None = None, git_commit: str | None = None,
                  description: str = "") -> Manifest:
    payload = {"data/input.csv": b"x,y\n1,2\n"} if payload is None else payload
    files = [file_record(notebook, NOTEBOOK, "code")]
    files += [file_record(p, data, "output" if p.startswith("results/") else "input") for p, data in payload.items()]
    return Manifest(capsule_id=new_capsule_id(), title=title, license="CC-BY-4.0", created_at=utc_now(),
                    notebook=notebook, notebook_sha256=hash_bytes(NOTEBOOK).sha256, description=description,
                    authors=authors if authors is not None else [Person("Ada Lovelace", orcid="0000-0002-1825-0097")],
                    files=files, git=git, git_commit=git_commit).seal()


def write_crate(dest: Path, manifest: Manifest, payload: dict[str, bytes] | None = None) -> Path:
    """A crate folder ``open_crate`` accepts: payload files, capsule.json and minimal RO-Crate metadata."""
    payload = {"data/input.csv": b"x,y\n1,2\n"} if payload is None else payload
    dest.mkdir(parents=True)
    for path, data in {manifest.notebook: NOTEBOOK, **payload}.items():
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        (dest / path).write_bytes(data)
    (dest / "capsule.json").write_text(manifest.to_json())
    metadata = {"@context": "https://w3id.org/ro/crate/1.1/context",
                "@graph": [{"@id": "ro-crate-metadata.json", "@type": "CreativeWork", "about": {"@id": "./"}},
                           {"@id": "./", "@type": "Dataset", "name": manifest.title}]}
    (dest / "ro-crate-metadata.json").write_text(json.dumps(metadata))
    return dest


def crate_with_manifest(dest: Path, title: str = "Crate analysis", **kwargs: Any) -> tuple[Path, Manifest]:
    payload = kwargs.pop("payload", {"data/input.csv": b"x,y\n1,2\n", "results/out.txt": b"42\n"})
    manifest = make_manifest(title, payload=payload, **kwargs)
    return write_crate(dest, manifest, payload), manifest


def register_many(url: str, manifests: list[str]) -> list[tuple[str, str, bool, int, str | None]]:
    """Worker for the concurrency test (runs in a spawned process)."""
    out = []
    with open_registry(url) as registry:
        for text in manifests:
            manifest = Manifest.from_json(text)
            result = registry.register_capsule(manifest)
            out.append((manifest.manifest_digest, result.capsule_id, result.created, result.version,
                        result.parent_id))
    return out
