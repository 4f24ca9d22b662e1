"""Planted credentials (kernel environment, cell outputs, a config file the analysis reads) reach neither the
crate, nor the registry (SQLite file and PostgreSQL rows, packed crates unpacked), nor the verification report.

The secret strings are built by concatenation so this repository never holds them verbatim.
"""

from __future__ import annotations

import io
import json
import sqlite3
import zipfile
from pathlib import Path

import nbformat

from kernel import KernelSession
from scidex_nbcapsule import api
from scidex_nbcapsule.registry import open_registry
from scidex_nbcapsule.verify import verify

GROUP = "planted secrets"
AWS_KEY_ID = "AKIA" + "ZQ7RW2XK4MPL9TVB"
AWS_SECRET = "wJal" + "rXUtnFEMI/K7MDENG/bPxRfiCYzq8Hd3Lp5Q"
GITHUB_TOKEN = "ghp_" + "7fKq2LmN9pRsT4vWxY6zA1bC3dE5gH8jK0oQ"
PG_PASSWORD = "Tr0ub4dor" + "-and-3-horses"
PG_URL = "postgresql://" + "labuser:" + PG_PASSWORD + "@warehouse.example.org:5432/results"
PEM_BODY = "MIIEvgIBADANBgkqhkiG9w0BAQEFAASC" + "BKgwggSkAgEAAoIBAQDQ7ozb9RfL2Kd1"
PEM = "-----BEGIN " + "PRIVATE KEY-----\n" + PEM_BODY + "\n-----END " + "PRIVATE KEY-----\n"
SECRETS = {"AWS access key id": AWS_KEY_ID, "AWS secret key": AWS_SECRET, "GitHub token": GITHUB_TOKEN,
           "PostgreSQL password": PG_PASSWORD, "PEM body": PEM_BODY}

KERNEL_ENV = {"AWS_ACCESS_KEY_ID": AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "GITHUB_TOKEN": GITHUB_TOKEN,
              "LAB_DATABASE_URL": PG_URL, "DEPLOY_IDENTITY": PEM, "RUN_LABEL": "plain value " + GITHUB_TOKEN}
CONFIG = ("[warehouse]\n" + "url = " + PG_URL + "\n" + "aws_access_key_id = " + AWS_KEY_ID + "\n"
          + "aws_secret_access_key = " + AWS_SECRET + "\n")
CELLS = [
    "import os\nprint(os.environ.get('AWS_ACCESS_KEY_ID'), os.environ.get('AWS_SECRET_ACCESS_KEY'))",
    "print(os.environ.get('AWS_SECRET_ACCESS_KEY'))",  # the bare value, with no 'aws' beside it
    "print(os.environ.get('GITHUB_TOKEN'))\nos.environ.get('LAB_DATABASE_URL')",
    "cfg = open('lab.ini').read() if os.path.exists('lab.ini') else ''\nprint(cfg)",
    "print(os.environ.get('DEPLOY_IDENTITY', ''))",
    "import csv\nrows = list(csv.reader(open('data/input.csv')))\nprint(len(rows))",
]


def _leaks(blob: bytes, where: str, counts) -> list[str]:
    """Which secrets ``blob`` holds; zips (packed crates) are opened and every member scanned too."""
    counts(GROUP, "blobs scanned")
    found = [name for name, value in SECRETS.items() if value.encode() in blob]
    if blob[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            for member in archive.namelist():
                found += [f"{name} in {member}" for name in _leaks(archive.read(member), f"{where}!{member}", counts)]
    return found


def _row_values(row) -> list[bytes]:
    out = []
    for value in row:
        if isinstance(value, (bytes, bytearray, memoryview)):
            out.append(bytes(value))
        elif value is not None:
            out.append(json.dumps(value, default=str, ensure_ascii=False).encode() + str(value).encode())
    return out


def _sqlite_rows(path: Path) -> list[bytes]:
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return [v for t in tables for row in conn.execute(f'SELECT * FROM "{t}"') for v in _row_values(row)]
    finally:
        conn.close()


def _postgres_rows(url: str) -> tuple[list[bytes], int]:
    import psycopg

    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables "
                                             "WHERE table_schema = current_schema()")]
        values = [v for t in tables for row in conn.execute(f'SELECT * FROM "{t}"') for v in _row_values(row)]
        # and every text-like column rendered by the server itself
        values += [r[0].encode() for t in tables for r in conn.execute(f'SELECT t::text FROM "{t}" t')]
    return values, len(tables)


