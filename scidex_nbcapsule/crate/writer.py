"""Writing a crate atomically and durably.

Everything is built under a hidden temporary name in the destination folder and
renamed into place only once complete; every file and folder of the crate is on
disk before the rename, and the rename before we return.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..capture import ordered_map
from ..errors import CapsuleError, DestinationExists, ExportError
from ..hashing import (PARALLEL_THRESHOLD, Digests, copy_and_hash, hash_bytes, hash_file, read_small, store, sync_dirs,
                       sync_path, write_file)
from ..manifest import FileRecord, Manifest, readable_json
from ..redaction import withheld_file
from ..swhid import content_swhid
from ..config import load_config, resolve_publisher
from .checksum import checksum_of_lines
from .citation import citation_cff, crate_readme
from .layouts import LAYOUTS, eln_metadata, pack
from .metadata import build_metadata, resolver_urls
from .preview import render_preview, write_preview
from .provenance import code_cells
from .plan import (CRATE_OWN_FILES, README_FILE, ENVIRONMENT_PREFIXES, MANIFEST_FILE, METADATA_FILE, PARTIAL_PREFIX, CratePlan,
                   PayloadFile, encoding_format)


# -- writing ---------------------------------------------------------------------
def _check_destination(dest: Path, name: str, fmt: str) -> Path:
    final = dest / (name if fmt == "folder" else f"{name}.{fmt}")
    if final.exists() or final.is_symlink():
        raise DestinationExists(f"{final} already exists; capsules are never overwritten",
                                hint="choose another --dest, or delete the old capsule first")
    return final


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_partials(dest: Path) -> list[Path]:
    """Remove what killed exports left behind (their process is gone), so nothing half-written lingers."""
    removed = []
    if not dest.is_dir():
        return removed
    for entry in dest.iterdir():
        if not entry.name.startswith(PARTIAL_PREFIX):
            continue
        try:
            pid = int(entry.name[len(PARTIAL_PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _record(path: str, role: str, digests: Digests, **extra: Any) -> FileRecord:
    return FileRecord(path=path, role=role, size=digests.size, sha256=digests.sha256, sha1_git=digests.sha1_git,
                      encoding_format=encoding_format(path), mode=digests.mode, **extra)


def _write_generated(root: Path, path: str, data: bytes, role: str, durable: bool) -> FileRecord:
    write_file(root / path, data, durable=durable)
    return _record(path, role, hash_bytes(data))


def write_crate(plan: CratePlan, dest: Path, *, fmt: str = "folder") -> tuple[Path, Manifest, str]:
    """Build the crate described by ``plan`` under ``dest``; return its path, sealed manifest and checksum."""
    if fmt not in LAYOUTS:
        raise CapsuleError(f"unknown crate format {fmt!r}", hint="use folder, zip or eln")
    dest = Path(dest)
    made = [folder for folder in (dest, *dest.parents) if not folder.exists()]  # their names must last too
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create the destination folder {dest}: {exc.strerror or exc}") from exc
    manifest = plan.manifest
    final = _check_destination(dest, manifest.capsule_id, fmt)
    clean_stale_partials(dest)
    work = dest / f"{PARTIAL_PREFIX}{os.getpid()}-{manifest.capsule_id}"
    partial_zip = dest / f"{PARTIAL_PREFIX}{os.getpid()}-{manifest.capsule_id}.{fmt}"
    try:
        work.mkdir()
        checksum = _fill(plan, work, durable=fmt == "folder", fmt=fmt)  # a folder zipped and removed need not last
        if fmt == "folder":
            sync_dirs(work)  # its files are on disk already: the names in its folders, deepest first
            _rename_into_place(work, final)
        else:
            pack(work, partial_zip, fmt, manifest.capsule_id)
            _rename_into_place(partial_zip, final)
            shutil.rmtree(work)
        for folder in made:  # a destination made here: each new folder's name in its parent
            sync_path(folder.parent)
    except OSError as exc:
        raise ExportError(f"writing the capsule to {dest} failed: {exc.strerror or exc}",
                          hint="check free space and permissions; nothing partial was left behind") from exc
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
        partial_zip.unlink(missing_ok=True)
    return final, manifest, checksum


def _rename_into_place(src: Path, final: Path) -> None:
    if final.exists():
        raise DestinationExists(f"{final} appeared while the capsule was being written; it was left untouched")
    try:
        os.rename(src, final)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise DestinationExists(f"{final} appeared while the capsule was being written") from exc
        raise
    sync_path(final.parent)  # the rename survives a crash once the folder holding the name is on disk


def _fill(plan: CratePlan, root: Path, *, durable: bool, fmt: str = "folder") -> str:
    """Write every file of the crate into ``root``; with ``durable``, each is on disk when written."""
    manifest = plan.manifest
    records: list[FileRecord] = []
    total = sum(_payload_size(f) for f in plan.files) + len(plan.notebook_bytes)
    done = 0
    records.append(_write_generated(root, manifest.notebook, plan.notebook_bytes, "code", durable))
    done += len(plan.notebook_bytes)
    copies = _copy_payload(plan, root, durable)
    try:
        for item, copied in zip(plan.files, copies):
            if copied.digests is None:
                manifest.withheld.append(withheld_file(item.path, list(copied.reasons)))
            else:
                linked = {"linked_from": item.source.as_uri()} if copied.linked else {}
                records.append(_record(item.path, item.role, copied.digests, read_sha256=item.read_sha256,
                                       link_target=item.link_target, original_path=item.original_path, **linked))
            done += copied.digests.size if copied.digests else _payload_size(item)
            if plan.progress:
                plan.progress(done, total)
    finally:
        copies.close()  # on failure: no copy still running while the partial folder is removed
    env_bytes = (json.dumps(plan.environment, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    records.append(_write_generated(root, "environment.json", env_bytes, "environment", durable))
    records.append(_write_generated(root, "requirements.txt", plan.requirements.encode(), "environment", durable))
    for path, data in plan.generated.items():
        role = "environment" if path.startswith(ENVIRONMENT_PREFIXES) else "provenance"
        records.append(_write_generated(root, path, data, role, durable))
    binder_reqs = plan.requirements + (f"{plan.binder_requirement}\n" if plan.binder_requirement else "")
    records.append(_write_generated(root, "binder/requirements.txt", binder_reqs.encode(), "environment", durable))
    runtime = f"python-{'.'.join(plan.environment['python']['version'].split('.')[:2])}\n"
    records.append(_write_generated(root, "binder/runtime.txt", runtime.encode(), "environment", durable))
    if README_FILE not in {r.path for r in records}:
        records.append(_write_generated(root, README_FILE, crate_readme(manifest).encode("utf-8"), "provenance",
                                        durable))
    manifest.files = sorted(records, key=lambda r: r.path)
    if plan.identify:
        plan.identify(manifest)
    citation = _write_generated(root, "CITATION.cff", citation_cff(manifest).encode(), "provenance", durable)
    manifest.files.append(citation)
    for record in manifest.files:
        if record.swhid is None:
            record.swhid = content_swhid(record.sha1_git)
    manifest.files.sort(key=lambda r: r.path)
    manifest_bytes = manifest.seal_to_json().encode("utf-8")
    write_file(root / MANIFEST_FILE, manifest_bytes, durable=durable)
    manifest_digests = hash_bytes(manifest_bytes)
    publisher = plan.publisher or resolve_publisher(load_config())
    crate = build_metadata(manifest, plan.environment, manifest_digests, cells=code_cells(plan.notebook_bytes),
                           publisher=publisher)
    doc = crate.metadata.generate()
    if fmt == "eln":
        doc = eln_metadata(doc, publisher=publisher, title=manifest.title,
                           authors=[p.id for p in manifest.authors], created=manifest.created_at,
                           capsule_id=manifest.capsule_id, description=manifest.description)
    write_metadata_document(doc, root, durable=durable)
    del crate
    html = render_preview(doc, manifest, plan.environment, manifest_digests=manifest_digests,
                          resolvers=resolver_urls(manifest))
    write_preview(root, html, durable=durable)
    return _checksum_of_new_crate(manifest, root)


@dataclass(frozen=True)
class _Copied:
    """What became of one payload file: copied, linked (hashed in place) or withheld (``digests`` None)."""

    digests: Digests | None
    linked: bool = False
    reasons: tuple[str, ...] = ()


def _payload_size(item: PayloadFile) -> int:
    return item.size if item.size is not None else _size(item.source)


def _copy_one(plan: CratePlan, root: Path, item: PayloadFile, durable: bool) -> _Copied:
    size = _payload_size(item)
    if plan.link_large is not None and size > plan.link_large:
        return _Copied(hash_file(item.source), linked=True)
    if size < PARALLEL_THRESHOLD:
        content, st = read_small(item.source)
        reasons = plan.screen(item, content) if plan.screen else []
        if reasons:
            return _Copied(None, reasons=tuple(reasons))
        return _Copied(store(content, root / item.path, st, durable=durable))
    return _Copied(copy_and_hash(item.source, root / item.path, durable=durable))


def _copy_payload(plan: CratePlan, root: Path, durable: bool) -> Iterator[_Copied]:
    """What became of each payload file, in order; copied by the executor's threads a bounded window ahead,
    so file creation, cold reads and waits for the disk (``durable``) overlap instead of queueing one by one."""
    return ordered_map(plan.executor, lambda item: _copy_one(plan, root, item, durable), plan.files)


def write_metadata_document(doc: dict[str, Any], root: Path, *, durable: bool = False) -> None:
    """``ro-crate-metadata.json`` from its JSON-LD: one entity per line (the C encoder; indenting every entity
    in pure Python takes seconds over tens of thousands of files)."""
    write_file(root / METADATA_FILE, readable_json(doc, "@graph").encode("utf-8"), durable=durable)


def write_metadata(crate, root: Path, *, durable: bool = False) -> None:
    """``ro-crate-metadata.json`` of a ``rocrate`` model whose files are already in place (``crate.write`` would
    visit every file entity only to warn that it has no source, and write ro-crate-py's own preview page; the
    preview is ours, see :mod:`.preview`)."""
    write_metadata_document(crate.metadata.generate(), root, durable=durable)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _checksum_of_new_crate(manifest: Manifest, root: Path) -> str:
    """:func:`crate_checksum` of a crate just written, without reading the payload a second time."""
    lines = [f"{r.sha256}  {r.path}\n" for r in manifest.files if r.in_crate]
    lines += [f"{hash_file(root / name).sha256}  {name}\n" for name in CRATE_OWN_FILES if (root / name).exists()]
    return checksum_of_lines(lines)
