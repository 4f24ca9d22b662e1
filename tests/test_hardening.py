"""Hardening: planted secrets, injected faults and concurrent load (hostile crates: tests/hardening/).

Each group counts what it tried; tests/conftest.py prints the counts in the run's terminal summary.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import HARDENING_COUNTS as COUNTS, make_notebook
from kernel import KernelSession
from scidex_nbcapsule import api
from scidex_nbcapsule.crate import PARTIAL_PREFIX, open_crate
from scidex_nbcapsule.errors import RegistryError
from scidex_nbcapsule.registry import open_registry
from scidex_nbcapsule.verify.fixity import check_fixity

@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A small real capsule folder to register."""
    root = tmp_path_factory.mktemp("pristine") / "project"
    (root / "data").mkdir(parents=True)
    (root / "data" / "in.csv").write_text("a,b\n1,2\n")
    nb = make_notebook(root / "nb.ipynb", "print(open('data/in.csv').read())")
    return api.export(nb, inputs=[root / "data"], dest=root.parent / "caps", license="MIT", progress=False).path


# -- secrets --------------------------------------------------------------------------------------
AWS_ID = "AKIA" + "QWERTYUIOPASDFGH"
AWS_SECRET = "kR3v" + "8Lm2Qz9Xw1Yt6Ua5Sb4Pc3Od2Ne1Mf0Lg9Kh8Ji7"
GITHUB = "ghp_" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa98"
PG_PASSWORD = "pa55" + "w0rd-kept-secret"
PG_URL = f"postgresql://analyst:{PG_PASSWORD}@db.example.org:5432/lab"
PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" + "BKcwggSjAgEAAoIBAQC7"
PEM = f"-----BEGIN PRIVATE KEY-----\n{PEM_BODY}\n-----END PRIVATE KEY-----"
SECRETS = [AWS_ID, AWS_SECRET, GITHUB, PG_PASSWORD, PEM_BODY]


def _leaks(blob: bytes) -> list[str]:
    return [s for s in SECRETS if s.encode() in blob]


def test_planted_credentials_reach_neither_crate_registry_nor_report(project, tmp_path):
    (project / "db.ini").write_text(f"[lab]\nurl = {PG_URL}\n")
    env = {"AWS_ACCESS_KEY_ID": AWS_ID, "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "GH_PAT": GITHUB,
           "LAB_DATABASE": PG_URL, "DEPLOY_PEM": PEM, "INNOCENT": f"see {AWS_ID}"}
    session = KernelSession(cwd=project, env=env)
    try:
        session.ok("%load_ext scidex_nbcapsule")
        session.ok("import os\nprint(os.environ['LAB_DATABASE'])\nprint(os.environ['GH_PAT'])")
        session.ok("cfg = open('db.ini').read()\nprint(cfg)\nos.environ['DEPLOY_PEM']")
        nb = project / "secrets.ipynb"
        make_notebook(nb, "import os\nprint(os.environ['LAB_DATABASE'])\nprint(os.environ['GH_PAT'])",
                      "cfg = open('db.ini').read()\nprint(cfg)\nos.environ['DEPLOY_PEM']")
        import nbformat

        saved = nbformat.read(str(nb), as_version=4)
        saved.cells[1].outputs = [nbformat.v4.new_output("stream", text=f"{PG_URL}\n{GITHUB}\n")]
        saved.cells[2].outputs = [nbformat.v4.new_output("stream", text=f"[lab]\nurl = {PG_URL}\n"),
                                  nbformat.v4.new_output("execute_result", data={"text/plain": repr(PEM)},
                                                         execution_count=3)]
        nbformat.write(saved, str(nb))
        out = session.ok(f"import json\n_c = get_ipython().run_line_magic('capsule', 'export --notebook {nb}')\n"
                         "print('RESULT' + json.dumps(_c.to_dict()))")
    finally:
        session.close()
    capsule = json.loads(next(line for line in out["text"].splitlines() if line.startswith("RESULT"))[6:])
    crate = Path(capsule["crate"])
    withheld = {w["what"]: w for w in capsule["withheld"]}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "GH_PAT", "LAB_DATABASE", "DEPLOY_PEM", "INNOCENT"} <= set(withheld)
    assert withheld["db.ini"]["how_to_include"] == "--allow-secret db.ini"
    assert "withheld as secrets" in " ".join(capsule["notices"])
    for path in crate.rglob("*"):
        if path.is_file():
            assert _leaks(path.read_bytes()) == [], path
            COUNTS["secret scans: crate files"] += 1
    db_file = tmp_path / "r.sqlite3"
    with open_registry(f"sqlite:///{db_file}") as registry:
        registered = registry.register_capsule(crate)
    from scidex_nbcapsule.verify import verify

    report = verify(registered.capsule_id, db=f"sqlite:///{db_file}", cell_timeout=120)
    assert _leaks(report.to_html().encode()) == [] and _leaks(report.to_json().encode()) == []
    for path in tmp_path.iterdir():
        if path.name.startswith("r.sqlite3"):
            assert _leaks(path.read_bytes()) == [], path
    COUNTS["secrets planted"] += len(SECRETS)
    COUNTS["secret leaks found"] += 0