def test_planted_credentials_are_withheld_everywhere(project, tmp_path, pg_url, counts):
    (project / "lab.ini").write_text(CONFIG)
    nb_path = project / "secrets.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Planted secrets")] + [nbformat.v4.new_code_cell(c) for c in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    dest = tmp_path / "capsules"
    session = KernelSession(cwd=project, env=KERNEL_ENV)
    try:
        session.ok("%load_ext scidex_nbcapsule")
        for count, cell in enumerate(nb.cells[1:], start=1):
            result = session.ok(cell.source, cell_id=cell.id)
            cell.execution_count = count
            cell.outputs = [nbformat.v4.new_output("stream", text=result["text"])] if result["text"] else []
            cell.outputs += [nbformat.v4.new_output("execute_result", data=d, execution_count=count)
                             for d in result["data"]]
        printed = "".join(o.get("text", "") + json.dumps(o.get("data", {})) for c in nb.cells[1:] for o in c.outputs)
        assert all(value in printed for value in SECRETS.values()), "the kernel did not print every secret"
        nbformat.write(nb, str(nb_path))
        out = session.ok(f"import json as _j\n_c = get_ipython().run_line_magic('capsule', "
                         f"'export --notebook {nb_path} --dest {dest} --license MIT')\n"
                         "print('RESULT' + _j.dumps(_c.to_dict()))")
    finally:
        session.close()
    counts(GROUP, "secrets planted (env, outputs, config file)", len(SECRETS))
    capsule = json.loads(next(line for line in out["text"].splitlines() if line.startswith("RESULT"))[6:])
    crate = Path(capsule["crate"])

    # the export says what it withheld (names, never values) and how to include a file on purpose
    withheld = {w["what"]: w for w in capsule["withheld"]}
    assert set(KERNEL_ENV) <= set(withheld), set(KERNEL_ENV) - set(withheld)
    assert withheld["lab.ini"]["how_to_include"] == "--allow-secret lab.ini"
    assert any(w["kind"] == "notebook text" for w in capsule["withheld"])
    assert any("--allow-secret" in n for n in capsule["notices"])
    assert _leaks(json.dumps(capsule).encode(), "export result", counts) == []
    assert "data/input.csv" in {f["path"] for f in capsule["files"]}, "the real input went missing"
    counts(GROUP, "withheld entries reported", len(capsule["withheld"]))

    # every byte of the crate
    for path in sorted(crate.rglob("*")):
        if path.is_file():
            assert _leaks(path.read_bytes(), str(path), counts) == [], path

    # registries: SQLite (raw file, WAL, every row, packed crate unpacked) and PostgreSQL rows
    db_file = tmp_path / "r.sqlite3"
    with open_registry(f"sqlite:///{db_file}") as registry:
        registered = registry.register_capsule(crate)
    with open_registry(pg_url) as registry:
        assert registry.register_capsule(crate).capsule_id == registered.capsule_id
    report = verify(registered.capsule_id, db=f"sqlite:///{db_file}", cell_timeout=120, record=True)
    assert report.recorded and report.verdict in ("verified", "verified-within-tolerance", "mismatch",
                                                  "execution-failed"), report.verdict
    html = report.to_html()
    assert registered.capsule_id in html
    assert _leaks(html.encode(), "HTML report", counts) == []
    assert _leaks(report.to_json().encode(), "JSON report", counts) == []
    for path in tmp_path.iterdir():
        if path.name.startswith("r.sqlite3"):
            assert _leaks(path.read_bytes(), str(path), counts) == [], path
    for value in _sqlite_rows(db_file):
        assert _leaks(value, "SQLite row", counts) == []
        counts(GROUP, "SQLite values scanned")
    values, tables = _postgres_rows(pg_url)
    assert tables >= 3 and values
    for value in values:
        assert _leaks(value, "PostgreSQL row", counts) == []
        counts(GROUP, "PostgreSQL values scanned")
    counts(GROUP, "secret leaks found", 0)


def test_allow_secret_includes_the_file_on_purpose(project, tmp_path, counts):
    """The hint the export gives works: --allow-secret PATH puts that one file in the crate."""
    (project / "lab.ini").write_text(CONFIG)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print(open('lab.ini').read()[:10])")]
    nbformat.write(nb, str(project / "a.ipynb"))
    held = api.export(project / "a.ipynb", inputs=[project / "lab.ini"], dest=tmp_path / "c1", license="MIT",
                      progress=False)
    assert [w["how_to_include"] for w in held.manifest.withheld if w["what"] == "lab.ini"] == ["--allow-secret lab.ini"]
    assert not (held.path / "lab.ini").exists()
    allowed = api.export(project / "a.ipynb", inputs=[project / "lab.ini"], allow_secrets=[project / "lab.ini"],
                         dest=tmp_path / "c2", license="MIT", progress=False)
    assert (allowed.path / "lab.ini").read_text() == CONFIG
    assert all(w["what"] != "lab.ini" for w in allowed.manifest.withheld)
    counts(GROUP, "files included on purpose with --allow-secret")


def test_bare_secret_values_of_withheld_variables_are_scrubbed(counts):
    """The rule behind the end-to-end test, without a kernel: a withheld variable's value is found anywhere."""
    from scidex_nbcapsule import redaction

    environ = {"AWS_SECRET_ACCESS_KEY": AWS_SECRET, "API_TOKEN": "short", "HOME": "/home/someone",
               "NOTES": "mentions " + GITHUB_TOKEN}
    known = redaction.secret_values(environ)
    assert AWS_SECRET in known and "short" not in known and "/home/someone" not in known
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print(k)")]
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text=f"{AWS_SECRET}\n")]
    clean, withheld = redaction.scrub_notebook(nb, known)
    assert AWS_SECRET not in json.dumps(clean) and withheld[0]["reason"].endswith(redaction.KNOWN_KIND)
    counts(GROUP, "bare secret values scrubbed (unit)")
