"""Every failure a user can meet is a :class:`CapsuleError` whose message says what to do next.

Shells turn these into a ``UsageError`` (magics), an exit code (CLI), an HTTP
status (server) or a message (widget); nothing else should escape to users.
"""

from __future__ import annotations


class CapsuleError(Exception):
    """Root of every error this package raises on purpose."""

    #: CLI exit status for this kind of failure.
    exit_code = 2
    #: HTTP status the server answers with.
    http_status = 400

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message}\n  → {hint}")


class NotebookError(CapsuleError):
    """The notebook cannot be found, read or parsed."""


class NotebookNotFound(NotebookError):
    """The kernel cannot tell which notebook it runs."""


class InputFileError(CapsuleError):
    """A declared or detected file is missing, unreadable or outside the project."""


class PathOutsideProject(InputFileError):
    """A path (or symlink target) lies outside the project root."""


class DestinationExists(CapsuleError):
    """The export target already exists; capsules are never overwritten silently."""

    http_status = 409


class ExportError(CapsuleError):
    """Writing the crate failed (disk full, permissions); nothing partial was left."""


class ConfigError(CapsuleError):
    """Configuration (license, authors, sanitisers, tolerances) is missing or invalid."""


class CrateError(CapsuleError):
    """A crate on disk cannot be read: bad metadata, bad manifest, unsafe zip."""


class UnsafeArchive(CrateError):
    """A zip member would escape the working folder, is a link, or is a bomb."""


class FixityError(CrateError):
    """File sizes or digests differ from what the crate records."""


class ManifestError(CrateError):
    """``capsule.json`` does not follow the schema or its digest does not match."""


class ExecutionFailed(CapsuleError):
    """Running the notebook failed: a cell raised, timed out, or the kernel died."""

    exit_code = 5


class GitError(CapsuleError):
    """Git facts could not be read."""


class SWHIDError(CapsuleError):
    """A Software Heritage identifier is invalid or of an unsupported type."""


class ArchiveError(CapsuleError):
    """An archiver (BagIt, Software Heritage) failed."""


class RegistryError(CapsuleError):
    """The capsule registry failed."""

    exit_code = 3
    http_status = 500


class RegistryUnavailable(RegistryError):
    """The database is down or refused the login."""

    http_status = 503


class CapsuleNotFound(RegistryError):
    """No capsule with that id is registered."""

    exit_code = 4
    http_status = 404


class InvalidId(CapsuleError):
    """A capsule id or filter from the user is malformed."""


class VerificationError(CapsuleError):
    """Verification could not be carried out at all (not a verdict)."""


class CaptureError(CapsuleError):
    """A capture layer could not be set up or read (the interposer, the file watcher, the kernel spec)."""
