"""The RO-Crate JSON-LD of a capsule, built with the ``rocrate`` library."""

from __future__ import annotations

import warnings
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from ..hashing import Digests
from ..manifest import FileRecord, Manifest, Person
from .citation import _public_origin
from .plan import DEFAULT_PUBLISHER, MANIFEST_FILE, README_FILE, RO_CRATE_VERSION, WORKFLOW_RUN_CONTEXT
from .provenance import PROFILES, PROVENANCE_RUN_CRATE, WORKFLOW_RO_CRATE, add_cell_provenance

#: What the SWHID specification is known by, as the propertyID of an identifier.
SWHID_PROPERTY = "https://www.swhid.org/"
SWH_RESOLVER = "https://archive.softwareheritage.org/"
BIOSCHEMAS_WORKFLOW = "https://bioschemas.org/profiles/ComputationalWorkflow/1.0-RELEASE"


def _one_or_many(refs: list[dict[str, str]]) -> dict[str, str] | list[dict[str, str]]:
    """RO-Crate 1.1 prefers a single value over a one-element list."""
    return refs[0] if len(refs) == 1 else refs


def _add_person(crate, person: Person):
    from rocrate.model.contextentity import ContextEntity

    props: dict[str, Any] = {"@type": "Person", "name": person.name}
    if person.email:
        props["email"] = person.email
    if person.affiliation:
        org_id = "#org-" + "".join(c if c.isalnum() else "-" for c in person.affiliation.lower()).strip("-")
        crate.add(ContextEntity(crate, org_id, {"@type": "Organization", "name": person.affiliation}))
        props["affiliation"] = {"@id": org_id}
    return crate.add(ContextEntity(crate, person.id, props))


def spdx_uri(license_id: str) -> str:
    return license_id if license_id.startswith("http") else f"https://spdx.org/licenses/{license_id}"


def _manifest_file_props(digests: Digests | None) -> dict[str, Any]:
    props: dict[str, Any] = {"name": "Capsule manifest", "encodingFormat": "application/json",
                             "description": "scidex-nbcapsule manifest: digests, execution record, environment digest."}
    if digests is not None:
        props.update({"contentSize": str(digests.size), "sha256": digests.sha256})
    return props


