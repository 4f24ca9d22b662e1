"""What a crate is made of: the names every layer agrees on, the payload files and the plan the writer follows."""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import DEFAULT_PUBLISHER  # noqa: F401 - the writer's default, named here
from ..manifest import Manifest

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
#: The crate's own README (Workflow RO-Crate), written unless the payload has one at the top.
README_FILE = "README.md"

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
    #: The Organization that publishes the crate's metadata (``name``, ``url``); None: the configured one
    #: (:func:`scidex_nbcapsule.config.resolve_publisher` over the user's config and environment).
    publisher: dict[str, str] | None = None
