"""The capsule model: canonical JSON, digest, schema."""

from __future__ import annotations

import copy

import jsonschema
import pytest
from hypothesis import given, settings, strategies as st

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


def _mutations():
    """Small damage to a full manifest: every field wrong in the ways a hand edit or another tool gets it wrong."""
    values = (st.none() | st.booleans() | st.integers(-3, 1 << 40) | st.text(max_size=80)
              | st.sampled_from(["a" * 64, "A" * 64, "swh:1:cnt:" + "0" * 40, "2026-01-01T00:00:00Z", "x" * 20_000])
              | st.lists(st.text(max_size=5), max_size=3) | st.dictionaries(st.text(max_size=5), st.integers(),
                                                                              max_size=2))
    return st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(["set", "delete", "add"]), values),
                    min_size=1, max_size=3)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, prefix + (index,))


@settings(max_examples=300, deadline=None)
@given(_mutations())
def test_the_compiled_validator_agrees_with_jsonschema(edits):
    """capsule.json is checked by fastjsonschema (fast to import); the reference implementation must agree."""
    from scidex_nbcapsule.manifest import validate

    manifest = _manifest()
    manifest.execution.cells.append(CellRun("c1", 1, "c" * 64, utc_now(), utc_now(), "ok", reads=["a"]))
    data = manifest.seal().to_dict()
    for where, how, value in edits:
        paths = list(_paths(data))[1:]
        path = paths[where % len(paths)]
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        if how == "set":
            parent[path[-1]] = value
        elif how == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent["unexpected_" + str(where)] = value
        else:
            parent.append(value)
    reference = jsonschema.Draft202012Validator(schema()).is_valid(data)
    try:
        validate(data)
        ours = True
    except ManifestError:
        ours = False
    assert ours == reference  # (300 examples: about 250 invalid, 50 still valid)
