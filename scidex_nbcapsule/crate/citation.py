"""How a capsule asks to be cited and introduces itself: CITATION.cff and the crate's README.md."""

from __future__ import annotations

import json
import re

from ..manifest import Manifest, Person


def _public_origin(manifest: Manifest) -> str | None:
    """The origin URL, only when it is a public forge URL that others can resolve."""
    git = manifest.git or {}
    return git.get("origin_url") if git.get("origin_public") else None


DOI_RE = re.compile(r"^10\.\d{4,9}/\S+$")
CORE_SWHID_RE = re.compile(r"^swh:1:(snp|rel|rev|dir|cnt):[0-9a-f]{40}$")


def doi_of(identifier: str | None) -> str | None:
    """The DOI an identifier names (``10.x/y``, ``doi:10.x/y`` or a doi.org URL), else None."""
    if not identifier:
        return None
    text = identifier.strip()
    for prefix in ("https://doi.org/", "http://doi.org/", "https://dx.doi.org/", "http://dx.doi.org/", "doi:"):
        if text.lower().startswith(prefix):
            text = text[len(prefix):]
            break
    return text if DOI_RE.match(text) else None


def citation_cff(manifest: Manifest) -> str:
    """A CITATION.cff (1.2.0) for the capsule, typed ``dataset`` (the analysis with its data), so GitHub and
    Zenodo know how to cite it; a DOI is typed ``doi``, SWHIDs ``swh`` (core form), URLs ``url``."""
    def q(text: str) -> str:
        return json.dumps(text, ensure_ascii=False)

    doi = doi_of(manifest.identifier)
    lines = ["cff-version: 1.2.0", "message: If you use this analysis, please cite it as below.",
             f"title: {q(manifest.title)}", "type: dataset", f"date-released: {q(manifest.created_at[:10])}",
             f"license: {q(manifest.license)}" if not manifest.license.startswith("http") else "",
             f"doi: {q(doi)}" if doi else "",
             "authors:"]
    lines = [line for line in lines if line]
    for person in manifest.authors or [Person(name="Unknown author")]:
        parts = person.name.rsplit(" ", 1)
        if len(parts) == 2:
            lines += [f"  - given-names: {q(parts[0])}", f"    family-names: {q(parts[1])}"]
        else:
            lines += [f"  - name: {q(person.name)}"]
        if person.orcid:
            lines.append(f"    orcid: {q(Person(person.name, person.orcid).id)}")
        if person.affiliation:
            lines.append(f"    affiliation: {q(person.affiliation)}")
    identifiers = [("other", f"urn:uuid:{manifest.capsule_id[len('capsule-'):]}", "Capsule id")]
    if doi:
        identifiers.append(("doi", doi, "Citable identifier (DOI)"))
    elif manifest.identifier:
        kind = "url" if manifest.identifier.startswith(("http://", "https://")) else "other"
        identifiers.append((kind, manifest.identifier, "Citable identifier"))
    for key in ("revision", "directory", "notebook"):
        value = (manifest.swhids.get(key) or "").split(";")[0]
        if CORE_SWHID_RE.match(value):
            identifiers.append(("swh", value, f"Software Heritage identifier of the {key}"))
    lines.append("identifiers:")
    for kind, value, description in identifiers:
        lines += [f"  - type: {kind}", f"    value: {q(value)}", f"    description: {q(description)}"]
    if _public_origin(manifest):
        lines.append(f"repository-code: {q(_public_origin(manifest))}")
    if manifest.git_commit:
        lines.append(f"commit: {q(manifest.git_commit)}")
    return "\n".join(lines) + "\n"


def crate_readme(manifest: Manifest) -> str:
    """README.md of the crate (Workflow RO-Crate asks for one about the crate): what it is, how to check it."""
    def md(text: str) -> str:  # Markdown without markup: the title and description are shown as written
        return re.sub(r"([\\`*_{}\[\]<>()#+\-.!|~])", r"\\\1", " ".join(str(text).split()))

    authors = ", ".join(md(p.name) for p in manifest.authors) or "not stated"
    lines = [f"# {md(manifest.title)}", ""]
    if manifest.description:
        lines += [md(manifest.description), ""]
    lines += [
        f"A capsule of the notebook analysis `{manifest.notebook}`: the notebook, the files it read and wrote, its "
        "environment and the record of its run, as an RO-Crate.",
        "",
        f"- Authors: {authors}",
        f"- License: {md(manifest.license)}",
        f"- Capsule: `{manifest.capsule_id}`, made {manifest.created_at}",
        "",
        "Open `ro-crate-preview.html` to read it, `ro-crate-metadata.json` for the machine-readable description, "
        "`CITATION.cff` to cite it. Check it with `nbcapsule verify` on this folder (fixity, then a re-run of the "
        "notebook compared with the recorded outputs).",
        "",
    ]
    return "\n".join(lines)
