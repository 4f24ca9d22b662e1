"""The one Python API: magics, widget, CLI and server are thin shells over these functions."""

from __future__ import annotations

import dataclasses
import hashlib
import html
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import capture, config as config_mod, environment, lock, redaction, verifier_wheel
from .selection import late_capture_message, relative as _relative, select_files
from .crate import CratePlan, PayloadFile, write_crate
from .errors import CapsuleError, NotebookError, PathOutsideProject
from .manifest import ExecutionRecord, Manifest, Problem, new_capsule_id, utc_now
from .options import ExportOptions


#: Where lock files the project already keeps (uv.lock, pylock.toml, renv.lock, …) are carried in the crate.
LOCKS_DIR = "environment"
#: Exports past either size take seconds: show a progress bar.
PROGRESS_BYTES = 128 << 20
PROGRESS_FILES = 2000


@dataclass
class Capsule:
    """An exported capsule: where it is and what it says."""

    path: Path
    manifest: Manifest
    checksum: str
    notices: list[str] = field(default_factory=list)

    @property
    def capsule_id(self) -> str:
        return self.manifest.capsule_id

    @property
    def problems(self) -> list[Problem]:
        return self.manifest.execution.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "capsule_id": self.capsule_id,
            "crate": str(self.path),
            "checksum": self.checksum,
            "manifest_digest": self.manifest.manifest_digest,
            "title": self.manifest.title,
            "license": self.manifest.license,
            "notebook": self.manifest.notebook,
            "files": [{"path": f.path, "role": f.role, "size": f.size, "sha256": f.sha256,
                       **({"swhid": f.swhid} if f.swhid else {}),
                       **({"linked_from": f.linked_from} if f.linked_from else {})} for f in self.manifest.files],
            "problems": [{"kind": p.kind, "message": p.message} for p in self.problems],
            "withheld": self.manifest.withheld,
            "notices": self.notices,
            "swhids": self.manifest.swhids,
        }

    def __repr__(self) -> str:
        return f"<Capsule {self.capsule_id} at {self.path}>"

    def _repr_html_(self) -> str:
        esc = html.escape
        rows = "".join(
            f"<tr><td><code>{esc(f.path)}</code></td><td>{esc(f.role)}</td><td style='text-align:right'>{f.size:,}</td>"
            f"<td><code title='{esc(f.sha256)}'>{esc(f.sha256[:12])}…</code></td></tr>"
            for f in self.manifest.files)
        problems = "".join(f"<li><b>{esc(p.kind)}</b>: {esc(p.message)}</li>" for p in self.problems)
        withheld = "".join(f"<li>{esc(w.get('kind', ''))} <code>{esc(w.get('what', ''))}</code>: "
                           f"{esc(w.get('reason', ''))}</li>" for w in self.manifest.withheld)
        notices = "".join(f"<li>{esc(n)}</li>" for n in self.notices)
        return (
            f"<div class='nbcapsule'><h4 style='margin:0'>Capsule <code>{esc(self.capsule_id)}</code></h4>"
            f"<p>{esc(self.manifest.title)} · license {esc(self.manifest.license)} · crate "
            f"<a href='{esc(self.path.as_uri())}'><code>{esc(str(self.path))}</code></a><br>"
            f"checksum <code>{esc(self.checksum)}</code></p>"
            + (f"<p style='color:#a60'>Execution-order problems:</p><ul>{problems}</ul>" if problems else
               "<p style='color:#070'>No execution-order problems.</p>")
            + (f"<p>Withheld (secrets):</p><ul>{withheld}</ul>" if withheld else "")
            + (f"<ul>{notices}</ul>" if notices else "")
            + f"<details><summary>{len(self.manifest.files)} files</summary><table><tr><th>path</th><th>role</th>"
              f"<th>bytes</th><th>sha256</th></tr>{rows}</table></details></div>")


# -- export ----------------------------------------------------------------------------------
def _notebook_and_content(notebook: str | os.PathLike | None, recorder: capture.Recorder | None,
                          user_ns: dict | None, notebook_content: str | os.PathLike | None = None,
                          ) -> tuple[Path, Path, Any, float | None]:
    if notebook is None:
        path = capture.find_notebook(user_ns)
    else:
        path = Path(notebook).expanduser().resolve()
    if path.suffix != ".ipynb":
        raise NotebookError(f"{path} is not a notebook (.ipynb)", hint="give the path of the .ipynb file")
    content_path = Path(notebook_content) if notebook_content else path
    snapshot = os.environ.get(capture.SNAPSHOT_ENV)
    if snapshot and os.environ.get(capture.NOTEBOOK_ENV) and \
            Path(os.environ[capture.NOTEBOOK_ENV]).resolve() == path and Path(snapshot).is_file():
        content_path = Path(snapshot)
    nb = capture.read_notebook(content_path)
    saved_at = content_path.stat().st_mtime if recorder is not None else None
    return path, content_path, nb, saved_at


