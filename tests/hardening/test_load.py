"""Load: eight processes (spawn) export eight different notebooks at the same moment and register each capsule
into one SQLite registry and one PostgreSQL registry (a schema of its own in the session's fresh database,
dropped after). Nothing may be lost or duplicated on either backend. One set of processes serves both
backends so the suite stays fast on a shared machine."""

from __future__ import annotations

import multiprocessing
import traceback
from pathlib import Path

from helpers import make_notebook
from scidex_nbcapsule.crate import open_crate
from scidex_nbcapsule.registry import open_registry
from scidex_nbcapsule.verify.fixity import check_fixity

GROUP = "load"
WORKERS = 8


def _worker(project: str, urls: list[str], dest: str, start, results) -> None:
    try:
        from scidex_nbcapsule import api

        start.wait(120)  # imports done everywhere: all eight export and register at once
        root = Path(project)
        capsule = api.export(root / "analysis.ipynb", inputs=[root / "data"], dest=dest, license="MIT",
                             progress=False)
        registered = []
        for url in urls:
            with open_registry(url) as registry:
                registered.append(registry.register_capsule(capsule.path))
        results.put(("ok", project, capsule.capsule_id, [r.capsule_id for r in registered],
                     all(r.created for r in registered), str(capsule.path)))
    except BaseException:  # noqa: BLE001 - reported to the parent
        results.put(("error", project, traceback.format_exc()))


def test_eight_concurrent_exports_into_one_registry_per_backend(tmp_path, pg_url, counts):
    urls = {"sqlite": f"sqlite:///{tmp_path / 'load.sqlite3'}", "postgres": pg_url}
    for url in urls.values():
        with open_registry(url):  # created and migrated once, as a deployment would
            pass
    dest = tmp_path / "capsules"
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(WORKERS), ctx.Queue()
    procs = []
    for i in range(WORKERS):
        project = tmp_path / f"p{i}"
        (project / "data").mkdir(parents=True)
        for j in range(5):
            (project / "data" / f"part{j}.csv").write_text(f"run,part\n{i},{j}\n" * (i + 1))
        make_notebook(project / "analysis.ipynb", f"print({i} * {i})", markdown_title=f"Load test {i}")
        procs.append(ctx.Process(target=_worker, args=(str(project), list(urls.values())[::1 if i % 2 else -1], str(dest), start, results)))
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=240) for _ in procs]
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    errors = [o[2] for o in outcomes if o[0] == "error"]
    assert not errors, "\n".join(errors)
    counts(GROUP, "concurrent export+register processes (each into both backends)", WORKERS)
    ids = [o[2] for o in outcomes]
    assert len(set(ids)) == WORKERS and all(o[3] == [o[2]] * len(urls) and o[4] for o in outcomes)
    assert len({o[1] for o in outcomes}) == WORKERS
    assert sorted(p.name for p in dest.iterdir()) == sorted(ids), "a capsule folder is missing or extra"
    for backend, url in urls.items():
        _check_registry(backend, url, outcomes, counts)


def _check_registry(backend: str, url: str, outcomes: list, counts) -> None:
    ids = [o[2] for o in outcomes]
    with open_registry(url) as registry:
        assert registry.counts()["capsules"] == WORKERS
        listed = [row["capsule_id"] for row in registry.list_capsules(limit=100)]
        assert sorted(listed) == sorted(ids), "a registration was lost or duplicated"
        for outcome in outcomes:
            capsule_id, crate = outcome[2], Path(outcome[5])
            with open_crate(crate) as opened:
                assert check_fixity(opened) == []
                on_disk = {(f.path, f.sha256) for f in opened.manifest.files}
            rows = registry.get_capsule(capsule_id)["files"]
            assert len(rows) == len(on_disk)
            assert {(r["path"], r["sha256"]) for r in rows} == on_disk
            assert registry.get_capsule_manifest(capsule_id).manifest_digest == opened.manifest.manifest_digest
            counts(GROUP, f"{backend}: file rows checked against manifests", len(rows))
    counts(GROUP, f"{backend}: capsules registered (lost 0, duplicated 0)", len(set(listed)))
