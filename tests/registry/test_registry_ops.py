"""Copy between backends, integrity checks, migrations, concurrency and failure modes."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from _registry_helpers import crate_with_manifest, make_manifest, register_many
from scidex_nbcapsule.cli import main
from scidex_nbcapsule.errors import RegistryError, RegistryUnavailable
from scidex_nbcapsule.manifest import Person, canonical_json
from scidex_nbcapsule.registry import migrations, open_registry, redact_url
from scidex_nbcapsule.registry.base import lineage_key

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _fill(registry, tmp_path, n: int = 4) -> list[str]:
    """Capsules in two lineages, one with a stored crate, plus verifications and archival requests."""
    ids = []
    crate, _ = crate_with_manifest(tmp_path / "fill-crate")
    ids.append(registry.register_capsule(crate).capsule_id)
    for i in range(n - 1):
        ids.append(registry.register_capsule(make_manifest("Lineage" if i % 2 else "Other")).capsule_id)
    registry.record_verification(ids[0], started=T0, finished=T0, verdict="verified", report={"ok": True})
    registry.record_verification(ids[1], started=T0, finished=T0, verdict="mismatch", report={"cells": [2]})
    row = registry.add_archival_request(ids[0], "swh", "https://github.com/example/repo", "queued")
    registry.update_archival_request(row, "done", request_id="77")
    registry.set_swh_reference(ids[1], snapshot_id="swh:1:snp:" + "b" * 40)
    return ids


def test_copy_sqlite_to_postgres_and_back(sqlite_url, pg_url, tmp_path):
    back_url = f"sqlite:///{tmp_path}/back.sqlite3"
    with open_registry(sqlite_url) as src, open_registry(pg_url) as pg, open_registry(back_url) as back:
        ids = _fill(src, tmp_path)
        report = src.copy_to(pg)
        assert report.ok and report.capsules_copied == 4 and report.verifications_copied == 2
        assert report.dest_counts == report.source_counts
        again = src.copy_to(pg)
        assert again.ok and again.capsules_copied == 0 and again.capsules_present == 4
        assert again.verifications_copied == again.archival_copied == 0
        assert pg.copy_to(back).ok
        for reg in (pg, back):
            assert reg.check().ok
            for capsule_id in ids:
                ours, theirs = src.get_capsule(capsule_id), reg.get_capsule(capsule_id)
                for key in ("manifest_digest", "version", "parent_id", "status", "swh_snapshot_id", "registered_at",
                            "crate_checksum", "files", "stored_crate"):
                    assert theirs[key] == ours[key], key
                assert canonical_json(theirs["manifest"]) == canonical_json(ours["manifest"])
            assert reg.history(ids[2])["versions"] == src.history(ids[2])["versions"]
        (tmp_path / "fill-crate").rename(tmp_path / "moved-away")
        assert (back.export_files(ids[0], tmp_path / "out") / "capsule.json").is_file()
        src.update_archival_request(src.archival_requests()[0]["id"], "failed", details={"why": "test"})
        src.record_verification(ids[2], started=T0, finished=T0, verdict="verified", report={})
        later = src.copy_to(pg)
        assert later.archival_updated == 1 and later.verifications_copied == 1 and later.metadata_updated == 1
        assert pg.archival_requests()[0]["status"] == "failed"
        assert pg.get_capsule(ids[2])["status"] == "verified"


def test_copy_resumes_after_an_interruption(sqlite_url, pg_url, tmp_path, monkeypatch):
    with open_registry(sqlite_url) as src, open_registry(pg_url) as dst:
        _fill(src, tmp_path, n=6)
        real = type(dst)._insert_capsule
        calls = {"n": 0}

        def flaky(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 4:
                raise RegistryError("connection lost (simulated)")
            return real(self, *args, **kwargs)

        monkeypatch.setattr(type(dst), "_insert_capsule", flaky)
        with pytest.raises(RegistryError, match="simulated"):
            src.copy_to(dst)
        monkeypatch.undo()
        assert dst.counts()["capsules"] == 3
        report = src.copy_to(dst)
        assert report.ok and report.capsules_copied == 3 and report.capsules_present == 3
        assert dst.counts() == src.counts()


def test_corrupt_sqlite_file_is_a_clear_error_and_check_reports_it(sqlite_url, tmp_path, capsys):
    with open_registry(sqlite_url) as registry:
        for i in range(40):
            registry.register_capsule(make_manifest(f"Analysis {i}", description="padding " * 2000))
    path = sqlite_url[len("sqlite://"):]
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.seek(size // 2)
        handle.write(os.urandom(3 * 4096))
    with open_registry(sqlite_url) as registry:
        with pytest.raises(RegistryError, match="corrupt"):
            for row in registry.list_capsules(limit=1000):
                registry.get_capsule(row["capsule_id"])
        report = registry.check()
        assert not report.ok
        assert any("integrity" in p for p in report.problems)
    assert main(["db", "check", "--db", sqlite_url]) == 1
    assert "problem:" in capsys.readouterr().out


def test_garbage_sqlite_file_cannot_be_opened(tmp_path, capsys):
    path = tmp_path / "garbage.sqlite3"
    path.write_bytes(os.urandom(64 * 1024))
    with pytest.raises(RegistryError, match="corrupt"):
        open_registry(f"sqlite:///{path}")
    assert main(["db", "check", "--db", f"sqlite:///{path}", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False


def test_migration_from_schema_1_keeps_the_data(db_url):
    old = make_manifest("Old analysis", authors=[Person("Rosalind Franklin", orcid="https://orcid.org/0000-0001")])
    data = old.to_dict()
    with open_registry(db_url, migrate_to=1) as v1:
        assert v1.schema_version() == 1
        with v1._transaction(write=True) as tx:
            tx.execute("INSERT INTO capsules (capsule_id, manifest_digest, title, authors, created_at, notebook, "
                       "manifest, swhids, lineage_key, version, status, registered_at) "
                       "VALUES (?, ?, ?, {J}, ?, ?, {J}, {J}, ?, 1, 'verified', ?)",
                       (old.capsule_id, old.manifest_digest, old.title, json.dumps(data["authors"]), old.created_at,
                        old.notebook, json.dumps(data), "{}", lineage_key(old), "2025-01-01T00:00:00+00:00"))
            for f in old.files:
                tx.execute("INSERT INTO capsule_files (capsule_id, path, role, size, sha256, sha1_git) "
                           "VALUES (?, ?, ?, ?, ?, ?)", (old.capsule_id, f.path, f.role, f.size, f.sha256, f.sha1_git))
            tx.execute("INSERT INTO verifications (uid, capsule_id, started, finished, verdict, report, recorded_at) "
                       "VALUES ('u1', ?, ?, ?, 'verified', {J}, ?)",
                       (old.capsule_id, "2025-01-01", "2025-01-01", "{}", "2025-01-01"))
    with open_registry(db_url) as latest:
        assert latest.schema_version() == len(migrations.available())
        assert [r["capsule_id"] for r in latest.list_capsules(author="rosalind")] == [old.capsule_id]
        assert [r["capsule_id"] for r in latest.list_capsules(author="0000-0001", status="verified")] == [old.capsule_id]
        assert [r["capsule_id"] for r in latest.list_capsules(text="old analysis")] == [old.capsule_id]
        assert latest.get_capsule(old.capsule_id)["license"] == old.license
        assert latest.check().ok
        newer = latest.register_capsule(make_manifest("Old analysis"))
        assert (newer.version, newer.parent_id) == (2, old.capsule_id)
        assert len(latest.history(old.capsule_id)["verifications"]) == 1
    with open_registry(db_url) as reopened:
        assert reopened.schema_version() == len(migrations.available())
    if db_url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(db_url) as conn:
            options = conn.execute("SELECT reloptions FROM pg_class WHERE relname = 'capsule_files'").fetchone()[0]
        assert "autovacuum_analyze_scale_factor=0.02" in options  # v0003: statistics kept fresh while it grows
        with open_registry(db_url) as registry, registry._transaction(write=False) as tx:
            # digest lookups stay index lookups even where autovacuum is off (no 6 ms parallel workers)
            assert tx.all("SHOW max_parallel_workers_per_gather", ())[0]["max_parallel_workers_per_gather"] == "0"


def test_newer_schema_is_refused(db_url):
    with open_registry(db_url) as registry:
        with registry._transaction(write=True) as tx:
            tx.execute("INSERT INTO schema_version (version, name, applied_at) VALUES (99, 'future', 'now')")
    with pytest.raises(RegistryError, match="newer"):
        open_registry(db_url)


def test_concurrent_registrations_lose_and_duplicate_nothing(db_url):
    rng = random.Random(5)
    shared = [make_manifest(f"Shared {i % 3}").to_json() for i in range(15)]
    batches = []
    for worker in range(4):
        own = [make_manifest(f"Shared {i % 3}" if i % 2 else f"Own {worker}").to_json() for i in range(35)]
        batch = own + shared
        rng.shuffle(batch)
        batches.append(batch)
    open_registry(db_url).close()
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.starmap(register_many, [(db_url, batch) for batch in batches])
    flat = [r for worker in results for r in worker]
    assert len(flat) == 200
    unique = {digest for digest, *_ in flat}
    assert len(unique) == 4 * 35 + 15
    created = [digest for digest, _, was_created, *_ in flat if was_created]
    assert sorted(created) == sorted(unique)
    with open_registry(db_url) as registry:
        assert registry.counts()["capsules"] == len(unique)
        rows = registry.list_capsules(limit=1000)
        assert len({r["manifest_digest"] for r in rows}) == len(rows) == len(unique)
        by_id = {r["capsule_id"]: r for r in rows}
        lineages: dict[str, list[int]] = {}
        for row in rows:
            lineages.setdefault(registry.history(row["capsule_id"])["lineage_key"], []).append(row["version"])
            if row["parent_id"]:
                assert by_id[row["parent_id"]]["version"] == row["version"] - 1
        for versions in lineages.values():
            assert sorted(versions) == list(range(1, len(versions) + 1))
        assert registry.check().ok


@pytest.mark.parametrize("url, needle", [
    ("postgresql://postgres:s3cret-pw@127.0.0.1:1/test", "127.0.0.1"),
    ("postgresql://postgres:s3cret-pw@127.0.0.1:5432/no_such_nbcapsule_db", "no_such_nbcapsule_db"),
])
def test_dead_database_is_a_clear_error_without_the_password(url, needle, pg_database):
    with pytest.raises(RegistryUnavailable) as info:
        open_registry(url)
    message = str(info.value)
    assert "s3cret-pw" not in message and "postgres:***@" in message and needle in message


def test_unusable_sqlite_path_and_unknown_scheme(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RegistryUnavailable):
        open_registry(f"sqlite:///{blocker}/sub/registry.sqlite3")
    with pytest.raises(RegistryError, match="unsupported"):
        open_registry("mysql://root:pw@localhost/db")


def test_redact_url():
    assert redact_url("postgresql://u:pa%40ss@h:5432/db?sslmode=require") == "postgresql://u:***@h:5432/db?sslmode=require"
    assert redact_url("postgresql://h/db?user=u&password=secret") == "postgresql://h/db?user=u&password=***"
    assert redact_url("host=h password=secret dbname=x") == "host=h password=*** dbname=x"
    assert redact_url("sqlite:////tmp/x.sqlite3") == "sqlite:////tmp/x.sqlite3"


def test_default_url_and_no_psycopg_for_sqlite(tmp_path):
    code = ("import sys, scidex_nbcapsule.registry as r; reg = r.open_registry(); print(reg.url); reg.close(); "
            "assert 'psycopg' not in sys.modules, 'psycopg imported'")
    env = dict(os.environ, SCIDEX_NBCAPSULE_DB=f"sqlite:///{tmp_path}/env.sqlite3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "env.sqlite3").is_file()
    env = {k: v for k, v in os.environ.items() if k != "SCIDEX_NBCAPSULE_DB"}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"sqlite:///{tmp_path}/xdg/scidex-nbcapsule/registry.sqlite3"


def test_cli(db_url, tmp_path, capsys):
    crate, manifest = crate_with_manifest(tmp_path / "crate")
    assert main(["register", str(crate), "--db", db_url, "--json"]) == 0
    registered = json.loads(capsys.readouterr().out)
    assert registered["capsule_id"] == manifest.capsule_id and registered["created"] is True
    assert main(["register", str(crate), "--db", db_url]) == 0
    assert "already registered" in capsys.readouterr().out
    assert main(["list", "--db", db_url, "--author", "lovelace", "--json"]) == 0
    assert [r["capsule_id"] for r in json.loads(capsys.readouterr().out)] == [manifest.capsule_id]
    assert main(["list", "--db", db_url, "--status", "mismatch", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["show", manifest.capsule_id, "--db", db_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["manifest_digest"] == manifest.manifest_digest
    assert main(["show", manifest.capsule_id, "--db", db_url]) == 0
    assert manifest.capsule_id in capsys.readouterr().out
    os.environ["SCIDEX_NBCAPSULE_DB"] = db_url
    try:
        assert main(["history", manifest.capsule_id]) == 0
        assert "v1" in capsys.readouterr().out
    finally:
        del os.environ["SCIDEX_NBCAPSULE_DB"]
    assert main(["export-files", manifest.capsule_id, str(tmp_path / "out"), "--db", db_url]) == 0
    assert main(["export-files", manifest.capsule_id, str(tmp_path / "out"), "--db", db_url]) != 0
    assert main(["show", "capsule-nope", "--db", db_url]) == 2
    assert main(["db", "check", "--db", db_url]) == 0
    copy_url = f"sqlite:///{tmp_path}/copy.sqlite3"
    assert main(["db", "copy", db_url, copy_url, "--json"]) == 0
    capsys.readouterr()
    assert main(["show", manifest.capsule_id, "--db", copy_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["capsule_id"] == manifest.capsule_id


def test_postgres_connections_killed_by_the_server_are_replaced(pg_url):
    import psycopg

    with open_registry(pg_url) as registry:
        capsule = registry.register_capsule(make_manifest()).capsule_id
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        assert registry.get_capsule(capsule)["capsule_id"] == capsule
