"""The registry logic both backends share; a backend only supplies connections, transactions and dialect.

All SQL lives here, written once with ``?`` placeholders and ``{J}`` where a
JSON value is bound; :meth:`Registry._sql` turns it into the backend's form.
Timestamps are ISO-8601 UTC text in both backends so values copy between
them unchanged. Manifests are immutable once registered: nothing here updates
the manifest columns, and migration 2 adds triggers that refuse it.

Lineage: re-exports of the same analysis form a lineage with versions 1, 2, ….
Its key is the sha256 of ``["git", <origin URL>, <notebook path>]`` when the
manifest records a git origin (so a renamed title stays in the lineage), else
``["local", <notebook path>, <title>]`` (so unrelated projects that both have
``analysis.ipynb`` do not merge).
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import uuid
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

from ..errors import (CapsuleError, CapsuleNotFound, CrateError, DestinationExists, FixityError, InvalidId,
                      ManifestError, RegistryError)
from ..manifest import SHA256_RE, Manifest, canonical_json, digest, format_time, is_capsule_id, validate
from . import migrations
from .migrations import Dialect, MigrationContext

#: Crates up to this size (zipped) are kept in the database, so they can be written out again without the original.
DEFAULT_MAX_BLOB_BYTES = 64 << 20
BLOB_ENV = "SCIDEX_NBCAPSULE_BLOB_MAX_BYTES"
JSON_COLUMNS = frozenset({"authors", "manifest", "swhids", "report", "details"})
TABLES = ("capsules", "capsule_files", "capsule_authors", "crate_blobs", "verifications", "archival_requests")

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_COMMIT_PREFIX = re.compile(r"^[0-9a-f]{4,40}$")
_SNAPSHOT = re.compile(r"^swh:1:snp:[0-9a-f]{40}$")
_TOKEN = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")

CAPSULE_COLUMNS = ("capsule_id", "manifest_digest", "title", "authors", "created_at", "notebook", "manifest",
                   "crate_checksum", "location", "git_commit", "git_tree_hash", "swh_origin_url", "swh_snapshot_id",
                   "swhids", "environment_digest", "lineage_key", "version", "parent_id", "status", "registered_at",
                   "license", "search_text", "authors_folded")
LIST_COLUMNS = ("capsule_id", "title", "authors", "created_at", "notebook", "manifest_digest", "crate_checksum",
                "location", "git_commit", "status", "version", "parent_id", "registered_at", "license")
FILE_COLUMNS = ("capsule_id", "path", "role", "size", "sha256", "sha1_git", "swhid", "linked_from")
AUTHOR_COLUMNS = ("capsule_id", "position", "name", "orcid")
VERIFICATION_COLUMNS = ("uid", "capsule_id", "started", "finished", "verdict", "report", "environment_digest",
                        "recorded_at")
ARCHIVAL_COLUMNS = ("uid", "capsule_id", "archiver", "target", "status", "request_id", "details", "created_at",
                    "updated_at")


# -- small helpers -----------------------------------------------------------------------
def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``: safe for messages and logs."""
    text = str(url)
    if "://" not in text:
        return re.sub(r"(?i)(password\s*=\s*)('[^']*'|\S+)", r"\1***", text)
    try:
        parts = urlsplit(text)
    except ValueError:
        return "<unparseable database URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
    if (netloc, query) == (parts.netloc, parts.query):
        return text
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def url_password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def now() -> str:
    """Registry timestamps keep microseconds so that registration order is visible in them."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _time(value: datetime | str, what: str) -> str:
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, str) and 0 < len(value) <= 40:
        return value
    raise InvalidId(f"{what} must be a datetime or an ISO-8601 string, not {_show(value)}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_capsule_id(value: Any) -> str:
    if not is_capsule_id(value):
        raise InvalidId(f"{_show(value)} is not a capsule id",
                        hint="capsule ids look like capsule-<uuid4>; `nbcapsule list` shows the registered ones")
    return value


def check_sha256(value: Any) -> str:
    if not isinstance(value, str) or not SHA256_RE.match(value.lower()):
        raise InvalidId(f"{_show(value)} is not a SHA-256 digest (64 hex digits)")
    return value.lower()


def _token(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _TOKEN.match(value):
        raise InvalidId(f"{what} {_show(value)} is not valid: use lowercase letters, digits, '-', '_' or '.'")
    return value


def _optional_text(value: Any, what: str, limit: int = 4096) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > limit or "\x00" in value:
        raise InvalidId(f"{what} {_show(value)} is not valid text (1 to {limit} characters)")
    return value


def check_refs(*, git_commit: str | None = None, git_tree_hash: str | None = None,
               swh_origin_url: str | None = None, swh_snapshot_id: str | None = None) -> dict[str, str]:
    """The explicit git/Software Heritage references a caller passed, validated; ``None`` ones are left out."""
    refs: dict[str, str] = {}
    for name, value in (("git_commit", git_commit), ("git_tree_hash", git_tree_hash)):
        if value is not None:
            if not isinstance(value, str) or not _HEX40.match(value):
                raise InvalidId(f"{name} {_show(value)} is not a 40-hex git object id")
            refs[name] = value
    if swh_origin_url is not None:
        url = _optional_text(swh_origin_url, "swh_origin_url", 8192)
        if not re.match(r"^https?://[^\s]+$", url or ""):
            raise InvalidId(f"swh_origin_url {_show(swh_origin_url)} is not an http(s) URL")
        refs["swh_origin_url"] = url
    if swh_snapshot_id is not None:
        if not isinstance(swh_snapshot_id, str) or not _SNAPSHOT.match(swh_snapshot_id):
            raise InvalidId(f"swh_snapshot_id {_show(swh_snapshot_id)} is not a snapshot SWHID (swh:1:snp:<40 hex>)")
        refs["swh_snapshot_id"] = swh_snapshot_id
    return refs


def _like(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, its own wildcards escaped (``\\`` is the escape)."""
    escaped = text.casefold().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _normal_origin(url: str) -> str:
    url = url.strip().rstrip("/")
    if url.endswith(".git"):
        url = url[:-4]
    try:
        parts = urlsplit(url)
        return urlunsplit(parts._replace(scheme=parts.scheme.lower(), netloc=parts.netloc.lower()))
    except ValueError:
        return url


