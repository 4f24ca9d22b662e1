"""The capsule REST API on a real Jupyter server: auth, registration, downloads, verification jobs, path safety.

Every response goes through :func:`call`, which checks it against
``scidex_nbcapsule/server/openapi.yaml``: the status must be documented for
that path and method, and the body must validate against the documented schema.
"""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import requests
import yaml

from helpers import ROOT, make_notebook
from jupyter_proc import JupyterProcess

SPEC = yaml.safe_load(resources.files("scidex_nbcapsule.server").joinpath("openapi.yaml").read_text())
PREFIX = "capsules/api"
UNKNOWN_ID = "capsule-00000000-0000-4000-8000-000000000000"


def _template(method: str, path: str) -> tuple[str, dict]:
    """The documented path template matching a concrete request path."""
    for template, item in SPEC["paths"].items():
        pattern = "^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path.split("?")[0]) and method.lower() in item:
            return template, item[method.lower()]
    raise AssertionError(f"{method} {path} is not documented in openapi.yaml")


def _resolve(node: dict) -> dict:
    while "$ref" in node:
        target = SPEC
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def check_against_spec(method: str, path: str, response: requests.Response) -> None:
    template, operation = _template(method, path)
    documented = operation["responses"]
    assert str(response.status_code) in documented, \
        f"{method} {template} answered {response.status_code}, documented: {sorted(documented)}"
    content = _resolve(documented[str(response.status_code)]).get("content", {})
    kind = response.headers.get("Content-Type", "").split(";")[0]
    assert kind in content, f"{method} {template} {response.status_code} sent {kind}, documented: {sorted(content)}"
    if kind == "application/json":
        schema = dict(content[kind]["schema"], components=SPEC["components"])
        jsonschema.Draft202012Validator(schema).validate(response.json())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A Jupyter server whose only source for enabling the extension is the project's shipped config file."""
    base = tmp_path_factory.mktemp("server")
    root = base / "root"
    (root / "data").mkdir(parents=True)
    (root / "data" / "input.csv").write_text("x,y\n1,2\n3,4\n")
    (base / "outside").mkdir()
    db_url = f"sqlite:///{base / 'registry.sqlite3'}"
    proc = JupyterProcess("jupyter_server", root, base / "jupyter", env={
        "SCIDEX_NBCAPSULE_DB": db_url, "JUPYTER_CONFIG_PATH": str(ROOT / "jupyter-config")})
    proc.db_url = db_url
    yield proc
    proc.stop()


def call(server: JupyterProcess, method: str, path: str, *, token: bool = True, check: bool = True,
         **kwargs) -> requests.Response:
    headers = dict(server.auth) if token else {}
    response = requests.request(method, f"{server.url}{PREFIX}/{path}", headers=headers, timeout=120,
                                allow_redirects=False, **kwargs)
    if check:
        check_against_spec(method, "/" + path, response)
    return response


def export_crate(root: Path, name: str) -> Path:
    """A real crate exported by the Python API into ``root/capsules``."""
    from scidex_nbcapsule import api

    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "input.csv").write_text("x,y\n1,2\n3,4\n")
    notebook = make_notebook(root / f"{name}.ipynb", "open('data/input.csv').read()", markdown_title=name)
    return api.export(notebook, inputs=[root / "data" / "input.csv"], project_root=root, dest=root / "capsules",
                      license="CC0-1.0", authors=["Ada Lovelace"], progress=False).path


@pytest.fixture(scope="module")
def registered(server) -> dict:
    crate = export_crate(server.root_dir, "Registered analysis")
    response = call(server, "POST", "capsules", json={"path": crate.relative_to(server.root_dir).as_posix()})
    assert response.status_code in (200, 201), response.text
    return {"crate": crate, "capsule_id": response.json()["capsule_id"]}


