"""``ro-crate-preview.html``: the page a person reads, made by a Jinja2 template with autoescape on.

Every value comes from the manifest, the environment record or the metadata and is escaped by the
template engine; nothing is built by string concatenation. The JSON-LD of ``ro-crate-metadata.json`` is
embedded in ``<head>`` as ``<script type="application/ld+json">``: the same JSON, with ``<``, ``>`` and ``&``
written as JSON escapes so no ``</script>`` or ``<!--`` can end or alter the script element.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..hashing import Digests, write_file
from ..manifest import FileRecord, Manifest
from .citation import _public_origin
from .plan import MANIFEST_FILE, PREVIEW_FILE, RO_CRATE_VERSION

_ENV = None


def _environment():
    global _ENV
    if _ENV is None:
        from jinja2 import ChainableUndefined, Environment, PackageLoader, select_autoescape

        _ENV = Environment(loader=PackageLoader("scidex_nbcapsule.crate", "templates"),
                           autoescape=select_autoescape(default=True, default_for_string=True),
                           # a key an older or another kernel's environment record lacks shows as nothing
                           undefined=ChainableUndefined, keep_trailing_newline=True)
    return _ENV


def script_json(doc: dict[str, Any]) -> str:
    """JSON text safe inside a ``<script>`` element: parses to ``doc``, holds no ``<``, ``>`` or ``&``."""
    text = json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    # outside strings JSON has none of these characters; inside them the \\u escapes mean the same text
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _href(record: FileRecord) -> str | None:
    if not record.in_crate:
        return record.linked_from
    return quote(record.path)


def render_preview(doc: dict[str, Any], manifest: Manifest, environment: dict[str, Any], *,
                   manifest_digests: Digests | None = None, resolvers: dict[str, str] | None = None) -> str:
    """The HTML page for a crate whose metadata is ``doc``; ``resolvers`` maps a path to its SWHID's URL."""
    from markupsafe import Markup

    from .metadata import spdx_uri

    resolvers = resolvers or {}
    files = [{"path": r.path, "role": r.role, "size": r.size, "sha256": r.sha256, "swhid": r.swhid,
              "href": _href(r), "resolver": resolvers.get(r.path)} for r in manifest.files]
    if manifest_digests is not None:
        from ..swhid import content_swhid

        files.append({"path": MANIFEST_FILE, "role": "provenance", "size": manifest_digests.size,
                      "sha256": manifest_digests.sha256, "swhid": content_swhid(manifest_digests.sha1_git),
                      "href": MANIFEST_FILE, "resolver": None})
        files.sort(key=lambda f: f["path"])
    by_path = {f["path"]: f for f in files}
    python = environment.get("python") or {}
    platform = environment.get("platform") or {}
    platform_text = " ".join(str(platform.get(k)) for k in ("system", "release", "machine") if platform.get(k)) \
        if isinstance(platform, dict) else str(platform)
    identifier = manifest.identifier or f"urn:uuid:{manifest.capsule_id[len('capsule-'):]}"
    cite_as = manifest.identifier if manifest.identifier and manifest.identifier.startswith(("http://", "https://")) \
        else None
    if manifest.identifier and manifest.identifier.startswith("10."):
        cite_as = f"https://doi.org/{manifest.identifier}"
    context = {
        "manifest": manifest,
        "jsonld": Markup(script_json(doc)),
        "license_url": spdx_uri(manifest.license),
        "cite_as": cite_as,
        "identifier": identifier,
        "run": manifest.execution,
        "inputs": [by_path[r.path] for r in manifest.files if r.role == "input"],
        "outputs": [by_path[r.path] for r in manifest.files if r.role == "output"],
        "notebook_href": quote(manifest.notebook),
        "git": {key: (manifest.git or {}).get(key) for key in ("commit", "branch", "dirty", "patch_file", "reason")}
        | {key: list((manifest.git or {}).get(key) or []) for key in ("changed_files", "untracked_used")},
        "origin": _public_origin(manifest),
        "python": {"implementation": python.get("implementation", "Python"), "version": python.get("version", "")},
        "kernel": environment.get("kernel") or {},
        "platform": platform_text or "platform not recorded",
        "imported": sorted((environment.get("imported") or {}).items()),
        "packages": len(environment.get("packages") or {}),
        "files": files,
        "ro_crate_version": RO_CRATE_VERSION,
    }
    return _environment().get_template("preview.html.j2").render(**context)


def write_preview(root: Path, html: str, *, durable: bool = False) -> None:
    """Write the page; with ``durable`` it is on disk when this returns."""
    write_file(root / PREVIEW_FILE, html.encode("utf-8"), durable=durable)
