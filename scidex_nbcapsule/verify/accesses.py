"""What the traced re-run touched, against what the capsule holds: inputs it lacks, outputs it never recorded.

The re-run's kernel runs with the ``LD_PRELOAD`` interposer (see
:mod:`scidex_nbcapsule.capture.interposer`), so every file it and its children
opened, renamed or deleted is known. Three findings come out of that record:

* a file read from **outside the working folder** (the temporary copy of the
  crate the notebook runs in) is an input the capsule does not hold, even when
  this machine still has it: the capsule is **incomplete**;
* a file the notebook failed to open because it is **not in the crate**
  (a ``FileNotFoundError`` naming it; failed opens leave no trace record, so the
  error itself is the evidence) makes the capsule incomplete too, rather than the
  library's own error being an ``execution-failed``;
* a file **written inside the working folder** that the capsule does not record
  as an output was compared with nothing: it is listed as *not compared*, and
  the verdict cannot be ``verified``.

What counts as the environment rather than the analysis (the Python
installation, system folders, Jupyter's runtime folder, hidden folders, the
package's own temporary folders) is decided by
:func:`scidex_nbcapsule.capture.paths.is_environment_path`, as at export. On top
of that, the kernel's own connection file, files the re-run itself created
(temporary files), code the interpreter loads (``.py``, ``.pyc``, extension
modules: export likewise treats imported modules' folders as code, never as
external inputs) and hidden files such as ``~/.netrc`` (tool configuration) are
not inputs.

Without the interposer (no C compiler, ``NBCAPSULE_INTERPOSER=0``) only the
``FileNotFoundError`` check is made, and the report says that the rest was not.
"""

from __future__ import annotations

import importlib.machinery
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..capture.paths import IGNORED_PARTS, is_environment_path, normalise
from ..capture.recorder import _changed_since
from ..manifest import Manifest
from .rerun import ExecutionProblem, RerunResult

#: File name endings the interpreter loads as code (sources, byte code, extension modules, path files).
CODE_SUFFIXES = tuple(sorted(set(importlib.machinery.all_suffixes()) | {".pyc", ".pyo", ".pth"}))

#: ``OSError.__str__`` for a missing file: ``[Errno 2] No such file or directory: 'x'`` (``-> 'y'`` for two).
_STRERROR = re.compile(r"No such file or directory: (['\"])(?P<path>.+?)\1")
_QUOTED = re.compile(r"'([^'\n]+)'|\"([^\"\n]+)\"")
#: Something that looks like a file name: a folder separator, or an extension beginning with a letter.
_PATHLIKE = re.compile(r"/|\.[A-Za-z][A-Za-z0-9_]{0,15}$")
_MISSING_WORDS = ("No such file", "errno = 2", "[Errno 2]", "does not exist", "not found")


@dataclass
class IncompleteFile:
    """An input the capsule lacks: ``kind`` is ``outside`` (read from outside the crate) or ``missing``
    (the notebook's open failed: neither the crate nor, for a path outside it, this machine has the file)."""

    path: str  # crate path, or the path outside the crate as the notebook used it
    kind: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class NotCompared:
    """A file the re-run wrote in the working folder that the capsule holds no recorded version of."""

    path: str  # crate path
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AccessCheck:
    """The findings; ``traced`` False means only failed opens (from the cell's error) could be checked."""

    traced: bool
    untraced_reason: str | None = None
    incomplete: list[IncompleteFile] = field(default_factory=list)
    not_compared: list[NotCompared] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class _Place:
    """Where a path lies: inside the working folder (the crate copy), in the verifier's own folders, or elsewhere."""

    def __init__(self, copy: Path, own: Iterable[Path]) -> None:
        self.copy = {str(form).rstrip(os.sep) + os.sep for form in (copy.absolute(), copy.resolve())}
        self.copy_root = str(copy.absolute())
        self.own = {str(form).rstrip(os.sep) + os.sep for p in map(Path, own) for form in (p.absolute(), p.resolve())}

    def crate_path(self, path: str) -> str | None:
        """``path`` relative to the working folder (POSIX), or None when it lies outside it."""
        for prefix in self.copy:
            if path.startswith(prefix):
                return path[len(prefix):].replace(os.sep, "/")
        return None

    def is_own(self, path: str) -> bool:
        return path.startswith(tuple(self.own))

    def shown(self, path: str) -> str:
        """How a path outside the working folder is named: relative to the crate when it sits beside the copy
        (``../shared/x.csv``: the temporary folder's name means nothing to the reader), else absolute."""
        parent = os.path.dirname(self.copy_root) + os.sep
        if path.startswith(parent):
            return os.path.relpath(path, self.copy_root).replace(os.sep, "/")
        return path