def test_register_twice_gives_201_then_200_with_the_same_id(server):
    crate = export_crate(server.root_dir, "Twice")
    body = {"path": crate.relative_to(server.root_dir).as_posix()}
    first = call(server, "POST", "capsules", json=body)
    assert first.status_code == 201, first.text
    capsule_id = json.loads((crate / "capsule.json").read_text())["capsule_id"]
    assert first.json()["capsule_id"] == capsule_id and first.json()["created"] is True
    assert first.headers["Location"].endswith(f"/{PREFIX}/capsules/{capsule_id}")
    again = call(server, "POST", "capsules", json=body)
    assert again.status_code == 200 and again.json()["capsule_id"] == capsule_id and again.json()["created"] is False


def test_register_with_source_references(server):
    crate = export_crate(server.root_dir, "With references")
    commit = "ab12" * 10
    response = call(server, "POST", "capsules", json={
        "path": crate.relative_to(server.root_dir).as_posix(), "git_commit": commit,
        "swh_origin_url": "https://github.com/example/analysis"})
    assert response.status_code == 201, response.text
    found = call(server, "GET", "capsules", params={"commit": "ab12ab"}).json()["capsules"]
    assert [c["capsule_id"] for c in found] == [response.json()["capsule_id"]]
    assert call(server, "GET", f"capsules/{found[0]['capsule_id']}/export").json()["git_commit"] == commit


def test_list_filters_and_bad_filters(server, registered):
    everything = call(server, "GET", "capsules").json()
    assert registered["capsule_id"] in [c["capsule_id"] for c in everything["capsules"]]
    by_author = call(server, "GET", "capsules", params={"author": "lovelace", "text": "Registered"}).json()
    assert [c["capsule_id"] for c in by_author["capsules"]] == [registered["capsule_id"]]
    assert call(server, "GET", "capsules", params={"author": "Nobody Else"}).json()["capsules"] == []
    page = call(server, "GET", "capsules", params={"limit": 1, "offset": 0}).json()
    assert len(page["capsules"]) == 1 and page["limit"] == 1
    for params in ({"limit": 0}, {"limit": "many"}, {"offset": -1}, {"commit": "not-hex"}):
        bad = call(server, "GET", "capsules", params=params)
        assert bad.status_code == 400 and bad.json()["error"], params


def test_manifest_and_citation(server, registered):
    capsule_id = registered["capsule_id"]
    manifest = call(server, "GET", f"capsules/{capsule_id}").json()
    assert manifest == json.loads((registered["crate"] / "capsule.json").read_text())
    citation = call(server, "GET", f"capsules/{capsule_id}/export").json()
    from scidex_nbcapsule.crate import crate_checksum

    assert citation["capsule_id"] == capsule_id
    assert citation["crate_checksum"] == crate_checksum(registered["crate"])
    assert {"path": "data/input.csv", "role": "input"}.items() <= next(
        e for e in citation["entities"] if e["path"] == "data/input.csv").items()
    from scidex_nbcapsule.archive import run_archival
    from scidex_nbcapsule.registry import open_registry

    with open_registry(server.db_url) as registry:
        run_archival("bagit", registered["crate"], registry=registry, dest=server.root_dir.parent / "bags")
    archived = call(server, "GET", f"capsules/{capsule_id}/export").json()["archival"]
    assert [(a["archiver"], a["status"]) for a in archived] == [("bagit", "succeeded")]
    assert call(server, "GET", f"capsules/{UNKNOWN_ID}").status_code == 404
    assert call(server, "GET", f"capsules/{UNKNOWN_ID}/export").status_code == 404


