"""The registry API, run identically against SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _registry_helpers import crate_with_manifest, make_manifest
from scidex_nbcapsule.errors import (CapsuleNotFound, DestinationExists, FixityError, InvalidId, ManifestError,
                                     RegistryError)
from scidex_nbcapsule.manifest import Person, new_capsule_id
from scidex_nbcapsule.registry import open_registry

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_registration_is_idempotent_by_manifest_digest(registry):
    manifest = make_manifest()
    first = registry.register_capsule(manifest, crate_checksum="a" * 64, location="/nowhere/crate")
    again = registry.register_capsule(manifest)
    assert first.created and not again.created
    assert again.capsule_id == first.capsule_id == manifest.capsule_id
    assert (again.version, again.parent_id) == (1, None)
    assert registry.counts()["capsules"] == 1
    assert registry.counts()["capsule_files"] == len(manifest.files)
    stored = registry.get_capsule_manifest(manifest.capsule_id)
    assert stored.manifest_digest == manifest.manifest_digest and stored == manifest


def test_register_crate_folder_stores_a_copy(registry, tmp_path):
    crate, manifest = crate_with_manifest(tmp_path / "crate")
    result = registry.register_capsule(crate)
    assert result.created
    info = registry.get_capsule(manifest.capsule_id)
    assert info["location"] == str(crate.resolve())
    assert len(info["crate_checksum"]) == 64
    assert info["stored_crate"]["size"] > 0
    assert registry.register_capsule(crate).created is False


def test_unsealed_or_altered_manifest_is_refused(registry):
    manifest = make_manifest()
    manifest.title = "changed after sealing"
    with pytest.raises(ManifestError):
        registry.register_capsule(manifest)


def test_same_id_with_another_manifest_is_refused(registry):
    manifest = make_manifest()
    registry.register_capsule(manifest)
    manifest.title = "another manifest, same id"
    with pytest.raises(RegistryError, match="different manifest"):
        registry.register_capsule(manifest.seal())


def test_versions_and_parents_follow_the_lineage(registry):
    results = [registry.register_capsule(make_manifest("Growth curves")) for _ in range(3)]
    assert [r.version for r in results] == [1, 2, 3]
    assert [r.parent_id for r in results] == [None, results[0].capsule_id, results[1].capsule_id]
    other = registry.register_capsule(make_manifest("Another analysis"))
    assert (other.version, other.parent_id) == (1, None)
    history = registry.history(results[1].capsule_id)
    assert [v["capsule_id"] for v in history["versions"]] == [r.capsule_id for r in results]


def test_git_origin_keeps_the_lineage_when_the_title_changes(registry):
    git = {"origin_url": "https://github.com/Example/Repo.git"}
    first = registry.register_capsule(make_manifest("Draft title", git=git))
    second = registry.register_capsule(make_manifest("Final title", git={"origin_url": "https://GitHub.com/Example/Repo/"}))
    assert (second.version, second.parent_id) == (2, first.capsule_id)
    elsewhere = registry.register_capsule(make_manifest("Final title", git=git, notebook="other.ipynb"))
    assert elsewhere.version == 1


def test_explicit_references_override_and_are_validated(registry):
    manifest = make_manifest(git_commit="1" * 40)
    registry.register_capsule(manifest, git_commit="2" * 40, swh_snapshot_id="swh:1:snp:" + "3" * 40,
                              swh_origin_url="https://github.com/example/repo")
    info = registry.get_capsule(manifest.capsule_id)
    assert info["git_commit"] == "2" * 40
    assert info["swh_snapshot_id"] == "swh:1:snp:" + "3" * 40
    assert registry.get_capsule_manifest(manifest.capsule_id).git_commit == "1" * 40
    for bad in ({"git_commit": "xyz"}, {"git_tree_hash": "A" * 40}, {"swh_snapshot_id": "swh:1:rev:" + "0" * 40},
                {"swh_origin_url": "javascript:alert(1)"}, {"crate_checksum": "00"}):
        with pytest.raises(InvalidId):
            registry.register_capsule(make_manifest(), **bad)


def test_unknown_and_malformed_ids(registry):
    with pytest.raises(CapsuleNotFound):
        registry.get_capsule(new_capsule_id())
    with pytest.raises(CapsuleNotFound):
        registry.history(new_capsule_id())
    for bad in ("capsule-1' OR '1'='1", "", None, "../etc/passwd"):
        with pytest.raises(InvalidId):
            registry.get_capsule(bad)


def test_list_filters(registry):
    ada = registry.register_capsule(make_manifest("Cell growth", git_commit="abcdef" + "0" * 34,
                                                  description="Yeast under heat STRESS"))
    grace = registry.register_capsule(make_manifest("Compiler timings", authors=[Person("Grace Hopper")],
                                                    git_commit="123456" + "0" * 34))
    registry.record_verification(grace.capsule_id, started=T0, finished=T0, verdict="verified", report={})
    ids = lambda rows: {r["capsule_id"] for r in rows}  # noqa: E731
    assert ids(registry.list_capsules()) == {ada.capsule_id, grace.capsule_id}
    assert ids(registry.list_capsules(author="LOVEL")) == {ada.capsule_id}
    assert ids(registry.list_capsules(author="0000-0002-1825-0097")) == {ada.capsule_id}
    assert ids(registry.list_capsules(author="https://orcid.org/0000-0002-1825-0097")) == {ada.capsule_id}
    assert ids(registry.list_capsules(commit="ABCDEF")) == {ada.capsule_id}
    assert ids(registry.list_capsules(status="verified")) == {grace.capsule_id}
    assert ids(registry.list_capsules(status="registered", text="heat stress")) == {ada.capsule_id}
    assert ids(registry.list_capsules(text="analysis.IPYNB")) == {ada.capsule_id, grace.capsule_id}
    assert len(registry.list_capsules(limit=1)) == 1
    assert registry.list_capsules(limit=1, offset=2) == []
    newest = registry.list_capsules()[0]
    assert newest["capsule_id"] == grace.capsule_id and newest["status"] == "verified"


def test_filters_resist_injection_and_wildcards(registry):
    registry.register_capsule(make_manifest("Plain"))
    for text in ("%", "_", "' OR '1'='1", "'; DROP TABLE capsules; --", "\\", "%' --"):
        assert registry.list_capsules(author=text) == []
        assert registry.list_capsules(text=text) == []
    for kwargs in ({"commit": "abc' OR 1=1 --"}, {"status": "verified' OR '1'='1"}, {"limit": "10; DROP"},
                   {"offset": -1}, {"author": "a\x00b"}):
        with pytest.raises(InvalidId):
            registry.list_capsules(**kwargs)
    with pytest.raises(InvalidId):
        registry.find_by_digest("' OR 1=1 --")
    assert registry.counts()["capsules"] == 1


def test_find_by_digest(registry):
    shared = b"shared,data\n"
    a = registry.register_capsule(make_manifest("A", payload={"data/shared.csv": shared}))
    b = registry.register_capsule(make_manifest("B", payload={"inputs/same.csv": shared, "x.txt": b"x"}))
    b2 = registry.register_capsule(make_manifest("B", payload={"inputs/same.csv": shared}))
    from scidex_nbcapsule.hashing import hash_bytes

    digest = hash_bytes(shared).sha256
    rows = registry.find_by_digest(digest.upper())
    assert [(r["capsule_id"], r["path"], r["role"]) for r in rows] == [
        (a.capsule_id, "data/shared.csv", "input"), (b.capsule_id, "inputs/same.csv", "input"),
        (b2.capsule_id, "inputs/same.csv", "input")]
    assert rows[2]["version"] == 2 and rows[2]["parent_id"] == b.capsule_id
    assert registry.find_by_digest("0" * 64) == []


def test_verifications_set_the_status_from_the_latest(registry):
    capsule = registry.register_capsule(make_manifest()).capsule_id
    first = registry.record_verification(capsule, started=T0, finished=T0 + timedelta(minutes=1),
                                         verdict="verified", report={"cells": 3}, environment_digest="e" * 64)
    assert registry.get_capsule(capsule)["status"] == "verified"
    second = registry.record_verification(capsule, started=T0 + timedelta(hours=1),
                                          finished=T0 + timedelta(hours=2), verdict="mismatch",
                                          report={"diff": ["cell 3"]})
    registry.record_verification(capsule, started=T0 - timedelta(days=1), finished=T0 - timedelta(days=1),
                                 verdict="verified", report={})
    assert second > first
    assert registry.get_capsule(capsule)["status"] == "mismatch"
    history = registry.history(capsule)
    assert [v["verdict"] for v in history["verifications"]] == ["verified", "verified", "mismatch"]
    assert history["verifications"][2]["report"] == {"diff": ["cell 3"]}
    with pytest.raises(CapsuleNotFound):
        registry.record_verification(new_capsule_id(), started=T0, finished=T0, verdict="verified", report={})
    with pytest.raises(InvalidId):
        registry.record_verification(capsule, started=T0, finished=T0, verdict="Verified!", report={})
    with pytest.raises(InvalidId):
        registry.record_verification(capsule, started=T0, finished=T0, verdict="verified", report={"x": float("nan")})


def test_archival_requests_and_citation(registry, tmp_path):
    crate, manifest = crate_with_manifest(tmp_path / "crate")
    capsule = registry.register_capsule(crate).capsule_id
    row = registry.add_archival_request(capsule, "swh", "https://github.com/example/repo", "queued")
    bag = registry.add_archival_request(capsule, "bagit", str(tmp_path / "bag"), "done", details={"oxum": "1.2"})
    registry.update_archival_request(row, "done", request_id="12345", details={"visit": "full"})
    assert [r["id"] for r in registry.archival_requests(status="done")] == [row, bag]
    assert registry.archival_requests(capsule_id=new_capsule_id()) == []
    assert registry.archival_requests(capsule)[0]["request_id"] == "12345"
    with pytest.raises(RegistryError):
        registry.update_archival_request(row + 1000, "done")
    with pytest.raises(CapsuleNotFound):
        registry.add_archival_request(new_capsule_id(), "swh", "https://x", "queued")
    registry.set_swh_reference(capsule, origin_url="https://github.com/example/repo",
                               snapshot_id="swh:1:snp:" + "a" * 40)
    cite = registry.citation(capsule)
    assert cite["capsule_id"] == capsule and cite["crate_checksum"] == registry.get_capsule(capsule)["crate_checksum"]
    assert cite["swh_snapshot_id"] == "swh:1:snp:" + "a" * 40
    assert {e["path"]: e["sha256"] for e in cite["entities"]} == {f.path: f.sha256 for f in manifest.files}
    assert [a["archiver"] for a in cite["archival"]] == ["swh", "bagit"]
    assert registry.get_capsule_manifest(capsule).manifest_digest == manifest.manifest_digest
    with pytest.raises(InvalidId):
        registry.set_swh_reference(capsule, snapshot_id="swh:1:snp:bad")


def test_manifest_rows_cannot_be_updated(registry):
    capsule = registry.register_capsule(make_manifest()).capsule_id
    with pytest.raises(RegistryError, match="immutable"):
        with registry._transaction(write=True) as tx:
            tx.execute("UPDATE capsules SET manifest_digest = ? WHERE capsule_id = ?", ("0" * 64, capsule))
    with pytest.raises(RegistryError, match="immutable"):
        with registry._transaction(write=True) as tx:
            tx.execute("UPDATE capsule_files SET sha256 = ? WHERE capsule_id = ?", ("0" * 64, capsule))
    assert registry.check().ok


def test_export_files_from_the_stored_copy(registry, tmp_path):
    crate, manifest = crate_with_manifest(tmp_path / "crate")
    registry.register_capsule(crate)
    shutil.rmtree(crate)
    out = registry.export_files(manifest.capsule_id, tmp_path / "restored")
    assert (out / "capsule.json").is_file() and (out / "results" / "out.txt").read_bytes() == b"42\n"
    with pytest.raises(DestinationExists):
        registry.export_files(manifest.capsule_id, out)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_export_files_from_the_location_checks_fixity(db_url, tmp_path):
    with open_registry(db_url, max_blob_bytes=10) as registry:
        crate, manifest = crate_with_manifest(tmp_path / "crate")
        registry.register_capsule(crate)
        assert registry.get_capsule(manifest.capsule_id)["stored_crate"] is None
        registry.export_files(manifest.capsule_id, tmp_path / "copy")
        (crate / "results" / "out.txt").write_bytes(b"43\n")
        with pytest.raises(FixityError):
            registry.export_files(manifest.capsule_id, tmp_path / "tampered")
        assert not (tmp_path / "tampered").exists()
        shutil.rmtree(crate)
        with pytest.raises(RegistryError, match="gone"):
            registry.export_files(manifest.capsule_id, tmp_path / "gone")


def test_check_reports_a_tampered_manifest(registry, db_url):
    good = registry.register_capsule(make_manifest("Good")).capsule_id
    bad = registry.register_capsule(make_manifest("Bad")).capsule_id
    assert registry.check().ok
    sqlite = db_url.startswith("sqlite")
    with registry._transaction(write=True) as tx:
        tx.script("DROP TRIGGER capsules_manifest_immutable" + ("" if sqlite else " ON capsules"))
        if sqlite:
            tx.execute("UPDATE capsules SET manifest = json_set(manifest, '$.title', 'Forged') WHERE capsule_id = ?",
                       (bad,))
        else:
            tx.execute("UPDATE capsules SET manifest = jsonb_set(manifest, '{title}', '\"Forged\"') "
                       "WHERE capsule_id = ?", (bad,))
    report = registry.check()
    assert not report.ok and report.mismatched == [bad] and report.capsules_checked == 2
    assert good not in report.mismatched
    with pytest.raises(ManifestError):
        registry.get_capsule_manifest(bad)


def test_register_a_zip_an_opened_crate_and_an_exported_capsule(registry, tmp_path):
    from scidex_nbcapsule.api import Capsule
    from scidex_nbcapsule.crate import crate_checksum, open_crate

    folder, zipped_manifest = crate_with_manifest(tmp_path / "zipped", "Zipped")
    archive = shutil.make_archive(str(tmp_path / "zipped"), "zip", root_dir=folder)
    shutil.rmtree(folder)
    assert registry.register_capsule(archive).created
    assert registry.get_capsule(zipped_manifest.capsule_id)["stored_crate"] is not None
    assert (registry.export_files(zipped_manifest.capsule_id, tmp_path / "unzipped") / "capsule.json").is_file()

    folder, opened_manifest = crate_with_manifest(tmp_path / "opened", "Opened")
    with open_crate(folder) as crate:
        assert registry.register_capsule(crate).capsule_id == opened_manifest.capsule_id

    folder, exported_manifest = crate_with_manifest(tmp_path / "exported", "Exported")
    capsule = Capsule(path=folder, manifest=exported_manifest, checksum=crate_checksum(folder))
    result = registry.register_capsule(capsule, git_commit="c" * 40)
    info = registry.get_capsule(result.capsule_id)
    assert info["crate_checksum"] == capsule.checksum and info["git_commit"] == "c" * 40
    assert info["location"] == str(folder.resolve())


def test_nul_characters_are_refused_on_every_backend(registry):
    with pytest.raises(ManifestError, match="NUL"):
        registry.register_capsule(make_manifest("bad\x00title"))
    capsule = registry.register_capsule(make_manifest()).capsule_id
    with pytest.raises(InvalidId):
        registry.record_verification(capsule, started=T0, finished=T0, verdict="verified", report={"x": "a\x00"})


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                min_size=1, max_size=12)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fragment=_TEXT)
def test_text_search_finds_any_fragment_literally(registry, fragment):
    capsule = registry.register_capsule(make_manifest(f"<{fragment}>")).capsule_id
    assert capsule in {r["capsule_id"] for r in registry.list_capsules(text=fragment, limit=10000)}
    assert capsule in {r["capsule_id"] for r in registry.list_capsules(text=f"<{fragment}>", limit=10000)}
