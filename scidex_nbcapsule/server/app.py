"""Server-side state of the capsule API: configuration, path checks and background verification jobs.

Kept apart from the tornado handlers so the rules (what path a request may
touch, how a job moves from queued to done) read without HTTP around them.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections import OrderedDict
from pathlib import Path, PurePosixPath
from typing import Any

from traitlets import Int, Unicode
from traitlets.config import LoggingConfigurable

from ..errors import CapsuleError, InvalidId, PathOutsideProject
from ..manifest import is_capsule_id, utc_now

JOB_ID_PREFIX = "job-"


def jsonable(value: Any) -> Any:
    """Registry and verification results as plain JSON data, whatever shape they come in."""
    if hasattr(value, "to_dict"):
        return jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def check_capsule_id(value: str) -> str:
    if not is_capsule_id(value):
        raise InvalidId(f"{value[:80]!r} is not a capsule id", hint="ids look like capsule-<uuid4>")
    return value


def _inside(base: Path, relative: Any, what: str) -> Path:
    """``relative`` resolved under ``base``; refuses absolute paths, ``..`` and symlinks that lead out."""
    if not isinstance(relative, str) or not relative.strip() or "\x00" in relative or "\\" in relative:
        raise PathOutsideProject(f"{what} must be a relative path with '/' separators")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts:
        raise PathOutsideProject(f"{what} {relative!r} must stay inside {base.name or base}/ (no leading '/', no '..')")
    target = (base / pure).resolve()
    if base not in target.parents:
        raise PathOutsideProject(f"{what} {relative!r} leads outside the allowed folder")
    return target


@dataclasses.dataclass
class Job:
    """One verification run started through the API."""

    job_id: str
    capsule_id: str
    status: str = "queued"
    submitted: str = dataclasses.field(default_factory=utc_now)
    started: str | None = None
    finished: str | None = None
    verdict: str | None = None
    report: dict[str, Any] | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class CapsuleServer(LoggingConfigurable):
    """Settings of the capsule API and the verification jobs it runs."""

    db_url = Unicode("", config=True, help="Registry URL (sqlite:///... or postgresql://...); empty means "
                                           "$SCIDEX_NBCAPSULE_DB or the user's local SQLite catalogue.")
    export_root = Unicode("", config=True, help="Folder that export-files writes under; requests can never write "
                                                "outside it. Default: <root_dir>/capsule-exports.")
    verify_workers = Int(1, config=True, help="Verifications run at the same time; each starts a kernel.")
    cell_timeout = Int(600, config=True, help="Seconds a cell may run during verification.")
    jobs_kept = Int(200, config=True, help="Finished verification jobs remembered for GET capsules/jobs/{id}.")

    def __init__(self, *, root_dir: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = Path(root_dir).expanduser().resolve()
        self.export_dir = Path(self.export_root).expanduser().resolve() if self.export_root else \
            self.root / "capsule-exports"
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max(1, self.verify_workers))

    # -- registry ---------------------------------------------------------------------------
    def registry(self) -> Any:
        """A registry context manager for one request (backends are opened per call, so threads never share one)."""
        from ..registry import open_registry

        return open_registry(self.db_url or None)

    # -- paths ----------------------------------------------------------------------------
    def crate_path(self, relative: Any) -> Path:
        """A crate named by a request, which must lie under the server's root_dir."""
        return _inside(self.root, relative, "path")

    def export_path(self, relative: Any) -> Path:
        """Where export-files may write: always under :attr:`export_dir`."""
        return _inside(self.export_dir, relative, "dest")

    def shown(self, path: Path) -> str:
        """A path as the client may see it: relative to root_dir when it lies there."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    # -- verification jobs ----------------------------------------------------------------
    def submit_verification(self, capsule_id: str) -> Job:
        job = Job(job_id=f"{JOB_ID_PREFIX}{uuid.uuid4().hex}", capsule_id=capsule_id)
        with self._lock:
            self._jobs[job.job_id] = job
            self._forget_old()
        # Daemon threads, so a verification still running never holds up the server's shutdown.
        threading.Thread(target=self._verify, args=(job,), name=f"nbcapsule-{job.job_id}", daemon=True).start()
        return job

    def job(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _forget_old(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.status in ("done", "failed")]
        for key in finished[: max(0, len(self._jobs) - self.jobs_kept)]:
            del self._jobs[key]

    def _verify(self, job: Job) -> None:
        with self._slots:
            self._run_verification(job)

    def _run_verification(self, job: Job) -> None:
        from ..verify import verify

        job.status, job.started = "running", utc_now()
        try:
            report = verify(job.capsule_id, db=self.db_url or None, cell_timeout=self.cell_timeout)
        except CapsuleError as exc:
            job.error, job.status = str(exc), "failed"
        except Exception as exc:  # noqa: BLE001 - a job must end with a status, never vanish
            self.log.exception("scidex_nbcapsule: verification of %s crashed", job.capsule_id)
            job.error, job.status = f"unexpected {type(exc).__name__}: {exc}", "failed"
        else:
            job.report = jsonable(report)
            job.verdict = str(report.verdict)
            job.status = "done"
        job.finished = utc_now()