def test_export_files_stays_under_the_export_root(server, registered):
    capsule_id = registered["capsule_id"]
    written = call(server, "POST", f"capsules/{capsule_id}/export-files", json={"dest": "copies/first"})
    assert written.status_code == 201, written.text
    assert written.json()["dest"] == "capsule-exports/copies/first"
    assert (server.root_dir / "capsule-exports" / "copies" / "first" / "capsule.json").is_file()
    again = call(server, "POST", f"capsules/{capsule_id}/export-files", json={"dest": "copies/first"})
    assert again.status_code == 409 and "already exists" in again.json()["error"]
    outside = server.root_dir.parent / "outside"
    (server.root_dir / "capsule-exports" / "link").symlink_to(outside)
    for dest in ("../escaped", "/tmp/escaped", "copies/../../escaped", "link/escaped", "a\\..\\b", "."):
        refused = call(server, "POST", f"capsules/{capsule_id}/export-files", json={"dest": dest})
        assert refused.status_code == 400, (dest, refused.text)
    assert list(outside.iterdir()) == [] and not (server.root_dir / "escaped").exists()
    assert call(server, "POST", f"capsules/{capsule_id}/export-files", json={"dest": 5}).status_code == 400
    assert call(server, "POST", f"capsules/{capsule_id}/export-files", json={"where": "x"}).status_code == 400
    assert call(server, "POST", f"capsules/{UNKNOWN_ID}/export-files", json={"dest": "nope"}).status_code == 404
    default = call(server, "POST", f"capsules/{capsule_id}/export-files")
    assert default.status_code == 201 and default.json()["dest"] == f"capsule-exports/{capsule_id}"


def test_crate_zip_download(server, registered):
    capsule_id = registered["capsule_id"]
    response = call(server, "GET", f"capsules/{capsule_id}/crate.zip")
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/zip"
    assert f'filename="{capsule_id}.zip"' in response.headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = archive.namelist()
        assert f"{capsule_id}/capsule.json" in names and f"{capsule_id}/data/input.csv" in names
        assert json.loads(archive.read(f"{capsule_id}/capsule.json"))["capsule_id"] == capsule_id
    assert call(server, "GET", f"capsules/{UNKNOWN_ID}/crate.zip").status_code == 404


