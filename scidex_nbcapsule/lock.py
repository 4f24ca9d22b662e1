"""The environment an analysis needs, locked: which distributions, where from, and whether they can be had again.

A kernel's whole environment (``environment.json`` keeps it for the record) is mostly
what the tools around the analysis need. The lock holds the distributions of the modules
the analysis imported, with their dependency closure from package metadata, each with
the files a package index offers for it and their SHA-256 (PEP 751 ``pylock.toml``), and
names what may not rebuild: editable, local-path and VCS installs, versions the index no
longer offers.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

#: Where file hashes come from (PEP 691 JSON simple API); ``off`` (or empty) records no hashes and checks nothing.
INDEX_ENV = "NBCAPSULE_INDEX_URL"
DEFAULT_INDEX = "https://pypi.org/simple"
#: Lock files another tool wrote in the project, carried into the crate under ``environment/``.
PROJECT_LOCKS = ("pylock.toml", "uv.lock", "pixi.lock", "environment.yml", "environment.yaml", "renv.lock")
#: Never pinned: installers and this package, whose own wheel travels in the crate.
UNPINNED = frozenset({"pip", "setuptools", "wheel", "scidex-nbcapsule"})
_INDEX_CACHE_SECONDS = 24 * 3600


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# -- what the analysis imported ----------------------------------------------------------
def imports_in_code(sources: Iterable[str]) -> set[str]:
    """Top-level modules named by ``import`` statements in notebook cells (magics and shell lines skipped)."""
    found: set[str] = set()
    for source in sources:
        code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
        try:
            tree = ast.parse(code)
        except (SyntaxError, ValueError, RecursionError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found


def _requires(name: str, extras: frozenset[str]) -> list[tuple[str, frozenset[str]]]:
    """What distribution ``name`` requires with ``extras``, markers evaluated for this interpreter."""
    from packaging.requirements import InvalidRequirement, Requirement

    from .environment import installed_requirements

    wanted: list[tuple[str, frozenset[str]]] = []
    for line in installed_requirements().get(name, []):
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is not None:
            if not any(req.marker.evaluate({"extra": extra}) for extra in (extras or {""})):
                continue
        wanted.append((canonical(req.name), frozenset(req.extras)))
    return wanted


def analysis_modules(loaded: Iterable[str], in_code: Iterable[str]) -> set[str]:
    """Top-level modules the analysis uses: those its cells import, and those loaded in the kernel that neither
    the standard library nor scidex-nbcapsule's own dependencies (IPython, ipykernel, rocrate, …) account for."""
    from .environment import installed_distributions

    _, providers = installed_distributions()
    ours = own_dependencies() | {"scidex-nbcapsule"}
    stdlib = set(getattr(sys, "stdlib_module_names", ()))
    used = {m for m in in_code if m not in stdlib}
    for module in {m.split(".", 1)[0] for m in loaded}:
        if module in stdlib or module.startswith("_") or module not in providers:
            continue
        if not {canonical(d) for d in providers[module]} <= ours:
            used.add(module)
    return used


def closure(top_level: Iterable[str]) -> dict[str, str]:
    """Distributions providing the ``top_level`` modules, and everything they require (markers evaluated
    for this interpreter), as canonical name → installed version."""
    from .environment import installed_distributions

    versions, providers = installed_distributions()
    queue: list[tuple[str, frozenset[str]]] = []
    for module in top_level:
        queue += [(canonical(name), frozenset()) for name in providers.get(module, ())]
    seen: dict[str, set[frozenset[str]]] = {}
    while queue:
        name, extras = queue.pop()
        if name not in versions or extras in seen.get(name, set()):
            continue
        seen.setdefault(name, set()).add(extras)
        queue += _requires(name, extras)
    return {name: versions[name] for name in sorted(seen) if name not in UNPINNED}


def own_dependencies() -> set[str]:
    """scidex-nbcapsule's own dependency closure: what the kernel holds because the extension is loaded."""
    from .environment import installed_distributions

    versions, _ = installed_distributions()
    names: set[str] = set()
    queue = _requires("scidex-nbcapsule", frozenset()) if "scidex-nbcapsule" in versions else []
    while queue:
        name, extras = queue.pop()
        if name in names:
            continue
        names.add(name)
        queue += _requires(name, extras)
    return names


# -- where each came from ------------------------------------------------------------------
@dataclass
class LockedPackage:
    """One distribution of the lock and what is known of its source."""

    name: str
    version: str
    #: ``index`` (files with hashes below), ``directory``, ``vcs``, ``archive``, or ``unknown`` (index unreachable)
    source: str = "unknown"
    wheels: list[dict[str, Any]] = field(default_factory=list)
    sdist: dict[str, Any] | None = None
    direct: dict[str, Any] | None = None
    risks: list[str] = field(default_factory=list)

    def pylock_entry(self) -> dict[str, Any] | None:
        """This package as a PEP 751 ``[[packages]]`` table, or None when no source can be named."""
        entry: dict[str, Any] = {"name": self.name, "version": self.version}
        if self.source == "index" and (self.wheels or self.sdist):
            if self.sdist:
                entry["sdist"] = self.sdist
            if self.wheels:
                entry["wheels"] = self.wheels
            return entry
        if self.direct:
            entry.update(self.direct)
            return entry
        return None


