"""Cell-level provenance, as a Provenance Run Crate 0.5 (https://w3id.org/ro/wfrun/provenance/0.5).

The notebook is the workflow: the root's ``mainEntity``, typed File, SoftwareSourceCode,
ComputationalWorkflow and HowTo. Each code cell is a ``HowToStep`` (its ``position``, an ``@id`` made from
the cell id) whose ``workExample`` is the cell's code (a SoftwareSourceCode, a tool the notebook ``hasPart``
once it ran). Each recorded execution of a cell is a ``CreateAction``: ``instrument`` the cell's code,
``object`` the files it read, ``result`` the files it wrote (``Manifest.execution.cells[].reads/writes``),
times and ``actionStatus``; a ``ControlAction`` ties it to its step. The kernel session is the
``OrganizeAction``: the kernel is its ``instrument``, the ControlActions its ``object``, the run of the
notebook its ``result``.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from ..manifest import CellRun, Manifest

PROVENANCE_RUN_CRATE = "https://w3id.org/ro/wfrun/provenance/0.5"
WORKFLOW_RUN_CRATE = "https://w3id.org/ro/wfrun/workflow/0.5"
WORKFLOW_RO_CRATE = "https://w3id.org/workflowhub/workflow-ro-crate/1.0"
COMPLETED = "http://schema.org/CompletedActionStatus"
FAILED = "http://schema.org/FailedActionStatus"
#: The profiles a capsule conforms to, with their names and versions (Process Run Crate first: the one an .eln keeps).
PROFILES = (
    ("https://w3id.org/ro/wfrun/process/0.5", "Process Run Crate", "0.5"),
    (WORKFLOW_RUN_CRATE, "Workflow Run Crate", "0.5"),
    (PROVENANCE_RUN_CRATE, "Provenance Run Crate", "0.5"),
    (WORKFLOW_RO_CRATE, "Workflow RO-Crate", "1.0"),
)
_SAFE = re.compile(r"[^A-Za-z0-9._~-]+")


def code_cells(notebook_bytes: bytes) -> list[tuple[str, str]]:
    """``(cell id, source)`` of each code cell in order; cells without an id (nbformat < 4.5) get ``index-N``."""
    try:
        nb = json.loads(notebook_bytes)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return []
    cells = nb.get("cells") if isinstance(nb, dict) else None
    found = []
    for index, cell in enumerate(cells if isinstance(cells, list) else []):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        cell_id = cell.get("id") if isinstance(cell.get("id"), str) and cell.get("id") else f"index-{index}"
        found.append((cell_id, source))
    return found


def _slug(cell_id: str) -> str:
    return _SAFE.sub("-", cell_id).strip("-") or "cell"


def step_id(notebook: str, cell_id: str) -> str:
    return f"#{_slug(notebook)}-cell-{_slug(cell_id)}"


def _status(cell: CellRun) -> str:
    return FAILED if cell.status == "error" else COMPLETED


def add_cell_provenance(crate, manifest: Manifest, cells: list[tuple[str, str]], *, notebook, run, engine,
                        language_id: str, entities: dict[str, Any], agent: str | None = None) -> bool:
    """Add steps, per-cell actions and the kernel session to ``crate`` (``notebook`` and ``run`` are the
    notebook's data entity and the CreateAction of the whole run; ``engine`` the kernel's SoftwareApplication;
    ``entities`` maps crate paths to their data entities). True when cell executions were recorded (the crate
    then is a Provenance Run Crate); without them the steps are described and no run of theirs is claimed."""
    from rocrate.model.contextentity import ContextEntity

    nb_path = manifest.notebook
    in_notebook = {cell_id: (position, source) for position, (cell_id, source) in enumerate(cells, start=1)}
    tools: dict[str, Any] = {}
    steps: dict[str, Any] = {}

    def tool_for(cell_id: str, source: str | None = None, source_sha256: str | None = None) -> Any:
        if cell_id not in tools:
            if source is not None:
                source_sha256 = hashlib.sha256(source.encode("utf-8")).hexdigest()
            props: dict[str, Any] = {"@type": "SoftwareSourceCode", "name": f"Code cell {cell_id} of {nb_path}",
                                     "programmingLanguage": {"@id": language_id},
                                     "isPartOf": {"@id": notebook.id}}
            if notebook.get("url"):
                props["url"] = notebook["url"]  # the code is in the notebook
            if source_sha256:
                props["version"] = source_sha256[:12]  # its source's sha256: which text of the cell this is
            if source is not None:
                props["text"] = source
            tools[cell_id] = crate.add(ContextEntity(crate, step_id(nb_path, cell_id) + "-code", props))
        return tools[cell_id]

    for cell_id, (position, source) in in_notebook.items():
        tool = tool_for(cell_id, source)
        steps[cell_id] = crate.add(ContextEntity(crate, step_id(nb_path, cell_id), {
            "@type": "HowToStep", "name": f"Cell {position} of {nb_path}", "position": str(position),
            "identifier": cell_id, "workExample": {"@id": tool.id}}))

    def refs(paths: list[str]) -> list[dict[str, str]]:
        return [{"@id": entities[p].id} for p in paths if p in entities]

    controls = []
    actions: list[Any] = []
    ran: list[Any] = []
    for number, cell in enumerate(manifest.execution.cells, start=1):
        cell_id = cell.cell_id or f"unknown-{cell.source_sha256[:12]}"
        tool = tool_for(cell_id, source_sha256=cell.source_sha256)
        if tool not in ran:
            ran.append(tool)
        props: dict[str, Any] = {
            "@type": "CreateAction",
            "name": f"Execution {cell.execution_count if cell.execution_count is not None else '?'} "
                    f"of cell {cell_id}",
            "instrument": {"@id": tool.id},
            "actionStatus": _status(cell),
        }
        if cell.started:
            props["startTime"] = cell.started
        if cell.ended:
            props["endTime"] = cell.ended
        if cell.error:
            props["error"] = cell.error[:5000]
        read, wrote = refs(cell.reads), refs(cell.writes)
        if read:
            props["object"] = read[0] if len(read) == 1 else read
        if wrote:
            props["result"] = wrote[0] if len(wrote) == 1 else wrote
        if agent:
            props["agent"] = {"@id": agent}
        said = [f"Execution {cell.execution_count if cell.execution_count is not None else '(uncounted)'} of "
                f"cell {cell_id} in the kernel session"]
        said.append(f"read {len(cell.reads)} file(s)" if cell.reads else "read no file")
        said.append(f"wrote {len(cell.writes)} file(s)" if cell.writes else "wrote no file")
        if not cell.started:
            said.append("its start was not seen (it began before capture did)")
        unseen = [p for p in (*cell.reads, *cell.writes) if p not in entities]
        if unseen:
            said.append("also touched, not in the crate: " + ", ".join(sorted(set(unseen))))
        props["description"] = ("; ".join(said) + ".")[:5000]
        action = crate.add(ContextEntity(crate, f"#cell-run-{number}", props))
        actions.append(action)
        if cell_id in steps:
            controls.append(crate.add(ContextEntity(crate, f"#cell-run-{number}-control", {
                "@type": "ControlAction", "name": f"Orchestration of execution {number} (cell {cell_id})",
                "instrument": {"@id": steps[cell_id].id}, "object": {"@id": action.id},
                "actionStatus": _status(cell)})))
    if steps:
        notebook["step"] = [{"@id": s.id} for s in steps.values()]
    if not controls:  # no execution of a saved cell was recorded: no cell-level provenance to state
        return False
    mentions = crate.root_dataset.get("mentions")
    mentions = [] if mentions is None else mentions if isinstance(mentions, list) else [mentions]
    crate.root_dataset["mentions"] = [*mentions, *({"@id": a.id} for a in actions)]
    notebook["hasPart"] = [{"@id": t.id} for t in ran]
    session: dict[str, Any] = {
        "@type": "OrganizeAction", "name": f"Kernel session that ran {nb_path}",
        "instrument": {"@id": engine.id}, "result": {"@id": run.id},
        "actionStatus": COMPLETED if manifest.execution.status == "completed" else FAILED,
    }
    session["object"] = [{"@id": c.id} for c in controls]
    started = manifest.execution.kernel_started or manifest.execution.started
    if started:
        session["startTime"] = started
    if manifest.execution.ended:
        session["endTime"] = manifest.execution.ended
    crate.add(ContextEntity(crate, f"#kernel-session-{manifest.capsule_id}", session))
    return True
