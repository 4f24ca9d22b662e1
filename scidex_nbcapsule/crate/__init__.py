"""Capsules as RO-Crates (folder, RO-Crate zip or .eln) and opening them again safely.

The ``rocrate`` library owns the JSON-LD model; this package decides what goes in
(payload, environment, Binder configuration, citation, per-cell provenance) and how
it is written (atomic, durable) and read back (without trusting the archive).

Modules: :mod:`.plan` (names and the writer's plan), :mod:`.writer` (atomic durable write),
:mod:`.metadata` (RO-Crate JSON-LD), :mod:`.layouts` (folder, zip, eln), :mod:`.reading`
(open_crate, safe_extract), :mod:`.citation` (CITATION.cff), :mod:`.preview` (ro-crate-preview.html).
"""

from .citation import _public_origin, citation_cff
from .layouts import _zip_folder
from .metadata import build_metadata, content_address, spdx_uri
from .plan import (CRATE_OWN_FILES, DEFAULT_MAX_UNZIP_BYTES, ENVIRONMENT_PREFIXES, MANIFEST_FILE,
                   MAX_COMPRESSION_RATIO, METADATA_FILE, NOTEBOOK_FORMAT, PARTIAL_PREFIX, PREVIEW_FILE,
                   PROCESS_RUN_CRATE, RO_CRATE_VERSION, WORKFLOW_RUN_CONTEXT, CratePlan, PayloadFile,
                   encoding_format)
from .reading import OpenedCrate, check_metadata, max_unzip_bytes, open_crate, safe_extract
from .writer import (_check_destination, _pid_alive, clean_stale_partials, crate_checksum, write_crate,
                     write_metadata)

__all__ = [
    "CRATE_OWN_FILES", "DEFAULT_MAX_UNZIP_BYTES", "ENVIRONMENT_PREFIXES", "MANIFEST_FILE", "MAX_COMPRESSION_RATIO",
    "METADATA_FILE", "NOTEBOOK_FORMAT", "PARTIAL_PREFIX", "PREVIEW_FILE", "PROCESS_RUN_CRATE", "RO_CRATE_VERSION",
    "WORKFLOW_RUN_CONTEXT", "CratePlan", "OpenedCrate", "PayloadFile", "build_metadata", "check_metadata",
    "citation_cff", "clean_stale_partials", "content_address", "crate_checksum", "encoding_format",
    "max_unzip_bytes", "open_crate", "safe_extract", "spdx_uri", "write_crate", "write_metadata",
]