def _is_environment(path: str, place: _Place, verifier_dir: str | None) -> bool:
    if place.is_own(path):
        return True  # the rebuilt environment the kernel runs in (--fresh-env), wherever it is cached
    if verifier_dir and path.startswith(verifier_dir):
        # beside the copy in the verifier's own temporary folder: is_environment_path would call it ours,
        # but the notebook reached it with a path climbing out of the crate
        return False
    return is_environment_path(path)


def check_accesses(result: RerunResult, manifest: Manifest, copy: Path, *,
                   own_dirs: Iterable[Path] = ()) -> AccessCheck:
    """Inputs the re-run of the notebook in ``copy`` read but the crate lacks, and outputs it wrote unrecorded.

    ``own_dirs`` are folders of the verifier's own, never the notebook's (the environment ``--fresh-env``
    runs the kernel in).
    """
    own = list(own_dirs)
    place = _Place(copy, own)
    verifier_dir = str(copy.absolute().parent).rstrip(os.sep) + os.sep
    check = AccessCheck(traced=result.traced, untraced_reason=result.untraced_reason)
    if result.traced:
        _check_trace(result, manifest, place, verifier_dir, check)
    if result.problem is not None:
        workdir = (copy / manifest.notebook).parent
        _check_missing(result.problem, manifest, place, verifier_dir, workdir, check)
    return check


def _check_trace(result: RerunResult, manifest: Manifest, place: _Place, verifier_dir: str,
                 check: AccessCheck) -> None:
    reads: set[str] = set()
    written: set[str] = set()
    for event in result.accesses:
        if event.op == "read":
            reads.add(event.path)
        elif event.op == "write":
            written.add(event.path)
        elif event.op == "update":  # opened read-write: a write only if the file changed since
            (written if _changed_since(event.path, event.target) else reads).add(event.path)
        elif event.op == "rename":
            written.add(event.path)  # moved away: the run's own file, or one it made from an input
            if event.target:
                written.add(event.target)
    kernel = {form for f in result.kernel_files for form in (os.path.abspath(f), os.path.realpath(f))}
    external = {e.get("path"): e for e in manifest.external_inputs if isinstance(e, dict)}
    for path in sorted(reads - written - kernel):
        if place.crate_path(path) is not None or _is_environment(path, place, verifier_dir):
            continue  # in the crate (or made by the run), or the machine's
        name = os.path.basename(path)
        if name.startswith(".") or name.endswith(CODE_SUFFIXES):
            continue  # tool configuration (~/.netrc), code the interpreter loads
        shown = place.shown(path)
        message = f"{shown} was read from outside the crate; it exists on this machine, but the capsule does not hold it"
        listed = external.get(path)
        if listed is not None:
            packed = listed.get("included_as")
            message += (f" (capsule.json lists it under external_inputs; a copy is packed as {packed}, but the "
                        "notebook reads the original place)" if packed else
                        " (capsule.json lists it under external_inputs, not packed: export with "
                        "--include-external, or move it into the project)")
        check.incomplete.append(IncompleteFile(shown, "outside", message))
    outputs = {r.path for r in manifest.by_role("output")}
    roles = {r.path: r.role for r in manifest.files}
    for path in sorted(written):
        rel = place.crate_path(path)
        if rel is None or rel in outputs or rel == manifest.notebook:
            continue
        parts = rel.split("/")[:-1]
        if any(part.startswith(".") or part in IGNORED_PARTS for part in parts) or not os.path.isfile(path):
            continue  # caches (__pycache__, hidden folders), or a temporary file deleted since
        if rel in roles:
            message = (f"the re-run rewrote {rel}, which the capsule records as {_article(roles[rel])}, not as an "
                       "output: its new content was not compared with anything")
        else:
            message = (f"the re-run wrote {rel}, which the capsule does not record as an output: it was not "
                       "compared with anything (declare it as an output, or do not exclude it, when exporting)")
        check.not_compared.append(NotCompared(rel, message))