def export(notebook: str | os.PathLike | None = None, options: ExportOptions | None = None, *,
           recorder: capture.Recorder | None = None, user_ns: dict | None = None,
           progress: bool | Callable[[int, int], None] = True, notebook_content: str | os.PathLike | None = None,
           **changes: Any) -> Capsule:
    """Export a notebook analysis as a capsule (an RO-Crate) and return it.

    Inside a kernel with the extension loaded, what the kernel recorded (cells
    run, files read and written) is used; elsewhere the notebook and the files
    named in ``options.inputs``/``outputs`` are packed as they are on disk. Files read
    outside the project root are listed; ``include_external`` packs them under ``external/``.
    ``changes`` are :class:`ExportOptions` fields given one by one (``export(nb, license="MIT")``).
    ``notebook_content`` is the executed copy to pack when it differs from the file at
    ``notebook`` (a headless run of a non-Python kernel).
    """
    opts = _options(options, changes)
    if recorder is None:
        recorder = capture.current_recorder()
    with capture.paused(), capture.io_pool() as executor:
        capsule = _export(notebook, opts, recorder=recorder, user_ns=user_ns, progress=progress, executor=executor,
                          notebook_content=notebook_content)
        if opts.bagit:
            from .archive import run_archival

            bag = run_archival("bagit", capsule.path, manifest=capsule.manifest)  # just sealed: no re-read
            capsule.notices.append(f"BagIt bag written to {bag.location}")
    return capsule


def _options(options: ExportOptions | None, changes: dict[str, Any]) -> ExportOptions:
    if options is not None and not isinstance(options, ExportOptions):
        raise TypeError(f"options must be an ExportOptions, not {type(options).__name__}")
    try:
        return dataclasses.replace(options or ExportOptions(), **changes)
    except TypeError as exc:  # an unknown keyword: the message names it
        raise TypeError(f"export(): {exc}; the options are the fields of ExportOptions") from None


def _export(notebook: str | os.PathLike | None, opts: ExportOptions, *, recorder: capture.Recorder | None,
            user_ns: dict | None, progress: bool | Callable[[int, int], None], executor: Any = None,
            notebook_content: str | os.PathLike | None = None) -> Capsule:
    nb_path, content_path, nb, saved_at = _notebook_and_content(notebook, recorder, user_ns, notebook_content)
    if opts.project_root is not None:
        root = Path(opts.project_root).resolve()
    elif recorder is not None and (recorder.project_root == nb_path.parent or recorder.project_root in nb_path.parents):
        root = recorder.project_root
    else:
        root = capture.find_project_root(nb_path.parent)
    if root not in nb_path.parents:
        raise PathOutsideProject(f"the notebook {nb_path} lies outside the project root {root}")
    base = Path(os.getcwd())
    cfg = config_mod.load_config(nb_path.parent, root)
    notices: list[str] = []
    license_id, notice = config_mod.resolve_license(opts.license, cfg)
    if notice:
        notices.append(notice)
    people = config_mod.resolve_authors(list(opts.authors) if opts.authors else None, cfg, cwd=nb_path.parent)
    if not people:
        notices.append("no author known: set authors in [tool.nbcapsule] or pass --author NAME")
    dest_path = Path(opts.dest).expanduser().resolve() if opts.dest else nb_path.parent / "capsules"
    excludes = list(opts.exclude) + list(cfg.get("exclude", []) or [])
    if recorder is not None:
        excludes += recorder.excludes
    chosen = select_files(root=root, notebook=nb_path, dest=dest_path, recorder=recorder, inputs=opts.inputs,
                          outputs=opts.outputs, excludes=excludes, allow_secrets=opts.allow_secrets, base=base,
                          include_external=opts.include_external)
    files, withheld, screen = chosen.files, chosen.withheld, chosen.screen
    notices += chosen.notices
    nb_clean, nb_withheld = redaction.scrub_notebook(nb, redaction.secret_values(dict(os.environ)))
    withheld += nb_withheld
    if nb_withheld:
        notebook_bytes = capture.notebook_bytes(nb_clean)
    else:
        notebook_bytes = content_path.read_bytes()  # byte for byte what was saved, so git's blob id holds
    snap = environment.snapshot(imported_modules=list(sys.modules))
    withheld += snap.withheld

    execution = _execution_record(nb, recorder, saved_at, chosen.per_segment)
    manifest = Manifest(
        capsule_id=new_capsule_id(),
        title=opts.title or cfg.get("title") or _notebook_title(nb, nb_path),
        description=opts.description or cfg.get("description") or "",
        license=license_id,
        created_at=utc_now(),
        notebook=_relative(nb_path, root),
        notebook_sha256=hashlib.sha256(notebook_bytes).hexdigest(),
        authors=people,
        execution=execution,
        environment_digest=snap.digest,
        identifier=opts.identifier or cfg.get("identifier"),
        withheld=withheld,
        capture=chosen.capture,
        external_inputs=chosen.external_inputs,
    )
    identify, generated = _source_references(manifest, nb_path, files, opts.swh_origin, opts.swh_snapshot)
    from .verify.binder import reverify_notebook

    generated["reverify.ipynb"] = reverify_notebook(manifest)
    locked, binder_line = _environment_lock(nb, recorder, root, nb_path, cfg, snap, generated)
    manifest.environment_lock = locked.summary() | {
        "carried": sorted(p for p in generated if p.startswith(f"{LOCKS_DIR}/")), "verifier": binder_line}
    notices += locked.notices
    notices += [f"may not rebuild elsewhere: {risk}" for risk in locked.risks]
    plan = CratePlan(manifest=manifest, files=files, notebook_bytes=notebook_bytes, environment=snap.data,
                     requirements=locked.requirements_txt(), generated=generated, binder_requirement=binder_line,
                     publisher=config_mod.resolve_publisher(cfg),
                     link_large=opts.link_large, progress=_progress_callback(progress, files), identify=identify,
                     executor=executor, screen=screen)
    path, sealed, checksum = write_crate(plan, dest_path, fmt=opts.fmt)
    if sealed.withheld:
        notices.append(f"{len(sealed.withheld)} item(s) withheld as secrets (see 'withheld' in capsule.json); include a "
                       "file on purpose with --allow-secret PATH")
    return Capsule(path=path, manifest=sealed, checksum=checksum, notices=notices)


