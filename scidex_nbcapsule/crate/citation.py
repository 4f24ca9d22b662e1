"""CITATION.cff for a capsule."""

from __future__ import annotations

import json

from ..manifest import Manifest, Person


def _public_origin(manifest: Manifest) -> str | None:
    """The origin URL, only when it is a public forge URL that others can resolve."""
    git = manifest.git or {}
    return git.get("origin_url") if git.get("origin_public") else None


def citation_cff(manifest: Manifest) -> str:
    """A CITATION.cff (1.2.0) for the capsule, so GitHub and Zenodo know how to cite it."""
    def q(text: str) -> str:
        return json.dumps(text, ensure_ascii=False)

    lines = ["cff-version: 1.2.0", "message: If you use this analysis, please cite it as below.",
             f"title: {q(manifest.title)}", "type: software", f"date-released: {q(manifest.created_at[:10])}",
             f"license: {q(manifest.license)}" if not manifest.license.startswith("http") else "",
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
    identifiers = [("other", f"urn:uuid:{manifest.capsule_id[len('capsule-'):]}", "Capsule id")]
    if manifest.identifier:
        kind = "doi" if manifest.identifier.startswith("10.") else "url"
        identifiers.append((kind, manifest.identifier, "Citable identifier"))
    for key in ("revision", "notebook"):
        if manifest.swhids.get(key):
            identifiers.append(("swh", manifest.swhids[key].split(";")[0], f"Software Heritage {key} identifier"))
    lines.append("identifiers:")
    for kind, value, description in identifiers:
        lines += [f"  - type: {kind}", f"    value: {q(value)}", f"    description: {q(description)}"]
    if _public_origin(manifest):
        lines.append(f"repository-code: {q(_public_origin(manifest))}")
    if manifest.git_commit:
        lines.append(f"commit: {q(manifest.git_commit)}")
    return "\n".join(lines) + "\n"
