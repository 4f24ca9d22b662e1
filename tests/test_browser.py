"""End to end in JupyterLab and a real browser: run the demo, click the toolbar's Export, find the crate on disk."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from helpers import copy_demo
from jupyter_proc import JupyterProcess

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CAPSULE_ID = re.compile(r"capsule-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
LONG = 240_000  # ms: a cold JupyterLab, a kernel start and the whole demo on a shared CI machine


@pytest.fixture
def lab(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run installs it)", pytrace=False)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("Playwright is missing: pip install -e '.[test]' (make test does this)", pytrace=False)
    notebook = copy_demo(tmp_path)
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("%capsule toolbar"))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, notebook)
    server = JupyterProcess("jupyterlab", notebook.parent, tmp_path / "jupyter",
                            args=["--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"])
    yield server
    server.stop()


def _wait_idle(page) -> None:
    """Until the status bar says the kernel is connected and idle (the notebook's own indicator says idle early)."""
    page.wait_for_function(
        "() => /\\(ipykernel\\)\\s*\\|?\\s*Idle/.test(document.querySelector('#jp-main-statusbar')?.innerText || '')",
        timeout=LONG)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_toolbar_export_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{lab.url}lab/tree/demo.ipynb?token={lab.token}", timeout=LONG)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=LONG)
            _wait_idle(page)

            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
            bar = page.locator(".nbcapsule-toolbar")
            bar.wait_for(state="visible", timeout=LONG)
            _wait_idle(page)

            bar.get_by_role("button", name="Export").click()
            page.wait_for_function(
                "() => /Export (done|failed)/.test(document.querySelector('.nbcapsule-toolbar')?.innerText || '')",
                timeout=LONG)
            text = bar.inner_text()
            bar.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "jupyterlab-toolbar-export.png"), full_page=False)
            assert "Export done" in text, text
            capsule_id = CAPSULE_ID.search(text.split("Export done", 1)[1]).group(0)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "jupyterlab-toolbar-failure.png"))
            print(lab.log())
            raise
        finally:
            browser.close()

    crate = lab.root_dir / "capsules" / capsule_id
    assert (crate / "capsule.json").is_file() and (crate / "ro-crate-metadata.json").is_file()
    manifest = json.loads((crate / "capsule.json").read_text())
    assert manifest["notebook"].endswith("demo.ipynb")
    roles = {f["path"]: f["role"] for f in manifest["files"]}
    assert roles.get("data/stations.csv") == "input", roles
