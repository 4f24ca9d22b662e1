"""How a crate folder is packed: as it is (folder), as an RO-Crate zip, or as an .eln archive.

* ``folder``: the crate folder itself.
* ``zip``: an RO-Crate zip, ``ro-crate-metadata.json`` at the zip's root, as ro-crate-py
  (``ROCrate("x.zip")``), runcrate and roc-validator open it.
* ``eln``: the ELN file format (TheELNConsortium): one root folder named after the capsule holding the
  crate, whose metadata also says what ELN importers read (see :func:`eln_metadata`).

Readers accept all three and crates made before the zip layout changed (one top folder in a ``.zip``).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from .plan import METADATA_FILE

LAYOUTS = ("folder", "zip", "eln")
#: The Dataset an ELN importer (eLabFTW, …) turns into one experiment holding the capsule's files.
ELN_DATASET_ID = "#capsule-dataset"
#: What the descriptor's ``version`` says: the version of the ELN metadata conventions followed.
ELN_VERSION = "1.0"
_STORED = (".png", ".jpg", ".jpeg", ".gif", ".gz", ".zip", ".whl", ".eln", ".xz", ".bz2", ".zst")


def _zip_folder(folder: Path, target: Path, top: str | None) -> None:
    """Pack ``folder`` into ``target``: its files at the zip's root (``top`` None) or under ``top/``."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        if top is not None:
            archive.writestr(zipfile.ZipInfo(f"{top}/"), b"")  # the one root folder, as unzip shows it
        for dirpath, dirs, files in os.walk(folder):
            dirs.sort()
            for name in sorted(files):
                full = Path(dirpath, name)
                rel = full.relative_to(folder).as_posix()
                kind = zipfile.ZIP_STORED if name.lower().endswith(_STORED) else zipfile.ZIP_DEFLATED
                archive.write(full, f"{top}/{rel}" if top else rel, compress_type=kind)
    with open(target, "rb") as handle:
        os.fsync(handle.fileno())


def pack(folder: Path, target: Path, fmt: str, name: str) -> None:
    """Write the archive of layout ``fmt`` (zip or eln) for the crate ``folder``."""
    _zip_folder(folder, target, None if fmt == "zip" else name)


