"""Comparing a re-executed notebook and its output files with what the crate recorded.

Cells are compared output by output after normalisation (streams joined per
stream, one representation chosen per rich output); output files by SHA-256
first and, where the bytes differ, by value through the normaliser for their
format. Cells that only drive the capsule are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..capture import is_capsule_cell
from ..hashing import sha256_file
from ..manifest import Manifest
from .normalizers import DIFFERENT, EQUAL, WITHIN_TOLERANCE, Normalizer, TextNormalizer, for_file, for_mime
from .normalizers.hints import suggest

#: Representations tried in this order; the first one the recorded output has is compared.
MIME_PREFERENCE = ("image/png", "image/jpeg", "image/gif", "image/svg+xml", "application/json", "text/html",
                   "text/markdown", "text/latex", "text/plain")
#: Representations whose content is an id of live state, never comparable between runs.
IGNORED_MIME = ("application/vnd.jupyter.widget-view+json", "application/vnd.jupyter.widget-state+json")


@dataclass
class Difference:
    """One cell output or file that is not equal: ``status`` is ``different`` or ``within-tolerance``.

    ``hint``, for a difference, says what would have made it go away when something is known to (a ``sanitize``
    rule, a tolerance, a normaliser that was not used, a seed): see :mod:`.normalizers.hints`.
    """

    kind: str  # "cell" | "file"
    where: str
    status: str
    what: str
    detail: str = ""
    diff: str = ""
    images: tuple[str, str] | None = None
    cell_index: int | None = None
    cell_id: str | None = None
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = {"kind": self.kind, "where": self.where, "status": self.status, "what": self.what,
                "detail": self.detail, "diff": self.diff, "cell_index": self.cell_index, "cell_id": self.cell_id,
                "hint": self.hint}
        if self.images:
            data["images"] = {"recorded": self.images[0], "re-executed": self.images[1]}
        return data


def _pick(data: dict[str, Any]) -> str | None:
    for mime in MIME_PREFERENCE:
        if mime in data:
            if mime == "text/html" and "text/plain" in data and "<table" not in str(data[mime]).lower():
                continue
            return mime
    rest = [m for m in data if m not in IGNORED_MIME]
    return rest[0] if rest else None


def cell_items(cell: Any) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Stream text per stream name, and the rich outputs (results, displays, errors) in order."""
    streams: dict[str, str] = {}
    rich: list[dict[str, Any]] = []
    for output in cell.get("outputs", []):
        kind = output.get("output_type")
        if kind == "stream":
            streams[output.get("name", "stdout")] = streams.get(output.get("name", "stdout"), "") + output.get("text", "")
        elif kind in ("execute_result", "display_data"):
            data = {k: v for k, v in dict(output.get("data", {})).items() if k not in IGNORED_MIME}
            if data:
                rich.append(data)
        elif kind == "error":
            rich.append({"error": f"{output.get('ename')}: {output.get('evalue')}"})
    return streams, rich


def _rich_summary(items: list[dict[str, Any]]) -> str:
    lines = []
    for data in items:
        mime = _pick(data) or "?"
        text = data.get("text/plain") or data.get("error") or f"<{mime}>"
        lines.append(f"[{mime}] {''.join(text) if isinstance(text, list) else text}")
    return "\n".join(lines)