def lineage_key(manifest: Manifest) -> str:
    """Which earlier capsules this one is a re-export of (see the module docstring)."""
    origin = (manifest.git or {}).get("origin_url")
    if isinstance(origin, str) and origin:
        basis = ["git", _normal_origin(origin), manifest.notebook]
    else:
        basis = ["local", manifest.notebook, manifest.title]
    return digest(basis)


def bare_orcid(value: Any) -> str | None:
    """``https://orcid.org/0000-…`` and ``0000-…`` name the same person; store and compare the bare form."""
    if not isinstance(value, str) or not value:
        return None
    return re.sub(r"(?i)^https?://(www\.)?orcid\.org/", "", value.strip()).upper()


def derived_fields(data: dict[str, Any]) -> dict[str, Any]:
    """Search columns derived from a manifest dict; folded in Python so both backends match alike."""
    authors = [{"name": str(p.get("name") or ""), "orcid": bare_orcid(p.get("orcid"))}
               for p in data.get("authors") or []]
    text = "\n".join(str(data.get(k) or "") for k in ("title", "description", "notebook"))
    return {"license": data.get("license"), "search_text": text.casefold(), "authors": authors,
            "authors_folded": "\n".join(a["name"] for a in authors).casefold()}


def _sealed(manifest: Manifest) -> dict[str, Any]:
    """The manifest's dict form, once it is known to be sealed, unchanged since, and valid against the schema."""
    if not isinstance(manifest, Manifest):
        raise ManifestError(f"expected a Manifest, got {type(manifest).__name__}")
    data = manifest.to_dict()
    if manifest.manifest_digest is None or manifest.manifest_digest != data["manifest_digest"]:
        raise ManifestError(f"the manifest of {manifest.capsule_id} is not sealed or was changed after sealing",
                            hint="call Manifest.seal() once every field is final")
    validate(data)
    if _has_nul(data):
        raise ManifestError(f"the manifest of {manifest.capsule_id} contains NUL characters",
                            hint="PostgreSQL cannot store them; remove them from titles, paths and descriptions")
    return data