def direct_source(name: str) -> tuple[str, dict[str, Any] | None, list[str]]:
    """Source, PEP 751 table and rebuild risks from the distribution's PEP 610 ``direct_url.json``."""
    try:
        text = metadata.distribution(name).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return "unknown", None, []
    if not text:
        return "index", None, []
    try:
        info = json.loads(text)
        url = str(info["url"])
    except (ValueError, KeyError, TypeError):
        return "unknown", None, [f"{name}: its direct_url.json cannot be read"]
    if "dir_info" in info:
        editable = bool((info.get("dir_info") or {}).get("editable"))
        how = "in editable mode" if editable else "from a local folder"
        table = {"directory": {"path": url.removeprefix("file://"), "editable": editable}}
        return "directory", table, [f"{name} is installed {how} ({url}): another machine cannot install it"]
    if "vcs_info" in info:
        vcs = info["vcs_info"] or {}
        commit = vcs.get("commit_id")
        table = {"vcs": {"type": vcs.get("vcs", "git"), "url": url, **({"commit-id": commit} if commit else {})}}
        return "vcs", table, [f"{name} is installed from {vcs.get('vcs', 'a VCS')} ({url}"
                              f"{'@' + commit if commit else ''}): it rebuilds only while that repository exists"]
    archive = {"url": url}
    hashes = (info.get("archive_info") or {}).get("hashes") or {}
    if hashes.get("sha256"):
        archive["hashes"] = {"sha256": hashes["sha256"]}
    risks = [f"{name} is installed from a local archive ({url})"] if url.startswith("file:") else []
    return "archive", {"archive": archive}, risks