# -- the ELN flavour of the metadata -----------------------------------------------------------------
def _types(entity: dict[str, Any]) -> list[str]:
    kind = entity.get("@type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


def _as_string(value: Any, graph: dict[str, dict[str, Any]]) -> Any:
    """An identifier as the plain string ELN readers expect: a PropertyValue's value, a reference's @id."""
    value = _first(value)
    if isinstance(value, dict):
        target = graph.get(value.get("@id", ""), {})
        if "PropertyValue" in _types(target) and isinstance(target.get("value"), str):
            return target["value"]
        return value.get("@id", "")
    return value


def eln_metadata(doc: dict[str, Any], *, publisher: dict[str, str], title: str, authors: list[str],
                 created: str, capsule_id: str, description: str = "") -> dict[str, Any]:
    """The same JSON-LD made readable by ELN importers, following the ELN file format specification:

    * the metadata descriptor has ``version`` and ``sdPublisher`` (an Organization with ``name`` and ``url``);
    * the root's ``hasPart`` leads to a ``Dataset`` (``name``, ``genre``, ``author``, ``dateCreated``) whose
      parts are the crate's files, each typed exactly ``File`` (eLabFTW imports nothing else) with ``sha256``,
      ``contentSize`` and ``encodingFormat``; the more specific types move to ``additionalType``;
    * where the ELN schema wants one object or a string, one value is given: ``author``, ``conformsTo``,
      ``sdPublisher`` and ``about`` are single references (every author stays in ``creator``), ``identifier``
      and ``url`` are strings, ``hasPart`` is always a list and ``keywords`` one comma-separated string.
    """
    graph = [dict(e) for e in doc["@graph"]]
    by_id = {e["@id"]: e for e in graph}
    org_id = publisher.get("url") or "#publisher"
    if org_id not in by_id:
        org = {"@id": org_id, "@type": "Organization", "name": publisher["name"],
               **({"url": publisher["url"]} if publisher.get("url") else {})}
        graph.append(org)
        by_id[org_id] = org
    descriptor = by_id[METADATA_FILE]
    descriptor["version"] = ELN_VERSION
    descriptor["sdPublisher"] = {"@id": org_id}
    descriptor.setdefault("dateCreated", created)
    root = by_id["./"]
    parts = root.get("hasPart", [])
    parts = parts if isinstance(parts, list) else [parts]
    local_files = [p for p in parts if isinstance(p, dict) and "File" in _types(by_id.get(p["@id"], {}))
                   and not p["@id"].startswith(("http://", "https://", "file:"))]
    dataset: dict[str, Any] = {"@id": ELN_DATASET_ID, "@type": "Dataset", "name": title,
                               "genre": "notebook analysis", "dateCreated": created, "identifier": capsule_id,
                               "hasPart": [{"@id": p["@id"]} for p in local_files]}
    if description:
        dataset["text"] = description
    if authors:
        dataset["author"] = {"@id": authors[0]}
    graph.append(dataset)
    root["hasPart"] = [{"@id": ELN_DATASET_ID}, *parts]
    code: dict[str, str] = {}
    for entity in list(graph):
        types = _types(entity)
        if "File" in types and len(types) > 1:
            entity["@type"] = "File"
            extra = [t for t in types if t != "File"]
            entity["additionalType"] = _first([t if ":" in t else f"https://schema.org/{t}" for t in extra]) \
                if len(extra) == 1 else [t if ":" in t else f"https://schema.org/{t}" for t in extra]
            if set(extra) & {"SoftwareSourceCode", "ComputationalWorkflow", "SoftwareApplication"}:
                # the run's instrument stays code: a contextual entity for the code, whose example is the file
                twin = {"@id": f"#code-{entity['@id']}", "@type": _first(extra) if len(extra) == 1 else extra,
                        "name": entity.get("name", entity["@id"]), "workExample": {"@id": entity["@id"]}}
                for key in ("programmingLanguage", "version", "runtimePlatform", "softwareRequirements",
                            "codeRepository", "url"):
                    if key in entity:
                        twin[key] = entity.pop(key) if key not in ("url",) else entity[key]
                graph.append(twin)
                by_id[twin["@id"]] = twin
                code[entity["@id"]] = twin["@id"]
    for entity in graph:
        if isinstance(entity.get("instrument"), dict) and entity["instrument"].get("@id") in code:
            entity["instrument"] = {"@id": code[entity["instrument"]["@id"]]}
        for key in ("author", "conformsTo", "sdPublisher", "about"):
            if isinstance(entity.get(key), list):
                entity[key] = entity[key][0]
        for key in ("identifier", "url"):
            if key in entity and not isinstance(entity[key], str):
                entity[key] = _as_string(entity[key], by_id)
        if "hasPart" in entity and not isinstance(entity["hasPart"], list):
            entity["hasPart"] = [entity["hasPart"]]
        if isinstance(entity.get("keywords"), list):
            entity["keywords"] = ", ".join(str(k) for k in entity["keywords"])
    return {"@context": doc["@context"], "@graph": graph}


def eln_file_paths(doc: dict[str, Any]) -> list[str]:
    """The files an ELN importer would take from the crate: the File parts of Datasets in the root's hasPart."""
    by_id = {e.get("@id"): e for e in doc.get("@graph", []) if isinstance(e, dict)}
    found = []
    for part in by_id.get("./", {}).get("hasPart", []):
        dataset = by_id.get(part.get("@id") if isinstance(part, dict) else None, {})
        if dataset.get("@type") != "Dataset":
            continue
        for child in dataset.get("hasPart", []):
            entity = by_id.get(child.get("@id"), {})
            if entity.get("@type") == "File" and entity.get("sha256"):
                found.append(str(PurePosixPath(entity["@id"])))
    return found
