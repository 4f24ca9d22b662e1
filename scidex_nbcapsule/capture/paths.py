"""Where a path stands relative to the analysis: inside the project, outside it, or the environment's own.

Every capture layer reports raw paths; this module alone decides which of them
belong to the analysis, so the audit hook, the interposer and the file watcher
agree on what a capsule holds.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import sysconfig
import tempfile
from functools import lru_cache
from pathlib import Path

from ..errors import InputFileError, PathOutsideProject

#: Folders never swept in unless a file in them is named explicitly.
IGNORED_PARTS = frozenset({".git", ".ipynb_checkpoints", "__pycache__", ".venv", "venv", "node_modules",
                           "site-packages", "dist-packages"})

#: System folders whose files are the machine's, never an analysis's data.
SYSTEM_PREFIXES = ("/usr/", "/lib/", "/lib32/", "/lib64/", "/libx32/", "/bin/", "/sbin/", "/etc/", "/proc/",
                   "/sys/", "/dev/", "/run/", "/var/", "/boot/", "/snap/")


@lru_cache(maxsize=1)
def interpreter_dirs() -> tuple[str, ...]:
    """Folders of the interpreter and its packages, each ending in a separator."""
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    for key in ("stdlib", "platstdlib", "purelib", "platlib", "data", "scripts"):
        path = sysconfig.get_paths().get(key)
        if path:
            dirs.add(path)
    return tuple(sorted(os.path.realpath(d).rstrip(os.sep) + os.sep for d in dirs))


@lru_cache(maxsize=1)
def environment_prefixes() -> tuple[str, ...]:
    """Prefixes whose files are never inputs: the system, the interpreter, Jupyter's runtime folder, the user's
    cache and configuration folders (font lists, matplotlib's cache; hidden folders by default, but
    ``$XDG_CACHE_HOME`` / ``$XDG_CONFIG_HOME`` / ``$MPLCONFIGDIR`` may name any folder), our traces."""
    prefixes = set(SYSTEM_PREFIXES) | set(interpreter_dirs())
    try:
        from jupyter_core.paths import jupyter_runtime_dir

        prefixes.add(os.path.realpath(jupyter_runtime_dir()) + os.sep)
    except Exception:  # jupyter_core is a dependency, but its folder lookup may fail on odd set-ups
        pass
    folders = [os.environ.get("MPLCONFIGDIR")]
    try:
        import platformdirs

        folders += [platformdirs.user_cache_dir(), platformdirs.user_config_dir()]
    except Exception:  # platformdirs is a dependency; an odd HOME must not stop capture
        pass
    too_wide = {os.path.realpath(p) for p in (os.sep, os.path.expanduser("~"), tempfile.gettempdir())}
    for folder in folders:
        if folder and os.path.isabs(folder) and os.path.realpath(folder) not in too_wide:
            prefixes.add(os.path.realpath(folder).rstrip(os.sep) + os.sep)
    return tuple(sorted(prefixes))


def is_environment_path(path: str) -> bool:
    """True for files that belong to the machine or the tools rather than to the analysis."""
    if path.startswith(environment_prefixes()):
        return True
    parts = path.split(os.sep)[1:-1]
    if any(part.startswith(".") or part in IGNORED_PARTS for part in parts):
        return True
    temp = tempfile.gettempdir().rstrip(os.sep) + os.sep
    # our own headless-run snapshots and trace folders
    return path.startswith(temp) and path[len(temp):].startswith("nbcapsule-")


def normalise(path: str, cwd: str) -> str:
    """Absolute and lexically normal, symlinks kept: the path as the analysis used it."""
    return os.path.normpath(os.path.join(cwd, path))


def find_project_root(start: str | os.PathLike) -> Path:
    """The enclosing git work tree, or ``start`` itself: the boundary of what a capsule may hold."""
    here = Path(start).resolve()
    for candidate in (here, *here.parents):
        if (candidate / ".git").exists():
            return candidate
    return here


def resolve_in_project(path: str | os.PathLike, root: Path, *, base: Path | None = None) -> Path:
    """The real path of ``path``, which must exist and lie under ``root`` (symlinks followed)."""
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        candidate = (base or Path.cwd()) / candidate
    if not candidate.exists() and not candidate.is_symlink():
        raise InputFileError(f"{path} does not exist", hint="check the path; declared files must exist when you export")
    real = candidate.resolve()
    if not real.exists():
        raise InputFileError(f"{path} is a symlink to {real}, which does not exist")
    if real != root and root not in real.parents:
        what = "is a symlink that escapes" if candidate.is_symlink() or real != candidate.absolute() else "lies outside"
        raise PathOutsideProject(f"{path} {what} the project root {root}",
                                 hint="copy the file into the project, or export from a folder that contains it")
    return real


def relative_to_root(path: str, root: Path) -> str | None:
    """``path`` relative to ``root`` (POSIX), or None when it lies outside."""
    prefix = str(root).rstrip(os.sep) + os.sep
    if not path.startswith(prefix):
        return None
    return path[len(prefix):].replace(os.sep, "/")


def is_excluded(relpath: str, patterns: list[str]) -> bool:
    """True when ``relpath`` or its file name matches one of the ``--exclude`` globs."""
    posix = relpath.replace(os.sep, "/")
    return any(fnmatch.fnmatch(posix, pat) or fnmatch.fnmatch(posix.rsplit("/", 1)[-1], pat) for pat in patterns)
