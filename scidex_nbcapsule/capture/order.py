"""Execution-order problems: what in a saved notebook does not match what its kernel really ran."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ..manifest import CellRun, Problem, format_time
from .notebook import sha256_text


def analyse_order(nb: Any, runs: list[CellRun], *, current: CellRun | None = None,
                  saved_at: float | None = None) -> list[Problem]:
    """Execution-order problems in ``nb`` given what this kernel ran."""
    problems: list[Problem] = []
    by_id = {r.cell_id: r for r in runs if r.cell_id}
    by_source: dict[str, list[CellRun]] = {}
    for run in runs:
        by_source.setdefault(run.source_sha256, []).append(run)
    last_counts: list[tuple[int, str, str | None]] = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        label = f"cell {index + 1}" + (f" (id {cell.get('id')})" if cell.get("id") else "")
        cell_id = cell.get("id")
        digest = sha256_text(cell.source)
        if current is not None and (digest == current.source_sha256 or (cell_id and cell_id == current.cell_id)):
            continue
        run = by_id.get(cell_id) if cell_id else None
        if run is not None and run.source_sha256 != digest:
            problems.append(Problem("edited-after-run", f"{label} was edited after it last ran; its outputs may not "
                                    "match its code", cell_id))
        if run is None:
            matches = by_source.get(digest)
            run = matches[-1] if matches else None
        saved_count = cell.get("execution_count")
        if run is None:
            if saved_count is not None:
                problems.append(Problem("kernel-restarted", f"{label} shows output from execution {saved_count}, which "
                                        "did not happen in this kernel session (was the kernel restarted?)", cell_id))
            else:
                problems.append(Problem("never-run", f"{label} was never run in this kernel session", cell_id))
            continue
        if run.status == "error":
            problems.append(Problem("cell-error", f"{label} raised {run.error}", cell_id))
        if run.execution_count is not None:
            last_counts.append((run.execution_count, label, cell_id))
    highest = None
    for count, label, cell_id in last_counts:
        if highest is not None and count < highest[0]:
            problems.append(Problem("out-of-order", f"{label} last ran as execution {count}, before {highest[1]} above "
                                    f"it (execution {highest[0]}): re-run the notebook top to bottom", cell_id))
        if highest is None or count > highest[0]:
            highest = (count, label)
    ended = [r.ended for r in runs if r.ended]
    if saved_at is not None and ended:
        saved = format_time(datetime.fromtimestamp(saved_at, timezone.utc))
        if saved < max(ended):
            problems.append(Problem("stale-notebook", "the notebook file on disk was saved before the last cell ran: "
                                    "its outputs are stale; save the notebook and export again"))
    return problems
