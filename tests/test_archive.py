"""Archivers: BagIt bags checked by bagit-python, Save Code Now against a real local HTTP server."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import bagit
import pytest

from scidex_nbcapsule.archive import (
    FAILED, PENDING, QUEUED, REJECTED, SUCCEEDED, ArchiveResult, Archiver, available_archivers, get_archiver,
    poll_status, retry_pending, run_archival,
)
from scidex_nbcapsule.archive.bagit import BagItArchiver, build_bag, read_bag, unpacked_crate
from scidex_nbcapsule.archive.swh import SaveCodeNowArchiver
from scidex_nbcapsule.errors import ArchiveError, DestinationExists, FixityError
from scidex_nbcapsule.hashing import hash_file
from scidex_nbcapsule.manifest import FileRecord, Manifest, new_capsule_id, utc_now

COMMIT = "3" * 40
SNAPSHOT = "swh:1:snp:" + "4" * 40


def make_crate(folder: Path, *, origin: str | None = "https://github.com/owner/repo", big: int = 0) -> Manifest:
    """A small crate folder with a sealed capsule.json, written without the crate writer (``big``: add a file of
    that many random bytes)."""
    files = {"analysis.ipynb": ("code", b'{"cells": []}\n'), "data/in put.csv": ("input", b"a,b\n1,2\n"),
             "results/fig.png": ("output", bytes(range(256)) * 10), "code/run.sh": ("code", b"#!/bin/sh\n")}
    if big:
        files["data/big.bin"] = ("input", os.urandom(big))
    records = []
    for rel, (role, content) in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        if rel.endswith(".sh"):
            path.chmod(0o755)
        d = hash_file(path)
        records.append(FileRecord(path=rel, role=role, size=d.size, sha256=d.sha256, sha1_git=d.sha1_git, mode=d.mode))
    manifest = Manifest(capsule_id=new_capsule_id(), title="Démo\nanalysis", license="CC-BY-4.0", created_at=utc_now(),
                        notebook="analysis.ipynb", notebook_sha256=records[0].sha256, files=records,
                        git_commit=COMMIT, git={"commit": COMMIT, "origin_url": origin, "dirty": False}).seal()
    (folder / "capsule.json").write_text(manifest.to_json(), encoding="utf-8")
    (folder / "ro-crate-metadata.json").write_text(json.dumps({
        "@context": "https://w3id.org/ro/crate/1.1/context",
        "@graph": [{"@id": "ro-crate-metadata.json", "@type": "CreativeWork", "about": {"@id": "./"}},
                   {"@id": "./", "@type": "Dataset"}]}), encoding="utf-8")
    return manifest


@pytest.fixture
def crate(tmp_path) -> tuple[Path, Manifest]:
    folder = tmp_path / "capsule"
    return folder, make_crate(folder)


# -- plugin interface ------------------------------------------------------

def test_plugins_are_discoverable():
    assert {"bagit", "swh"} <= set(available_archivers())
    assert isinstance(get_archiver("bagit"), BagItArchiver)
    assert isinstance(get_archiver("swh", base_url="http://127.0.0.1:9"), SaveCodeNowArchiver)
    with pytest.raises(ArchiveError, match="bagit, swh"):
        get_archiver("tape")


def test_bagit_has_no_status():
    with pytest.raises(ArchiveError, match="synchronously"):
        get_archiver("bagit").status({})
    assert issubclass(BagItArchiver, Archiver)


# -- BagIt -----------------------------------------------------------------

def test_bag_is_valid_bagit_1_0(crate, tmp_path):
    folder, manifest = crate
    dest = tmp_path / "out" / "capsule.bag"
    result = run_archival("bagit", folder, dest=dest, validate="full")
    assert result.status == SUCCEEDED and result.capsule_id == manifest.capsule_id
    assert Path(result.location) == dest.resolve()
    bag = bagit.Bag(str(dest))
    assert bag.validate()
    assert bag.version_info == (1, 0)
    assert (dest / "bagit.txt").read_text() == "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
    for name in ("manifest-sha256.txt", "manifest-sha512.txt", "tagmanifest-sha256.txt", "tagmanifest-sha512.txt"):
        assert (dest / name).is_file()
    assert set(bag.algorithms) == {"sha256", "sha512"}
    assert (dest / "data" / "capsule.json").read_bytes() == (folder / "capsule.json").read_bytes()
    assert (dest / "data" / "code" / "run.sh").stat().st_mode & 0o111
    info = bag.info
    assert info["External-Identifier"] == "urn:uuid:" + manifest.capsule_id.removeprefix("capsule-")
    assert manifest.capsule_id in info["External-Description"] and "\n" not in info["External-Description"]
    assert info["Bagging-Date"] and info["Payload-Oxum"].endswith(".6")
    sha256_lines = (dest / "manifest-sha256.txt").read_text().splitlines()
    record = manifest.file("results/fig.png")
    assert f"{record.sha256}  data/results/fig.png" in sha256_lines
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]


def test_bag_of_a_big_file_passes_bagit_full_validation(tmp_path):
    # the big file goes through the kernel copy with SHA-256 and SHA-512 hashed behind it; bagit-python re-reads
    # the bag and recomputes both
    folder = tmp_path / "capsule"
    make_crate(folder, big=(9 << 20) + 3)
    dest = tmp_path / "big.bag"
    run_archival("bagit", folder, dest=dest, validate="full")
    assert bagit.Bag(str(dest)).validate()
    assert (dest / "data" / "data" / "big.bin").read_bytes() == (folder / "data" / "big.bin").read_bytes()


def test_bag_roundtrip_and_tamper_detection(crate, tmp_path):
    folder, manifest = crate
    dest = tmp_path / "b"
    build_bag(folder, dest, manifest)
    with unpacked_crate(dest) as inner:
        assert Manifest.from_json((inner / "capsule.json").read_text()).capsule_id == manifest.capsule_id
    assert read_bag(dest)["BagIt-Version"] == "1.0"
    (dest / "data" / "data" / "in put.csv").write_bytes(b"a,b\n9,9\n")
    with pytest.raises(ArchiveError, match="not a valid BagIt bag"):
        read_bag(dest)


def test_existing_destination_is_refused(crate, tmp_path):
    folder, manifest = crate
    dest = tmp_path / "exists"
    dest.mkdir()
    with pytest.raises(DestinationExists):
        build_bag(folder, dest, manifest)
    assert list(dest.iterdir()) == []
    with pytest.raises(ArchiveError, match="inside the crate"):
        build_bag(folder, folder / "bag", manifest)


def test_corrupt_crate_leaves_nothing(crate, tmp_path):
    folder, manifest = crate
    (folder / "results" / "fig.png").write_bytes(b"not the figure")
    with pytest.raises(FixityError, match="results/fig.png"):
        build_bag(folder, tmp_path / "bad.bag", manifest)
    assert not (tmp_path / "bad.bag").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["capsule"]
    (folder / "results" / "fig.png").unlink()
    with pytest.raises(FixityError, match="missing"):
        build_bag(folder, tmp_path / "bad.bag", manifest)


def test_default_destination_beside_crate(crate):
    folder, manifest = crate
    result = BagItArchiver().archive(folder, manifest)
    assert Path(result.target) == folder.parent / "capsule.bag"
    assert bagit.Bag(result.target).is_valid()


# -- Save Code Now ---------------------------------------------------------

class FakeSWH:
    """A tiny Software Heritage Save Code Now API on 127.0.0.1 answering the documented shapes."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.saves: dict[int, dict[str, Any]] = {}
        self.reject = False
        self.known_revisions = {COMMIT}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                fake.requests.append(("POST", self.path, dict(self.headers)))
                prefix = "/api/1/origin/save/git/url/"
                if not self.path.startswith(prefix):
                    return self._send(404, {"exception": "NotFoundExc", "reason": "no such endpoint"})
                origin = self.path[len(prefix):].rstrip("/")
                if fake.reject:
                    return self._send(200, fake.record(origin, "rejected", "not created"))
                return self._send(200, fake.record(origin, "accepted", "not yet scheduled"))

            def do_GET(self) -> None:
                fake.requests.append(("GET", self.path, dict(self.headers)))
                parts = self.path.strip("/").split("/")
                if parts[:3] == ["api", "1", "revision"]:
                    if parts[3] in fake.known_revisions:
                        return self._send(200, {"id": parts[3]})
                    return self._send(404, {"exception": "NotFoundExc", "reason": "Revision not found"})
                if parts[:4] == ["api", "1", "origin", "save"] and len(parts) == 5 and parts[4].isdigit():
                    save = fake.saves.get(int(parts[4]))
                    return self._send(200, save) if save else self._send(404, {"reason": "unknown request"})
                prefix = "/api/1/origin/save/git/url/"
                if self.path.startswith(prefix):
                    origin = self.path[len(prefix):].rstrip("/")
                    return self._send(200, [s for s in fake.saves.values() if s["origin_url"] == origin])
                return self._send(404, {"reason": "no such endpoint"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def record(self, origin: str, request_status: str, task_status: str) -> dict[str, Any]:
        save_id = len(self.saves) + 1
        save = {"id": save_id, "origin_url": origin, "visit_type": "git",
                "save_request_date": f"2024-01-01T00:00:{save_id:02d}+00:00", "save_request_status": request_status,
                "save_task_status": task_status, "visit_status": None, "visit_date": None, "snapshot_swhid": None,
                "loading_task_id": None, "note": None,
                "request_url": f"{self.url}/api/1/origin/save/{save_id}/"}
        self.saves[save_id] = save
        return save

    def finish(self, save_id: int, *, ok: bool = True) -> None:
        self.saves[save_id].update(save_task_status="succeeded" if ok else "failed",
                                   visit_status="full" if ok else "failed",
                                   snapshot_swhid=SNAPSHOT if ok else None, visit_date="2024-01-01T01:00:00+00:00")

    def __enter__(self) -> "FakeSWH":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def registry(tmp_path, crate):
    """The real SQLite registry, with the test crate's capsule registered."""
    from scidex_nbcapsule.registry import open_registry

    folder, manifest = crate
    with open_registry(f"sqlite:///{tmp_path / 'registry.sqlite3'}") as reg:
        reg.register_capsule(manifest, crate_checksum="0" * 64, location=str(folder))
        yield reg


def _rows(registry, capsule_id):
    return registry.archival_requests(capsule_id=capsule_id)


@pytest.fixture
def swh():
    with FakeSWH() as server:
        yield server


def test_accepted_then_succeeded(crate, swh, monkeypatch, registry):
    folder, manifest = crate
    monkeypatch.setenv("SCIDEX_NBCAPSULE_SWH_URL", swh.url)
    monkeypatch.setenv("SCIDEX_NBCAPSULE_SWH_TOKEN", "s3cret-token")
    result = run_archival("swh", folder, registry)
    assert result.status == PENDING and result.request_id == "1"
    assert result.target == "https://github.com/owner/repo"
    assert result.details["revision"] == f"swh:1:rev:{COMMIT}"
    method, path, headers = swh.requests[0]
    assert (method, path) == ("POST", "/api/1/origin/save/git/url/https://github.com/owner/repo/")
    assert headers["Authorization"] == "Bearer s3cret-token"
    rows = _rows(registry, manifest.capsule_id)
    assert "s3cret-token" not in json.dumps(rows, default=str)
    assert rows[0]["status"] == PENDING and rows[0]["request_id"] == "1"

    assert [r.status for r in poll_status(registry, manifest.capsule_id)] == [PENDING]
    swh.finish(1)
    (polled,) = poll_status(registry, manifest.capsule_id)
    assert polled.status == SUCCEEDED and polled.location == SNAPSHOT
    assert polled.details["revision_archived"] is True
    rows = _rows(registry, manifest.capsule_id)
    assert rows[0]["status"] == SUCCEEDED and len(rows) == 1
    stored = registry.get_capsule(manifest.capsule_id)
    assert (stored["swh_origin_url"], stored["swh_snapshot_id"]) == ("https://github.com/owner/repo", SNAPSHOT)
    assert ("GET", "/api/1/origin/save/1/") in [(m, p) for m, p, _ in swh.requests]


def test_status_by_origin_without_request_id(swh):
    archiver = SaveCodeNowArchiver(base_url=swh.url)
    swh.record("https://github.com/owner/repo", "accepted", "running")
    swh.record("https://github.com/owner/repo", "accepted", "succeeded")
    swh.finish(2)
    result = archiver.status({"target": "https://github.com/owner/repo", "details": {}})
    assert result.status == SUCCEEDED and result.request_id == "2" and result.details["snapshot_swhid"] == SNAPSHOT


def test_failed_task(swh):
    archiver = SaveCodeNowArchiver(base_url=swh.url)
    first = archiver.submit("https://github.com/owner/repo")
    swh.finish(int(first.request_id), ok=False)
    assert archiver.status(first.to_dict()).status == FAILED


def test_rejected(crate, swh):
    folder, manifest = crate
    swh.reject = True
    result = run_archival("swh", folder, archiver_config={"base_url": swh.url})
    assert result.status == REJECTED and result.final


def test_http_errors_are_results(swh):
    archiver = SaveCodeNowArchiver(base_url=swh.url + "/nothing-here")
    result = archiver.submit("https://github.com/owner/repo")
    assert result.status == REJECTED and "no such endpoint" in result.details["reason"]


def test_server_down_is_queued_then_retried(crate, tmp_path, registry):
    folder, manifest = crate
    with FakeSWH() as probe:
        down_url = probe.url
    result = run_archival("swh", folder, registry, archiver_config={"base_url": down_url, "timeout": 2})
    assert result.status == QUEUED and "could not be reached" in result.details["reason"]
    rows = _rows(registry, manifest.capsule_id)
    assert rows[0]["status"] == QUEUED and rows[0]["target"] == "https://github.com/owner/repo"
    with FakeSWH() as swh:
        retried = retry_pending(registry, archiver_config={"swh": {"base_url": swh.url}})
        assert [r.status for r in retried] == [PENDING]
        rows = _rows(registry, manifest.capsule_id)
        assert rows[0]["status"] == PENDING and rows[0]["request_id"] == "1"
        assert len(rows) == 1 and len(swh.saves) == 1
        details = rows[0]["details"] if isinstance(rows[0]["details"], dict) else json.loads(rows[0]["details"])
        assert details["revision"] == f"swh:1:rev:{COMMIT}"
        assert retry_pending(registry, archiver_config={"swh": {"base_url": swh.url}}) == []


def test_capsule_without_public_origin(tmp_path):
    folder = tmp_path / "c"
    manifest = make_crate(folder, origin="/home/me/repo")
    with pytest.raises(ArchiveError, match="--origin"):
        SaveCodeNowArchiver(base_url="http://127.0.0.1:9").archive(folder, manifest)
    folder2 = tmp_path / "c2"
    manifest2 = make_crate(folder2, origin=None)
    with pytest.raises(ArchiveError, match="names no public git origin"):
        SaveCodeNowArchiver(base_url="http://127.0.0.1:9").archive(folder2, manifest2)


def test_bad_base_url():
    with pytest.raises(ArchiveError, match="not a Software Heritage API address"):
        SaveCodeNowArchiver(base_url="ftp://example.org")
    with pytest.raises(ArchiveError, match="credentials"):
        SaveCodeNowArchiver(base_url="https://u:p@example.org")


def test_result_is_json_ready():
    result = ArchiveResult(archiver="x", status=QUEUED, target="t", details={"a": 1})
    assert json.loads(json.dumps(result.to_dict()))["details"] == {"a": 1}


# -- CLI -------------------------------------------------------------------

def test_cli_bagit(crate, tmp_path, capsys):
    from scidex_nbcapsule.cli import main

    folder, manifest = crate
    pytest.importorskip("scidex_nbcapsule.crate")
    dest = tmp_path / "cli.bag"
    assert main(["archive", str(folder), "--to", "bagit", "--dest", str(dest), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["status"] == SUCCEEDED and out[0]["capsule_id"] == manifest.capsule_id
    assert bagit.Bag(str(dest)).is_valid()
    assert main(["archive", str(folder), "--to", "bagit", "--dest", str(dest)]) == DestinationExists.exit_code


def test_cli_swh_queued_without_registry(crate, capsys):
    from scidex_nbcapsule.cli import main

    pytest.importorskip("scidex_nbcapsule.crate")
    folder, _manifest = crate
    with FakeSWH() as probe:
        down_url = probe.url
    assert main(["archive", str(folder), "--to", "swh", "--swh-url", down_url]) == 0
    captured = capsys.readouterr()
    assert "queued" in captured.out and "--db" in captured.err


def test_cli_usage_errors(capsys):
    from scidex_nbcapsule.cli import main

    assert main(["archive", "nowhere-at-all", "--to", "bagit"]) == 2
    assert "neither an existing crate nor a capsule id" in capsys.readouterr().err
    assert main(["archive"]) == 2