# -- faults -----------------------------------------------------------------------------------------
KILLABLE = """
import sys
import jsonschema, nbformat, rocrate.rocrate  # imported up front so the kill lands in the export itself
from scidex_nbcapsule import api
print("ready", flush=True)
sys.stdin.readline()
api.export(sys.argv[1], inputs=[sys.argv[2]], dest=sys.argv[3], license="MIT", progress=False)
print("done", flush=True)
"""


def _spawn_export(nb: Path, data: Path, dest: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", KILLABLE, str(nb), str(data), str(dest)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def _go(proc: subprocess.Popen) -> None:
    assert proc.stdout.readline().strip() == "ready"
    proc.stdin.write("go\n")
    proc.stdin.flush()


def test_sigkill_at_random_moments_leaves_no_partial_crate(project, tmp_path):
    data = project / "data"
    for i in range(200):
        (data / f"part-{i:03d}.bin").write_bytes(os.urandom(100_000))
    nb = make_notebook(project / "k.ipynb", "print(1)")
    dest = tmp_path / "dest"
    children = [_spawn_export(nb, data, dest) for _ in range(21)]  # started together: imports overlap
    timing = children.pop()
    _go(timing)
    started = time.monotonic()
    assert timing.stdout.readline().strip() == "done"
    duration = time.monotonic() - started
    timing.wait()
    completed = {p.name for p in dest.iterdir()}
    rng = random.Random(20261125)
    for proc in children:
        _go(proc)
        time.sleep(rng.uniform(0, duration))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        COUNTS["exports killed with SIGKILL"] += 1
        visible = {p.name for p in dest.iterdir() if not p.name.startswith(PARTIAL_PREFIX)}
        finished_anyway = visible - completed
        for name in finished_anyway:  # the kill came after the rename: a whole, valid capsule
            with open_crate(dest / name) as opened:
                assert check_fixity(opened) == []
        completed |= finished_anyway
    final = api.export(nb, inputs=[data], dest=dest, license="MIT", progress=False)
    names = {p.name for p in dest.iterdir()}
    assert names == completed | {final.capsule_id}, "a partial crate survived the next export"
    assert not any(n.startswith(PARTIAL_PREFIX) for n in names)


def test_postgres_connection_cut_mid_registration(pg_url, pristine):
    import psycopg

    with open_registry(pg_url) as registry:
        before = registry.counts()
    schema = pg_url.split("search_path%3D", 1)[1] if "search_path%3D" in pg_url else None
    blocker = psycopg.connect(pg_url.split("?", 1)[0])
    blocker.execute(f'SET search_path TO "{schema}"' if schema else "SELECT 1")
    blocker.execute("BEGIN")
    blocker.execute("LOCK TABLE capsules IN ACCESS EXCLUSIVE MODE")
    outcome: dict = {}

    def register() -> None:
        try:
            with open_registry(pg_url) as reg:
                outcome["result"] = reg.register_capsule(pristine)
        except Exception as exc:  # noqa: BLE001 - the test inspects the type below
            outcome["error"] = exc

    worker = threading.Thread(target=register)
    worker.start()
    killed = 0
    # pg_stat_activity is a snapshot per transaction: watch from a connection of its own
    with psycopg.connect(pg_url.split("?", 1)[0], autocommit=True) as watcher:
        for _ in range(300):
            rows = watcher.execute("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                   "AND datname = current_database()").fetchall()
            if rows:
                for (pid,) in rows:
                    watcher.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    killed += 1
                break
            time.sleep(0.1)
    blocker.execute("ROLLBACK")
    blocker.close()
    worker.join(60)
    assert killed >= 1 and not worker.is_alive()
    COUNTS["PostgreSQL backends terminated mid-registration"] += killed
    if "error" in outcome:
        assert isinstance(outcome["error"], RegistryError), repr(outcome["error"])
    with open_registry(pg_url) as registry:
        assert registry.counts() == before or "result" in outcome
        again = registry.register_capsule(pristine)
        after = registry.counts()
        assert after["capsules"] == before["capsules"] + 1
        manifest = registry.get_capsule_manifest(again.capsule_id)
        assert len(registry.get_capsule(again.capsule_id)["files"]) == len(manifest.files)


def test_locked_sqlite_file_gives_a_clear_error_then_a_retry_works(tmp_path, pristine, monkeypatch):
    from scidex_nbcapsule.registry import sqlite as sqlite_backend

    monkeypatch.setattr(sqlite_backend, "BUSY_TIMEOUT_MS", 500)
    url = f"sqlite:///{tmp_path / 'locked.sqlite3'}"
    with open_registry(url) as registry:
        before = registry.counts()
    holder = sqlite3.connect(tmp_path / "locked.sqlite3", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    started = time.monotonic()
    with pytest.raises(RegistryError) as info:
        with open_registry(url) as registry:
            registry.register_capsule(pristine)
    assert time.monotonic() - started < 30 and str(info.value)
    holder.execute("ROLLBACK")
    holder.close()
    COUNTS["SQLite registrations against a locked file"] += 1
    with open_registry(url) as registry:
        assert registry.counts() == before
        registry.register_capsule(pristine)
        assert registry.counts()["capsules"] == before["capsules"] + 1


# -- load --------------------------------------------------------------------------------------------
def _export_and_register(args: tuple[str, str, str]) -> tuple[str, bool]:
    folder, url, dest = args
    project = Path(folder)
    nb = project / "analysis.ipynb"
    capsule = api.export(nb, inputs=[project / "data"], dest=dest, license="MIT", progress=False)
    with open_registry(url) as registry:
        registered = registry.register_capsule(capsule.path)
    return registered.capsule_id, registered.created


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_eight_concurrent_exports_and_registrations(backend, tmp_path, request):
    url = f"sqlite:///{tmp_path / 'load.sqlite3'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    jobs = []
    for i in range(8):
        folder = tmp_path / f"p{i}"
        (folder / "data").mkdir(parents=True)
        (folder / "data" / "in.csv").write_text(f"run,{i}\n")
        make_notebook(folder / "analysis.ipynb", f"print({i})", markdown_title=f"Load {i}")
        jobs.append((str(folder), url, str(tmp_path / "caps")))
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        results = pool.map(_export_and_register, jobs)
    ids = [capsule_id for capsule_id, _ in results]
    assert len(set(ids)) == 8 and all(created for _, created in results)
    with open_registry(url) as registry:
        listed = {row["capsule_id"] for row in registry.list_capsules(limit=100)}
        assert listed == set(ids)
        for capsule_id in ids:
            manifest = registry.get_capsule_manifest(capsule_id)
            assert len(registry.get_capsule(capsule_id)["files"]) == len(manifest.files)
    COUNTS[f"concurrent export+register on {backend}"] += 8
