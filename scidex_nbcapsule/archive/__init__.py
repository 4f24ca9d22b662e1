"""Archivers: plugins that hand a capsule to long-term preservation (a BagIt bag, Software Heritage).

An archiver only does the hand-over and says what happened in an
:class:`ArchiveResult`; it never touches the registry. :func:`run_archival`,
:func:`retry_pending` and :func:`poll_status` are the glue that records those
results through whatever registry they are given, so a request that could not
be sent today (network down) is kept as ``queued`` and sent later.

Third-party archivers register under the entry-point group
``scidex_nbcapsule.archivers``.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

from ..errors import ArchiveError, CapsuleError, CrateError
from ..manifest import Manifest

ENTRY_POINT_GROUP = "scidex_nbcapsule.archivers"

#: Archivers that ship with the package, found even when it is not installed.
BUILTIN_ARCHIVERS = {
    "bagit": "scidex_nbcapsule.archive.bagit:BagItArchiver",
    "swh": "scidex_nbcapsule.archive.swh:SaveCodeNowArchiver",
}

#: Result statuses. ``queued``: not sent yet (retry later); ``pending``: sent, not finished.
QUEUED, PENDING, SUCCEEDED, REJECTED, FAILED = "queued", "pending", "succeeded", "rejected", "failed"
STATUSES = (QUEUED, PENDING, SUCCEEDED, REJECTED, FAILED)
#: Statuses after which nothing more will happen without a new request.
FINAL_STATUSES = (SUCCEEDED, REJECTED, FAILED)


@dataclass
class ArchiveResult:
    """What one archival attempt achieved; JSON-ready through :meth:`to_dict`."""

    archiver: str
    status: str
    #: What was archived: the bag path, or the origin URL handed to Software Heritage.
    target: str
    capsule_id: str | None = None
    #: Where the archived copy now is (bag folder, snapshot SWHID), once known.
    location: str | None = None
    #: The archive's own id for an asynchronous request.
    request_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: Registry row recording this request, when a registry was used.
    row_id: int | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Archiver(ABC):
    """A way of preserving a capsule. Subclasses set :attr:`name` and implement :meth:`archive`."""

    name: ClassVar[str] = ""

    @abstractmethod
    def archive(self, crate_path: Path, manifest: Manifest, **options: Any) -> ArchiveResult:
        """Archive the crate folder ``crate_path`` whose manifest is ``manifest``."""

    def status(self, request: dict[str, Any]) -> ArchiveResult:
        """Ask the archive how an earlier request (a registry row or :meth:`ArchiveResult.to_dict`) is doing."""
        raise ArchiveError(f"the {self.name} archiver works synchronously; it has no request status to ask for")

    def retry(self, request: dict[str, Any], **options: Any) -> ArchiveResult:
        """Send a request that could not be sent before (status ``queued``)."""
        raise ArchiveError(f"the {self.name} archiver cannot resend a request; run the archival again")


def _entry_points() -> dict[str, Any]:
    try:
        return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    except Exception:
        return {}


def available_archivers() -> list[str]:
    """Names usable with ``--to``: installed plugins plus the built-ins."""
    return sorted(set(_entry_points()) | set(BUILTIN_ARCHIVERS))


def get_archiver(name: str, **config: Any) -> Archiver:
    """An instance of the archiver called ``name``; ``config`` goes to its constructor."""
    target = _entry_points().get(name)
    try:
        if target is not None:
            cls = target.load()
        elif name in BUILTIN_ARCHIVERS:
            module, _, attr = BUILTIN_ARCHIVERS[name].partition(":")
            cls = getattr(importlib.import_module(module), attr)
        else:
            raise ArchiveError(f"there is no archiver called {name!r}",
                               hint=f"choose one of: {', '.join(available_archivers())}")
    except (ImportError, AttributeError) as exc:
        raise ArchiveError(f"the archiver {name!r} is installed but cannot be loaded: {exc}",
                           hint="reinstall the package that provides it") from exc
    if not (isinstance(cls, type) and issubclass(cls, Archiver)):
        raise ArchiveError(f"the archiver {name!r} does not implement scidex_nbcapsule.archive.Archiver")
    return cls(**config)


def read_crate_manifest(crate_path: Path) -> Manifest:
    """The verified ``capsule.json`` of a crate folder."""
    crate_path = Path(crate_path)
    path = crate_path / "capsule.json"
    if not crate_path.is_dir():
        raise CrateError(f"{crate_path} is not a crate folder",
                         hint="pass an exported capsule folder (unpack a zip capsule first, or use the CLI)")
    try:
        text = path.read_bytes()
    except FileNotFoundError as exc:
        raise CrateError(f"{crate_path} has no capsule.json, so it is not a capsule",
                         hint="export the notebook with nbcapsule first") from exc
    return Manifest.from_json(text)


def _record(registry: Any, result: ArchiveResult) -> None:
    """Store ``result`` (new row or update of ``result.row_id``) and the Software Heritage reference it proves."""
    if result.row_id is None:
        result.row_id = registry.add_archival_request(result.capsule_id, result.archiver, result.target, result.status,
                                                      request_id=result.request_id, details=result.details)
    else:
        registry.update_archival_request(result.row_id, result.status, request_id=result.request_id,
                                         details=result.details)
    snapshot = result.details.get("snapshot_swhid")
    if result.status == SUCCEEDED and snapshot and result.capsule_id:
        registry.set_swh_reference(result.capsule_id, origin_url=result.details.get("origin_url") or result.target,
                                   snapshot_id=snapshot)


def run_archival(name: str, crate_path: Path, registry: Any = None, *, manifest: Manifest | None = None,
                 archiver_config: dict[str, Any] | None = None, **options: Any) -> ArchiveResult:
    """Archive one crate folder with archiver ``name`` and record the request in ``registry`` if given.

    ``registry`` is anything with the registry's ``add_archival_request``,
    ``update_archival_request`` and ``set_swh_reference`` methods.
    """
    crate_path = Path(crate_path)
    if manifest is None:
        manifest = read_crate_manifest(crate_path)
    archiver = get_archiver(name, **(archiver_config or {}))
    result = archiver.archive(crate_path, manifest, **options)
    if result.capsule_id is None:
        result.capsule_id = manifest.capsule_id
    if registry is not None:
        _record(registry, result)
    return result


def _result_for(row: dict[str, Any], result: ArchiveResult) -> ArchiveResult:
    result.row_id = row.get("id")
    result.capsule_id = result.capsule_id or row.get("capsule_id")
    return result


def retry_pending(registry: Any, capsule_id: str | None = None,
                  archiver_config: dict[str, dict[str, Any]] | None = None) -> list[ArchiveResult]:
    """Send every ``queued`` request again (e.g. after the network came back); returns the new outcomes."""
    results = []
    for row in registry.archival_requests(capsule_id=capsule_id, status=QUEUED):
        name = row["archiver"]
        try:
            archiver = get_archiver(name, **(archiver_config or {}).get(name, {}))
            outcome = archiver.retry(row)
        except CapsuleError as exc:
            outcome = ArchiveResult(archiver=name, status=FAILED, target=row.get("target") or "",
                                    request_id=row.get("request_id"), details={"reason": str(exc)})
        result = _result_for(row, outcome)
        _record(registry, result)
        results.append(result)
    return results


def poll_status(registry: Any, capsule_id: str | None = None,
                archiver_config: dict[str, dict[str, Any]] | None = None) -> list[ArchiveResult]:
    """Ask the archives about every ``pending`` request and record the answers."""
    results = []
    for row in registry.archival_requests(capsule_id=capsule_id, status=PENDING):
        name = row["archiver"]
        archiver = get_archiver(name, **(archiver_config or {}).get(name, {}))
        result = _result_for(row, archiver.status(row))
        _record(registry, result)
        results.append(result)
    return results
