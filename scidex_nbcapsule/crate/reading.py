"""Opening crates again without trusting them: folders, RO-Crate zips and .eln archives."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from ..errors import CapsuleError, CrateError, ManifestError, UnsafeArchive
from ..manifest import Manifest
from .plan import DEFAULT_MAX_UNZIP_BYTES, MANIFEST_FILE, MAX_COMPRESSION_RATIO, METADATA_FILE
from .checksum import crate_checksum


@dataclass
class OpenedCrate:
    """A crate ready to read: ``root`` is a folder even when the crate was a zip."""

    root: Path
    manifest: Manifest
    metadata: dict[str, Any]
    location: str
    _checksum: str | None = None

    @property
    def checksum(self) -> str:
        if self._checksum is None:
            self._checksum = crate_checksum(self.root)
        return self._checksum

    @property
    def notebook_path(self) -> Path:
        return self.root / self.manifest.notebook


def max_unzip_bytes() -> int:
    value = os.environ.get("NBCAPSULE_MAX_UNZIP_BYTES")
    try:
        return int(value) if value else DEFAULT_MAX_UNZIP_BYTES
    except ValueError as exc:
        raise CapsuleError(f"NBCAPSULE_MAX_UNZIP_BYTES={value!r} is not a number of bytes") from exc


def safe_extract(archive_path: Path, workdir: Path, *, limit: int | None = None) -> Path:
    """Unpack a crate zip into ``workdir`` without trusting its member names; return the crate folder."""
    limit = max_unzip_bytes() if limit is None else limit
    try:
        archive = zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CrateError(f"{archive_path} is not a readable zip file: {exc}") from exc
    with archive:
        members = archive.infolist()
        seen: set[str] = set()
        total = 0
        for info in members:
            name = info.filename
            pure = PurePosixPath(name)
            if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or "\\" in name:
                raise UnsafeArchive(f"{archive_path}: member {name!r} has an absolute path; refused")
            if ".." in pure.parts:
                raise UnsafeArchive(f"{archive_path}: member {name!r} climbs out of the folder; refused")
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise UnsafeArchive(f"{archive_path}: member {name!r} is a symbolic link; refused")
            key = pure.as_posix().rstrip("/")
            if key in seen:
                raise UnsafeArchive(f"{archive_path}: member {name!r} appears twice; refused")
            seen.add(key)
            total += info.file_size
            if total > limit:
                raise UnsafeArchive(f"{archive_path} would unpack to more than {limit} bytes; refused",
                                    hint="raise NBCAPSULE_MAX_UNZIP_BYTES if you trust this archive")
            if info.compress_size and info.file_size / info.compress_size > MAX_COMPRESSION_RATIO \
                    and info.file_size > (1 << 20):
                raise UnsafeArchive(f"{archive_path}: member {name!r} claims a compression ratio past "
                                    f"{MAX_COMPRESSION_RATIO}:1 (a zip bomb?); refused")
        base = workdir.resolve()
        for info in members:
            target = (base / info.filename).resolve()
            if base not in target.parents and target != base:
                raise UnsafeArchive(f"{archive_path}: member {info.filename!r} resolves outside the folder; refused")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            try:
                with archive.open(info) as src, open(target, "xb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > info.file_size:
                            raise UnsafeArchive(f"{archive_path}: member {info.filename!r} is larger than declared")
                        out.write(chunk)
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise CrateError(f"{archive_path}: member {info.filename!r} is corrupt: {exc}") from exc
    if (workdir / METADATA_FILE).is_file():
        return workdir
    tops = [p for p in workdir.iterdir()]
    if len(tops) == 1 and tops[0].is_dir() and (tops[0] / METADATA_FILE).is_file():
        return tops[0]
    raise CrateError(f"{archive_path} holds no {METADATA_FILE} at its top or in a single top folder",
                     hint="is this an RO-Crate zip made by nbcapsule export --zip?")


def _load_json(path: Path, what: str) -> Any:
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read())
    except FileNotFoundError as exc:
        raise CrateError(f"the crate has no {what} ({path.name})",
                         hint="is this a capsule made by nbcapsule? it needs ro-crate-metadata.json and capsule.json") from exc
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise CrateError(f"{path.name} in the crate is not valid JSON: {str(exc)[:200]}") from exc
    except OSError as exc:
        raise CrateError(f"{path} cannot be read: {exc.strerror or exc}") from exc


def check_metadata(metadata: Any) -> None:
    """The minimum shape every reader relies on; deeper conformance is the validator's job."""
    if not isinstance(metadata, dict) or not isinstance(metadata.get("@graph"), list):
        raise CrateError(f"{METADATA_FILE} has no @graph list; it is not RO-Crate metadata")
    if "@context" not in metadata:
        raise CrateError(f"{METADATA_FILE} has no @context; it is not JSON-LD")
    ids = [e.get("@id") for e in metadata["@graph"] if isinstance(e, dict)]
    if len(ids) != len(metadata["@graph"]) or not all(isinstance(i, str) for i in ids):
        raise CrateError(f"{METADATA_FILE} has entities without a string @id")
    if METADATA_FILE not in ids:
        raise CrateError(f"{METADATA_FILE} does not describe itself (no entity with @id {METADATA_FILE!r})")


@contextlib.contextmanager
def open_crate(location: str | os.PathLike, *, max_bytes: int | None = None) -> Iterator[OpenedCrate]:
    """Open a crate folder, RO-Crate ``.zip`` (metadata at its root, or in one top folder as older crates have
    it), ``.eln`` or BagIt bag of a crate; archives are unpacked into a temporary folder, removed after."""
    path = Path(location)
    if not path.exists():
        raise CrateError(f"{path} does not exist", hint="give the path of a capsule folder, .zip or .eln")
    with contextlib.ExitStack() as stack:
        if path.is_dir():
            root = path
            if not (root / METADATA_FILE).exists() and (root / "bagit.txt").is_file() \
                    and (root / "data" / METADATA_FILE).is_file():
                root = root / "data"  # a BagIt bag of a crate: the crate is its payload
        elif zipfile.is_zipfile(path):
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nbcapsule-open-")))
            root = safe_extract(path, workdir, limit=max_bytes)
        else:
            raise CrateError(f"{path} is neither a crate folder nor a zip file")
        metadata = _load_json(root / METADATA_FILE, "RO-Crate metadata")
        check_metadata(metadata)
        raw = _load_json(root / MANIFEST_FILE, "capsule manifest")
        try:
            manifest = Manifest.from_dict(raw)
        except RecursionError as exc:
            raise ManifestError("capsule.json is nested too deeply") from exc
        yield OpenedCrate(root=root, manifest=manifest, metadata=metadata, location=str(path))
