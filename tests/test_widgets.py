"""The capsule toolbar driven in a real kernel: fields, buttons, worker thread, messages in the widget."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from helpers import make_notebook

STATE = """
import json as _json
print("STATE" + _json.dumps({
    "status": bar.status.value, "results": bar.results.value, "error": bar.error,
    "details": bar.details_text.value, "details_shown": bar.details.layout.display != "none",
    "disabled": [b.disabled for b in bar.buttons], "progress_visible": bar.progress.layout.visibility,
    "crate": str(bar.capsule.path) if bar.capsule else None,
    "capsule_id": bar.capsule.capsule_id if bar.capsule else None,
}))
"""


def _state(kernel) -> dict:
    out = kernel.ok(STATE)["text"]
    return json.loads(next(line for line in out.splitlines() if line.startswith("STATE"))[len("STATE"):])


def _click(kernel, button: str, timeout: int = 300) -> dict:
    kernel.ok(f"bar.{button}_button.click()\nassert bar.wait({timeout}), 'the action did not end'")
    return _state(kernel)


@pytest.fixture
def toolbar_kernel(kernel, project):
    """A kernel with the extension loaded, a small analysis run and the toolbar shown via ``%capsule toolbar``."""
    make_notebook(project / "analysis.ipynb", "rows = open('data/input.csv').read()",
                  "open('out.txt', 'w').write(rows.upper())")
    kernel.ok(f"import os\nos.environ['NBCAPSULE_NOTEBOOK'] = {str(project / 'analysis.ipynb')!r}")
    kernel.ok("%load_ext scidex_nbcapsule")
    kernel.ok("rows = open('data/input.csv').read()")
    kernel.ok("open('out.txt', 'w').write(rows.upper())")
    shown = kernel.ok("bar = get_ipython().run_line_magic('capsule', 'toolbar')\nbar")
    assert any("application/vnd.jupyter.widget-view+json" in d for d in shown["data"]), shown
    return kernel


def test_export_button_writes_the_capsule_and_shows_its_id(toolbar_kernel, project):
    toolbar_kernel.ok("bar.title.value = 'Widget analysis'\nbar.license.value = 'MIT'\n"
                      "bar.author.value = 'Ada Lovelace; Alan Turing'")
    state = _click(toolbar_kernel, "export")
    assert state["error"] is None, state["details"]
    assert state["capsule_id"] and state["capsule_id"] in state["status"]
    assert "Export done" in state["status"]
    crate = Path(state["crate"])
    assert crate.is_dir() and crate.parent == project / "capsules"
    assert f"href='capsules/{crate.name}'" in state["results"]
    assert state["disabled"] == [False] * 4 and state["progress_visible"] == "hidden"
    manifest = json.loads((crate / "capsule.json").read_text())
    assert manifest["title"] == "Widget analysis" and manifest["license"] == "MIT"
    assert [a["name"] for a in manifest["authors"]] == ["Ada Lovelace", "Alan Turing"]
    roles = {f["path"]: f["role"] for f in manifest["files"]}
    assert roles["data/input.csv"] == "input" and roles["out.txt"] == "output"
    out = toolbar_kernel.ok("from scidex_nbcapsule import magics\n"
                            "print(next(iter(magics._STATE.values()))[0].last.capsule_id)")["text"]
    assert state["capsule_id"] in out, "the toolbar's export is the session's last export for %capsule register"


def test_invalid_license_is_a_plain_message_in_the_widget(toolbar_kernel, project):
    toolbar_kernel.ok("bar.license.value = 'not a license!!'")
    state = _click(toolbar_kernel, "export")
    assert state["status"].count("Export failed") == 1
    assert "is not an SPDX identifier" in state["status"]
    assert "Traceback" not in state["status"]
    assert state["details_shown"] and "spdx.org/licenses" in state["details"] and "Traceback" in state["details"]
    assert state["disabled"] == [False] * 4
    assert not (project / "capsules").exists()


def test_buttons_without_an_export_say_what_to_do(toolbar_kernel):
    for button in ("register", "verify", "archive"):
        state = _click(toolbar_kernel, button)
        assert "no capsule exported in this session yet" in state["status"], state
        assert "click Export first" in state["details"]


def test_work_runs_in_a_thread_with_the_recorder_paused(toolbar_kernel, project):
    (project / "data" / "private.csv").write_text("a\n1\n")
    toolbar_kernel.ok("import threading, time\ngate = threading.Event()\n"
                      "def slow():\n    open('data/private.csv').read()\n    gate.wait(60)\n    return 'slept'\n"
                      "bar.start('Slow', slow)")
    busy = toolbar_kernel.ok("print(bar.busy, [b.disabled for b in bar.buttons], bar.progress.layout.visibility)")
    assert busy["text"].strip() == "True [True, True, True, True] visible", "the kernel answered while work ran"
    toolbar_kernel.ok("gate.set()\nassert bar.wait(60)")
    state = _state(toolbar_kernel)
    assert "Slow done" in state["status"] and "slept" in state["status"]
    files = toolbar_kernel.ok("from scidex_nbcapsule import capture\n"
                              "print(sorted(str(f.path.name) for f in bar.recorder.observe().files))")["text"]
    assert "input.csv" in files and "private.csv" not in files


def test_fields_are_prefilled_from_configuration(kernel, project):
    (project / "capsule.toml").write_text('license = "CC0-1.0"\ntitle = "Configured title"\n'
                                          'authors = [{name = "Grace Hopper"}, "Edsger Dijkstra"]\n')
    make_notebook(project / "analysis.ipynb", "x = 1")
    kernel.ok(f"import os\nos.environ['NBCAPSULE_NOTEBOOK'] = {str(project / 'analysis.ipynb')!r}")
    out = kernel.ok("from scidex_nbcapsule.widgets import toolbar\nbar = toolbar()\n"
                    "print(repr((bar.title.value, bar.license.value, bar.author.value)))")["text"]
    assert out.strip() == repr(("Configured title", "CC0-1.0", "Grace Hopper; Edsger Dijkstra"))


def test_archive_button_packs_a_bag_and_links_it(toolbar_kernel, project):
    _click(toolbar_kernel, "export")
    state = _click(toolbar_kernel, "archive")
    assert state["error"] is None, state["details"]
    assert "Archive done" in state["status"] and "bagit" in state["results"]


def test_register_then_verify_from_the_toolbar(toolbar_kernel, project, tmp_path):
    db = f"sqlite:///{tmp_path / 'registry.sqlite3'}"
    toolbar_kernel.ok(f"bar.db = {db!r}\nbar.license.value = 'CC0-1.0'")
    exported = _click(toolbar_kernel, "export")
    capsule_id = exported["capsule_id"]
    state = _click(toolbar_kernel, "register")
    assert state["error"] is None, state["details"]
    assert f"registered: <code>{capsule_id}</code> (version 1)" in state["status"]
    assert "already registered" in _click(toolbar_kernel, "register")["status"]
    from scidex_nbcapsule.registry import open_registry

    with open_registry(db) as registry:
        assert registry.get_capsule(capsule_id)["capsule_id"] == capsule_id
    state = _click(toolbar_kernel, "verify", timeout=600)
    assert state["error"] is None, state["details"]
    verdict = re.search(r"verdict <b>([a-z-]+)</b>", state["status"]).group(1)
    assert verdict in ("verified", "verified-within-tolerance", "mismatch", "execution-failed")
    assert "data:application/json;base64," in state["results"] and "-verification.json" in state["results"]
    with open_registry(db) as registry:
        assert registry.get_capsule(capsule_id)["status"] == verdict