def _has_nul(value: Any) -> bool:
    """NUL cannot be stored in PostgreSQL text or JSONB; refusing it everywhere keeps the backends alike."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v) for v in value)
    return False


# -- results -----------------------------------------------------------------------------
@dataclass
class RegisteredCapsule:
    capsule_id: str
    created: bool
    version: int
    parent_id: str | None
    manifest_digest: str | None = None


@dataclass
class CheckReport:
    """What ``check()`` found; ``ok`` only when the database and every stored manifest are sound."""

    schema_version: int | None = None
    capsules_checked: int = 0
    mismatched: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatched and not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass
class CopyReport:
    capsules_copied: int = 0
    capsules_present: int = 0
    metadata_updated: int = 0
    verifications_copied: int = 0
    archival_copied: int = 0
    archival_updated: int = 0
    source_counts: dict[str, int] = field(default_factory=dict)
    dest_counts: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (not self.missing and not self.mismatched
                and all(self.dest_counts.get(t, 0) >= n for t, n in self.source_counts.items()))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass
class _Source:
    manifest: Manifest
    location: str | None
    checksum: Callable[[], str | None]
    root: Path | None


# -- transactions ------------------------------------------------------------------------
class Tx:
    """One open transaction: ``?``-parameterised statements, rows as plain dicts with JSON decoded."""

    def __init__(self, registry: "Registry", cursor: Any) -> None:
        self.registry = registry
        self.cursor = cursor

    def execute(self, sql: str, params: tuple = ()) -> int:
        self.cursor.execute(self.registry._sql(sql), params or self.registry.NO_PARAMS)
        return self.cursor.rowcount

    def many(self, sql: str, rows: list[tuple]) -> None:
        """One statement over many parameter rows (a single round trip where the driver pipelines)."""
        self.cursor.executemany(self.registry._sql(sql), rows)

    def all(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        self.cursor.execute(self.registry._sql(sql), params or self.registry.NO_PARAMS)
        return [_decode(row) for row in self.cursor.fetchall()]

    def one(self, sql: str, params: tuple = ()) -> dict[str, Any] | None:
        self.cursor.execute(self.registry._sql(sql), params or self.registry.NO_PARAMS)
        row = self.cursor.fetchone()
        return None if row is None else _decode(row)

    def script(self, text: str) -> None:
        self.registry._script(self.cursor, text)


def _decode(row: Any) -> dict[str, Any]:
    out = dict(row)
    for key, value in out.items():
        if key in JSON_COLUMNS and isinstance(value, str):
            out[key] = json.loads(value)
        elif isinstance(value, memoryview):
            out[key] = bytes(value)
    return out


def _json(value: Any) -> str:
    return canonical_json(value).decode("utf-8")


def _insert_sql(table: str, columns: tuple[str, ...], suffix: str = "") -> str:
    marks = ", ".join("{J}" if c in JSON_COLUMNS else "?" for c in columns)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}){suffix}"


def _values(row: dict[str, Any], columns: tuple[str, ...]) -> tuple:
    return tuple(_json(row[c]) if c in JSON_COLUMNS else row[c] for c in columns)


# -- the registry ------------------------------------------------------------------------
class Registry(abc.ABC):
    """A catalogue of capsules; open one with :func:`scidex_nbcapsule.registry.open_registry`."""

    dialect: Dialect
    #: How the backend spells a bound parameter and a bound JSON value.
    PARAM = "?"
    JSON_PARAM = "?"
    #: What the driver takes for "no parameters" (psycopg then leaves ``%`` alone).
    NO_PARAMS: Any = ()

    def __init__(self, url: str, *, max_blob_bytes: int | None = None) -> None:
        self.url = url
        if max_blob_bytes is None:
            env = os.environ.get(BLOB_ENV)
            try:
                max_blob_bytes = int(env) if env else DEFAULT_MAX_BLOB_BYTES
            except ValueError as exc:
                raise CapsuleError(f"{BLOB_ENV}={env!r} is not a number of bytes") from exc
        self.max_blob_bytes = max_blob_bytes
        self._sql_cache: dict[str, str] = {}

    # -- what a backend provides ---------------------------------------------------------
    @abc.abstractmethod
    def _transaction(self, *, write: bool) -> contextlib.AbstractContextManager[Tx]:
        """A transaction; ``write`` ones are serialised against other writers where the backend needs it."""

    @abc.abstractmethod
    def _script(self, cursor: Any, text: str) -> None:
        """Run several DDL statements."""

    @abc.abstractmethod
    def _integrity_problems(self) -> list[str]:
        """What the database engine itself says is wrong with the storage."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; the registry cannot be used afterwards."""

    def _lock(self, tx: Tx, key: str) -> None:
        """Serialise writers on ``key`` until the transaction ends (a no-op where writers are serialised anyway)."""

    # -- plumbing ------------------------------------------------------------------------
    @property
    def safe_url(self) -> str:
        return redact_url(self.url)

    def _sql(self, sql: str) -> str:
        cached = self._sql_cache.get(sql)
        if cached is None:
            cached = sql.replace("{J}", self.JSON_PARAM).replace("?", self.PARAM)
            self._sql_cache[sql] = cached
        return cached

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.safe_url}>"

    def migrate(self, to: int | None = None) -> int:
        """Bring the schema to version ``to`` (default: newest), in one transaction; returns the version reached."""
        available = migrations.available()
        target = available[-1][0] if to is None else to
        with self._transaction(write=True) as tx:
            self._lock(tx, "schema-migration")
            tx.script("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                      "name TEXT NOT NULL, applied_at TEXT NOT NULL)")
            current = (tx.one("SELECT MAX(version) AS v FROM schema_version") or {}).get("v") or 0
            if current > available[-1][0]:
                raise RegistryError(f"the registry {self.safe_url} has schema version {current}, newer than this "
                                    f"scidex-nbcapsule understands ({available[-1][0]})",
                                    hint="upgrade scidex-nbcapsule to use this registry")
            ctx = MigrationContext(self.dialect, tx.script, tx.execute, tx.all)
            for version, name, module in available:
                if current < version <= target:
                    module.upgrade(ctx)
                    tx.execute("INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                               (version, name, now()))
                    current = version
        return current

    def schema_version(self) -> int:
        with self._transaction(write=False) as tx:
            return (tx.one("SELECT MAX(version) AS v FROM schema_version") or {}).get("v") or 0

    def _capsule_row(self, tx: Tx, capsule_id: str, columns: str = "*") -> dict[str, Any]:
        row = tx.one(f"SELECT {columns} FROM capsules WHERE capsule_id = ?", (check_capsule_id(capsule_id),))
        if row is None:
            raise CapsuleNotFound(f"no capsule {capsule_id} in the registry {self.safe_url}",
                                  hint="check the id with `nbcapsule list`, or register the crate first")
        return row

    # -- registering ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _source(self, obj: Any, crate_checksum: str | None, location: str | None) -> Iterator[_Source]:
        if isinstance(obj, Manifest):
            yield _Source(obj, location, lambda: crate_checksum, None)
            return
        from ..crate import open_crate

        if isinstance(obj, (str, os.PathLike)):
            with open_crate(obj) as crate:
                yield _Source(crate.manifest, location or str(Path(obj).resolve()),
                              lambda: crate_checksum or crate.checksum, crate.root)
        elif hasattr(obj, "root") and hasattr(obj, "manifest"):
            yield _Source(obj.manifest, location or getattr(obj, "location", None),
                          lambda: crate_checksum or obj.checksum, Path(obj.root))
        elif hasattr(obj, "manifest") and hasattr(obj, "path"):
            with open_crate(obj.path) as crate:
                if crate.manifest.manifest_digest != obj.manifest.manifest_digest:
                    raise CrateError(f"the crate at {obj.path} no longer holds the manifest of "
                                     f"{obj.manifest.capsule_id}",
                                     hint="register the crate path itself, or export the capsule again")
                yield _Source(obj.manifest, location or str(Path(obj.path).resolve()),
                              lambda: crate_checksum or getattr(obj, "checksum", None), crate.root)
        else:
            raise CapsuleError(f"cannot register a {type(obj).__name__}",
                               hint="pass a crate path, an exported Capsule, or a sealed Manifest")

    def register_capsule(self, crate_or_capsule: Any, *, git_commit: str | None = None,
                         git_tree_hash: str | None = None, swh_origin_url: str | None = None,
                         swh_snapshot_id: str | None = None, crate_checksum: str | None = None,
                         location: str | None = None) -> RegisteredCapsule:
        """Record a capsule once: registering the same manifest again returns the first registration."""
        refs = check_refs(git_commit=git_commit, git_tree_hash=git_tree_hash, swh_origin_url=swh_origin_url,
                          swh_snapshot_id=swh_snapshot_id)
        if crate_checksum is not None:
            crate_checksum = check_sha256(crate_checksum)
        location = _optional_text(str(location) if location is not None else None, "location", 8192)
        with self._source(crate_or_capsule, crate_checksum, location) as source:
            manifest = source.manifest
            data = _sealed(manifest)
            known = self._registered(manifest.manifest_digest)
            if known:
                return known
            blob = self._pack(source.root) if source.root is not None else None
            row = {
                "capsule_id": manifest.capsule_id, "manifest_digest": manifest.manifest_digest,
                "title": manifest.title, "authors": data["authors"], "created_at": manifest.created_at,
                "notebook": manifest.notebook, "manifest": data, "crate_checksum": source.checksum(),
                "location": source.location, "git_commit": manifest.git_commit,
                "git_tree_hash": manifest.git_tree_hash, "swh_origin_url": manifest.swh_origin_url,
                "swh_snapshot_id": manifest.swh_snapshot_id, "swhids": manifest.swhids,
                "environment_digest": manifest.environment_digest, "lineage_key": lineage_key(manifest),
                "status": "registered", **refs,
            }
            derived = derived_fields(data)
            row.update(license=derived["license"], search_text=derived["search_text"],
                       authors_folded=derived["authors_folded"])
            files = [{"capsule_id": manifest.capsule_id, "path": f.path, "role": f.role, "size": f.size,
                      "sha256": f.sha256, "sha1_git": f.sha1_git, "swhid": f.swhid, "linked_from": f.linked_from}
                     for f in manifest.files]
            authors = [{"capsule_id": manifest.capsule_id, "position": i, **a} for i, a in enumerate(derived["authors"])]
        with self._transaction(write=True) as tx:
            self._lock(tx, "lineage:" + row["lineage_key"])
            found = self._registered(manifest.manifest_digest, tx)
            if found:
                return found
            latest = tx.one("SELECT capsule_id, version FROM capsules WHERE lineage_key = ? "
                            "ORDER BY version DESC LIMIT 1", (row["lineage_key"],))
            row.update(version=latest["version"] + 1 if latest else 1,
                       parent_id=latest["capsule_id"] if latest else None, registered_at=now())
            if not self._insert_capsule(tx, row, files, authors, blob):
                found = self._registered(manifest.manifest_digest, tx)
                if found:
                    return found
                raise RegistryError(f"{manifest.capsule_id} is already registered with a different manifest",
                                    hint="a capsule id names exactly one manifest; export the analysis again "
                                         "to get a new id")
        return RegisteredCapsule(row["capsule_id"], True, row["version"], row["parent_id"], row["manifest_digest"])

    def _registered(self, manifest_digest: str, tx: Tx | None = None) -> RegisteredCapsule | None:
        sql = "SELECT capsule_id, version, parent_id FROM capsules WHERE manifest_digest = ?"
        if tx is None:
            with self._transaction(write=False) as own:
                row = own.one(sql, (manifest_digest,))
        else:
            row = tx.one(sql, (manifest_digest,))
        if row is None:
            return None
        return RegisteredCapsule(row["capsule_id"], False, row["version"], row["parent_id"], manifest_digest)

    def _insert_capsule(self, tx: Tx, row: dict[str, Any], files: list[dict], authors: list[dict],
                        blob: dict[str, Any] | None) -> bool:
        """Insert a capsule with everything hanging off it; ``False`` when a unique key already holds it."""
        inserted = tx.one(_insert_sql("capsules", CAPSULE_COLUMNS, " ON CONFLICT DO NOTHING RETURNING capsule_id"),
                          _values(row, CAPSULE_COLUMNS))
        if inserted is None:
            return False
        if files:
            tx.many(_insert_sql("capsule_files", FILE_COLUMNS), [_values(f, FILE_COLUMNS) for f in files])
        if authors:
            tx.many(_insert_sql("capsule_authors", AUTHOR_COLUMNS), [_values(a, AUTHOR_COLUMNS) for a in authors])
        if blob is not None:
            tx.execute("INSERT INTO crate_blobs (capsule_id, size, sha256, data) VALUES (?, ?, ?, ?)",
                       (row["capsule_id"], blob["size"], blob["sha256"], blob["data"]))
        return True

    def _pack(self, root: Path) -> dict[str, Any] | None:
        """The crate folder as zip bytes, or ``None`` when it is larger than :attr:`max_blob_bytes`."""
        entries = []
        total = 0
        for dirpath, dirs, names in os.walk(root):
            dirs.sort()
            for name in sorted(names):
                full = Path(dirpath, name)
                if full.is_symlink() or not full.is_file():
                    continue
                total += full.stat().st_size
                if total > self.max_blob_bytes:
                    return None
                entries.append((full, full.relative_to(root).as_posix()))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
            for full, rel in entries:
                archive.write(full, rel)
        data = buffer.getvalue()
        if len(data) > self.max_blob_bytes:
            return None
        return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "data": data}

    # -- reading -------------------------------------------------------------------------
    def get_capsule_manifest(self, capsule_id: str) -> Manifest:
        """The manifest as registered, re-checked against its digest on the way out."""
        with self._transaction(write=False) as tx:
            row = self._capsule_row(tx, capsule_id, "manifest")
        return Manifest.from_dict(row["manifest"])

    def get_capsule(self, capsule_id: str) -> dict[str, Any]:
        """Everything the registry knows about one capsule: its row, files, crate copy and archival requests."""
        with self._transaction(write=False) as tx:
            row = self._capsule_row(tx, capsule_id)
            row["files"] = tx.all("SELECT path, role, size, sha256, sha1_git, swhid, linked_from FROM capsule_files "
                                  "WHERE capsule_id = ? ORDER BY path", (capsule_id,))
            blob = tx.one("SELECT size, sha256 FROM crate_blobs WHERE capsule_id = ?", (capsule_id,))
            row["stored_crate"] = blob
            row["archival"] = self._archival(tx, capsule_id, None)
        row.pop("search_text", None)
        row.pop("authors_folded", None)
        return row

    def citation(self, capsule_id: str) -> dict[str, Any]:
        """What a client needs to cite the capsule and fetch it with fixity."""
        info = self.get_capsule(capsule_id)
        manifest = info["manifest"]
        return {
            "capsule_id": info["capsule_id"], "title": info["title"], "authors": info["authors"],
            "created_at": info["created_at"], "license": info["license"], "identifier": manifest.get("identifier"),
            "version": info["version"], "parent_id": info["parent_id"], "manifest_digest": info["manifest_digest"],
            "crate_checksum": info["crate_checksum"], "location": info["location"],
            "git_commit": info["git_commit"], "git_tree_hash": info["git_tree_hash"],
            "swh_origin_url": info["swh_origin_url"], "swh_snapshot_id": info["swh_snapshot_id"],
            "swhids": info["swhids"],
            "entities": [{"path": f["path"], "role": f["role"], "size": f["size"], "sha256": f["sha256"],
                          "swhid": f["swhid"]} for f in info["files"]],
            "archival": [{k: a[k] for k in ("archiver", "target", "status", "request_id", "details", "updated_at")}
                         for a in info["archival"]],
        }

    def list_capsules(self, *, author: str | None = None, commit: str | None = None, status: str | None = None,
                      text: str | None = None, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Newest first. ``author`` matches part of a name (any case) or an exact ORCID; ``commit`` a hex prefix."""
        where, params = [], []
        if author is not None:
            author = _optional_text(author, "author", 1000)
            # Names are matched on a column of the capsule row, not by a join, so the newest-first index scan
            # can stop after ``limit`` hits whatever the planner's statistics say; ORCIDs use their index.
            where.append("(c.authors_folded LIKE ? ESCAPE '\\' OR c.capsule_id IN "
                         "(SELECT a.capsule_id FROM capsule_authors a WHERE a.orcid = ?))")
            params += [_like(author), bare_orcid(author)]
        if commit is not None:
            if not isinstance(commit, str) or not _COMMIT_PREFIX.match(commit.lower()):
                raise InvalidId(f"commit {_show(commit)} is not a git commit id or prefix (4 to 40 hex digits)")
            where.append("c.git_commit LIKE ?")
            params.append(commit.lower() + "%")
        if status is not None:
            where.append("c.status = ?")
            params.append(_token(status, "status"))
        if text is not None:
            where.append("c.search_text LIKE ? ESCAPE '\\'")
            params.append(_like(_optional_text(text, "text", 1000) or ""))
        if not isinstance(limit, int) or not 0 < limit <= 10000:
            raise InvalidId(f"limit {_show(limit)} must be a whole number from 1 to 10000")
        if not isinstance(offset, int) or offset < 0:
            raise InvalidId(f"offset {_show(offset)} must be a whole number, 0 or more")
        sql = (f"SELECT {', '.join('c.' + c for c in LIST_COLUMNS)} FROM capsules c"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY c.registered_at DESC, c.capsule_id LIMIT ? OFFSET ?")
        with self._transaction(write=False) as tx:
            return tx.all(sql, (*params, limit, offset))

    def find_by_digest(self, sha256: str) -> list[dict[str, Any]]:
        """Every capsule holding a file with this content, with the file's path and role and the capsule's lineage."""
        with self._transaction(write=False) as tx:
            return tx.all("SELECT f.capsule_id, f.path, f.role, f.size, c.title, c.version, c.parent_id, "
                          "c.lineage_key, c.registered_at FROM capsule_files f "
                          "JOIN capsules c ON c.capsule_id = f.capsule_id WHERE f.sha256 = ? "
                          "ORDER BY c.registered_at, f.path", (check_sha256(sha256),))

    def history(self, capsule_id: str) -> dict[str, Any]:
        """Every version of the analysis this capsule belongs to, and the verifications of each."""
        with self._transaction(write=False) as tx:
            row = self._capsule_row(tx, capsule_id, "lineage_key")
            versions = tx.all("SELECT capsule_id, version, parent_id, title, manifest_digest, git_commit, status, "
                              "registered_at FROM capsules WHERE lineage_key = ? ORDER BY version",
                              (row["lineage_key"],))
            verifications = tx.all(
                "SELECT v.id, v.capsule_id, v.started, v.finished, v.verdict, v.environment_digest, v.report "
                "FROM verifications v JOIN capsules c ON c.capsule_id = v.capsule_id "
                "WHERE c.lineage_key = ? ORDER BY v.finished, v.id", (row["lineage_key"],))
        return {"capsule_id": capsule_id, "lineage_key": row["lineage_key"], "versions": versions,
                "verifications": verifications}

    # -- verifications, archival, references ----------------------------------------------
    def record_verification(self, capsule_id: str, *, started: datetime | str, finished: datetime | str,
                            verdict: str, report: dict[str, Any], environment_digest: str | None = None) -> int:
        """Keep a verification's outcome; the capsule's status becomes the verdict of its latest verification."""
        check_capsule_id(capsule_id)
        values = {"uid": str(uuid.uuid4()), "capsule_id": capsule_id, "started": _time(started, "started"),
                  "finished": _time(finished, "finished"), "verdict": _token(verdict, "verdict"),
                  "report": self._json_dict(report, "report"),
                  "environment_digest": check_sha256(environment_digest) if environment_digest else None,
                  "recorded_at": now()}
        with self._transaction(write=True) as tx:
            self._capsule_row(tx, capsule_id, "capsule_id")
            row = tx.one(_insert_sql("verifications", VERIFICATION_COLUMNS, " RETURNING id"),
                         _values(values, VERIFICATION_COLUMNS))
            self._refresh_status(tx, capsule_id)
        return int(row["id"])

    @staticmethod
    def _refresh_status(tx: Tx, capsule_id: str) -> None:
        tx.execute("UPDATE capsules SET status = COALESCE((SELECT v.verdict FROM verifications v "
                   "WHERE v.capsule_id = ? ORDER BY v.finished DESC, v.recorded_at DESC LIMIT 1), 'registered') "
                   "WHERE capsule_id = ?", (capsule_id, capsule_id))

    @staticmethod
    def _json_dict(value: Any, what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise InvalidId(f"{what} must be a dict, not {type(value).__name__}")
        try:
            canonical_json(value)
        except (TypeError, ValueError) as exc:
            raise InvalidId(f"{what} cannot be stored as JSON: {exc}") from exc
        if _has_nul(value):
            raise InvalidId(f"{what} contains NUL characters, which the registry cannot store")
        return value

    def add_archival_request(self, capsule_id: str, archiver: str, target: str, status: str,
                             request_id: str | None = None, details: dict[str, Any] | None = None) -> int:
        """Remember that an archiver was asked to keep this capsule somewhere; returns the request's row id."""
        check_capsule_id(capsule_id)
        stamp = now()
        values = {"uid": str(uuid.uuid4()), "capsule_id": capsule_id, "archiver": _token(archiver, "archiver"),
                  "target": _optional_text(target, "target", 8192), "status": _token(status, "status"),
                  "request_id": _optional_text(request_id, "request_id", 1000),
                  "details": self._json_dict(details or {}, "details"), "created_at": stamp, "updated_at": stamp}
        if values["target"] is None:
            raise InvalidId("an archival request needs a target")
        with self._transaction(write=True) as tx:
            self._capsule_row(tx, capsule_id, "capsule_id")
            row = tx.one(_insert_sql("archival_requests", ARCHIVAL_COLUMNS, " RETURNING id"),
                         _values(values, ARCHIVAL_COLUMNS))
        return int(row["id"])

    def update_archival_request(self, row_id: int, status: str, request_id: str | None = None,
                                details: dict[str, Any] | None = None) -> None:
        """Move a request on (queued → done, failed …); ``request_id``/``details`` are kept unless given."""
        if not isinstance(row_id, int) or isinstance(row_id, bool) or row_id < 1:
            raise InvalidId(f"archival request id {_show(row_id)} must be a positive whole number")
        params = (_token(status, "status"), _optional_text(request_id, "request_id", 1000),
                  None if details is None else _json(self._json_dict(details, "details")), now(), row_id)
        with self._transaction(write=True) as tx:
            changed = tx.execute("UPDATE archival_requests SET status = ?, request_id = COALESCE(?, request_id), "
                                 "details = COALESCE({J}, details), updated_at = ? WHERE id = ?", params)
        if not changed:
            raise RegistryError(f"no archival request {row_id} in the registry {self.safe_url}")

    def archival_requests(self, capsule_id: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        with self._transaction(write=False) as tx:
            return self._archival(tx, None if capsule_id is None else check_capsule_id(capsule_id),
                                  None if status is None else _token(status, "status"))

    @staticmethod
    def _archival(tx: Tx, capsule_id: str | None, status: str | None) -> list[dict[str, Any]]:
        where, params = [], []
        if capsule_id is not None:
            where.append("capsule_id = ?")
            params.append(capsule_id)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        return tx.all("SELECT id, capsule_id, archiver, target, status, request_id, details, created_at, updated_at "
                      "FROM archival_requests" + (" WHERE " + " AND ".join(where) if where else "")
                      + " ORDER BY id", tuple(params))

    def set_swh_reference(self, capsule_id: str, origin_url: str | None = None,
                          snapshot_id: str | None = None) -> None:
        """Record where Software Heritage archived the code; registry metadata, the manifest is untouched."""
        refs = check_refs(swh_origin_url=origin_url, swh_snapshot_id=snapshot_id)
        with self._transaction(write=True) as tx:
            self._capsule_row(tx, capsule_id, "capsule_id")
            tx.execute("UPDATE capsules SET swh_origin_url = COALESCE(?, swh_origin_url), "
                       "swh_snapshot_id = COALESCE(?, swh_snapshot_id) WHERE capsule_id = ?",
                       (refs.get("swh_origin_url"), refs.get("swh_snapshot_id"), capsule_id))

    # -- writing the crate back out --------------------------------------------------------
    def export_files(self, capsule_id: str, dest: Path) -> Path:
        """Write the crate folder to ``dest`` (which must not exist), from the stored copy or the recorded location.

        Every payload file is checked against the stored manifest before ``dest`` appears.
        """
        from ..crate import crate_checksum, open_crate, safe_extract
        from ..hashing import copy_and_hash

        dest = Path(dest)
        if dest.exists() or dest.is_symlink():
            raise DestinationExists(f"{dest} already exists; crates are never overwritten",
                                    hint="choose another destination, or remove the old one first")
        with self._transaction(write=False) as tx:
            row = self._capsule_row(tx, capsule_id, "manifest, crate_checksum, location")
            blob = tx.one("SELECT sha256, data FROM crate_blobs WHERE capsule_id = ?", (capsule_id,))
        manifest = Manifest.from_dict(row["manifest"])
        dest.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
        try:
            with contextlib.ExitStack() as stack:
                if blob is not None:
                    if hashlib.sha256(blob["data"]).hexdigest() != blob["sha256"]:
                        raise RegistryError(f"the stored copy of {capsule_id} is damaged",
                                            hint="run `nbcapsule db check`; restore the registry from a copy")
                    packed = work / "crate.zip"
                    packed.write_bytes(blob["data"])
                    source = safe_extract(packed, Path(stack.enter_context(tempfile.TemporaryDirectory(
                        prefix="nbcapsule-blob-", dir=work))))
                elif row["location"] and Path(row["location"]).exists():
                    crate = stack.enter_context(open_crate(row["location"]))
                    if crate.manifest.manifest_digest != manifest.manifest_digest:
                        raise FixityError(f"the crate at {row['location']} no longer holds capsule {capsule_id}")
                    source = crate.root
                else:
                    raise RegistryError(f"the registry holds no copy of {capsule_id} and its crate is gone from "
                                        f"{row['location']}", hint="fetch the crate from an archive instead")
                out = work / "crate"
                expected = {f.path: f for f in manifest.files if f.in_crate}
                for dirpath, dirs, names in os.walk(source):
                    dirs.sort()
                    for name in sorted(names):
                        full = Path(dirpath, name)
                        rel = full.relative_to(source).as_posix()
                        digests = copy_and_hash(full, out / rel)
                        record = expected.pop(rel, None)
                        if record and (digests.sha256 != record.sha256 or digests.size != record.size):
                            raise FixityError(f"{rel} of {capsule_id} does not match the registered manifest",
                                              hint="the crate was altered; use an archived copy")
                if expected:
                    raise FixityError(f"{len(expected)} file(s) of {capsule_id} are missing, e.g. {sorted(expected)[0]}")
            if row["crate_checksum"] and crate_checksum(out) != row["crate_checksum"]:
                raise FixityError(f"the crate of {capsule_id} does not match its registered checksum")
            if dest.exists() or dest.is_symlink():
                raise DestinationExists(f"{dest} appeared while the crate was being written; nothing was replaced")
            os.rename(out, dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return dest

    # -- copy and check ------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with self._transaction(write=False) as tx:
            return {t: int(tx.one(f"SELECT COUNT(*) AS n FROM {t}")["n"]) for t in TABLES}

    def copy_to(self, other: "Registry") -> CopyReport:
        """Copy every capsule, file, stored crate, verification and archival request into ``other``.

        Each capsule is its own transaction and rows already there are skipped, so an
        interrupted copy is resumed by running it again. Ends by comparing both sides.
        """
        report = CopyReport()
        with self._transaction(write=False) as tx:
            source = tx.all("SELECT capsule_id, manifest_digest, status, swh_origin_url, swh_snapshot_id "
                            "FROM capsules ORDER BY lineage_key, version")
        present = {r["capsule_id"]: r for r in other._all_capsule_keys()}
        for meta in source:
            capsule_id = meta["capsule_id"]
            there = present.get(capsule_id)
            if there is None:
                with self._transaction(write=False) as tx:
                    row = tx.one(f"SELECT {', '.join(CAPSULE_COLUMNS)} FROM capsules WHERE capsule_id = ?",
                                 (capsule_id,))
                    files = tx.all(f"SELECT {', '.join(FILE_COLUMNS)} FROM capsule_files WHERE capsule_id = ?",
                                   (capsule_id,))
                    authors = tx.all(f"SELECT {', '.join(AUTHOR_COLUMNS)} FROM capsule_authors "
                                     "WHERE capsule_id = ?", (capsule_id,))
                    blob = tx.one("SELECT size, sha256, data FROM crate_blobs WHERE capsule_id = ?", (capsule_id,))
                with other._transaction(write=True) as dtx:
                    if other._insert_capsule(dtx, row, files, authors, blob):
                        report.capsules_copied += 1
                    else:
                        report.mismatched.append(capsule_id)
                continue
            report.capsules_present += 1
            if there["manifest_digest"] != meta["manifest_digest"]:
                report.mismatched.append(capsule_id)
            elif any(there[k] != meta[k] for k in ("status", "swh_origin_url", "swh_snapshot_id")):
                with other._transaction(write=True) as dtx:
                    dtx.execute("UPDATE capsules SET status = ?, swh_origin_url = ?, swh_snapshot_id = ? "
                                "WHERE capsule_id = ?", (meta["status"], meta["swh_origin_url"],
                                                         meta["swh_snapshot_id"], capsule_id))
                report.metadata_updated += 1
        self._copy_verifications(other, report)
        self._copy_archival(other, report)
        report.source_counts = self.counts()
        report.dest_counts = other.counts()
        ours = {r["capsule_id"]: r["manifest_digest"] for r in self._all_capsule_keys()}
        theirs = {r["capsule_id"]: r["manifest_digest"] for r in other._all_capsule_keys()}
        report.missing = sorted(set(ours) - set(theirs))
        report.mismatched = sorted(set(report.mismatched) | {c for c in ours if c in theirs and theirs[c] != ours[c]})
        return report

    def _all_capsule_keys(self) -> list[dict[str, Any]]:
        with self._transaction(write=False) as tx:
            return tx.all("SELECT capsule_id, manifest_digest, status, swh_origin_url, swh_snapshot_id FROM capsules")

    def _copy_verifications(self, other: "Registry", report: CopyReport, batch: int = 500) -> None:
        with other._transaction(write=False) as dtx:
            have = {r["uid"] for r in dtx.all("SELECT uid FROM verifications")}
        with self._transaction(write=False) as tx:
            rows = [r for r in tx.all(f"SELECT {', '.join(VERIFICATION_COLUMNS)} FROM verifications ORDER BY id")
                    if r["uid"] not in have]
        for start in range(0, len(rows), batch):
            with other._transaction(write=True) as dtx:
                for row in rows[start:start + batch]:
                    report.verifications_copied += dtx.execute(
                        _insert_sql("verifications", VERIFICATION_COLUMNS, " ON CONFLICT DO NOTHING"),
                        _values(row, VERIFICATION_COLUMNS))

    def _copy_archival(self, other: "Registry", report: CopyReport, batch: int = 500) -> None:
        with other._transaction(write=False) as dtx:
            have = {r["uid"]: r["updated_at"] for r in dtx.all("SELECT uid, updated_at FROM archival_requests")}
        with self._transaction(write=False) as tx:
            rows = [r for r in tx.all(f"SELECT {', '.join(ARCHIVAL_COLUMNS)} FROM archival_requests ORDER BY id")
                    if r["uid"] not in have or have[r["uid"]] < r["updated_at"]]
        for start in range(0, len(rows), batch):
            with other._transaction(write=True) as dtx:
                for row in rows[start:start + batch]:
                    if row["uid"] in have:
                        dtx.execute("UPDATE archival_requests SET status = ?, request_id = ?, details = {J}, "
                                    "updated_at = ? WHERE uid = ?", (row["status"], row["request_id"],
                                                                     _json(row["details"]), row["updated_at"],
                                                                     row["uid"]))
                        report.archival_updated += 1
                    else:
                        report.archival_copied += dtx.execute(
                            _insert_sql("archival_requests", ARCHIVAL_COLUMNS, " ON CONFLICT DO NOTHING"),
                            _values(row, ARCHIVAL_COLUMNS))

    def check(self, *, page: int = 500) -> CheckReport:
        """Re-verify every stored manifest against its digest and ask the engine about its own storage."""
        report = CheckReport()
        try:
            report.problems += self._integrity_problems()
            report.schema_version = self.schema_version()
            with self._transaction(write=False) as tx:
                file_counts = {r["capsule_id"]: int(r["n"]) for r in
                               tx.all("SELECT capsule_id, COUNT(*) AS n FROM capsule_files GROUP BY capsule_id")}
            last = ""
            while True:
                with self._transaction(write=False) as tx:
                    rows = tx.all("SELECT capsule_id, manifest_digest, manifest FROM capsules WHERE capsule_id > ? "
                                  "ORDER BY capsule_id LIMIT ?", (last, page))
                if not rows:
                    break
                for row in rows:
                    report.capsules_checked += 1
                    problem = self._manifest_problem(row, file_counts.get(row["capsule_id"], 0))
                    if problem:
                        report.mismatched.append(row["capsule_id"])
                        report.problems.append(problem)
                last = rows[-1]["capsule_id"]
            last = ""
            while True:
                with self._transaction(write=False) as tx:
                    blobs = tx.all("SELECT capsule_id, sha256, data FROM crate_blobs WHERE capsule_id > ? "
                                   "ORDER BY capsule_id LIMIT ?", (last, 20))
                if not blobs:
                    break
                for blob in blobs:
                    if hashlib.sha256(blob["data"]).hexdigest() != blob["sha256"]:
                        report.problems.append(f"{blob['capsule_id']}: the stored crate copy is damaged")
                last = blobs[-1]["capsule_id"]
        except RegistryError as exc:
            report.problems.append(str(exc))
        return report

    @staticmethod
    def _manifest_problem(row: dict[str, Any], file_count: int) -> str | None:
        capsule_id = row["capsule_id"]
        try:
            manifest = Manifest.from_dict(row["manifest"])
        except ManifestError as exc:
            return f"{capsule_id}: {str(exc).splitlines()[0]}"
        if manifest.manifest_digest != row["manifest_digest"] or manifest.capsule_id != capsule_id:
            return f"{capsule_id}: the stored manifest digest or id does not match the manifest"
        if len(manifest.files) != file_count:
            return f"{capsule_id}: {file_count} file rows for {len(manifest.files)} files in the manifest"
        return None