def export_executed(notebook: str | os.PathLike, options: ExportOptions | None = None, *, timeout: int = 600,
                    kernel_name: str | None = None, progress: bool | Callable[[int, int], None] = True,
                    **changes: Any) -> Capsule:
    """Run ``notebook`` top to bottom in a fresh kernel with capture on from the first cell, then export that run.

    An IPython kernel exports itself with the same options (as ``%capsule export`` arguments); for
    another kernel the export happens here, from what was seen of it. Paths the user named are
    checked first, so a typo fails before a long run, with the same error.
    """
    from .execute import run_notebook
    from .errors import ExecutionFailed
    from .crate import open_crate

    opts = _options(options, changes).absolute()  # the kernel starts in the notebook's folder, not ours
    path = Path(notebook).expanduser().resolve()
    root = Path(opts.project_root) if opts.project_root else capture.find_project_root(path.parent)
    for given in [*opts.inputs, *opts.outputs, *opts.allow_secrets]:
        capture.resolve_in_project(given, root)
    result = run_notebook(path, export_argv=opts.to_argv(), cell_timeout=timeout, kernel_name=kernel_name)
    if result.error:
        raise ExecutionFailed(f"running {notebook} failed, so nothing was exported:\n{result.error}",
                              hint="fix the failing cell, then export again")
    if result.recorder is not None:  # a kernel that cannot record itself: export here what was seen from outside
        import tempfile

        import nbformat

        with tempfile.TemporaryDirectory(prefix="nbcapsule-executed-") as tmp:
            executed = Path(tmp, path.name)
            nbformat.write(result.notebook, str(executed))
            return export(path, opts, recorder=result.recorder, notebook_content=executed, progress=progress)
    data = result.capsule
    if not data:
        raise ExecutionFailed(f"the kernel running {notebook} exported nothing",
                              hint="remove a %capsule export cell that was skipped, or export without --execute")
    with open_crate(data["crate"]) as opened:
        manifest = opened.manifest
    return Capsule(path=Path(data["crate"]), manifest=manifest, checksum=data["checksum"],
                   notices=list(data.get("notices", [])))


def _environment_lock(nb: Any, recorder: capture.Recorder | None, root: Path, nb_path: Path, cfg: dict[str, Any],
                      snap: environment.EnvironmentSnapshot, generated: dict[str, bytes]) -> tuple[lock.Lock, str]:
    """The lock of what the analysis needs and the crate's own verifier, added to ``generated``; the line that
    installs the verifier on Binder."""
    language = (nb.metadata.get("kernelspec") or {}).get("language") or \
        (nb.metadata.get("language_info") or {}).get("name") or "python"
    modules: set[str] = set()
    if language.lower() == "python":
        in_code = lock.imports_in_code(c.source for c in nb.cells if c.cell_type == "code")
        # in the kernel, what it loaded counts too (pandas loads pyarrow); the CLI's own modules do not
        modules = lock.analysis_modules(sys.modules if recorder is not None else (), in_code)
    python = ".".join(snap.python_version.split(".")[:2])
    locked = lock.build_lock(modules, python=python, index=lock.PackageIndex.from_env())
    generated["pylock.toml"] = locked.pylock_toml().encode("utf-8")
    for carried in lock.project_locks(root, nb_path.parent):
        generated[f"{LOCKS_DIR}/{carried.name}"] = carried.read_bytes()
    if cfg.get("binder_requirement"):
        return locked, str(cfg["binder_requirement"])
    name, wheel = verifier_wheel.build_wheel()
    generated[f"binder/{name}"] = wheel
    return locked, f"binder/{name}"  # pip reads it relative to the crate's root, where Binder runs it


