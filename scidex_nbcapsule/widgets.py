"""The capsule toolbar: Export, Register, Verify and Archive as buttons in the notebook.

A thin shell over :mod:`scidex_nbcapsule.api`, the registry, verification and
the archivers. Each action runs in a worker thread so the kernel keeps
answering the front end (ipywidgets sends updates from any thread), and the
kernel's file recorder is paused while the worker does the package's own I/O.
Failures are shown in the widget in plain words, the traceback folded away.
"""

from __future__ import annotations

import base64
import html
import json
import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import ipywidgets as widgets

from . import capture
from .errors import CapsuleError
from .options import ExportOptions

_esc = html.escape
_SWH_BROWSE = "https://archive.softwareheritage.org/"
_LINK = "color:var(--jp-content-link-color,#1a73e8)"


def _config_defaults(notebook_dir: Path | None, project_root: Path | None) -> dict[str, str]:
    """Title, license and authors to pre-fill, from the same configuration the export reads."""
    from .config import load_config

    try:
        cfg = load_config(notebook_dir, project_root)
    except CapsuleError:
        return {}
    authors = cfg.get("authors")
    if isinstance(authors, list):
        names = [a if isinstance(a, str) else a.get("name", "") for a in authors if isinstance(a, (str, dict))]
        author = "; ".join(n for n in names if n)
    else:
        author = str(cfg.get("author") or "")
    return {"title": str(cfg.get("title") or ""), "license": str(cfg.get("license") or ""), "author": author}


def _href(path: Path, base: Path | None) -> str:
    """A link the notebook front end can open: relative to the notebook's folder when possible."""
    if base is not None:
        try:
            return path.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            pass
    return path.resolve().as_uri()


