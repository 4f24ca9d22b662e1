"""Writing capsules as RO-Crates (folder, zip or .eln) and opening them again safely.

The ``rocrate`` library owns the JSON-LD model; this module decides what goes
in (payload, environment, Binder configuration, citation) and makes writing
atomic: everything is built under a hidden temporary name in the destination
folder and renamed into place only once complete, and durable: every file and
folder of the crate is on disk before the rename, and the rename before we return.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import mimetypes
import os
import shutil
import stat
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator

from .errors import (CapsuleError, CrateError, DestinationExists, ExportError, ManifestError, UnsafeArchive)
from .capture import ordered_map
from .hashing import (PARALLEL_THRESHOLD, Digests, copy_and_hash, hash_bytes, hash_file, read_small, store, sync_dirs,
                      sync_path, write_file)
from .manifest import FileRecord, Manifest, Person, readable_json
from .redaction import withheld_file
from .swhid import content_swhid

RO_CRATE_VERSION = "1.1"
PROCESS_RUN_CRATE = "https://w3id.org/ro/wfrun/process/0.5"
WORKFLOW_RUN_CONTEXT = "https://w3id.org/ro/terms/workflow-run/context"
NOTEBOOK_FORMAT = "application/x-ipynb+json"
METADATA_FILE = "ro-crate-metadata.json"
PREVIEW_FILE = "ro-crate-preview.html"
MANIFEST_FILE = "capsule.json"
#: Files a crate holds that ``capsule.json`` cannot list (it cannot digest itself or what is built from it).
CRATE_OWN_FILES = (METADATA_FILE, PREVIEW_FILE, MANIFEST_FILE)
#: Largest total a zip may unpack to unless the caller says otherwise (``NBCAPSULE_MAX_UNZIP_BYTES``).
DEFAULT_MAX_UNZIP_BYTES = 32 << 30
#: Largest ratio of unpacked to packed size a member may claim before we call it a bomb.
MAX_COMPRESSION_RATIO = 1000
PARTIAL_PREFIX = ".nbcapsule-partial-"

mimetypes.add_type(NOTEBOOK_FORMAT, ".ipynb")
mimetypes.add_type("text/markdown", ".md")
mimetypes.add_type("text/csv", ".csv")
mimetypes.add_type("application/x-yaml", ".cff")
mimetypes.add_type("text/x-diff", ".patch")
mimetypes.add_type("text/x-python", ".py")


def encoding_format(path: str) -> str:
    kind, _ = mimetypes.guess_type(path)
    return kind or ("text/plain" if path.endswith((".txt", ".log")) else "application/octet-stream")


@dataclass
class PayloadFile:
    """A file to put in the crate: where it is now and where it goes."""

    source: Path
    path: str
    role: str
    read_sha256: str | None = None
    #: Its size when it was chosen (progress, copy strategy); None: looked up when needed.
    size: int | None = None
    #: The project file a symlink at ``path`` leads to (the crate holds a copy at ``path``).
    link_target: str | None = None
    #: Where a file read outside the project was, when it is packed under ``external/``.
    original_path: str | None = None


#: Generated files that describe the environment (the lock, Binder's configuration, carried lock files).
ENVIRONMENT_PREFIXES = ("binder/", "environment/", "pylock.toml")


@dataclass
class CratePlan:
    """Everything the writer needs; the capture and git layers fill it in."""

    manifest: Manifest
    files: list[PayloadFile]
    notebook_bytes: bytes
    environment: dict[str, Any]
    requirements: str
    generated: dict[str, bytes] = field(default_factory=dict)
    link_large: int | None = None
    #: Extra line for binder/requirements.txt so the capsule can re-verify itself on Binder.
    binder_requirement: str | None = None
    #: Called after each file with (bytes done, bytes total) so shells can show progress.
    progress: Callable[[int, int], None] | None = None
    #: Callable(manifest) run once every payload digest is known; fills in SWHIDs.
    identify: Callable[[Manifest], None] | None = None
    #: Threads that copy small files while others wait on the disk (``map`` keeps the order); None: one thread.
    executor: Any = None
    #: Callable(file, content) giving the reasons a small file must be withheld (secrets), applied to the very
    #: bytes about to be copied, in the same read; None: nothing is screened here.
    screen: Callable[[PayloadFile, bytes], list[str]] | None = None


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
    if fmt not in ("folder", "zip", "eln"):
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
        checksum = _fill(plan, work, durable=fmt == "folder")  # a folder zipped and removed need not last
        if fmt == "folder":
            sync_dirs(work)  # its files are on disk already: the names in its folders, deepest first
            _rename_into_place(work, final)
        else:
            _zip_folder(work, partial_zip, manifest.capsule_id)
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


def _fill(plan: CratePlan, root: Path, *, durable: bool) -> str:
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
    crate = build_metadata(manifest, plan.environment, hash_bytes(manifest_bytes))
    write_metadata(crate, root, durable=durable)
    del crate
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


def write_metadata(crate, root: Path, *, durable: bool = False) -> None:
    """What ``crate.write(root)`` writes for a crate whose files are already in place: ``ro-crate-metadata.json``
    (the same JSON-LD, one entity per line) and the preview. (``write`` would also visit every file entity only
    to warn that it has no source to copy from, and indent every entity in pure Python.)"""
    write_file(root / METADATA_FILE, readable_json(crate.metadata.generate(), "@graph").encode("utf-8"),
               durable=durable)
    if crate.preview is not None:
        crate.preview.write(root)
        if durable:
            sync_path(root / crate.preview.id)  # written by rocrate


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _zip_folder(folder: Path, target: Path, top: str) -> None:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for dirpath, dirs, files in os.walk(folder):
            dirs.sort()
            for name in sorted(files):
                full = Path(dirpath, name)
                rel = full.relative_to(folder).as_posix()
                kind = zipfile.ZIP_STORED if name.endswith((".png", ".jpg", ".gz", ".zip")) else zipfile.ZIP_DEFLATED
                archive.write(full, f"{top}/{rel}", compress_type=kind)
    with open(target, "rb") as handle:
        os.fsync(handle.fileno())


def crate_checksum(root: Path) -> str:
    """SHA-256 over ``<sha256>  <path>`` lines of every file: the same for a folder and its zip."""
    lines = []
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            full = Path(dirpath, name)
            lines.append(f"{hash_file(full).sha256}  {full.relative_to(root).as_posix()}\n")
    return _checksum(lines)


def _checksum(lines: list[str]) -> str:
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()


def _checksum_of_new_crate(manifest: Manifest, root: Path) -> str:
    """:func:`crate_checksum` of a crate just written, without reading the payload a second time."""
    lines = [f"{r.sha256}  {r.path}\n" for r in manifest.files if r.in_crate]
    lines += [f"{hash_file(root / name).sha256}  {name}\n" for name in CRATE_OWN_FILES if (root / name).exists()]
    return _checksum(lines)


# -- metadata ------------------------------------------------------------------------
def _one_or_many(refs: list[dict[str, str]]) -> dict[str, str] | list[dict[str, str]]:
    """RO-Crate 1.1 prefers a single value over a one-element list."""
    return refs[0] if len(refs) == 1 else refs


def _add_person(crate, person: Person):
    from rocrate.model.contextentity import ContextEntity

    props: dict[str, Any] = {"@type": "Person", "name": person.name}
    if person.email:
        props["email"] = person.email
    if person.affiliation:
        org_id = "#org-" + "".join(c if c.isalnum() else "-" for c in person.affiliation.lower()).strip("-")
        crate.add(ContextEntity(crate, org_id, {"@type": "Organization", "name": person.affiliation}))
        props["affiliation"] = {"@id": org_id}
    return crate.add(ContextEntity(crate, person.id, props))


def spdx_uri(license_id: str) -> str:
    return license_id if license_id.startswith("http") else f"https://spdx.org/licenses/{license_id}"


def _manifest_file_props(digests: Digests | None) -> dict[str, Any]:
    props: dict[str, Any] = {"name": "Capsule manifest", "encodingFormat": "application/json",
                             "description": "scidex-nbcapsule manifest: digests, execution record, environment digest."}
    if digests is not None:
        props.update({"contentSize": str(digests.size), "sha256": digests.sha256})
    return props


def build_metadata(manifest: Manifest, environment: dict[str, Any], manifest_digests: Digests | None = None):
    """The ``rocrate`` model of a capsule: RO-Crate 1.1 with the Process Run Crate 0.5 profile."""
    from rocrate.model.contextentity import ContextEntity
    from rocrate.rocrate import ROCrate

    crate = ROCrate(version=RO_CRATE_VERSION, gen_preview=True)
    crate.metadata.extra_contexts.append(WORKFLOW_RUN_CONTEXT)
    root = crate.root_dataset
    root["name"] = manifest.title
    root["description"] = manifest.description or f"Notebook analysis {manifest.notebook}, captured as a capsule."
    root["datePublished"] = manifest.created_at
    root["identifier"] = manifest.identifier or f"urn:uuid:{manifest.capsule_id[len('capsule-'):]}"
    if manifest.identifier and manifest.identifier.startswith(("http://", "https://")):
        root["cite-as"] = manifest.identifier
    license_uri = spdx_uri(manifest.license)
    crate.add(ContextEntity(crate, license_uri, {"@type": "CreativeWork", "name": manifest.license,
                                                  "identifier": license_uri}))
    root["license"] = {"@id": license_uri}
    profile = crate.add(ContextEntity(crate, PROCESS_RUN_CRATE, {
        "@type": "CreativeWork", "name": "Process Run Crate", "version": "0.5"}))
    root["conformsTo"] = {"@id": profile.id}
    people = [_add_person(crate, p) for p in manifest.authors]
    if people:
        root["author"] = _one_or_many([{"@id": p.id} for p in people])
        root["creator"] = _one_or_many([{"@id": p.id} for p in people])

    python = environment["python"]
    language = crate.add(ContextEntity(crate, "https://w3id.org/workflowhub/workflow-ro-crate#python", {
        "@type": "ComputerLanguage", "name": "Python", "alternateName": "Python",
        "url": {"@id": "https://www.python.org/"}, "version": python["version"]}))
    interpreter_id = f"https://www.python.org/downloads/release/python-{python['version'].replace('.', '')}/"
    interpreter = crate.add(ContextEntity(crate, interpreter_id, {
        "@type": "SoftwareApplication", "name": f"{python['implementation']} {python['version']}",
        "version": python["version"], "url": "https://www.python.org/"}))
    packages = []
    for name, version in sorted((environment.get("imported") or {}).items()):
        pkg_id = f"https://pypi.org/project/{name}/{version}/"
        packages.append(crate.add(ContextEntity(crate, pkg_id, {
            "@type": "SoftwareApplication", "name": name, "version": version,
            "url": f"https://pypi.org/project/{name}/"})))

    entities = {}
    git_commit = manifest.git_commit
    for record in manifest.files:
        props: dict[str, Any] = {
            "name": PurePosixPath(record.path).name,
            "contentSize": str(record.size),
            "sha256": record.sha256,
            "encodingFormat": record.encoding_format,
        }
        if record.swhid:
            props["identifier"] = {"@id": f"https://archive.softwareheritage.org/{record.swhid}"}
        notes = []
        if record.read_sha256:
            notes.append(f"Rewritten by the analysis; the version it read had sha256 {record.read_sha256}.")
        if record.link_target:
            notes.append(f"The analysis used this path, a symbolic link to {record.link_target}.")
        if record.original_path:
            notes.append(f"Read outside the project, from {record.original_path}.")
        if notes:
            props["description"] = " ".join(notes)
        if record.path == manifest.notebook:
            props.update({"@type": ["File", "SoftwareSourceCode"], "programmingLanguage": {"@id": language.id},
                          "version": git_commit[:12] if git_commit else record.sha256[:12],
                          "runtimePlatform": f"Python {python['version']}",
                          "softwareRequirements": _one_or_many([{"@id": p.id} for p in packages]) if packages
                          else None})
            props["url"] = (f"https://archive.softwareheritage.org/{record.swhid}" if record.swhid
                            else content_address(record))
            if _public_origin(manifest):
                props["codeRepository"] = _public_origin(manifest)
            props = {k: v for k, v in props.items() if v is not None}
        elif record.role == "code" and record.path.endswith(".py"):
            props.update({"@type": ["File", "SoftwareSourceCode"], "programmingLanguage": {"@id": language.id}})
        file_id = record.path if record.in_crate else record.linked_from
        if not record.in_crate:
            props["description"] = ("Not copied into the crate (larger than --link-large); fetch it from this "
                                    "location and check its sha256.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            entities[record.path] = crate.add_file(None, dest_path=file_id, properties=props)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crate.add_file(None, dest_path=MANIFEST_FILE, properties=_manifest_file_props(manifest_digests))
    if manifest.git and manifest.git.get("commit"):
        repo_props: dict[str, Any] = {"@type": "SoftwareSourceCode", "name": "Source repository at the analysed commit",
                                      "version": manifest.git["commit"]}
        if _public_origin(manifest):
            repo_props["codeRepository"] = _public_origin(manifest)
        refs = [manifest.swhids.get(k) for k in ("revision", "directory") if manifest.swhids.get(k)]
        if refs:
            repo_props["identifier"] = _one_or_many([{"@id": f"https://archive.softwareheritage.org/{r}"}
                                                     for r in refs])
        crate.add(ContextEntity(crate, "#source-repository", repo_props))

    inputs = [entities[r.path] for r in manifest.files if r.role == "input"]
    outputs = [entities[r.path] for r in manifest.files if r.role == "output"]
    run = manifest.execution
    action: dict[str, Any] = {
        "@type": "CreateAction",
        "name": f"Run of {manifest.notebook}",
        "instrument": {"@id": manifest.notebook},
        "object": _one_or_many([{"@id": e.id} for e in inputs]) if inputs else None,
        "result": _one_or_many([{"@id": e.id} for e in outputs]) if outputs else None,
        "startTime": run.started or manifest.created_at,
        "endTime": run.ended or manifest.created_at,
        "actionStatus": "http://schema.org/CompletedActionStatus" if run.status == "completed"
        else "http://schema.org/FailedActionStatus",
        "description": f"Executed in kernel {environment.get('kernel', {}).get('name', 'python3')} "
                       f"with {interpreter['name']}.",
    }
    if people:
        action["agent"] = {"@id": people[0].id}
    failed = [c.error for c in run.cells if c.status == "error" and c.error]
    if run.status != "completed" and failed:
        action["error"] = "; ".join(failed)[:5000]
    if run.problems:
        action["disambiguatingDescription"] = "Execution-order problems: " + "; ".join(p.message for p in run.problems)
    action = {k: v for k, v in action.items() if v is not None}
    create = crate.add(ContextEntity(crate, f"#run-{manifest.capsule_id}", action))
    root["mentions"] = {"@id": create.id}
    return crate


def _public_origin(manifest: Manifest) -> str | None:
    """The origin URL, only when it is a public forge URL that others can resolve."""
    git = manifest.git or {}
    return git.get("origin_url") if git.get("origin_public") else None


def content_address(record: FileRecord) -> str:
    """A resolvable name for a notebook not yet archived: its content address."""
    return f"urn:sha256:{record.sha256}"


def citation_cff(manifest: Manifest) -> str:
    """A CITATION.cff (1.2.0) for the capsule, so GitHub and Zenodo know how to cite it."""
    def q(text: str) -> str:
        return json.dumps(text, ensure_ascii=False)

    lines = ["cff-version: 1.2.0", "message: If you use this analysis, please cite it as below.",
             f"title: {q(manifest.title)}", "type: software", f"date-released: {q(manifest.created_at[:10])}",
             f"license: {q(manifest.license)}" if not manifest.license.startswith("http") else "",
             "authors:"]
    lines = [line for line in lines if line]
    for person in manifest.authors or [Person(name="Unknown author")]:
        parts = person.name.rsplit(" ", 1)
        if len(parts) == 2:
            lines += [f"  - given-names: {q(parts[0])}", f"    family-names: {q(parts[1])}"]
        else:
            lines += [f"  - name: {q(person.name)}"]
        if person.orcid:
            lines.append(f"    orcid: {q(Person(person.name, person.orcid).id)}")
    identifiers = [("other", f"urn:uuid:{manifest.capsule_id[len('capsule-'):]}", "Capsule id")]
    if manifest.identifier:
        kind = "doi" if manifest.identifier.startswith("10.") else "url"
        identifiers.append((kind, manifest.identifier, "Citable identifier"))
    for key in ("revision", "notebook"):
        if manifest.swhids.get(key):
            identifiers.append(("swh", manifest.swhids[key].split(";")[0], f"Software Heritage {key} identifier"))
    lines.append("identifiers:")
    for kind, value, description in identifiers:
        lines += [f"  - type: {kind}", f"    value: {q(value)}", f"    description: {q(description)}"]
    if _public_origin(manifest):
        lines.append(f"repository-code: {q(_public_origin(manifest))}")
    if manifest.git_commit:
        lines.append(f"commit: {q(manifest.git_commit)}")
    return "\n".join(lines) + "\n"


# -- reading ------------------------------------------------------------------------------
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
    """Open a crate folder, ``.zip`` or ``.eln``; zips are unpacked into a temporary folder, removed after."""
    path = Path(location)
    if not path.exists():
        raise CrateError(f"{path} does not exist", hint="give the path of a capsule folder, .zip or .eln")
    with contextlib.ExitStack() as stack:
        if path.is_dir():
            root = path
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
