"""Conformance of a crate as a stranger's validator sees it (``roc-validator``), offline.

The validator fetches the JSON-LD contexts a crate names; machines without web
access get them from copies shipped in ``scidex_nbcapsule/contexts`` that are
seeded into the validator's HTTP cache.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import CapsuleError

#: Published contexts and the files that hold them (see contexts/README.md).
CONTEXTS = {
    "https://w3id.org/ro/crate/1.1/context": "ro-crate-1.1-context.jsonld",
    "https://w3id.org/ro/terms/workflow-run/context": "workflow-run-context.jsonld",
}
DEFAULT_PROFILE = "process-run-crate-0.5"


@dataclass
class ValidationReport:
    profile: str
    severity: str
    passed: bool
    issues: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        if self.passed:
            return f"valid ({self.profile}, {self.severity}: 0 issues)"
        return f"INVALID ({self.profile}, {self.severity}: {len(self.issues)} issues)"


def seed_cache(cache_path: str | os.PathLike, contexts_dir: str | os.PathLike | None = None) -> Path:
    """Store the published contexts in a requests-cache SQLite cache at ``cache_path`` (returned).

    ``contexts_dir`` holds the documents under the names in :data:`CONTEXTS`;
    by default, the copies shipped in the package.
    """
    import requests
    import requests_cache
    from requests.adapters import BaseAdapter
    from urllib3 import HTTPResponse

    try:
        if contexts_dir is None:
            documents = {url: resources.files("scidex_nbcapsule").joinpath("contexts", name).read_bytes()
                         for url, name in CONTEXTS.items()}
        else:
            documents = {url: Path(contexts_dir, name).read_bytes() for url, name in CONTEXTS.items()}
    except OSError as exc:
        raise CapsuleError(f"a JSON-LD context the offline validator needs cannot be read: {exc}",
                           hint="reinstall scidex-nbcapsule (its contexts/ folder is incomplete)") from exc

    class _Shipped(BaseAdapter):
        def send(self, request, **kwargs):  # noqa: ANN001, D102 - requests' adapter protocol
            body = documents.get(request.url.rstrip("/")) or documents.get(request.url) or b""
            status = 200 if body else 404
            raw = HTTPResponse(body=io.BytesIO(body), headers={"Content-Type": "application/ld+json"},
                               status=status, preload_content=False, request_url=request.url)
            return self.build_response(request, raw)

        def build_response(self, request, raw):  # noqa: ANN001, ANN201
            response = requests.Response()
            response.status_code = raw.status
            response.headers = requests.structures.CaseInsensitiveDict(raw.headers)
            response.raw = raw
            response.url = request.url
            response.request = request
            response.encoding = "utf-8"
            return response

        def close(self) -> None:  # noqa: D102
            pass

    session = requests_cache.CachedSession(cache_name=str(cache_path), backend="sqlite", expire_after=-1)
    session.mount("https://", _Shipped())
    for url in CONTEXTS:
        session.get(url)
    session.close()
    return Path(cache_path)


def bag_payload(folder: Path) -> Path | None:
    """``data/`` of a BagIt bag (RFC 8493) that holds an RO-Crate there, else None."""
    if folder.is_dir() and (folder / "bagit.txt").is_file() and (folder / "data" / "ro-crate-metadata.json").is_file():
        return folder / "data"
    return None


def default_cache_path() -> Path:
    from .config import user_cache

    return user_cache("roc-validator-http-cache")


def require_validator() -> None:
    """Fail early, before an export writes anything, when the ``[validate]`` extra is not installed."""
    import importlib.util

    for module in ("rocrate_validator", "requests_cache"):  # seed_cache needs requests_cache; one extra brings both
        if importlib.util.find_spec(module) is None:
            raise CapsuleError(f"the RO-Crate validator is not installed ({module} is missing)",
                               hint="pip install 'scidex-nbcapsule[validate]' (it brings roc-validator and "
                                    "requests-cache)")


def validate_crate(crate: str | os.PathLike, *, profile: str = DEFAULT_PROFILE, severity: str = "REQUIRED",
                   cache_path: str | os.PathLike | None = None, seed: bool = True) -> ValidationReport:
    """Run ``roc-validator`` offline on a crate folder, RO-Crate zip, ``.eln`` or BagIt bag of a crate
    (``seed=False``: the cache is ready)."""
    require_validator()
    try:
        from rocrate_validator import services
        from rocrate_validator.models import ValidationSettings
    except ImportError as exc:  # installed, but one of its own dependencies is broken
        raise CapsuleError(f"the RO-Crate validator cannot be imported: {exc}",
                           hint="pip install --force-reinstall 'scidex-nbcapsule[validate]'") from exc

    cache = Path(cache_path) if cache_path else default_cache_path()
    cache.parent.mkdir(parents=True, exist_ok=True)
    if seed:
        seed_cache(cache)
    crate = Path(crate).resolve()
    if not crate.is_dir() and zipfile.is_zipfile(crate):
        # roc-validator reads neither the .eln suffix nor a zip whose crate sits in one top folder (the ELN
        # layout): check the same bytes unpacked, with the same refusal of unsafe members as every reader.
        from .crate import open_crate

        with open_crate(crate) as opened:
            return validate_crate(opened.root, profile=profile, severity=severity, cache_path=cache, seed=False)
    bagged = bag_payload(crate)
    if bagged is not None:  # a BagIt bag of a crate: the crate is its payload, data/
        return validate_crate(bagged, profile=profile, severity=severity, cache_path=cache, seed=False)
    settings = ValidationSettings(rocrate_uri=str(crate), profile_identifier=profile,
                                  requirement_severity=severity, offline=True, cache_path=cache)
    result = services.validate(settings)
    issues = []
    for issue in result.get_issues():
        check = issue.check
        issues.append({"check": check.identifier, "severity": issue.severity.name,
                       "message": issue.message, "focus": str(getattr(issue, "violatingEntity", "") or "")})
    return ValidationReport(profile=profile, severity=severity, passed=result.passed(), issues=issues)