def _notebook_title(nb: Any, path: Path) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()[:300]
    return path.stem


def _execution_record(nb: Any, recorder: capture.Recorder | None, saved_at: float | None,
                      per_segment: dict[int, tuple[set[str], set[str]]]) -> ExecutionRecord:
    if recorder is None:
        return ExecutionRecord(status="completed", problems=[Problem(
            "not-captured", "exported without a live kernel capture: cell runs and file access were not recorded; "
            "use %capsule export in the kernel or nbcapsule export --execute")])
    runs = list(recorder.runs)
    current = recorder.current_run()
    problems = capture.analyse_order(nb, runs, current=current, saved_at=saved_at)
    if current is not None:
        runs.append(current)
    unobserved = recorder.unobserved_cells()
    if unobserved:
        problems.append(Problem("late-capture", late_capture_message(len(unobserved))))
    for index, run in enumerate(runs):
        files = per_segment.get(recorder.segment_of(run))
        if files:
            runs[index] = dataclasses.replace(run, reads=sorted(files[0]), writes=sorted(files[1]))
    timed = [r for r in runs if r.started]
    failed = any(r.status == "error" for r in runs)
    return ExecutionRecord(kernel_started=recorder.kernel_started,
                           started=min((r.started for r in timed), default=None),
                           ended=max((r.ended for r in timed if r.ended), default=None),
                           status="failed" if failed else "completed", cells=runs, problems=problems)


def _source_references(manifest: Manifest, nb_path: Path, files: list[PayloadFile], origin: str | None,
                       snapshot: str | None) -> tuple[Callable[[Manifest], None], dict[str, bytes]]:
    """Git facts now, and a callback that fills in SWHIDs once every file's digest is known."""
    from . import gitstate, swhid

    origin = swhid.validate_origin(origin) if origin else None
    snapshot = swhid.validate_snapshot(snapshot) if snapshot else None
    git = gitstate.read_git_state(nb_path, [f.source for f in files])
    generated: dict[str, bytes] = {}
    if git is None:
        manifest.git = {"repository": None, "reason": gitstate.no_repository_reason(nb_path)}
    else:
        patch_file = f"provenance/{gitstate.DEFAULT_PATCH_FILE}"
        manifest.git = git.to_dict(patch_file=patch_file)
        manifest.git_commit = git.commit
        manifest.git_tree_hash = git.tree
        if git.patch is not None:
            kinds = redaction.find_secrets(git.patch.decode("utf-8", errors="ignore"))
            if kinds:
                manifest.git["patch_file"] = None
                manifest.withheld.append({"kind": "git patch", "what": patch_file,
                                          "reason": "the uncommitted changes contain a " + ", ".join(kinds),
                                          "how_to_include": "commit the changes without the credential"})
            else:
                generated[patch_file] = git.patch

    def identify(sealed: Manifest) -> None:
        ids = swhid.capsule_swhids(sealed.files, git, sealed.notebook, origin=origin or (
            git.public_origin if git is not None else None), snapshot=snapshot)
        sealed.swhids = ids
        sealed.swh_origin_url = ids.get("origin")
        sealed.swh_snapshot_id = ids.get("snapshot")
        for record in sealed.files:
            if record.path == sealed.notebook:
                record.swhid = ids["notebook"]
            else:
                record.swhid = ids.get("code", {}).get(record.path) or ids["files"][record.path]

    return identify, generated


def _progress_callback(progress: bool | Callable[[int, int], None], files: list[PayloadFile]):
    if callable(progress):
        return progress
    if not progress:
        return None
    total = sum(f.size or 0 for f in files)
    if total < PROGRESS_BYTES and len(files) < PROGRESS_FILES:
        return None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, desc="nbcapsule export", leave=False)

    def update(done: int, _total: int) -> None:
        bar.update(done - bar.n)
        if done >= _total:
            bar.close()

    return update


def open_capsule(location: str | os.PathLike):
    """Open a crate folder or zip for reading (a context manager)."""
    from .crate import open_crate

    return open_crate(location)


__all__ = ["Capsule", "ExportOptions", "export", "export_executed", "open_capsule", "CapsuleError"]
