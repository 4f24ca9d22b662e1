"""The capsule model: canonical JSON, digest, schema."""

from __future__ import annotations

import copy

import jsonschema
import pytest

from scidex_nbcapsule.errors import ManifestError
from scidex_nbcapsule.manifest import (CellRun, FileRecord, Manifest, Person, canonical_json, is_capsule_id,
                                       new_capsule_id, schema, utc_now)


def _manifest() -> Manifest:
    return Manifest(capsule_id=new_capsule_id(), title="T", license="MIT", created_at=utc_now(),
                    notebook="nb.ipynb", notebook_sha256="a" * 64, authors=[Person("Ada Lovelace", "0000-0002-1825-0097")],
                    files=[FileRecord("nb.ipynb", "code", 3, "a" * 64, "b" * 40)]).seal()


def test_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(schema())


def test_round_trip_keeps_everything():
    manifest = _manifest()
    manifest.execution.cells.append(CellRun("c1", 1, "c" * 64, utc_now(), utc_now(), "ok"))
    manifest.seal()
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_digest_is_over_canonical_json():
    data = {"b": [1, 2], "a": "é"}
    assert canonical_json(data) == '{"a":"é","b":[1,2]}'.encode()
    manifest = _manifest()
    assert manifest.to_dict()["manifest_digest"] == manifest.compute_digest()


def test_any_edit_is_detected():
    data = _manifest().to_dict()
    data["files"][0]["size"] = 4
    with pytest.raises(ManifestError, match="altered"):
        Manifest.from_dict(data)


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("capsule_id"),
    lambda d: d.update(capsule_id="capsule-../../etc"),
    lambda d: d["files"][0].update(path="../escape"),
    lambda d: d["files"][0].update(path="/abs"),
    lambda d: d["files"][0].update(sha256="xyz"),
    lambda d: d["files"][0].update(role="weird"),
    lambda d: d.update(title=12),
    lambda d: d.update(unknown=1),
])
def test_schema_rejects_bad_manifests_with_a_message(mutate):
    data = copy.deepcopy(_manifest().to_dict())
    mutate(data)
    with pytest.raises(ManifestError, match="capsule.json"):
        Manifest.from_dict(data)


def test_capsule_ids():
    assert is_capsule_id(new_capsule_id())
    assert not is_capsule_id("capsule-1234")
    assert not is_capsule_id("../capsule")


def test_person_ids():
    assert Person("A", "0000-0002-1825-0097").id == "https://orcid.org/0000-0002-1825-0097"
    assert Person("Ada Lovelace").id == "#person-ada-lovelace"
