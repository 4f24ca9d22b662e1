"""The one Python API: magics, widget, CLI and server are thin shells over these functions."""

from __future__ import annotations

import hashlib
import html
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from . import __version__, capture, config as config_mod, environment, redaction
from .crate import CratePlan, PayloadFile, write_crate
from .errors import CapsuleError, NotebookError, PathOutsideProject
from .manifest import ExecutionRecord, Manifest, Problem, new_capsule_id, utc_now


#: How Binder installs this package next to the analysis's pins (override: ``binder_requirement`` in config).
BINDER_REQUIREMENT = f"scidex-nbcapsule=={__version__}"
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


# -- choosing files ----------------------------------------------------------------------
def _expand(paths: Iterable[str | os.PathLike], root: Path, base: Path) -> list[tuple[Path, bool]]:
    """Files named (flagged True) and every file under folders named (hidden and cache folders skipped)."""
    found: list[tuple[Path, bool]] = []
    for item in paths:
        real = capture.resolve_in_project(item, root, base=base)
        if real.is_dir():
            for dirpath, dirs, files in os.walk(real):
                dirs[:] = sorted(d for d in dirs if d not in capture.IGNORED_PARTS and not d.startswith("."))
                for name in sorted(files):
                    child = Path(dirpath, name)
                    # below a resolved folder only a symlink can lead elsewhere
                    found.append((capture.resolve_in_project(child, root) if os.path.islink(child) else child, False))
        else:
            found.append((real, True))
    return found


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError as exc:
        raise PathOutsideProject(f"{path} lies outside the project root {root}") from exc


def _collect_files(*, root: Path, notebook: Path, dest: Path, recorder: capture.Recorder | None,
                   inputs: Sequence, outputs: Sequence, excludes: Sequence[str], allow_secrets: Sequence,
                   base: Path,
                   ) -> tuple[list[PayloadFile], list[dict[str, str]], Callable[[PayloadFile, bytes], list[str]]]:
    """The files to copy, those withheld by name, and the content screen the copy applies to the rest."""
    roles: dict[Path, PayloadFile] = {}
    allowed = {capture.resolve_in_project(p, root, base=base) for p in allow_secrets}
    known = redaction.secret_values(dict(os.environ))
    probe = capture.Recorder(project_root=root, excludes=list(excludes))

    def add(path: Path, role: str, read_sha256: str | None = None, named: bool = False) -> None:
        rel = _relative(path, root)
        if not named and probe.is_excluded(rel):
            return
        if path == notebook or dest == path or dest in path.parents:
            return
        current = roles.get(path)
        if current is not None and current.role == "output":
            return
        roles[path] = PayloadFile(source=path, path=rel, role=role, read_sha256=read_sha256)

    if recorder is not None:
        for access in recorder.accessed_files():
            if access.written:
                add(access.path, "output", access.read_sha256)
            elif access.path.suffix == ".py":
                add(access.path, "code")
            else:
                add(access.path, "input")
    declared = [(p, "input") for p in (recorder.declared_inputs if recorder else [])]
    declared += [(p, "output") for p in (recorder.declared_outputs if recorder else [])]
    declared += [(p, "input") for p in inputs] + [(p, "output") for p in outputs]
    for given, role in declared:
        for item, direct in _expand([given], root, base):
            add(item, role, named=direct)

    withheld: list[dict[str, str]] = []
    kept: list[PayloadFile] = []
    for path, item in sorted(roles.items()):
        reasons = [] if path in allowed else redaction.name_secrets(path.name)
        if reasons:
            withheld.append(redaction.withheld_file(item.path, reasons))
            continue
        try:
            item.size = path.stat().st_size
        except OSError:
            item.size = 0  # the copy reports what is wrong with it
        kept.append(item)

    def screen(item: PayloadFile, content: bytes) -> list[str]:
        # the very bytes about to be copied: nothing can change between the check and the copy
        return [] if item.source in allowed else redaction.content_secrets(content, known)

    return kept, withheld, screen


# -- export ----------------------------------------------------------------------------------
def _notebook_and_content(notebook: str | os.PathLike | None, recorder: capture.Recorder | None,
                          user_ns: dict | None) -> tuple[Path, Path, Any, float | None]:
    if notebook is None:
        path = capture.find_notebook(user_ns)
    else:
        path = Path(notebook).expanduser().resolve()
    if path.suffix != ".ipynb":
        raise NotebookError(f"{path} is not a notebook (.ipynb)", hint="give the path of the .ipynb file")
    content_path = path
    snapshot = os.environ.get(capture.SNAPSHOT_ENV)
    if snapshot and os.environ.get(capture.NOTEBOOK_ENV) and \
            Path(os.environ[capture.NOTEBOOK_ENV]).resolve() == path and Path(snapshot).is_file():
        content_path = Path(snapshot)
    nb = capture.read_notebook(content_path)
    saved_at = content_path.stat().st_mtime if recorder is not None else None
    return path, content_path, nb, saved_at


