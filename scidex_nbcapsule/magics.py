"""``%capsule``: the IPython shell over the API, plus the kernel hooks that record the analysis."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import HTML, display

from . import api, capture
from .capture import VERIFYING_ENV, system
from .errors import CapsuleError
from .options import ExportOptions
from .selection import late_capture_message


class _Parser(argparse.ArgumentParser):
    """argparse that reports to the user instead of exiting the kernel."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}\n{self.format_usage()}")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            print(message)
        raise _Done()


class _Done(Exception):
    pass


def _subcommands() -> dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]]:
    def export(p: argparse.ArgumentParser) -> None:
        p.add_argument("--notebook", metavar="PATH", help="the notebook file, when the front end does not say")
        p.add_argument("--rerun", action="store_true",
                       help="run the saved notebook top to bottom in a fresh kernel with capture on, and export "
                       "that run (the complete capsule when this kernel's history is not)")
        p.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell with --rerun")
        ExportOptions.add_arguments(p)

    def paths(p: argparse.ArgumentParser) -> None:
        p.add_argument("paths", nargs="*", metavar="PATH")
        p.add_argument("--exclude", action="append", default=[], metavar="GLOB")

    def status(p: argparse.ArgumentParser) -> None:
        p.add_argument("--notebook", metavar="PATH")

    def register(p: argparse.ArgumentParser) -> None:
        p.add_argument("crate", nargs="?", metavar="CRATE", help="crate to register (default: the last export)")
        p.add_argument("--db", metavar="URL", help="registry URL (default: $SCIDEX_NBCAPSULE_DB or the local SQLite)")

    def verify(p: argparse.ArgumentParser) -> None:
        p.add_argument("crate", nargs="?", metavar="CRATE_OR_ID", help="crate or capsule id (default: last export)")
        p.add_argument("--db", metavar="URL")
        p.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
        p.add_argument("--total-timeout", type=int, default=3600, help="seconds allowed for the whole notebook")
        p.add_argument("--fresh-env", action="store_true",
                       help="re-run in a virtual environment rebuilt from the capsule's lock (cached by its digest)")

    def archive(p: argparse.ArgumentParser) -> None:
        p.add_argument("crate", nargs="?", metavar="CRATE_OR_ID")
        p.add_argument("--to", choices=["bagit", "swh"], default="bagit")
        p.add_argument("--dest", metavar="DIR")
        p.add_argument("--db", metavar="URL")

    def nothing(p: argparse.ArgumentParser) -> None:
        pass

    return {
        "export": ("capture this analysis as a capsule (RO-Crate)", export),
        "status": ("show cells run, files read and written, and execution-order problems", status),
        "input": ("declare files or folders the analysis read", paths),
        "output": ("declare files or folders the analysis wrote", paths),
        "exclude": ("leave files matching GLOB patterns out of the capsule", lambda p: p.add_argument(
            "patterns", nargs="+", metavar="GLOB")),
        "register": ("register a capsule in the catalogue", register),
        "verify": ("re-run a capsule in a fresh kernel and compare", verify),
        "archive": ("pack a capsule as BagIt or ask Software Heritage to archive its code", archive),
        "toolbar": ("show the capsule toolbar widget", nothing),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="%capsule", description="Capture this notebook analysis as a verifiable RO-Crate capsule.",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", parser_class=_Parser)
    for name, (text, configure) in _subcommands().items():
        configure(sub.add_parser(name, help=text, description=text))
    return parser


def full_help() -> str:
    parser = build_parser()
    parts = [parser.format_help()]
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        parts.append(f"\n--- %capsule {name} ---\n{sub.format_help()}")
    return "".join(parts)


@magics_class
class CapsuleMagics(Magics):
    """Holds the recorder for this kernel session and the last capsule exported."""

    def __init__(self, shell: Any, recorder: capture.Recorder) -> None:
        super().__init__(shell)
        self.recorder = recorder
        self.last: api.Capsule | None = None

    @magic_arguments()
    @argument("subcommand", nargs="?", help="export | status | input | output | exclude | register | verify | "
              "archive | toolbar; '%%capsule SUBCOMMAND --help' explains each")
    @argument("rest", nargs=argparse.REMAINDER, help="options of the subcommand")
    @line_magic
    def capsule(self, line: str) -> Any:
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%capsule: cannot parse the line: {exc}") from exc
        if not argv or argv[0] in ("-h", "--help", "help"):
            print(full_help())
            return None
        parse_argstring(self.capsule, line)
        try:
            args = build_parser().parse_args(argv)
        except _Done:
            return None
        try:
            return getattr(self, f"_do_{args.subcommand}")(args)
        except CapsuleError as exc:
            raise UsageError(str(exc)) from exc

    # -- subcommands -----------------------------------------------------------
    def export_from_argv(self, argv: list[str]) -> api.Capsule | None:
        """``%capsule export ARGV`` for a runner, raising CapsuleError rather than a UsageError."""
        try:
            args = build_parser().parse_args(["export", *argv])
        except _Done:
            return None
        return self._do_export(args)

    def _do_export(self, args: argparse.Namespace) -> api.Capsule | None:
        if os.environ.get(VERIFYING_ENV):
            print("%capsule export: skipped while this notebook is being re-verified")
            return None
        if args.rerun:
            notebook = Path(args.notebook).resolve() if args.notebook else capture.find_notebook(self.shell.user_ns)
            with capture.paused():  # the fresh kernel's files are its own capsule's, not this session's
                capsule = api.export_executed(notebook, ExportOptions.from_namespace(args), timeout=args.timeout)
            self.last = capsule
            return capsule
        capsule = api.export(args.notebook, ExportOptions.from_namespace(args), recorder=self.recorder,
                             user_ns=self.shell.user_ns)
        self.last = capsule
        for problem in capsule.problems:
            if problem.kind == "stale-notebook":
                print(f"warning: {problem.message}")
        return capsule

    def _do_status(self, args: argparse.Namespace) -> None:
        display(HTML(status_html(self.recorder, self.shell.user_ns, args.notebook)))

    def _do_input(self, args: argparse.Namespace) -> None:
        self.recorder.excludes += args.exclude
        added = self.recorder.declare(args.paths, role="input")
        print(f"declared {len(added)} input(s): " + ", ".join(str(p) for p in added))

    def _do_output(self, args: argparse.Namespace) -> None:
        self.recorder.excludes += args.exclude
        added = self.recorder.declare(args.paths, role="output")
        print(f"declared {len(added)} output(s): " + ", ".join(str(p) for p in added))

    def _do_exclude(self, args: argparse.Namespace) -> None:
        self.recorder.excludes += args.patterns
        print("excluding: " + ", ".join(self.recorder.excludes))

    def _target(self, crate: str | None) -> str:
        if crate:
            return crate
        if self.last is None:
            raise UsageError("no capsule exported in this session: run %capsule export first, or name a crate")
        return str(self.last.path)

    def _do_register(self, args: argparse.Namespace) -> Any:
        from .registry import open_registry

        with capture.paused(), open_registry(args.db) as registry:
            result = registry.register_capsule(self._target(args.crate))
        state = "registered" if result.created else "already registered"
        print(f"{state}: {result.capsule_id} (version {result.version})")
        return result

    def _do_verify(self, args: argparse.Namespace) -> Any:
        from .verify import verify

        with capture.paused():
            return verify(self._target(args.crate), db=args.db, cell_timeout=args.timeout,
                          total_timeout=args.total_timeout, fresh_env=args.fresh_env)

    def _do_archive(self, args: argparse.Namespace) -> Any:
        from .archive import run_archival

        with capture.paused():
            return run_archival(args.to, self._target(args.crate), dest=args.dest)

    def _do_toolbar(self, args: argparse.Namespace) -> Any:
        from .widgets import toolbar

        return toolbar(magics=self)


CapsuleMagics.capsule.__doc__ = full_help()


def status_html(recorder: capture.Recorder, user_ns: dict, notebook: str | None) -> str:
    import html

    esc = html.escape
    seen = recorder.observe()
    root = recorder.project_root
    rows = "".join(f"<li><code>{esc(str(f.path.relative_to(root)))}</code> "
                   f"{'written' if f.written else 'read'}</li>" for f in seen.files)
    rows += "".join(f"<li><code>{esc(str(f.path))}</code> read, outside the project</li>" for f in seen.external)
    runs = [r for r in recorder.runs if r.status != "unknown"]
    layers = ", ".join(recorder.mechanisms)
    parts = [f"<b>scidex-nbcapsule</b>: {len(runs)} cell runs recorded since {esc(recorder.kernel_started)}; "
             f"project root <code>{esc(str(root))}</code>; capture by {esc(layers)}",
             f"<p>Files ({len(seen.files) + len(seen.external)}):</p><ul>{rows}</ul>"]
    unobserved = recorder.unobserved_cells()
    if unobserved:
        parts.append(f"<p style='color:#a60'>{esc(late_capture_message(len(unobserved)))}</p>")
    try:
        path = Path(notebook).resolve() if notebook else capture.find_notebook(user_ns)
        nb = capture.read_notebook(path)
        problems = capture.analyse_order(nb, recorder.runs, current=recorder.current_run(),
                                         saved_at=path.stat().st_mtime)
        if problems:
            items = "".join(f"<li><b>{esc(p.kind)}</b>: {esc(p.message)}</li>" for p in problems)
            parts.append(f"<p style='color:#a60'>Execution-order problems in <code>{esc(path.name)}</code>:</p>"
                         f"<ul>{items}</ul>")
        elif not unobserved:
            parts.append(f"<p style='color:#070'>No execution-order problems in <code>{esc(path.name)}</code>.</p>")
    except CapsuleError as exc:
        parts.append(f"<p>Execution order not checked: {esc(str(exc))}</p>")
    return "<div>" + "".join(parts) + "</div>"


_STATE: dict[int, tuple[CapsuleMagics, Callable, Callable]] = {}


def load(ipython: Any) -> None:
    """Register ``%capsule`` and start recording; loading twice keeps the first recorder."""
    if id(ipython) in _STATE:
        return
    root = capture.find_project_root(os.getcwd())
    recorder = capture.Recorder(project_root=root)
    recorder.ignored.update(os.path.abspath(a) for a in sys.argv[1:] if os.path.isfile(a))  # the connection file
    history = ipython.user_ns.get("In") or []
    recorder.backfill_history((i, src) for i, src in enumerate(history) if i and src)
    layer, blind_spots = system.start_layer(root)
    recorder.use_system_layer(layer)
    recorder.blind_spots += blind_spots
    current = len(history) - 1  # when loaded from a cell, that cell is the last one in the history
    unobserved = [r for r in recorder.unobserved_cells() if r.execution_count != current]
    if unobserved:
        print("scidex_nbcapsule: " + late_capture_message(len(unobserved)))
    magics = CapsuleMagics(ipython, recorder)
    ipython.register_magics(magics)
    ipython.events.register("pre_run_cell", recorder.pre_run_cell)
    ipython.events.register("post_run_cell", recorder.post_run_cell)
    capture.attach(recorder)
    _STATE[id(ipython)] = (magics, recorder.pre_run_cell, recorder.post_run_cell)


def unload(ipython: Any) -> None:
    """Remove every hook this extension installed."""
    state = _STATE.pop(id(ipython), None)
    if state is None:
        return
    magics, pre, post = state
    ipython.events.unregister("pre_run_cell", pre)
    ipython.events.unregister("post_run_cell", post)
    capture.detach()
    magics.recorder.close()
    ipython.magics_manager.magics["line"].pop("capsule", None)
    ipython.magics_manager.registry.pop(type(magics).__name__, None)