def build_metadata(manifest: Manifest, environment: dict[str, Any], manifest_digests: Digests | None = None,
                   cells: list[tuple[str, str]] | None = None, publisher: dict[str, str] | None = None):
    """The ``rocrate`` model of a capsule: RO-Crate 1.1 with the Process Run, Workflow Run, Provenance Run
    and Workflow RO-Crate profiles; ``cells`` are the notebook's code cells (id, source), ``publisher`` the
    Organization that publishes it (default: the tool)."""
    from rocrate.model.contextentity import ContextEntity
    from rocrate.rocrate import ROCrate

    crate = ROCrate(version=RO_CRATE_VERSION, gen_preview=True)
    crate.metadata.extra_contexts.append(WORKFLOW_RUN_CONTEXT)
    root = crate.root_dataset
    root["name"] = manifest.title
    root["description"] = manifest.description or f"Notebook analysis {manifest.notebook}, captured as a capsule."
    root["datePublished"] = manifest.created_at
    root["identifier"] = manifest.identifier or f"urn:uuid:{manifest.capsule_id[len('capsule-'):]}"
    if manifest.identifier and manifest.identifier.startswith(("http://", "https://")):
        root["cite-as"] = manifest.identifier
    license_uri = spdx_uri(manifest.license)
    crate.add(ContextEntity(crate, license_uri, {"@type": "CreativeWork", "name": manifest.license,
                                                  "identifier": license_uri}))
    root["license"] = {"@id": license_uri}
    publisher = publisher or DEFAULT_PUBLISHER
    org = crate.add(ContextEntity(crate, publisher.get("url") or "#publisher", {
        "@type": "Organization", "name": publisher["name"], **({"url": publisher["url"]} if publisher.get("url")
                                                               else {})}))
    root["publisher"] = {"@id": org.id}
    crate.metadata["conformsTo"] = [{"@id": f"https://w3id.org/ro/crate/{RO_CRATE_VERSION}"},
                                    {"@id": WORKFLOW_RO_CRATE}]
    profiles = [crate.add(ContextEntity(crate, uri, {"@type": "CreativeWork", "name": name, "version": version}))
                for uri, name, version in PROFILES]
    root["conformsTo"] = [{"@id": p.id} for p in profiles]
    people = [_add_person(crate, p) for p in manifest.authors]
    if people:
        root["author"] = _one_or_many([{"@id": p.id} for p in people])
        root["creator"] = _one_or_many([{"@id": p.id} for p in people])

    python = environment["python"]
    language = crate.add(ContextEntity(crate, "https://w3id.org/workflowhub/workflow-ro-crate#python", {
        "@type": "ComputerLanguage", "name": "Python", "alternateName": "Python",
        "url": {"@id": "https://www.python.org/"}, "version": python["version"]}))
    interpreter_id = f"https://www.python.org/downloads/release/python-{python['version'].replace('.', '')}/"
    interpreter = crate.add(ContextEntity(crate, interpreter_id, {
        "@type": "SoftwareApplication", "name": f"{python['implementation']} {python['version']}",
        "version": python["version"], "url": "https://www.python.org/"}))
    packages = []
    for name, version in sorted((environment.get("imported") or {}).items()):
        pkg_id = f"https://pypi.org/project/{name}/{version}/"
        packages.append(crate.add(ContextEntity(crate, pkg_id, {
            "@type": "SoftwareApplication", "name": name, "version": version,
            "url": f"https://pypi.org/project/{name}/"})))

    entities = {}
    git_commit = manifest.git_commit
    resolvers = resolver_urls(manifest)
    git = manifest.git or {}
    untracked, changed = set(git.get("untracked_used") or []), set(git.get("changed_files") or [])
    has_repo = bool(git.get("commit"))
    for record in manifest.files:
        props: dict[str, Any] = {
            "name": PurePosixPath(record.path).name,
            "contentSize": str(record.size),
            "sha256": record.sha256,
            "encodingFormat": record.encoding_format,
        }
        if record.swhid:
            props["identifier"] = {"@id": _add_swhid(crate, record.swhid, resolvers.get(record.path)).id}
        notes = []
        if record.read_sha256:
            notes.append(f"Rewritten by the analysis; the version it read had sha256 {record.read_sha256}.")
        if record.link_target:
            notes.append(f"The analysis used this path, a symbolic link to {record.link_target}.")
        if record.original_path:
            notes.append(f"Read outside the project, from {record.original_path}.")
        if has_repo and record.path in untracked:
            notes.append("Untracked in git: these bytes are not in the analysed commit.")
        elif has_repo and record.path in changed:
            notes.append("Changed since the analysed commit (the working tree was dirty).")
        if record.path == README_FILE:
            props["about"] = {"@id": "./"}
        if notes:
            props["description"] = " ".join(notes)
        if record.path == manifest.notebook:
            props.update({"@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"],
                          "programmingLanguage": {"@id": language.id},
                          "version": git_commit[:12] if git_commit else record.sha256[:12],
                          "runtimePlatform": {"@id": interpreter.id},
                          "conformsTo": {"@id": _bioschemas_workflow(crate).id},
                          "softwareRequirements": _one_or_many([{"@id": p.id} for p in packages]) if packages
                          else None})
            # the archive's URL only for bytes it holds; else the content address (names, does not locate)
            props["url"] = resolvers.get(record.path) or content_address(record)
            if _public_origin(manifest):
                props["codeRepository"] = _public_origin(manifest)
            if has_repo:
                props["isPartOf"] = {"@id": "#source-repository"}
            props = {k: v for k, v in props.items() if v is not None}
        elif record.role == "code" and record.path.endswith(".py"):
            anchored = bool(record.swhid and ";anchor=" in record.swhid)
            props.update({"@type": ["File", "SoftwareSourceCode"], "programmingLanguage": {"@id": language.id},
                          "version": git_commit[:12] if anchored and git_commit else record.sha256[:12],
                          "url": resolvers.get(record.path) or content_address(record)})
        file_id = record.path if record.in_crate else record.linked_from
        if not record.in_crate:
            props["description"] = ("Not copied into the crate (larger than --link-large); fetch it from this "
                                    "location and check its sha256.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            entities[record.path] = crate.add_file(None, dest_path=file_id, properties=props)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crate.add_file(None, dest_path=MANIFEST_FILE, properties=_manifest_file_props(manifest_digests))
    if manifest.git and manifest.git.get("commit"):
        repo_props: dict[str, Any] = {"@type": "SoftwareSourceCode", "name": "Source repository at the analysed commit",
                                      "version": manifest.git["commit"]}
        if _public_origin(manifest):
            repo_props["codeRepository"] = _public_origin(manifest)
            repo_props["url"] = _public_origin(manifest)
        repo_props.update(_working_tree_state(git))
        refs = [manifest.swhids.get(k) for k in ("revision", "directory") if manifest.swhids.get(k)]
        archived = _public_origin(manifest) is not None  # a public origin: the commit is Software Heritage's to hold
        if refs:
            repo_props["identifier"] = _one_or_many([
                {"@id": _add_swhid(crate, r, f"{SWH_RESOLVER}{r}" if archived else None).id} for r in refs])
        crate.add(ContextEntity(crate, "#source-repository", repo_props))

    inputs = [entities[r.path] for r in manifest.files if r.role == "input"]
    outputs = [entities[r.path] for r in manifest.files if r.role == "output"]
    run = manifest.execution
    action: dict[str, Any] = {
        "@type": "CreateAction",
        "name": f"Run of {manifest.notebook}",
        "instrument": {"@id": manifest.notebook},
        "object": _one_or_many([{"@id": e.id} for e in inputs]) if inputs else None,
        "result": _one_or_many([{"@id": e.id} for e in outputs]) if outputs else None,
        "startTime": run.started or manifest.created_at,
        "endTime": run.ended or manifest.created_at,
        "actionStatus": "http://schema.org/CompletedActionStatus" if run.status == "completed"
        else "http://schema.org/FailedActionStatus",
        "description": f"Executed in kernel {environment.get('kernel', {}).get('name', 'python3')} "
                       f"with {interpreter['name']}.",
    }
    if people:
        action["agent"] = {"@id": people[0].id}
    failed = [c.error for c in run.cells if c.status == "error" and c.error]
    if run.status != "completed" and failed:
        action["error"] = "; ".join(failed)[:5000]
    if run.problems:
        action["disambiguatingDescription"] = "Execution-order problems: " + "; ".join(p.message for p in run.problems)
    action = {k: v for k, v in action.items() if v is not None}
    create = crate.add(ContextEntity(crate, f"#run-{manifest.capsule_id}", action))
    root["mentions"] = {"@id": create.id}
    notebook = entities.get(manifest.notebook)
    if notebook is not None:
        root["mainEntity"] = {"@id": notebook.id}
        recorded = add_cell_provenance(crate, manifest, cells or [], notebook=notebook, run=create,
                                       engine=_kernel_engine(crate, environment, interpreter),
                                       language_id=language.id, entities=entities,
                                       agent=people[0].id if people else None)
        if not recorded:  # not captured in a kernel: a workflow run, without per-cell provenance to claim
            root["conformsTo"] = [ref for ref in root["conformsTo"] if ref["@id"] != PROVENANCE_RUN_CRATE]
            crate.delete(crate.get(PROVENANCE_RUN_CRATE))
    return crate


def _working_tree_state(git: dict[str, Any]) -> dict[str, Any]:
    """What the RO-Crate says of the working tree: clean, or dirty with what changed and what was untracked."""
    if not git.get("dirty") and not git.get("untracked_used"):
        return {"creativeWorkStatus": "clean working tree",
                "description": "The working tree was clean: every file is as committed."}
    parts = []
    if git.get("changed_files"):
        parts.append(f"{len(git['changed_files'])} file(s) changed since the commit: "
                     + ", ".join(git["changed_files"][:50]) + (" …" if len(git["changed_files"]) > 50 else ""))
    if git.get("untracked_used"):
        parts.append("untracked files the analysis used: " + ", ".join(git["untracked_used"][:50])
                     + (" …" if len(git["untracked_used"]) > 50 else ""))
    if git.get("patch_file"):
        parts.append(f"the uncommitted changes are in {git['patch_file']}")
    return {"creativeWorkStatus": "dirty working tree",
            "description": "The working tree was dirty: " + "; ".join(parts) + "."}


def _bioschemas_workflow(crate):
    from rocrate.model.contextentity import ContextEntity

    found = crate.get(BIOSCHEMAS_WORKFLOW)
    return found or crate.add(ContextEntity(crate, BIOSCHEMAS_WORKFLOW, {
        "@type": "CreativeWork", "name": "Bioschemas ComputationalWorkflow profile", "version": "1.0-RELEASE"}))


def _kernel_engine(crate, environment: dict[str, Any], interpreter):
    """The software that ran the cells: ipykernel (its PyPI release) for a Python kernel, else the interpreter."""
    from rocrate.model.contextentity import ContextEntity

    kernel = environment.get("kernel") or {}
    version = (environment.get("packages") or {}).get("ipykernel")
    if str(kernel.get("language", "python")).lower() != "python" or not isinstance(version, str):
        return interpreter
    return crate.add(ContextEntity(crate, f"https://pypi.org/project/ipykernel/{version}/", {
        "@type": "SoftwareApplication", "name": "ipykernel", "version": version,
        "url": "https://pypi.org/project/ipykernel/",
        "description": f"The Jupyter kernel {kernel.get('name', 'python3')} that ran the notebook's cells."}))


def resolver_urls(manifest: Manifest) -> dict[str, str]:
    """The Software Heritage URL of each file whose bytes are in the archived commit, by path.

    Only a SWHID anchored in the commit (its bytes are exactly the blob at that path) of a public origin
    (what Software Heritage archives) resolves to those bytes; every other file keeps its intrinsic SWHID
    without a URL that would promise what the archive may not hold.
    """
    if _public_origin(manifest) is None or not manifest.git_commit:
        return {}
    return {r.path: f"{SWH_RESOLVER}{r.swhid}" for r in manifest.files
            if r.swhid and ";anchor=swh:1:rev:" in r.swhid and r.in_crate}


def _add_swhid(crate, swhid: str, resolver: str | None):
    """The SWHID as an intrinsic identifier: a PropertyValue (propertyID https://www.swhid.org/), with the
    resolver's URL only when the archive holds those bytes."""
    from rocrate.model.contextentity import ContextEntity

    pv_id = "#" + quote(swhid, safe=":;=/?@!$&'()*+,-._~")
    added = crate.__dict__.setdefault("_nbcapsule_swhids", {})  # crate.get scans every entity: quadratic
    if pv_id in added:
        return added[pv_id]
    props: dict[str, Any] = {"@type": "PropertyValue", "propertyID": SWHID_PROPERTY, "name": "SWHID",
                             "value": swhid}
    if resolver:
        props["url"] = resolver
    added[pv_id] = crate.add(ContextEntity(crate, pv_id, props))
    return added[pv_id]


def content_address(record: FileRecord) -> str:
    """A resolvable name for a notebook not yet archived: its content address."""
    return f"urn:sha256:{record.sha256}"
