"""Re-verification: is this capsule intact, and does its notebook still produce what it recorded?

Steps, in order: fixity (bytes vs ``capsule.json`` and ``ro-crate-metadata.json``),
environment drift (warnings), re-execution in a fresh kernel in a temporary
copy of the crate, comparison after normalisation, verdict, and a record in
the registry when the capsule is registered.

Verdicts and ``nbcapsule verify`` exit codes:

==============================  =========  ==================================================
verdict                         exit code  meaning
==============================  =========  ==================================================
``verified``                    0          every analysis cell and output file matched
``verified-within-tolerance``   0          matched up to numeric/image tolerances or masks, or the
                                           re-run wrote files the capsule has no recorded output for
``mismatch``                    10         a cell output or output file differs
``execution-failed``            11         a cell raised, timed out, or the kernel died
``fixity-failed``               12         a file is missing, extra or altered; not re-run
``incomplete``                  13         the re-run read a file the crate does not hold
(usage or capsule error)        2          bad arguments, unreadable or unsafe crate
(registry error)                3          the registry failed
(unknown capsule id)            4          no capsule with that id is registered
==============================  =========  ==================================================

Precedence when several apply: fixity-failed > incomplete > execution-failed > mismatch >
verified-within-tolerance > verified (see :func:`.report.decide`). The re-run is traced with the
``LD_PRELOAD`` interposer; without it (no C compiler, ``NBCAPSULE_INTERPOSER=0``) the report says that
reads outside the crate and unrecorded outputs were not checked (:mod:`.accesses`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

from ..crate import MANIFEST_FILE, OpenedCrate, open_crate
from ..errors import CapsuleError, CrateError, UnsafeArchive, VerificationError
from ..manifest import is_capsule_id, utc_now
from .accesses import IncompleteFile, NotCompared, check_accesses
from .compare import Difference, compare_notebooks, compare_output_files
from .environment import current_environment, environment_drift, rebuild
from .fixity import FixityProblem, check_fixity
from .normalizers import Settings, load_normalizers
from .report import (EXECUTION_FAILED, EXIT_CODES, FIXITY_FAILED, INCOMPLETE, MISMATCH, VERDICTS, VERIFIED,
                     VERIFIED_WITHIN_TOLERANCE, VerificationReport, decide)
from ..capture import VERIFYING_ENV
from .rerun import ExecutionProblem, rerun_notebook

#: Environment variable naming the registry when ``db`` is not given.
DB_ENV = "SCIDEX_NBCAPSULE_DB"
_SETTING_KEYS = ("rtol", "atol", "image_threshold", "sanitize")


def load_settings(crate_root: Path | None, notebook_dir: Path | None, config: dict[str, Any] | None = None,
                  *, project_dir: Path | None = None) -> Settings:
    """Tolerances and sanitisers; first match wins per key.

    Order: ``config`` given by the caller, ``capsule.toml`` beside the notebook
    in the crate, ``[tool.nbcapsule.verify]`` of a ``pyproject.toml`` in the
    crate, then ``capsule.toml`` / ``pyproject.toml`` of the project the
    verification runs in (``project_dir``, default the current folder), then
    the user's configuration. Keys may sit in a ``verify`` table or at the top
    level of ``capsule.toml``.
    """
    from ..config import load_config

    merged: dict[str, Any] = {}
    sources: list[tuple[str, dict[str, Any]]] = []
    if config:
        sources.append(("verify(config=...)", _verify_table(config)))
    if crate_root is not None:
        cfg = load_config(notebook_dir or crate_root, crate_root)
        sources.append(("the crate's capsule.toml / pyproject.toml", _verify_table(cfg.values)))
    project = project_dir or Path.cwd()
    cfg = load_config(project, project)
    sources.append((f"{project}/capsule.toml or pyproject.toml", _verify_table(cfg.values)))
    origin = "configuration"
    for source, values in sources:
        for key in _SETTING_KEYS:
            if key in values and key not in merged:
                merged[key] = values[key]
                origin = source
    return Settings.from_mapping(merged, source=origin)


def _verify_table(values: dict[str, Any]) -> dict[str, Any]:
    """Keys at the top level (``capsule.toml``) win over a ``verify`` table met in a farther file."""
    table = values.get("verify")
    found = {k: v for k, v in values.items() if k in _SETTING_KEYS}
    for key, value in (table.items() if isinstance(table, dict) else ()):
        found.setdefault(key, value)
    return found


@contextlib.contextmanager
def _registry(db: str | None) -> Iterator[Any]:
    from ..registry import open_registry

    with open_registry(db) as registry:
        yield registry


def _crate_location(info: Any) -> str | None:
    if not isinstance(info, dict):
        return None
    for key in ("crate_location", "location", "crate", "crate_path", "path"):
        value = info.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _read_capsule_id(path: Path) -> str | None:
    """Best effort, for a crate whose metadata cannot be opened: the id in its capsule.json."""
    try:
        if path.is_dir():
            data = json.loads((path / MANIFEST_FILE).read_text("utf-8"))
            value = data.get("capsule_id")
            return value if is_capsule_id(value) else None
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return None


def verify(crate_or_id: str | os.PathLike, *, db: str | None = None, cell_timeout: int = 600,
           total_timeout: int = 3600, fresh_env: bool = False, config: dict | None = None,
           record: bool = True) -> VerificationReport:
    """Check a crate (folder, ``.zip``, ``.eln``) or a registered capsule id and return the report.

    The verdict is in the report, not an exception: only when verification
    cannot be carried out at all (no such crate, an unsafe zip, a registry
    failure) is a :class:`CapsuleError` raised. With ``record``, a capsule that
    is registered (given by id, or found at ``db`` / ``$SCIDEX_NBCAPSULE_DB``)
    gets the verification recorded.
    """
    if os.environ.get(VERIFYING_ENV):
        raise VerificationError("verification was asked for from inside a notebook that is itself being verified",
                                hint="the outer verification already checks this capsule")
    if cell_timeout <= 0 or total_timeout <= 0:
        raise VerificationError("timeouts must be positive numbers of seconds")
    target = str(crate_or_id)
    with contextlib.ExitStack() as stack:
        registry = None
        expected_digest = None
        if is_capsule_id(target) and not Path(target).exists():
            registry = stack.enter_context(_registry(db))
            info = registry.get_capsule(target)
            expected_digest = info.get("manifest_digest")
            location = _crate_location(info)
            if location and Path(location).exists():
                path = Path(location)
            else:
                workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nbcapsule-fetch-")))
                try:
                    path = Path(registry.export_files(target, workdir / "crate"))
                except UnsafeArchive:
                    raise
                except CrateError as exc:
                    report = _failed_fetch(target, location, exc)
                    if record:
                        _record(registry, report)
                    return report
        else:
            path = Path(target).expanduser()
        report = _verify_path(path, cell_timeout=cell_timeout, total_timeout=total_timeout, fresh_env=fresh_env,
                              config=config, expected_digest=expected_digest)
        if record and report.capsule_id:
            if registry is None and (db or os.environ.get(DB_ENV)):
                registry = stack.enter_context(_registry(db))
            if registry is not None:
                _record(registry, report)
        return report


def _failed_fetch(capsule_id: str, location: str | None, exc: CrateError) -> VerificationReport:
    now = utc_now()
    return VerificationReport(verdict=FIXITY_FAILED, crate=location or capsule_id, started=now, finished=now,
                              seconds=0.0, capsule_id=capsule_id,
                              fixity=[FixityProblem(location or capsule_id, "unreadable", str(exc))])


def _record(registry: Any, report: VerificationReport) -> None:
    from ..errors import CapsuleNotFound, RegistryError

    try:
        registry.get_capsule(report.capsule_id)
    except CapsuleNotFound:
        report.notes.append(f"{report.capsule_id} is not registered; the verification was not recorded")
        return
    try:
        registry.record_verification(report.capsule_id, started=report.started, finished=report.finished,
                                     verdict=report.verdict, report=report.to_dict(),
                                     environment_digest=report.environment_digest)
    except RegistryError as exc:
        report.notes.append(f"the verification could not be recorded in the registry: {exc}")
        return
    report.recorded = True
    report.notes.append("recorded in the registry")


def _verify_path(path: Path, *, cell_timeout: int, total_timeout: int, fresh_env: bool,
                 config: dict | None, expected_digest: str | None = None) -> VerificationReport:
    started_at, started = utc_now(), time.monotonic()
    if not path.exists():
        raise CrateError(f"{path} does not exist", hint="give a capsule folder, .zip or .eln, or a registered id")
    if not path.is_dir() and not zipfile.is_zipfile(path):
        raise CrateError(f"{path} is neither a crate folder nor a zip file",
                         hint="give a capsule folder, .zip or .eln, or a registered capsule id")

    def finish(**fields: Any) -> VerificationReport:
        fields.setdefault("verdict", decide(fields.get("fixity", []), fields.get("execution"),
                                            fields.get("differences", []), fields.get("incomplete", []),
                                            fields.get("not_compared", [])))
        return VerificationReport(crate=str(path), started=started_at, finished=utc_now(),
                                  seconds=time.monotonic() - started, fresh_env=fresh_env, **fields)

    with contextlib.ExitStack() as stack:
        try:
            opened = stack.enter_context(open_crate(path))
        except UnsafeArchive:
            raise
        except CrateError as exc:
            problem = FixityProblem(MANIFEST_FILE if "capsule.json" in str(exc) else path.name, "manifest", str(exc))
            return finish(fixity=[problem], capsule_id=_read_capsule_id(path))
        if expected_digest and opened.manifest.manifest_digest != expected_digest:
            return finish(fixity=[FixityProblem(MANIFEST_FILE, "manifest", (
                f"{path} holds a capsule whose manifest digest {opened.manifest.manifest_digest} is not the "
                f"registered {expected_digest}"))], capsule_id=opened.manifest.capsule_id,
                title=opened.manifest.title, notebook=opened.manifest.notebook)
        return _verify_opened(opened, finish, cell_timeout=cell_timeout, total_timeout=total_timeout,
                              fresh_env=fresh_env, config=config)


def _verify_opened(opened: OpenedCrate, finish: Any, *, cell_timeout: int, total_timeout: int, fresh_env: bool,
                   config: dict | None) -> VerificationReport:
    manifest = opened.manifest
    ident = {"capsule_id": manifest.capsule_id, "title": manifest.title, "notebook": manifest.notebook}
    problems = check_fixity(opened)
    if problems:
        return finish(fixity=problems, **ident)
    notebook_dir = (opened.root / manifest.notebook).parent
    settings = load_settings(opened.root, notebook_dir, config)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="nbcapsule-verify-") as tmp:
        work = Path(tmp)
        copy = work / "crate"
        shutil.copytree(opened.root, copy, symlinks=True)
        for record in manifest.by_role("output"):
            (copy / record.path).unlink(missing_ok=True)
        settings.masked_paths = {str(copy): "<crate>", str(opened.root.resolve()): "<crate>"}
        km = None
        python = None
        if fresh_env:
            env = rebuild(copy, timeout=total_timeout)
            km, python = env.kernel_manager(), env.python
            notes.append(f"ran in a virtual environment rebuilt from the crate's lock ({env.prefix}, "
                         f"{'built now' if env.built else 'reused from the cache'})")
            notes += env.warnings
        from ..environment import environment_digest

        # The environment snapshot (about 1 s of package metadata) is taken while the kernel runs; the client
        # mostly waits on the kernel, so the two barely compete. Modules both threads need are imported here
        # first, since two threads importing the same module can deadlock on its import lock.
        _preimport()
        with ThreadPoolExecutor(max_workers=1) as pool:
            snapshot = pool.submit(current_environment, python)
            result = rerun_notebook(copy / manifest.notebook, cell_timeout=cell_timeout,
                                    total_timeout=total_timeout, km=km)
            current = snapshot.result()
        drift = environment_drift(_recorded_environment(opened.root), current)
        digest = environment_digest(current)
        touched = check_accesses(result, manifest, copy, own_dirs=[env.prefix] if fresh_env else [])
        notes += touched.notes
        if not touched.traced:
            why = touched.untraced_reason or "the file-access tracer is not available"
            notes.append(f"the re-run was not traced ({why}): files read from outside the crate and files written "
                         "but not recorded as outputs were not checked")
        common = dict(environment_drift=drift, settings=settings.to_dict(), environment_digest=digest, notes=notes,
                      incomplete=touched.incomplete, not_compared=touched.not_compared, traced=touched.traced,
                      **ident)
        if result.problem is not None:
            return finish(execution=result.problem, **common)
        normalizers = load_normalizers(settings)
        recorded_nb = _read_nb(opened.root / manifest.notebook)
        differences = compare_notebooks(recorded_nb, result.notebook, normalizers)
        differences += compare_output_files(manifest, opened.root, copy, normalizers)
        return finish(differences=differences, **common)


def _preimport() -> None:
    import jupyter_client.kernelspec  # noqa: F401
    import nbclient  # noqa: F401

    from .. import environment  # noqa: F401


def _recorded_environment(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / "environment.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None


def _read_nb(path: Path) -> Any:
    from ..capture import read_notebook

    return read_notebook(path)


__all__ = ["verify", "VerificationReport", "Settings", "load_settings", "VERDICTS", "EXIT_CODES", "VERIFIED",
           "VERIFIED_WITHIN_TOLERANCE", "MISMATCH", "EXECUTION_FAILED", "FIXITY_FAILED", "INCOMPLETE", "Difference",
           "FixityProblem", "ExecutionProblem", "IncompleteFile", "NotCompared", "CapsuleError"]