def compare_cell(index: int, recorded: Any, executed: Any, normalizers: Sequence[Normalizer]) -> list[Difference]:
    label = f"cell {index + 1}"
    cell_id = recorded.get("id")
    found: list[Difference] = []

    def note(what: str, normalizer: Normalizer, expected: Any, actual: Any) -> None:
        result = normalizer.compare(expected, actual)
        if result.status != EQUAL:
            hint = suggest(expected, actual, normalizer, normalizers, mime=what) if result.differs else ""
            found.append(Difference("cell", label, result.status, what, result.detail, result.diff, result.images,
                                    index, cell_id, hint))

    streams_a, rich_a = cell_items(recorded)
    streams_b, rich_b = cell_items(executed)
    for name in sorted(set(streams_a) | set(streams_b)):
        normalizer = for_mime(normalizers, "stream", streams_a.get(name, ""))
        note(name, normalizer, streams_a.get(name, ""), streams_b.get(name, ""))
    if len(rich_a) != len(rich_b):
        text = TextNormalizer(normalizers[0].settings if normalizers else None)
        a, b = _rich_summary(rich_a), _rich_summary(rich_b)
        result = text.compare(a, b)
        found.append(Difference("cell", label, DIFFERENT, "outputs",
                                f"{len(rich_a)} rich outputs recorded, {len(rich_b)} now", result.diff or
                                f"recorded:\n{a}\nnow:\n{b}", None, index, cell_id))
        return found
    for data_a, data_b in zip(rich_a, rich_b):
        if "error" in data_a or "error" in data_b:
            note("error", for_mime(normalizers, "text/plain", ""), data_a.get("error", ""), data_b.get("error", ""))
            continue
        mime = _pick(data_a)
        if mime is None:
            continue
        if mime not in data_b:
            found.append(Difference("cell", label, DIFFERENT, mime, f"recorded as {mime}, now as "
                                    f"{', '.join(sorted(data_b)) or 'nothing'}", "", None, index, cell_id))
            continue
        normalizer = for_mime(normalizers, mime, data_a[mime])
        note(mime, normalizer, data_a[mime], data_b[mime])
    return found


def compare_notebooks(recorded: Any, executed: Any, normalizers: Sequence[Normalizer]) -> list[Difference]:
    """Differences cell by cell; a cell count mismatch means the notebooks are not the same one."""
    cells_a = [(i, c) for i, c in enumerate(recorded.cells)]
    cells_b = list(executed.cells)
    if len(cells_a) != len(cells_b):
        return [Difference("cell", "notebook", DIFFERENT, "cells",
                           f"{len(cells_a)} cells recorded, {len(cells_b)} re-executed")]
    found: list[Difference] = []
    for index, cell in cells_a:
        if cell.cell_type != "code" or is_capsule_cell(cell.source):
            continue
        found += compare_cell(index, cell, cells_b[index], normalizers)
    return found


def compare_output_files(manifest: Manifest, recorded_root: Path, executed_root: Path,
                         normalizers: Sequence[Normalizer]) -> list[Difference]:
    """Each output file in the manifest, regenerated in ``executed_root``, against the recorded one."""
    found: list[Difference] = []
    for record in manifest.by_role("output"):
        if not record.in_crate:
            continue
        fresh = executed_root / record.path
        if not fresh.is_file():
            found.append(Difference("file", record.path, DIFFERENT, record.encoding_format,
                                    "the re-executed notebook did not write this file",
                                    hint="does a cell write it only under a condition, or did a %capsule cell "
                                         "(skipped on re-execution) write it?"))
            continue
        sha = sha256_file(fresh)
        if sha == record.sha256:
            continue
        expected = (recorded_root / record.path).read_bytes()
        actual = fresh.read_bytes()
        normalizer = for_file(normalizers, record.path)
        if normalizer is None and record.encoding_format.startswith("text/"):
            normalizer = for_mime(normalizers, record.encoding_format, "")
        if normalizer is None:
            found.append(Difference("file", record.path, DIFFERENT, record.encoding_format,
                                    f"bytes differ: sha256 {record.sha256[:12]}… recorded, {sha[:12]}… now",
                                    hint=f"no normaliser compares {record.encoding_format} files by value: make the "
                                         "file deterministic, or register one in the scidex_nbcapsule.normalizers "
                                         "entry-point group"))
            continue
        result = normalizer.compare_files(expected, actual)
        if result.status != EQUAL:
            hint = suggest(expected, actual, normalizer, normalizers, path=record.path) if result.differs else ""
            found.append(Difference("file", record.path, result.status, record.encoding_format,
                                    result.detail or f"bytes differ (sha256 {sha[:12]}…)", result.diff,
                                    result.images, hint=hint))
        else:
            found.append(Difference("file", record.path, WITHIN_TOLERANCE, record.encoding_format,
                                    f"bytes differ (sha256 {sha[:12]}…) but the values are equal after "
                                    f"normalisation ({normalizer.name})"))
    return found
