"""The capsule model: what ``capsule.json`` says, independent of how it was captured or stored.

The manifest is the contract between export, registry and verification, so it
is plain data with a canonical JSON form and a digest over that form.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from importlib import resources
from typing import Any

from .errors import ManifestError

SCHEMA_VERSION = "1.0"
CAPSULE_ID_RE = re.compile(r"^capsule-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

#: Roles a file can play in a capsule.
ROLES = ("code", "input", "output", "environment", "provenance")


def new_capsule_id() -> str:
    return f"capsule-{uuid.uuid4()}"


def is_capsule_id(value: object) -> bool:
    return isinstance(value, str) and bool(CAPSULE_ID_RE.match(value))


def utc_now() -> str:
    """A timestamp in the form the RO-Crate validator accepts (no ``Z``, no microseconds)."""
    return format_time(datetime.now(timezone.utc))


def format_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).replace(microsecond=0).isoformat()


def canonical_json(data: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8: the bytes that digests are taken over."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def digest(data: Any) -> str:
    return hashlib.sha256(canonical_json(data)).hexdigest()


@dataclass
class Person:
    name: str
    orcid: str | None = None
    email: str | None = None
    affiliation: str | None = None

    @property
    def id(self) -> str:
        if self.orcid:
            return self.orcid if self.orcid.startswith("http") else f"https://orcid.org/{self.orcid}"
        return "#person-" + re.sub(r"[^A-Za-z0-9]+", "-", self.name).strip("-").lower()


@dataclass
class FileRecord:
    """One file in the crate payload, addressed by its POSIX path relative to the crate root."""

    path: str
    role: str
    size: int
    sha256: str
    sha1_git: str
    encoding_format: str = "application/octet-stream"
    mode: int = 0o100644
    #: sha256 of the version the analysis read, when it was later rewritten.
    read_sha256: str | None = None
    #: Where a file too large to copy lives (``--link-large``); then it is not in the crate.
    linked_from: str | None = None
    swhid: str | None = None
    #: The file, relative to the project root, that a symlink at ``path`` leads to.
    link_target: str | None = None
    #: For a file read outside the project and packed under ``external/``: where it was.
    original_path: str | None = None

    @property
    def in_crate(self) -> bool:
        return self.linked_from is None


_FILE_FIELDS = tuple(f.name for f in fields(FileRecord))
#: Fields added after 1.0 was first written: left out while empty, so older manifests keep their digests.
_OPTIONAL_FILE_FIELDS = frozenset({"link_target", "original_path"})
_OPTIONAL_CELL_FIELDS = ("reads", "writes")
_OPTIONAL_FIELDS = ("capture", "external_inputs", "environment_lock")


def _file_dict(record: "FileRecord") -> dict[str, Any]:
    data = {}
    for name in _FILE_FIELDS:
        value = getattr(record, name)
        if value is None and name in _OPTIONAL_FILE_FIELDS:
            continue
        data[name] = value
    return data

@dataclass
class CellRun:
    cell_id: str | None
    execution_count: int | None
    source_sha256: str
    started: str | None
    ended: str | None
    status: str  # "ok" | "error" | "unknown" (seen only in history)
    error: str | None = None
    #: Files this execution read and wrote (crate paths; absolute for files outside the project).
    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)


@dataclass
class Problem:
    """An execution-order problem; recorded, never silently ignored."""

    kind: str  # out-of-order | edited-after-run | never-run | kernel-restarted | stale-notebook | not-captured
    message: str
    cell_id: str | None = None


@dataclass
class ExecutionRecord:
    kernel_started: str | None = None
    started: str | None = None
    ended: str | None = None
    status: str = "completed"  # completed | failed
    cells: list[CellRun] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


@dataclass
class Manifest:
    capsule_id: str
    title: str
    license: str
    created_at: str
    notebook: str
    notebook_sha256: str
    description: str = ""
    authors: list[Person] = field(default_factory=list)
    files: list[FileRecord] = field(default_factory=list)
    execution: ExecutionRecord = field(default_factory=ExecutionRecord)
    environment_digest: str | None = None
    git_commit: str | None = None
    git_tree_hash: str | None = None
    swh_origin_url: str | None = None
    swh_snapshot_id: str | None = None
    swhids: dict[str, Any] = field(default_factory=dict)
    git: dict[str, Any] | None = None
    withheld: list[dict[str, str]] = field(default_factory=list)
    identifier: str | None = None
    #: Which capture layers ran and what they could not see: ``mechanisms``, ``blind_spots``, ``late_cells``,
    #: ``missing``, ``unattributed``.
    capture: dict[str, Any] | None = None
    #: Files read outside the project root: path, size, sha256 (and ``included_as`` when packed).
    external_inputs: list[dict[str, Any]] = field(default_factory=list)
    #: The lock of what the analysis needs (``pylock.toml``): counts, the index asked, rebuild risks, carried locks.
    environment_lock: dict[str, Any] | None = None
    schema_version: str = SCHEMA_VERSION
    manifest_digest: str | None = None

    # -- derived views -------------------------------------------------
    def file(self, path: str) -> FileRecord:
        for record in self.files:
            if record.path == path:
                return record
        raise KeyError(path)

    def by_role(self, role: str) -> list[FileRecord]:
        return [f for f in self.files if f.role == role]

    # -- serialisation -------------------------------------------------
    def _asdict(self) -> dict[str, Any]:
        """``asdict(self)``, with the (all-scalar) file records copied directly: tens of thousands of them."""
        shallow = copy.copy(self)
        shallow.files = []
        data = asdict(shallow)
        data["files"] = [_file_dict(record) for record in self.files]
        for name in _OPTIONAL_FIELDS:
            if not data.get(name):
                data.pop(name, None)
        for cell in data["execution"]["cells"]:
            for name in _OPTIONAL_CELL_FIELDS:
                if not cell.get(name):
                    cell.pop(name, None)
        return data

    def to_dict(self) -> dict[str, Any]:
        data = self._asdict()
        data.pop("manifest_digest", None)
        data["manifest_digest"] = digest(data)
        return data

    def compute_digest(self) -> str:
        data = self._asdict()
        data.pop("manifest_digest", None)
        return digest(data)

    def seal(self) -> "Manifest":
        """Fix the digest; call once every field is final."""
        self.manifest_digest = self.compute_digest()
        return self

    def seal_to_json(self) -> str:
        """:meth:`seal` then :meth:`to_json`, building the dictionary once."""
        data = self.to_dict()
        self.manifest_digest = data["manifest_digest"]
        return _pretty(data)

    def to_json(self) -> str:
        return _pretty(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, *, check_digest: bool = True) -> "Manifest":
        """Parse and validate; any defect is a :class:`ManifestError`, never a bare exception."""
        validate(data)
        try:
            values = {f.name: data.get(f.name) for f in fields(cls) if f.name in data}
            values["authors"] = [Person(**p) for p in data.get("authors", [])]
            values["files"] = [FileRecord(**f) for f in data.get("files", [])]
            ex = dict(data.get("execution") or {})
            ex["cells"] = [CellRun(**c) for c in ex.get("cells", [])]
            ex["problems"] = [Problem(**p) for p in ex.get("problems", [])]
            values["execution"] = ExecutionRecord(**ex)
            manifest = cls(**values)
        except (TypeError, ValueError, AttributeError) as exc:
            raise ManifestError(f"capsule.json does not match the capsule model: {exc}",
                                hint="re-export the capsule with this version of scidex-nbcapsule") from exc
        if check_digest and manifest.manifest_digest != manifest.compute_digest():
            raise ManifestError(
                f"capsule.json of {manifest.capsule_id} has been altered: its manifest digest does not match its content",
                hint="the capsule cannot be trusted; fetch a pristine copy from the registry or re-export it")
        return manifest

    @classmethod
    def from_json(cls, text: str | bytes, *, check_digest: bool = True) -> "Manifest":
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ManifestError(f"capsule.json is not valid JSON: {exc}") from exc
        return cls.from_dict(data, check_digest=check_digest)


def _pretty(data: dict[str, Any]) -> str:
    return readable_json(data, "files")


def readable_json(data: dict[str, Any], long_list: str) -> str:
    """Indented JSON (sorted keys), except that each item of ``data[long_list]`` takes one compact line.

    One line per file still reads and diffs well, and those lines come from the C encoder: an indented
    ``json.dumps`` runs in pure Python and takes seconds over tens of thousands of files.
    """
    items = data.get(long_list)
    if not isinstance(items, list) or not items:
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    marker = f"@@nbcapsule-{uuid.uuid4().hex}@@"
    text = json.dumps({**data, long_list: marker}, indent=2, sort_keys=True, ensure_ascii=False)
    encode = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode
    body = "[\n" + ",\n".join("    " + encode(item) for item in items) + "\n  ]"
    return text.replace(json.dumps(marker), body, 1) + "\n"


def schema() -> dict[str, Any]:
    """The JSON Schema of ``capsule.json`` that ships with the package."""
    text = resources.files("scidex_nbcapsule").joinpath("schemas/capsule.schema.json").read_text("utf-8")
    return json.loads(text)


_VALIDATOR = None


def _inline_refs(schema_doc: dict[str, Any]) -> dict[str, Any]:
    """The schema with each local ``$ref`` replaced by its definition: the same constraints, written in the
    draft-7 vocabulary that fastjsonschema compiles (``$defs`` is a later draft's)."""
    defs = schema_doc.get("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if len(node) == 1 and isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema_doc)


def _validator() -> Any:
    """The schema compiled to Python by fastjsonschema, once per process: jsonschema's import alone costs
    seconds (its optional IRI format checker compiles dozens of grammars), more than a registration."""
    global _VALIDATOR
    if _VALIDATOR is None:
        import fastjsonschema

        inlined = _inline_refs(schema())
        inlined.pop("$defs", None)
        # the schema uses nothing past draft 7, fastjsonschema's newest draft
        inlined["$schema"] = "http://json-schema.org/draft-07/schema#"
        _VALIDATOR = fastjsonschema.compile(inlined)
    return _VALIDATOR


def validate(data: Any) -> None:
    """Raise :class:`ManifestError` naming the first place where ``data`` breaks the capsule schema."""
    import fastjsonschema

    check = _validator()
    try:
        check(data)
    except fastjsonschema.JsonSchemaValueException as error:
        where = "/".join(str(p) for p in error.path[1:]) or "(top level)"
        message = error.message.removeprefix(error.name).strip() or error.message
        message = message if len(message) < 300 else message[:300] + "…"
        raise ManifestError(f"capsule.json is invalid at {where}: {message}",
                            hint="the file was edited or written by an incompatible tool; re-export the capsule"
                            ) from None
    except RecursionError as exc:
        raise ManifestError("capsule.json is nested too deeply to be a capsule manifest") from exc