class CapsuleToolbar(widgets.VBox):
    """Buttons, metadata fields, a status line, a progress bar, result links and error details.

    Drive it from code as a user would: set ``bar.title.value``, call
    ``bar.export_button.click()`` and ``bar.wait()``; then read ``bar.status``,
    ``bar.capsule`` or ``bar.error``.
    """

    def __init__(self, *, recorder: capture.Recorder | None = None, user_ns: dict | None = None,
                 magics: Any = None, notebook: str | os.PathLike | None = None, db: str | None = None) -> None:
        self.magics = magics
        self.recorder = recorder
        self.user_ns = user_ns
        self.notebook = Path(notebook).resolve() if notebook else None
        self.db = db
        self.capsule: Any = None
        self.registered: Any = None
        self.report: Any = None
        self.archived: Any = None
        self.error: str | None = None
        self._worker: threading.Thread | None = None
        self._links: dict[str, str] = {}

        notebook_dir = self._notebook_dir()
        defaults = _config_defaults(notebook_dir, recorder.project_root if recorder else None)
        text_layout = widgets.Layout(width="auto", flex="1 1 10em")
        self.title = widgets.Text(value=defaults.get("title", ""), description="Title",
                                  placeholder="first heading of the notebook", layout=text_layout)
        self.license = widgets.Text(value=defaults.get("license", ""), description="License",
                                    placeholder="SPDX id, e.g. CC-BY-4.0", layout=text_layout)
        self.author = widgets.Text(value=defaults.get("author", ""), description="Authors",
                                   placeholder="Ada Lovelace; Alan Turing", layout=text_layout)
        button_layout = widgets.Layout(width="auto")
        self.export_button = widgets.Button(description="Export", icon="box", button_style="primary",
                                            tooltip="write this analysis as an RO-Crate capsule", layout=button_layout)
        self.register_button = widgets.Button(description="Register", icon="database",
                                              tooltip="add the capsule to the catalogue", layout=button_layout)
        self.verify_button = widgets.Button(description="Verify", icon="check",
                                            tooltip="re-run the capsule in a fresh kernel and compare",
                                            layout=button_layout)
        self.archive_button = widgets.Button(description="Archive", icon="archive",
                                             tooltip="hand the capsule to an archive", layout=button_layout)
        self.archiver = widgets.Dropdown(options=self._archivers(), value="bagit", layout=widgets.Layout(width="7em"),
                                         tooltip="archiver used by Archive")
        self.buttons = [self.export_button, self.register_button, self.verify_button, self.archive_button]
        self.export_button.on_click(lambda _: self.start("Export", self._export))
        self.register_button.on_click(lambda _: self.start("Register", self._register))
        self.verify_button.on_click(lambda _: self.start("Verify", self._verify))
        self.archive_button.on_click(lambda _: self.start("Archive", self._archive))

        self.status = widgets.HTML(value="Ready.")
        self.progress = widgets.FloatProgress(value=0.0, min=0.0, max=1.0,
                                              layout=widgets.Layout(width="12em", visibility="hidden"))
        self.results = widgets.HTML(value="")
        self.details_text = widgets.HTML(value="")
        self.details = widgets.Accordion(children=[self.details_text], titles=("Details",), selected_index=None,
                                         layout=widgets.Layout(display="none"))
        super().__init__(children=[
            widgets.HBox([*self.buttons, self.archiver, self.progress],
                         layout=widgets.Layout(flex_flow="row wrap", align_items="center")),
            widgets.HBox([self.title, self.license, self.author], layout=widgets.Layout(flex_flow="row wrap")),
            self.status, self.results, self.details,
        ], layout=widgets.Layout(border="1px solid #ddd", padding="4px"))
        self.add_class("nbcapsule-toolbar")

    # -- running an action --------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def start(self, label: str, action: Callable[[], str]) -> None:
        """Run ``action`` in a worker thread; one action at a time so the results stay coherent."""
        if self.busy:
            self._set_status(f"{label}: wait, another action is still running.", "#a60")
            return
        self.error = None
        self.details.layout.display = "none"
        self.details_text.value = ""
        for button in self.buttons:
            button.disabled = True
        self.progress.value = 0.0
        self.progress.bar_style = "info"
        self.progress.layout.visibility = "visible"
        self._set_status(f"{label}: working…", "#333")
        self._worker = threading.Thread(target=self._run, args=(label, action), name=f"nbcapsule-{label.lower()}",
                                        daemon=True)
        self._worker.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the running action ends; ``False`` if it is still running after ``timeout`` seconds."""
        worker = self._worker
        if worker is None:
            return True
        worker.join(timeout)
        return not worker.is_alive()

    def _run(self, label: str, action: Callable[[], str]) -> None:
        started = time.monotonic()
        try:
            with capture.paused():
                message = action()
        except CapsuleError as exc:
            self._fail(label, str(exc), traceback.format_exc())
        except Exception as exc:  # noqa: BLE001 - the widget must show every failure, never lose it
            self._fail(label, f"unexpected {type(exc).__name__}: {exc}", traceback.format_exc(),
                       hint="this is a bug in scidex-nbcapsule or a library it uses; the details help to report it")
        else:
            self.progress.value = 1.0
            self.progress.bar_style = "success"
            self._set_status(f"{label} done in {time.monotonic() - started:.1f} s: {message}", "#070", escape=False)
        finally:
            self.progress.layout.visibility = "hidden"
            for button in self.buttons:
                button.disabled = False

    def _fail(self, label: str, message: str, details: str, hint: str | None = None) -> None:
        first, _, rest = message.partition("\n")
        self.error = message
        self.progress.bar_style = "danger"
        self._set_status(f"{label} failed: {first}", "#b00")
        text = "\n".join(x for x in (rest.strip(), hint or "", details) if x)
        self.details_text.value = f"<pre style='white-space:pre-wrap;font-size:85%'>{_esc(text)}</pre>"
        self.details.layout.display = ""

    def _set_status(self, text: str, colour: str, *, escape: bool = True) -> None:
        self.status.value = f"<span style='color:{colour}'>{_esc(text) if escape else text}</span>"

    def _show(self, key: str, item_html: str) -> None:
        self._links[key] = f"<li>{item_html}</li>"
        self.results.value = "<ul style='margin:0'>" + "".join(self._links.values()) + "</ul>"

    def _show_link(self, key: str, label: str, href: str, text: str) -> None:
        self._show(key, f"{_esc(label)}: <a href='{_esc(href, quote=True)}' target='_blank' rel='noopener' "
                        f"style='{_LINK}'>"
                        f"<code>{_esc(text)}</code></a>")

    # -- context -------------------------------------------------------------------------
    def _recorder(self) -> capture.Recorder | None:
        return self.recorder or capture.current_recorder()

    def _notebook_dir(self) -> Path | None:
        if self.notebook is not None:
            return self.notebook.parent
        try:
            return capture.find_notebook(self.user_ns).parent
        except CapsuleError:
            return None

    @staticmethod
    def _archivers() -> list[str]:
        from .archive import available_archivers

        return available_archivers()

    def _target(self) -> Path:
        """The crate the other buttons act on: this toolbar's export, else the session's last ``%capsule export``."""
        capsule = self.capsule or getattr(self.magics, "last", None)
        if capsule is None:
            raise CapsuleError("no capsule exported in this session yet", hint="click Export first")
        return Path(capsule.path)

    # -- actions -------------------------------------------------------------------------
    def _export(self) -> str:
        from . import api

        def progress(done: int, total: int) -> None:
            self.progress.value = done / total if total else 1.0

        authors = [a.strip() for a in self.author.value.split(";") if a.strip()]
        options = ExportOptions(title=self.title.value.strip() or None, license=self.license.value.strip() or None,
                                authors=authors)
        capsule = api.export(self.notebook, options, recorder=self._recorder(), user_ns=self.user_ns,
                             progress=progress)
        self.capsule = capsule
        if self.magics is not None:
            self.magics.last = capsule
        base = self._notebook_dir()
        self._links.clear()
        self._show_link("crate", "crate", _href(capsule.path, base), str(capsule.path))
        preview = capsule.path / "ro-crate-preview.html"
        if preview.is_file():
            self._show_link("preview", "preview", _href(preview, base), preview.name)
        self._show_swhids(capsule.manifest.swhids or {})
        if capsule.problems:
            items = "".join(f"<li><b>{_esc(p.kind)}</b>: {_esc(p.message)}</li>" for p in capsule.problems)
            self._show("problems", f"<details><summary style='color:#a60'>{len(capsule.problems)} execution-order "
                                   f"problem(s)</summary><ul>{items}</ul></details>")
        for index, notice in enumerate(capsule.notices):
            self._show(f"notice:{index}", f"<small>{_esc(notice)}</small>")
        return f"capsule <code>{_esc(capsule.capsule_id)}</code>"

    def _show_swhids(self, swhids: dict[str, Any]) -> None:
        """Single SWHIDs as links; the per-file ones folded away, as there can be hundreds."""
        for key in ("notebook", "payload", "revision", "directory", "snapshot"):
            if isinstance(swhids.get(key), str):
                self._show_link(f"swhid:{key}", f"SWHID {key}", _SWH_BROWSE + swhids[key], swhids[key].split(";")[0])
        files = {**(swhids.get("files") or {}), **(swhids.get("code") or {})}
        if files:
            items = "".join(f"<li><a href='{_esc(_SWH_BROWSE + v, quote=True)}' target='_blank' rel='noopener' "
                            f"style='{_LINK}'>{_esc(k)}</a></li>" for k, v in sorted(files.items()))
            self._show("swhid:files", f"<details><summary>{len(files)} file SWHIDs</summary><ul>{items}</ul></details>")

    def _register(self) -> str:
        crate = self._target()
        from .registry import open_registry

        self.progress.value = 0.3
        with open_registry(self.db) as registry:
            result = registry.register_capsule(crate)
        self.registered = result
        state = "registered" if result.created else "already registered"
        self._show("registered", f"catalogue: <code>{_esc(result.capsule_id)}</code> version {_esc(str(result.version))}")
        return f"{state}: <code>{_esc(result.capsule_id)}</code> (version {_esc(str(result.version))})"

    def _verify(self) -> str:
        crate = self._target()
        from .verify import verify

        self.progress.value = 0.1
        report = verify(str(crate), db=self.db)
        self.report = report
        data = json.dumps(report.to_dict(), indent=2, sort_keys=True, default=str).encode("utf-8")
        href = "data:application/json;base64," + base64.b64encode(data).decode("ascii")
        self._show("report", f"verification: <b>{_esc(str(report.verdict))}</b> — <a href='{href}' style='{_LINK}' "
                             f"download='{_esc(crate.name)}-verification.json'>report (JSON)</a>")
        return f"verdict <b>{_esc(str(report.verdict))}</b>"

    def _archive(self) -> str:
        crate = self._target()
        from .archive import run_archival

        name = self.archiver.value
        self.progress.value = 0.1
        if self.registered is not None:
            from .registry import open_registry

            with open_registry(self.db) as registry:
                result = run_archival(name, crate, registry=registry)
        else:
            result = run_archival(name, crate)
        self.archived = result
        where = result.location or result.request_id or result.target
        if where and str(where).startswith("swh:"):
            self._show_link(f"archive:{name}", f"{name} ({result.status})", _SWH_BROWSE + str(where), str(where))
        elif where and Path(str(where)).exists():
            self._show_link(f"archive:{name}", f"{name} ({result.status})", _href(Path(str(where)),
                            self._notebook_dir()), str(where))
        else:
            self._show(f"archive:{name}", f"{_esc(name)}: {_esc(result.status)} <code>{_esc(str(where))}</code>")
        return f"{_esc(name)}: {_esc(result.status)}"


def toolbar(magics: Any = None, *, notebook: str | os.PathLike | None = None, db: str | None = None) -> CapsuleToolbar:
    """The toolbar for this kernel, sharing the ``%capsule`` recorder and last export when the extension is loaded."""
    if magics is None:
        from .magics import _STATE

        magics = next((state[0] for state in _STATE.values()), None)
    if magics is not None:
        return CapsuleToolbar(recorder=magics.recorder, user_ns=magics.shell.user_ns, magics=magics,
                              notebook=notebook, db=db)
    user_ns = None
    try:
        from IPython import get_ipython

        shell = get_ipython()
        user_ns = shell.user_ns if shell is not None else None
    except ImportError:
        pass
    return CapsuleToolbar(recorder=capture.current_recorder(), user_ns=user_ns, notebook=notebook, db=db)
