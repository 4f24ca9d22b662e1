"""Secrets never leave the kernel: environment, outputs and files are filtered."""

from __future__ import annotations

import nbformat

from scidex_nbcapsule import environment, redaction

AWS_ID = "AKIA" + "ABCDEFGHIJKLMNOP"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "EXAMPLEKEY"
GITHUB = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
PG_URL = "postgresql://analyst:" + "hunter2@db.example.org:5432/lab"
PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"


def test_environment_variables_are_filtered_by_name_and_value():
    kept, withheld = redaction.filter_environ({
        "HOME": "/home/a", "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "MY_API_TOKEN": "x", "DATABASE": PG_URL,
        "PLAIN": AWS_ID, "GH": GITHUB, "KEYBOARD": "us", "PASSWORD_FILE": "/x",
        "GIT_AUTHOR_NAME": "Ada", "JPY_SESSION_NAME": "nb.ipynb"})
    assert kept == {"HOME": "/home/a", "KEYBOARD": "us", "GIT_AUTHOR_NAME": "Ada", "JPY_SESSION_NAME": "nb.ipynb"}
    names = {w["what"] for w in withheld}
    assert names == {"AWS_SECRET_ACCESS_KEY", "MY_API_TOKEN", "DATABASE", "PLAIN", "GH", "PASSWORD_FILE"}
    assert all(AWS_SECRET not in str(w) and "hunter2" not in str(w) for w in withheld)


def test_snapshot_never_holds_a_secret_value():
    snap = environment.snapshot(environ={"PATH": "/bin", "TOKEN": GITHUB, "URL": PG_URL})
    text = snap.to_json()
    assert GITHUB not in text and "hunter2" not in text
    assert snap.data["environment_variables"] == {"PATH": "/bin"}


def test_environment_digest_is_stable_and_sensitive():
    a = environment.snapshot(environ={})
    b = environment.snapshot(environ={"OTHER": "1"})
    assert a.digest == b.digest  # variables do not change behaviour digests
    data = dict(a.data, packages=dict(a.data["packages"], extra="1.0"))
    assert environment.environment_digest(data) != a.digest


def test_outputs_and_sources_are_scrubbed():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(f"key = '{AWS_ID}'")
    cell.outputs = [nbformat.v4.new_output("stream", text=f"connected to {PG_URL}\n"),
                    nbformat.v4.new_output("execute_result", data={"text/plain": repr(GITHUB)}, execution_count=1),
                    nbformat.v4.new_output("error", ename="E", evalue=PRIVATE_KEY, traceback=[PRIVATE_KEY])]
    nb.cells.append(cell)
    clean, withheld = redaction.scrub_notebook(nb)
    text = nbformat.writes(clean)
    for secret in (AWS_ID, "hunter2", GITHUB, "MIIEow"):
        assert secret not in text
    assert redaction.REDACTED in text
    assert {w["what"] for w in withheld} == {"cell 1 source", "cell 1 output", "cell 1 output (text/plain)"}
    assert AWS_ID in nbformat.writes(nb)  # the kernel's own copy is untouched


def test_credential_files_are_recognised():
    # export screens a file by its name when it is chosen, then by the bytes it reads to copy it
    assert redaction.name_secrets(".env")
    assert "URL with a password" in " ".join(redaction.content_secrets(f"[db]\nurl = {PG_URL}\n".encode()))
    assert redaction.name_secrets("data.csv") == [] and redaction.content_secrets(b"a,b\n1,2\n") == []
