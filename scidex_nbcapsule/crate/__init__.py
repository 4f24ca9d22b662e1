"""Capsules as RO-Crates (folder, RO-Crate zip or .eln) and opening them again safely.

The ``rocrate`` library owns the JSON-LD model; this package decides what goes in
(payload, environment, Binder configuration, citation, per-cell provenance) and how
it is written (atomic, durable) and read back (without trusting the archive).

Modules: :mod:`.plan` (names and the writer's plan), :mod:`.writer` (atomic durable write),
:mod:`.metadata` (RO-Crate JSON-LD), :mod:`.layouts` (folder, zip, eln), :mod:`.reading`
(open_crate, safe_extract), :mod:`.citation` (CITATION.cff), :mod:`.preview` (ro-crate-preview.html).
"""

from __future__ import annotations

import importlib
from typing import Any

#: Where each public name lives; a submodule is imported only when one of its names is asked for, so that
#: reading a crate (``nbcapsule register``) does not import what writing one needs (swh.model, rocrate, Jinja2).
_NAMES = {
    "citation": ("_public_origin", "citation_cff"),
    "layouts": ("_zip_folder",),
    "metadata": ("build_metadata", "content_address", "spdx_uri"),
    "plan": ("CRATE_OWN_FILES", "DEFAULT_MAX_UNZIP_BYTES", "ENVIRONMENT_PREFIXES", "MANIFEST_FILE",
             "MAX_COMPRESSION_RATIO", "METADATA_FILE", "NOTEBOOK_FORMAT", "PARTIAL_PREFIX", "PREVIEW_FILE",
             "PROCESS_RUN_CRATE", "RO_CRATE_VERSION", "WORKFLOW_RUN_CONTEXT", "CratePlan", "PayloadFile",
             "encoding_format"),
    "checksum": ("crate_checksum",),
    "reading": ("OpenedCrate", "check_metadata", "max_unzip_bytes", "open_crate", "safe_extract"),
    "writer": ("_check_destination", "_pid_alive", "clean_stale_partials", "write_crate", "write_metadata"),
}
_MODULE_OF = {name: module for module, names in _NAMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "CRATE_OWN_FILES", "DEFAULT_MAX_UNZIP_BYTES", "ENVIRONMENT_PREFIXES", "MANIFEST_FILE", "MAX_COMPRESSION_RATIO",
    "METADATA_FILE", "NOTEBOOK_FORMAT", "PARTIAL_PREFIX", "PREVIEW_FILE", "PROCESS_RUN_CRATE", "RO_CRATE_VERSION",
    "WORKFLOW_RUN_CONTEXT", "CratePlan", "OpenedCrate", "PayloadFile", "build_metadata", "check_metadata",
    "citation_cff", "clean_stale_partials", "content_address", "crate_checksum", "encoding_format",
    "max_unzip_bytes", "open_crate", "safe_extract", "spdx_uri", "write_crate", "write_metadata",
]