def export(notebook: str | os.PathLike | None = None, *, inputs: Sequence[str | os.PathLike] = (),
           outputs: Sequence[str | os.PathLike] = (), dest: str | os.PathLike | None = None, fmt: str = "folder",
           title: str | None = None, description: str | None = None, license: str | None = None,
           authors: Sequence[str] | None = None, identifier: str | None = None, exclude: Sequence[str] = (),
           allow_secrets: Sequence[str | os.PathLike] = (), link_large: int | None = None,
           project_root: str | os.PathLike | None = None, swh_origin: str | None = None,
           swh_snapshot: str | None = None, recorder: capture.Recorder | None = None,
           user_ns: dict | None = None, progress: bool | Callable[[int, int], None] = True) -> Capsule:
    """Export a notebook analysis as a capsule (an RO-Crate) and return it.

    Inside a kernel with the extension loaded, what the kernel recorded (cells
    run, files read and written) is used; elsewhere the notebook and the files
    named in ``inputs``/``outputs`` are packed as they are on disk.
    """
    if recorder is None:
        recorder = capture.current_recorder()
    with capture.paused(), capture.io_pool() as executor:
        return _export(notebook, inputs=inputs, outputs=outputs, dest=dest, fmt=fmt, title=title,
                       description=description, license=license, authors=authors, identifier=identifier,
                       exclude=exclude, allow_secrets=allow_secrets, link_large=link_large,
                       project_root=project_root, swh_origin=swh_origin, swh_snapshot=swh_snapshot,
                       recorder=recorder, user_ns=user_ns, progress=progress, executor=executor)


def _export(notebook, *, inputs, outputs, dest, fmt, title, description, license, authors, identifier, exclude,
            allow_secrets, link_large, project_root, swh_origin, swh_snapshot, recorder, user_ns,
            progress, executor=None) -> Capsule:
    nb_path, content_path, nb, saved_at = _notebook_and_content(notebook, recorder, user_ns)
    if project_root is not None:
        root = Path(project_root).resolve()
    elif recorder is not None and (recorder.project_root == nb_path.parent or recorder.project_root in nb_path.parents):
        root = recorder.project_root
    else:
        root = capture.find_project_root(nb_path.parent)
    if root not in nb_path.parents:
        raise PathOutsideProject(f"the notebook {nb_path} lies outside the project root {root}")
    base = Path(os.getcwd())
    cfg = config_mod.load_config(nb_path.parent, root)
    notices: list[str] = []
    license_id, notice = config_mod.resolve_license(license, cfg)
    if notice:
        notices.append(notice)
    people = config_mod.resolve_authors(list(authors) if authors else None, cfg, cwd=nb_path.parent)
    if not people:
        notices.append("no author known: set authors in [tool.nbcapsule] or pass --author NAME")
    dest_path = Path(dest).expanduser().resolve() if dest else nb_path.parent / "capsules"
    excludes = list(exclude) + list(cfg.get("exclude", []) or [])
    if recorder is not None:
        excludes += recorder.excludes
    files, withheld, screen = _collect_files(root=root, notebook=nb_path, dest=dest_path, recorder=recorder,
                                             inputs=inputs, outputs=outputs, excludes=excludes,
                                             allow_secrets=allow_secrets, base=base)
    nb_clean, nb_withheld = redaction.scrub_notebook(nb, redaction.secret_values(dict(os.environ)))
    withheld += nb_withheld
    if nb_withheld:
        import nbformat

        notebook_bytes = (nbformat.writes(nb_clean) + "\n").encode("utf-8")
    else:
        notebook_bytes = content_path.read_bytes()  # byte for byte what was saved, so git's blob id holds
    snap = environment.snapshot(imported_modules=list(sys.modules))
    withheld += snap.withheld

    execution = _execution_record(nb, recorder, saved_at)
    manifest = Manifest(
        capsule_id=new_capsule_id(),
        title=title or cfg.get("title") or _notebook_title(nb, nb_path),
        description=description or cfg.get("description") or "",
        license=license_id,
        created_at=utc_now(),
        notebook=_relative(nb_path, root),
        notebook_sha256=hashlib.sha256(notebook_bytes).hexdigest(),
        authors=people,
        execution=execution,
        environment_digest=snap.digest,
        identifier=identifier or cfg.get("identifier"),
        withheld=withheld,
    )
    identify, generated = _source_references(manifest, nb_path, files, swh_origin, swh_snapshot)
    from .verify.binder import reverify_notebook

    generated["reverify.ipynb"] = reverify_notebook(manifest)
    plan = CratePlan(manifest=manifest, files=files, notebook_bytes=notebook_bytes, environment=snap.data,
                     requirements=environment.pinned_requirements(snap), generated=generated,
                     binder_requirement=cfg.get("binder_requirement") or BINDER_REQUIREMENT,
                     link_large=link_large, progress=_progress_callback(progress, files), identify=identify,
                     executor=executor, screen=screen)
    path, sealed, checksum = write_crate(plan, dest_path, fmt=fmt)
    if sealed.withheld:
        notices.append(f"{len(sealed.withheld)} item(s) withheld as secrets (see 'withheld' in capsule.json); include a "
                       "file on purpose with --allow-secret PATH")
    return Capsule(path=path, manifest=sealed, checksum=checksum, notices=notices)


def _notebook_title(nb: Any, path: Path) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()[:300]
    return path.stem


def _execution_record(nb: Any, recorder: capture.Recorder | None, saved_at: float | None) -> ExecutionRecord:
    if recorder is None:
        return ExecutionRecord(status="completed", problems=[Problem(
            "not-captured", "exported without a live kernel capture: cell runs and file access were not recorded; "
            "use %capsule export in the kernel or nbcapsule export --execute")])
    runs = list(recorder.runs)
    current = recorder.current_run()
    problems = capture.analyse_order(nb, runs, current=current, saved_at=saved_at)
    if current is not None:
        runs.append(current)
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


__all__ = ["Capsule", "export", "open_capsule", "CapsuleError"]
