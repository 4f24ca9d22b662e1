"""Commands that run no kernel import no kernel, server, widget or jsonschema machinery.

What each command imports is what it costs before it starts (IPython and the Jupyter server
are a second; jsonschema's IRI checker compiles grammars for more). The timings themselves
are in ``make bench``; this checks the cause, which does not vary with the machine's load.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scidex_nbcapsule import api

from helpers import make_notebook

#: Never needed by a command that runs no kernel.
HEAVY = ("IPython", "ipykernel", "ipywidgets", "jupyter_server", "nbclient", "jupyter_client", "tornado", "zmq",
         "jsonschema", "rfc3987_syntax", "lark", "nbformat", "psycopg")

PROBE = """
import json, sys
from scidex_nbcapsule.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # --help
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


#: What writing a crate needs, and reading one does not.
WRITER = ("swh", "rocrate", "jinja2")


def _imported(*argv: str, cwd=None, heavy: tuple[str, ...] = HEAVY) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=cwd, timeout=300)
    result = json.loads(done.stderr.strip().splitlines()[-1])
    assert result["code"] in (0, None), done.stderr
    return [name for name in heavy if name in result["modules"]]


@pytest.fixture
def crate(project, tmp_path):
    nb = make_notebook(project / "a.ipynb", "print(1)")
    (project / "data.csv").write_text("x\n1\n")
    return nb, api.export(nb, inputs=[project / "data.csv"], dest=tmp_path / "caps", license="MIT", progress=False)


def test_help_and_list_import_nothing_heavy(tmp_path):
    db = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    assert _imported("--help") == []
    assert _imported("export", "--help") == []
    assert _imported("list", "--db", db, heavy=HEAVY + WRITER) == []


def test_register_and_show_import_nothing_heavy(crate, tmp_path):
    _, capsule = crate
    db = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    assert _imported("register", str(capsule.path), "--db", db, heavy=HEAVY + WRITER) == []
    assert _imported("show", capsule.capsule_id, "--db", db, heavy=HEAVY + WRITER) == []


def test_export_without_a_kernel_imports_nothing_heavy(crate, tmp_path):
    nb, _ = crate
    assert _imported("export", str(nb), "--input", str(nb.parent / "data.csv"), "--dest", str(tmp_path / "c2"),
                     "--license", "MIT", "--json", cwd=nb.parent) == []
