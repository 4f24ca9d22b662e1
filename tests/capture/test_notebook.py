"""Reading notebooks without nbformat's import cost gives exactly what nbformat gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from scidex_nbcapsule.capture import NotebookNode, as_nbformat, notebook_bytes, read_notebook
from scidex_nbcapsule.errors import NotebookError

from helpers import ROOT, make_notebook

def _plain(nb, *, converted: bool) -> dict:
    """As JSON; converting an old notebook gives its cells new random ids, each time."""
    data = json.loads(json.dumps(nb))
    for cell in data["cells"] if converted else []:
        cell.pop("id", None)
    return data


RICH_CELLS = [
    "print('one\\ntwo')\nimport sys; print('err', file=sys.stderr)",
    "from IPython.display import HTML, SVG, display, Markdown\n"
    "display(HTML('<b>bold</b>\\n<i>two lines</i>'))\n"
    "display(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"4\" height=\"4\">\\n<rect/></svg>'))\n"
    "display(Markdown('# t\\nx'))",
    "import base64\nfrom IPython.display import Image\n"
    "Image(base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=='))",
    "{'a': [1, 2], 'b': 'é'}",
    "raise ValueError('boom')",
]


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> list[Path]:
    """Real notebooks with real outputs of every kind, written by nbclient and nbformat."""
    folder = tmp_path_factory.mktemp("notebooks")
    rich = make_notebook(folder / "rich.ipynb", *RICH_CELLS)
    nb = nbformat.read(str(rich), as_version=4)
    nb.cells.insert(1, nbformat.v4.new_markdown_cell("![x](attachment:x.png)\nsecond line", attachments={
        "x.png": {"image/png": "iVBORw0KGgo=", "text/plain": ["a\n", "b"]}}))
    NotebookClient(nb, timeout=120, allow_errors=True).execute()
    nb.metadata["signature"] = "sha256:transient"
    nb.cells[0].metadata["trusted"] = True
    nbformat.write(nb, str(rich))
    old = nbformat.v4.new_notebook(nbformat_minor=4)
    old.cells = [nbformat.v4.new_code_cell("x = 1")]
    del old.cells[0]["id"]
    (folder / "minor4.ipynb").write_text(json.dumps(old))
    v3 = nbformat.v3.new_notebook(worksheets=[nbformat.v3.new_worksheet(cells=[
        nbformat.v3.new_code_cell(input="y = 2"), nbformat.v3.new_text_cell("markdown", source="# Old")])])
    (folder / "v3.ipynb").write_text(nbformat.writes(v3, version=3))
    return [rich, folder / "minor4.ipynb", folder / "v3.ipynb", *sorted((ROOT / "notebooks").glob("*.ipynb"))]


def test_the_same_notebook_as_nbformat_reads(executed):
    for path in executed:
        ours = read_notebook(path)
        theirs = nbformat.read(str(path), as_version=4)
        assert isinstance(ours, NotebookNode)
        converted = path.name == "v3.ipynb"
        assert _plain(ours, converted=converted) == _plain(theirs, converted=converted), path.name
    rich = read_notebook(executed[0])
    kinds = {o["output_type"] for c in rich.cells for o in c.get("outputs", [])}
    assert kinds == {"stream", "display_data", "execute_result", "error"}
    assert isinstance(rich.cells[2].source, str) and "signature" not in rich.metadata
    assert "trusted" not in rich.cells[0].metadata


def test_the_same_bytes_as_nbformat_writes(executed):
    for path in executed:
        if path.name == "v3.ipynb":
            continue
        nb = read_notebook(path)
        assert notebook_bytes(nb) == (nbformat.writes(nbformat.read(str(path), as_version=4)) + "\n").encode()


def test_attributes_read_and_write_like_nbformat(executed):
    nb = read_notebook(executed[0])
    nb.cells[0].source = "changed"
    assert nb["cells"][0]["source"] == "changed"
    with pytest.raises(AttributeError):
        nb.no_such_field
    converted = as_nbformat(nb)
    assert isinstance(converted, nbformat.NotebookNode)
    nbformat.validate(converted)


@pytest.mark.parametrize("content, match", [
    (b"{not json", "not a valid .ipynb"),
    (b"\xff\xfe", "not a valid .ipynb"),
    (b"[]", "no nbformat version"),
    (b'{"cells": []}', "no nbformat version"),
    (json.dumps({"cells": [{"cell_type": "bogus", "metadata": {}, "source": ""}], "metadata": {}, "nbformat": 4,
                 "nbformat_minor": 5}).encode(), "does not follow the nbformat schema"),
    (json.dumps({"cells": [{"cell_type": "markdown", "id": "a", "metadata": {}, "source": ""}] * 2,
                 "metadata": {}, "nbformat": 4, "nbformat_minor": 5}).encode(), "same id"),
    (b"[" * 100_000, "not a valid .ipynb"),
])
def test_bad_notebooks_are_named_not_tracebacks(tmp_path, content, match):
    path = tmp_path / "bad.ipynb"
    path.write_bytes(content)
    with pytest.raises(NotebookError, match=match):
        read_notebook(path)


def test_missing_notebook(tmp_path):
    with pytest.raises(NotebookError, match="does not exist"):
        read_notebook(tmp_path / "gone.ipynb")


def test_reading_does_not_import_nbformat_or_jsonschema(executed):
    code = ("import sys; from scidex_nbcapsule.capture import read_notebook; read_notebook(sys.argv[1]); "
            "print(sorted(m for m in ('nbformat', 'jsonschema', 'IPython') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(executed[0])], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