def _article(role: str) -> str:
    return f"an {role}" if role[:1] in "aeiou" else f"a {role}"


def _is_missing_file_error(problem: ExecutionProblem) -> bool:
    if problem.kind != "cell-error" or not problem.ename:
        return False
    name = problem.ename.rsplit(".", 1)[-1]
    if name == "FileNotFoundError":
        return True
    return name in ("OSError", "IOError") and any(w in (problem.evalue or "") for w in _MISSING_WORDS)


def missing_file_candidates(evalue: str) -> list[str]:
    """The paths an error about a missing file names, most precise form first.

    ``OSError``'s own form (``No such file or directory: 'x'``) is taken as it is; otherwise quoted
    strings that look like file names (h5py: ``name = 'x.h5'``), else words that do (pandas:
    ``File x.h5 does not exist``, pyarrow: the bare path).
    """
    found = [m.group("path") for m in _STRERROR.finditer(evalue)]
    if not found:
        found = [a or b for a, b in _QUOTED.findall(evalue) if _PATHLIKE.search(a or b)]
    if not found:
        words = [w.strip(",;:()[]") for w in evalue.split()]
        found = [w.rstrip(".") if w.endswith(".") and _PATHLIKE.search(w.rstrip(".")) else w for w in words]
        found = [w for w in found if w and _PATHLIKE.search(w) and "://" not in w]
    unique: list[str] = []
    for item in found:
        if item not in unique:
            unique.append(item)
    return unique


def _check_missing(problem: ExecutionProblem, manifest: Manifest, place: _Place, verifier_dir: str,
                   workdir: Path, check: AccessCheck) -> None:
    """A cell that failed on a missing file: name the file when the crate does not hold it."""
    if not _is_missing_file_error(problem):
        return
    cell = f"cell {problem.cell_index + 1}" if problem.cell_index is not None else "a cell"
    outputs = {r.path for r in manifest.by_role("output")}
    withheld = {w.get("what") for w in manifest.withheld if isinstance(w, dict) and w.get("kind") == "file"}
    gone = set((manifest.capture or {}).get("missing") or [])
    known = {i.path for i in check.incomplete}
    for candidate in missing_file_candidates(problem.evalue or ""):
        path = normalise(os.path.expanduser(candidate), str(workdir))
        if os.path.lexists(path):
            continue  # not the file that is missing
        rel = place.crate_path(path)
        if rel is not None:
            if rel in outputs:
                check.notes.append(f"{cell} reads {rel}, which the capsule records as an output: outputs are "
                                   "removed before the re-run, so the notebook must write it before reading it")
                continue
            why = ("it was withheld at export as a possible secret" if rel in withheld else
                   "it was already gone when the capsule was exported" if rel in gone else
                   "the capsule never recorded it (excluded, or not seen being read, at export)")
            if rel not in known:
                check.incomplete.append(IncompleteFile(rel, "missing", (
                    f"the notebook reads {rel}, which is not in the crate ({problem.ename} in {cell}): {why}")))
                known.add(rel)
            continue
        if _is_environment(path, place, verifier_dir):
            continue  # the machine's own file: an execution failure, not a gap in the capsule
        shown = place.shown(path)
        if shown not in known:
            check.incomplete.append(IncompleteFile(shown, "missing", (
                f"the notebook reads {shown}, outside the crate, and it does not exist on this machine "
                f"({problem.ename} in {cell}): the capsule does not hold it")))
            known.add(shown)