def test_verify_runs_as_a_background_job(server, registered):
    capsule_id = registered["capsule_id"]
    started = call(server, "POST", f"capsules/{capsule_id}/verify")
    assert started.status_code == 202, started.text
    job_path = f"capsules/jobs/{started.json()['job_id']}"
    assert started.headers["Location"].endswith(f"/{PREFIX}/{job_path}")
    assert call(server, "GET", "capsules").status_code == 200, "the server answers while the job runs"
    deadline = time.monotonic() + 300
    while True:
        job = call(server, "GET", job_path).json()
        if job["status"] in ("done", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert job["status"] == "done", job
    assert job["verdict"] == job["report"]["verdict"] and job["report"]["capsule_id"] == capsule_id
    assert call(server, "GET", "capsules/jobs/job-0123").status_code == 404
    assert call(server, "POST", f"capsules/{UNKNOWN_ID}/verify").status_code == 404


def test_paths_and_ids_that_escape_are_refused(server, registered):
    for bad_id in ("..%2F..", "..%2F..%2Fetc%2Fpasswd", "capsule-nope", "%2E%2E"):
        for suffix in ("", "/export", "/crate.zip"):
            response = call(server, "GET", f"capsules/{bad_id}{suffix}", check=False)
            assert response.status_code in (400, 404), (bad_id, suffix, response.status_code)
            if response.status_code == 400:
                check_against_spec("GET", f"/capsules/{bad_id}{suffix}", response)
    outside = export_crate(server.root_dir.parent / "outside", "Outside")
    (server.root_dir / "sneaky").symlink_to(outside.parent)
    for path in (str(outside), f"../outside/capsules/{outside.name}", f"sneaky/{outside.name}", "", "x\x00y"):
        response = call(server, "POST", "capsules", json={"path": path})
        assert response.status_code == 400, (path, response.text)
        assert "error" in response.json()
    missing = call(server, "POST", "capsules", json={"path": "capsules/not-there"})
    assert missing.status_code == 404
    assert call(server, "POST", "capsules", data="not json").status_code == 400
    assert call(server, "POST", "capsules", json={"path": f"capsules/{registered['crate'].name}",
                                                  "git_commit": "xyz"}).status_code == 400


def test_requests_without_the_token_are_refused(server, registered):
    capsule_id = registered["capsule_id"]
    requests_ = [("GET", "capsules"), ("POST", "capsules"), ("GET", f"capsules/{capsule_id}"),
                 ("GET", f"capsules/{capsule_id}/export"), ("POST", f"capsules/{capsule_id}/export-files"),
                 ("POST", f"capsules/{capsule_id}/verify"), ("GET", "capsules/jobs/job-x"),
                 ("GET", f"capsules/{capsule_id}/crate.zip")]
    for method, path in requests_:
        response = call(server, method, path, token=False, json={"path": "x"} if method == "POST" else None)
        assert response.status_code in (401, 403) or 300 <= response.status_code < 400, (method, path)
        wrong = requests.request(method, f"{server.url}{PREFIX}/{path}", headers={"Authorization": "token wrong"},
                                 timeout=30, allow_redirects=False)
        assert wrong.status_code in (401, 403), (method, path, wrong.status_code)
    assert not (server.root_dir / "capsule-exports" / "x").exists()


def test_every_documented_operation_answers_as_documented(server, registered):
    """One request per path and method of openapi.yaml (the other tests cover the error statuses)."""
    capsule_id = registered["capsule_id"]
    crate = registered["crate"].relative_to(server.root_dir).as_posix()
    job = call(server, "POST", f"capsules/{capsule_id}/verify").json()["job_id"]
    examples = {
        ("get", "/capsules"): ("GET", "capsules", {}),
        ("post", "/capsules"): ("POST", "capsules", {"json": {"path": crate}}),
        ("get", "/capsules/{capsule_id}"): ("GET", f"capsules/{capsule_id}", {}),
        ("get", "/capsules/{capsule_id}/export"): ("GET", f"capsules/{capsule_id}/export", {}),
        ("post", "/capsules/{capsule_id}/export-files"): ("POST", f"capsules/{capsule_id}/export-files",
                                                          {"json": {"dest": "documented"}}),
        ("post", "/capsules/{capsule_id}/verify"): ("POST", f"capsules/{capsule_id}/verify", {}),
        ("get", "/capsules/jobs/{job_id}"): ("GET", f"capsules/jobs/{job}", {}),
        ("get", "/capsules/{capsule_id}/crate.zip"): ("GET", f"capsules/{capsule_id}/crate.zip", {}),
    }
    documented = {(method, path) for path, item in SPEC["paths"].items() for method in item if method != "parameters"}
    assert documented == set(examples), "openapi.yaml and this test list different operations"
    for method, path, kwargs in examples.values():
        response = call(server, method, path, **kwargs)
        assert response.status_code < 300, (method, path, response.text)
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            if method != "parameters":
                assert "403" in operation["responses"], f"{method} {path} must document the refusal"


def test_export_root_and_registry_come_from_traitlets_config(tmp_path):
    from traitlets.config import Config

    from scidex_nbcapsule.errors import PathOutsideProject
    from scidex_nbcapsule.server.app import CapsuleServer

    config = Config()
    config.CapsuleServer.export_root = str(tmp_path / "exports")
    config.CapsuleServer.db_url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    service = CapsuleServer(config=config, root_dir=str(tmp_path / "root"))
    assert service.export_dir == tmp_path / "exports" and service.db_url.endswith("r.sqlite3")
    assert service.export_path("a/b") == tmp_path / "exports" / "a" / "b"
    for bad in ("../a", "/a", ".", "a/../../b", "", None, 3):
        with pytest.raises(PathOutsideProject):
            service.export_path(bad)
    default = CapsuleServer(root_dir=str(tmp_path / "root"))
    assert default.export_dir == (tmp_path / "root" / "capsule-exports").resolve()