class PackageIndex:
    """Files and hashes a package index offers, through the PEP 691 JSON simple API, cached for a day."""

    def __init__(self, url: str = DEFAULT_INDEX, *, timeout: float = 5.0, cache_dir: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        if cache_dir is None:
            from .config import user_cache

            cache_dir = user_cache("index")
        self.cache_dir = cache_dir
        self.unreachable: str | None = None

    @classmethod
    def from_env(cls) -> "PackageIndex | None":
        url = os.environ.get(INDEX_ENV, DEFAULT_INDEX).strip()
        return None if url.lower() in ("", "off", "none", "0") else cls(url)

    def _cache_file(self, name: str) -> Path:
        import hashlib

        return self.cache_dir / f"{hashlib.sha256(self.url.encode()).hexdigest()[:12]}-{name}.json"

    def project(self, name: str) -> list[dict[str, Any]] | None:
        """The index's files for ``name``; None when the index cannot be reached; [] when it has no such project."""
        cached = self._cache_file(name)
        try:
            if time.time() - cached.stat().st_mtime < _INDEX_CACHE_SECONDS:
                return json.loads(cached.read_text("utf-8"))
        except (OSError, ValueError):
            pass
        if self.unreachable:
            return None
        import requests

        try:
            response = requests.get(f"{self.url}/{name}/", timeout=self.timeout,
                                    headers={"Accept": "application/vnd.pypi.simple.v1+json"})
            if response.status_code == 404:
                files: list[dict[str, Any]] = []
            else:
                response.raise_for_status()
                files = [f for f in response.json().get("files", []) if isinstance(f, dict)]
        except (requests.RequestException, ValueError) as exc:
            self.unreachable = f"{self.url} could not be reached ({type(exc).__name__})"
            return None
        from .hashing import replace_file

        try:
            replace_file(cached, json.dumps(files).encode())
        except OSError:
            pass  # no cache: the index is asked again next time
        return files


def _for_python(tags: Iterable[Any], python: str) -> bool:
    """Whether a wheel with ``tags`` can install on CPython ``python`` (``3.11``), on any platform."""
    major, minor = (int(part) for part in python.split(".")[:2])
    for tag in tags:
        interpreter = tag.interpreter
        if interpreter in (f"py{major}", f"py{major}{minor}", f"cp{major}{minor}"):
            return True
        if tag.abi == "abi3" and interpreter.startswith(f"cp{major}") and interpreter[2:].isdigit() and \
                int(interpreter[3:] or 0) <= minor:
            return True
    return False


def _files_of(name: str, version: str, files: Sequence[dict[str, Any]],
              python: str) -> tuple[list[dict], dict | None, bool]:
    from packaging.utils import InvalidSdistFilename, InvalidWheelFilename, parse_sdist_filename, \
        parse_wheel_filename
    from packaging.version import InvalidVersion, Version

    try:
        wanted = Version(version)
    except InvalidVersion:
        return [], None, False
    wheels, sdist, yanked = [], None, False
    for item in files:
        filename = str(item.get("filename", ""))
        sha256 = (item.get("hashes") or {}).get("sha256")
        try:
            if filename.endswith(".whl"):
                _, found, _, tags = parse_wheel_filename(filename)
                if not _for_python(tags, python):
                    continue
            else:
                _, found = parse_sdist_filename(filename)
        except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
            continue
        if found != wanted or not sha256:
            continue
        yanked = yanked or bool(item.get("yanked"))
        entry = {"name": filename, "url": item.get("url"), "hashes": {"sha256": sha256}}
        if item.get("size") is not None:
            entry["size"] = item["size"]
        if filename.endswith(".whl"):
            wheels.append(entry)
        elif sdist is None:
            sdist = entry
    return sorted(wheels, key=lambda w: w["name"]), sdist, yanked


@dataclass
class Lock:
    """What the analysis needs, with what can be said about rebuilding it."""

    python: str
    packages: list[LockedPackage]
    index: str | None
    notices: list[str] = field(default_factory=list)

    @property
    def risks(self) -> list[str]:
        return [risk for package in self.packages for risk in package.risks]

    def summary(self) -> dict[str, Any]:
        """For ``capsule.json``: how much is locked, from where, and what may not rebuild."""
        hashed = sum(1 for p in self.packages if p.source == "index" and (p.wheels or p.sdist))
        return {"file": "pylock.toml", "packages": len(self.packages), "with_hashes": hashed,
                "index": self.index, "rebuild_risks": self.risks, "notices": self.notices}

    def pylock_toml(self) -> str:
        """PEP 751 ``pylock.toml``; packages without a known source are named in a comment and in the notices."""
        import tomli_w

        entries, unlocked = [], []
        for package in self.packages:
            entry = package.pylock_entry()
            if entry is None:
                unlocked.append(f"{package.name}=={package.version}")
            else:
                entries.append(entry)
        doc: dict[str, Any] = {"lock-version": "1.0", "requires-python": f"=={self.python}.*",
                               "created-by": "scidex-nbcapsule", "packages": entries}
        header = ("# The distributions this analysis imported and their dependencies, locked (PEP 751).\n"
                  "# Install: uv pip install -r pylock.toml   (pip: pip install -r requirements.txt)\n")
        if unlocked:
            header += "# Without a known source (pinned in requirements.txt only): " + ", ".join(unlocked) + "\n"
        return header + tomli_w.dumps(doc)

    def requirements_txt(self) -> str:
        """Plain ``name==version`` pins, for tools that read only requirements files."""
        return "".join(f"{p.name}=={p.version}\n" for p in self.packages)


def build_lock(top_level: Iterable[str], *, python: str, index: PackageIndex | None = None) -> Lock:
    """Lock the distributions of ``top_level`` modules and their closure; ask ``index`` for files and hashes."""
    needed = closure(top_level)
    packages = []
    for name, version in needed.items():
        source, direct, risks = direct_source(name)
        packages.append(LockedPackage(name=name, version=version, source=source, direct=direct, risks=risks))
    notices: list[str] = []
    on_index = [p for p in packages if p.source in ("index", "unknown")]
    if index is None:
        notices.append(f"no package index asked ({INDEX_ENV}=off): pylock.toml holds no hashes and no version was "
                       "checked against an index")
        for package in on_index:
            package.source = "unknown"
    elif on_index:
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="nbcapsule-index") as pool:
            answers = list(pool.map(lambda p: index.project(p.name), on_index))
        for package, files in zip(on_index, answers):
            if files is None:
                package.source = "unknown"
                continue
            wheels, sdist, yanked = _files_of(package.name, package.version, files, python)
            if not wheels and not sdist:
                package.source = "unknown"
                package.risks.append(f"{package.name} {package.version} is not offered by {index.url}")
                continue
            package.source, package.wheels, package.sdist = "index", wheels, sdist
            if yanked:
                package.risks.append(f"{package.name} {package.version} is yanked on {index.url}")
        if index.unreachable:
            notices.append(f"the package index {index.unreachable}: pylock.toml lacks hashes for "
                           f"{sum(p.source == 'unknown' for p in packages)} package(s), and versions were not "
                           "checked against it")
    return Lock(python=python, packages=packages, index=index.url if index else None, notices=notices)


def project_locks(root: Path, notebook_dir: Path) -> list[Path]:
    """Lock files another tool keeps for the project (next to the notebook or at the project root)."""
    found: list[Path] = []
    for folder in dict.fromkeys([notebook_dir, root]):
        for name in PROJECT_LOCKS:
            path = folder / name
            if path.is_file() and path.name not in {p.name for p in found}:
                found.append(path)
    return found


__all__ = ["DEFAULT_INDEX", "INDEX_ENV", "Lock", "LockedPackage", "PROJECT_LOCKS", "PackageIndex", "build_lock",
           "analysis_modules", "closure", "imports_in_code", "own_dependencies", "project_locks"]
