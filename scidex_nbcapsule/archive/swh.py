"""Ask Software Heritage to archive the capsule's git origin ("Save Code Now").

Software Heritage archives repositories, not crates: the request names the
public origin URL of the notebook's repository, and a successful visit yields
a snapshot SWHID that, together with the commit SWHID already in the capsule,
makes the code retrievable forever. Requests are asynchronous: ``archive``
submits, ``status`` polls. When the archive cannot be reached the result is
``queued`` (nothing raised, nothing lost) so :func:`~scidex_nbcapsule.archive.retry_pending`
can send it later.

API: ``POST/GET {base}/api/1/origin/save/git/url/{origin}/`` and
``GET {base}/api/1/origin/save/{id}/``; answers carry ``id``,
``save_request_status`` (accepted | rejected | pending),
``save_task_status`` (not created | not yet scheduled | scheduled | running |
succeeded | failed), ``visit_status`` and ``snapshot_swhid``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from ..errors import ArchiveError, SWHIDError
from ..manifest import Manifest
from ..swhid import parse as parse_swhid, revision_swhid, validate_origin
from . import FAILED, PENDING, QUEUED, REJECTED, SUCCEEDED, Archiver, ArchiveResult

DEFAULT_BASE_URL = "https://archive.softwareheritage.org"
URL_ENV = "SCIDEX_NBCAPSULE_SWH_URL"
TOKEN_ENV = "SCIDEX_NBCAPSULE_SWH_TOKEN"
#: (connect, read) seconds: the archive answers quickly or not at all.
DEFAULT_TIMEOUT = (5.0, 30.0)
_KEPT_FIELDS = ("id", "origin_url", "visit_type", "save_request_date", "save_request_status", "save_task_status",
                "visit_date", "visit_status", "snapshot_swhid", "note", "request_url")


def _details_of(request: dict[str, Any]) -> dict[str, Any]:
    details = request.get("details") or {}
    if isinstance(details, str):
        try:
            details = json.loads(details)
        except ValueError:
            details = {}
    return dict(details) if isinstance(details, dict) else {}


class SaveCodeNowArchiver(Archiver):
    """Submit the capsule's git origin to Software Heritage's Save Code Now and follow the request."""

    name = "swh"

    def __init__(self, base_url: str | None = None, token: str | None = None,
                 timeout: float | tuple[float, float] = DEFAULT_TIMEOUT, session: requests.Session | None = None) -> None:
        base = (base_url or os.environ.get(URL_ENV) or DEFAULT_BASE_URL).strip().rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ArchiveError(f"{base!r} is not a Software Heritage API address",
                               hint=f"set --swh-url or {URL_ENV} to e.g. {DEFAULT_BASE_URL}")
        if parts.username or parts.password:
            raise ArchiveError("the Software Heritage address must not contain credentials",
                               hint=f"put the token in {TOKEN_ENV} instead")
        self.base_url = base
        self._token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.timeout = timeout
        self._session = session

    # -- HTTP ------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "scidex-nbcapsule"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _origin_endpoint(self, origin: str) -> str:
        return f"{self.base_url}/api/1/origin/save/git/url/{quote(origin, safe=':/@+~.-_')}/"

    def _call(self, method: str, url: str) -> tuple[int | None, Any, str | None]:
        """(HTTP status, JSON body, transport error). Never raises for network trouble."""
        http = self._session or requests
        try:
            response = http.request(method, url, headers=self._headers(), timeout=self.timeout)
        except requests.RequestException as exc:
            return None, None, f"{type(exc).__name__}: {exc}"
        try:
            body = response.json()
        except ValueError:
            body = None
        return response.status_code, body, None

    # -- results -----------------------------------------------------------
    def _result(self, origin: str, capsule_id: str | None, status: str, answer: dict[str, Any] | None,
                extra: dict[str, Any]) -> ArchiveResult:
        details: dict[str, Any] = {"origin_url": origin, "api": self.base_url, **extra}
        request_id = None
        location = None
        if answer:
            details.update({k: answer[k] for k in _KEPT_FIELDS if k in answer and k != "origin_url"})
            if answer.get("id") is not None:
                request_id = str(answer["id"])
            snapshot = answer.get("snapshot_swhid")
            if snapshot:
                try:
                    parsed = parse_swhid(snapshot)
                    if parsed.object_type.value != "snp":
                        raise SWHIDError(f"{snapshot!r} is not a snapshot")
                    details["snapshot_swhid"] = str(parsed)
                    location = str(parsed)
                except SWHIDError as exc:
                    details.pop("snapshot_swhid", None)
                    details["warning"] = f"the archive answered an invalid snapshot SWHID: {exc}"
        return ArchiveResult(archiver=self.name, status=status, target=origin, capsule_id=capsule_id,
                             location=location, request_id=request_id, details=details)

    @staticmethod
    def _status_of(answer: dict[str, Any]) -> str:
        request_status = answer.get("save_request_status")
        task_status = answer.get("save_task_status")
        if request_status == "rejected":
            return REJECTED
        if task_status == "succeeded":
            return SUCCEEDED
        if task_status == "failed":
            return FAILED
        return PENDING

    def _interpret(self, origin: str, capsule_id: str | None, code: int | None, body: Any, error: str | None,
                   extra: dict[str, Any]) -> ArchiveResult:
        if error is not None:
            return self._result(origin, capsule_id, QUEUED, None, {
                **extra, "reason": f"Software Heritage could not be reached ({error}); the request is kept to be sent later"})
        if isinstance(body, list):
            body = max((b for b in body if isinstance(b, dict)), default=None,
                       key=lambda b: (str(b.get("save_request_date") or ""), b.get("id") or 0))
        if code is not None and 200 <= code < 300 and isinstance(body, dict):
            return self._result(origin, capsule_id, self._status_of(body), body, extra)
        reason = ""
        if isinstance(body, dict):
            reason = str(body.get("reason") or body.get("detail") or body.get("exception") or "")
        reason = reason or f"HTTP {code}"
        if code == 429 or (code is not None and code >= 500):
            return self._result(origin, capsule_id, QUEUED, None, {
                **extra, "http_status": code, "reason": f"Software Heritage is busy or failing ({reason}); retry later"})
        if code == 401:
            return self._result(origin, capsule_id, FAILED, None, {
                **extra, "http_status": code, "reason": f"Software Heritage refused the token ({reason})",
                "hint": f"check {TOKEN_ENV}, or unset it to save anonymously"})
        if code == 404 and extra.get("request_kind") == "status":
            return self._result(origin, capsule_id, PENDING, None, {
                **extra, "http_status": code, "reason": "Software Heritage does not know this request yet"})
        return self._result(origin, capsule_id, REJECTED, None, {
            **extra, "http_status": code, "reason": f"Software Heritage rejected the request ({reason})"})

    # -- Archiver interface ------------------------------------------------
    def submit(self, origin: str, capsule_id: str | None = None, extra: dict[str, Any] | None = None) -> ArchiveResult:
        """POST a Save Code Now request for ``origin``; ``queued`` if the archive cannot be reached."""
        origin = validate_origin(origin)
        code, body, error = self._call("POST", self._origin_endpoint(origin))
        return self._interpret(origin, capsule_id, code, body, error, {**(extra or {}), "request_kind": "save"})

    def archive(self, crate_path: Path, manifest: Manifest, *, origin: str | None = None, **options: Any) -> ArchiveResult:
        git = manifest.git or {}
        chosen = origin or manifest.swh_origin_url or git.get("origin_url")
        if not chosen:
            raise ArchiveError(f"capsule {manifest.capsule_id} names no public git origin for Software Heritage to save",
                               hint="pass the repository's public URL with --origin (Software Heritage archives "
                                    "repositories, not crates); or use --to bagit for a local archive")
        try:
            chosen = validate_origin(chosen)
        except SWHIDError as exc:
            raise ArchiveError(f"Software Heritage cannot save the origin of capsule {manifest.capsule_id}: {exc}",
                               hint="push the code to a public forge and pass its https URL with --origin") from exc
        extra: dict[str, Any] = {}
        commit = manifest.git_commit or git.get("commit")
        if commit:
            extra["revision"] = revision_swhid(commit)
        if git.get("dirty") or git.get("untracked_used"):
            extra["warning"] = ("the analysis used uncommitted changes or untracked files; Software Heritage will "
                                "only hold what is pushed, the rest is in the crate")
        return self.submit(chosen, manifest.capsule_id, extra)

    def retry(self, request: dict[str, Any], **options: Any) -> ArchiveResult:
        details = _details_of(request)
        extra = {k: details[k] for k in ("revision", "warning") if k in details}
        return self.submit(request.get("target") or details.get("origin_url"), request.get("capsule_id"), extra)

    def status(self, request: dict[str, Any]) -> ArchiveResult:
        if isinstance(request, ArchiveResult):
            request = request.to_dict()
        details = _details_of(request)
        origin = request.get("target") or details.get("origin_url")
        if not origin:
            raise ArchiveError("this archival request does not say which origin it was for")
        extra = {k: details[k] for k in ("revision", "warning") if k in details}
        extra["request_kind"] = "status"
        request_id = request.get("request_id") or details.get("id")
        if request_id is not None:
            url = f"{self.base_url}/api/1/origin/save/{quote(str(request_id), safe='')}/"
        else:
            url = self._origin_endpoint(origin)
        code, body, error = self._call("GET", url)
        result = self._interpret(origin, request.get("capsule_id"), code, body, error, extra)
        if error is not None:
            # Still unknown, not unsent: keep it pending so it is polled again rather than resubmitted.
            result.status = request.get("status") or PENDING
        if result.request_id is None and request_id is not None:
            result.request_id = str(request_id)
        if result.status == SUCCEEDED and extra.get("revision"):
            result.details["revision_archived"] = self._revision_archived(extra["revision"])
        return result

    def _revision_archived(self, revision: str) -> bool | None:
        """Whether the capsule's commit is in the archive (it is not if it was never pushed)."""
        code, _body, error = self._call("GET", f"{self.base_url}/api/1/revision/{revision.rsplit(':', 1)[-1]}/")
        if error is not None or code not in (200, 404):
            return None
        return code == 200
