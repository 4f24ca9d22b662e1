"""Choosing what a capsule holds: the files the analysis touched, the files named, and what lies outside.

What the capture layers observed is sorted here into payload files with roles,
files read outside the project (listed, and packed under ``external/`` only on
request), files withheld as secrets, and the notices a user must see: cells
that ran unobserved, inputs gone since, what no layer could see.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from . import capture, redaction
from .crate import PayloadFile
from .errors import InputFileError, PathOutsideProject
from .hashing import sha256_file

#: Where files read outside the project root go in the crate with ``--include-external``.
EXTERNAL_DIR = "external"


@dataclass
class Selection:
    files: list[PayloadFile]
    withheld: list[dict[str, str]]
    #: Screens the very bytes about to be copied for secrets.
    screen: Callable[[PayloadFile, bytes], list[str]]
    external_inputs: list[dict[str, Any]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    #: ``capsule.json``'s ``capture`` section; None when nothing was captured live.
    capture: dict[str, Any] | None = None
    #: Capture segment → (files read, files written), as crate paths.
    per_segment: dict[int, tuple[set[str], set[str]]] = field(default_factory=dict)


def expand(paths: Iterable[str | os.PathLike], root: Path, base: Path) -> list[tuple[Path, bool]]:
    """Files named (flagged True) and every file under folders named (hidden and cache folders skipped)."""
    found: list[tuple[Path, bool]] = []
    for item in paths:
        real = capture.resolve_in_project(item, root, base=base)
        if real.is_dir():
            for dirpath, dirs, files in os.walk(real):
                dirs[:] = sorted(d for d in dirs if d not in capture.IGNORED_PARTS and not d.startswith("."))
                for name in sorted(files):
                    child = Path(dirpath, name)
                    # below a resolved folder only a symlink can lead elsewhere
                    found.append((capture.resolve_in_project(child, root) if os.path.islink(child) else child, False))
        else:
            found.append((real, True))
    return found


def relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError as exc:
        raise PathOutsideProject(f"{path} lies outside the project root {root}") from exc


def external_crate_path(original: str) -> str:
    """``/data/shared/x.csv`` → ``external/data/shared/x.csv``: the original path stays readable."""
    return EXTERNAL_DIR + "/" + Path(original).as_posix().lstrip("/")


def select_files(*, root: Path, notebook: Path, dest: Path, recorder: capture.Recorder | None, inputs: Sequence,
                 outputs: Sequence, excludes: Sequence[str], allow_secrets: Sequence, base: Path,
                 include_external: bool = False) -> Selection:
    """The files to copy, those withheld by name, files outside the project, and the notices to show."""
    roles: dict[str, PayloadFile] = {}
    allowed = {capture.resolve_in_project(p, root, base=base) for p in allow_secrets}
    known = redaction.secret_values(dict(os.environ))
    excludes = list(excludes)
    notices: list[str] = []
    external_inputs: list[dict[str, Any]] = []
    per_segment: dict[int, tuple[set[str], set[str]]] = {}
    capture_info: dict[str, Any] | None = None

    def add(path: Path, rel: str, role: str, *, read_sha256: str | None = None, named: bool = False,
            link_target: str | None = None, original_path: str | None = None) -> bool:
        if not named and capture.is_excluded(rel, excludes):
            return False
        real = path.resolve()
        if real == notebook or dest == real or dest in real.parents or dest in path.parents:
            return False
        current = roles.get(rel)
        if current is not None and current.role == "output":
            return True
        roles[rel] = PayloadFile(source=path, path=rel, role=role, read_sha256=read_sha256, link_target=link_target,
                                 original_path=original_path)
        return True

    if recorder is not None:
        seen = recorder.observe()
        for access in seen.files:
            rel = relative(access.path, root)
            link = relative(access.real, root) if access.real is not None and access.real != access.path else None
            role = "output" if access.written else "code" if access.path.suffix == ".py" else "input"
            if add(access.path, rel, role, read_sha256=access.read_sha256, link_target=link):
                _attribute(per_segment, access, rel)
        for access in seen.external:
            original = str(access.path)
            if is_excluded_external(original, excludes):
                continue
            try:
                entry: dict[str, Any] = {"path": original, "size": access.path.stat().st_size,
                                         "sha256": sha256_file(access.path)}
            except (OSError, InputFileError):  # gone (or unreadable) since it was read: say so with the others
                seen.missing.append(original)
                continue
            if access.real is not None and access.real != access.path:
                entry["link"] = str(access.real)
            if include_external:
                entry["included_as"] = external_crate_path(original)
                add(access.path, entry["included_as"], "input", named=True, original_path=original)
            external_inputs.append(entry)
            _attribute(per_segment, access, entry.get("included_as", original))
        unobserved = recorder.unobserved_cells()
        capture_info = {"mechanisms": list(recorder.mechanisms), "blind_spots": list(recorder.blind_spots),
                        "late_cells": len(unobserved)}
        if recorder.system is not None:
            capture_info["blind_spots"] += recorder.system.blind_spots()
        if seen.missing:
            capture_info["missing"] = seen.missing
            notices.append(f"{len(seen.missing)} file(s) the analysis read no longer exist, so the capsule cannot "
                           "hold them: " + _listing(seen.missing))
        if seen.unattributed:
            capture_info["unattributed"] = seen.unattributed
            notices.append(f"{len(seen.unattributed)} file event(s) happened between cells and were not packed "
                           "(the file watcher cannot tell who made them): " +
                           _listing(sorted({u["path"] for u in seen.unattributed})))
        if unobserved:
            notices.append(late_capture_message(len(unobserved)))
        if "interposer" not in recorder.mechanisms:  # with it, what remains unseen is rare: said in capsule.json
            for spot in capture_info["blind_spots"]:
                notices.append(f"capture blind spot: {spot}")
        if external_inputs and not include_external:
            notices.append(f"{len(external_inputs)} file(s) read outside the project root {root} are listed in "
                           "capsule.json (external_inputs) but not packed: " +
                           _listing([e["path"] for e in external_inputs]) + "; pass --include-external to pack them "
                           f"under {EXTERNAL_DIR}/, or move them into the project")

    declared = [(p, "input") for p in (recorder.declared_inputs if recorder else [])]
    declared += [(p, "output") for p in (recorder.declared_outputs if recorder else [])]
    declared += [(p, "input") for p in inputs] + [(p, "output") for p in outputs]
    for given, role in declared:
        for item, direct in expand([given], root, base):
            add(item, relative(item, root), role, named=direct)

    withheld: list[dict[str, str]] = []
    kept: list[PayloadFile] = []
    for rel, item in sorted(roles.items()):
        reasons = [] if item.source.resolve() in allowed else redaction.name_secrets(item.source.name)
        if reasons:
            withheld.append(redaction.withheld_file(item.path, reasons))
            continue
        try:
            item.size = item.source.stat().st_size
        except OSError:
            item.size = 0  # the copy reports what is wrong with it
        kept.append(item)

    def screen(item: PayloadFile, content: bytes) -> list[str]:
        # the very bytes about to be copied: nothing can change between the check and the copy
        return [] if item.source.resolve() in allowed else redaction.content_secrets(content, known)

    return Selection(files=kept, withheld=withheld, screen=screen, external_inputs=external_inputs, notices=notices,
                     capture=capture_info, per_segment=per_segment)


def late_capture_message(cells: int) -> str:
    return (f"{cells} cell(s) ran before capture started: the files they read and wrote are unknown and may be "
            "missing from the capsule; restart the kernel and run the notebook top to bottom with capture on "
            "(%capsule export --rerun, or nbcapsule export NOTEBOOK --execute), or turn capture on for every kernel "
            "with `nbcapsule enable`")


def is_excluded_external(path: str, excludes: Sequence[str]) -> bool:
    return capture.is_excluded(path.lstrip("/"), list(excludes))


def _attribute(per_segment: dict[int, tuple[set[str], set[str]]], access: capture.FileAccess, name: str) -> None:
    for segment in access.read_in:
        per_segment.setdefault(segment, (set(), set()))[0].add(name)
    for segment in access.written_in:
        per_segment.setdefault(segment, (set(), set()))[1].add(name)


def _listing(items: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
