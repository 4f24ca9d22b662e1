"""What the kernel ran on, with secrets removed, and a digest to tell two environments apart."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from .redaction import filter_environ

_INSTALLED: tuple[tuple, dict[str, str], dict[str, list[str]], dict[str, list[str]]] | None = None


def _path_state() -> tuple:
    """What changes when packages are installed or removed: the import path and its folders' mtimes.

    The current folder (``""``, first on a kernel's path) is left out: nothing is installed there, and
    its mtime changes with every file the analysis writes.
    """
    state = []
    for entry in sys.path:
        if not entry:
            continue
        try:
            state.append((entry, os.stat(entry).st_mtime_ns))
        except OSError:
            state.append((entry, None))
    return tuple(state)


def _installed() -> tuple[dict[str, str], dict[str, list[str]], dict[str, list[str]]]:
    """Installed distributions, the module→distribution map and each distribution's requirements, re-read
    only after an install.

    Reading every distribution's metadata takes a few hundred milliseconds, longer than a small
    export; the answer is kept in memory and in the user cache, keyed by the import path's state.
    """
    global _INSTALLED
    state = _path_state()
    if _INSTALLED is None or _INSTALLED[0] != state:
        cached = _read_cache(state)
        if cached is None:
            versions, requires = _distributions()
            cached = (versions, metadata.packages_distributions(), requires)
            _write_cache(state, cached)
        _INSTALLED = (state, *cached)
    return _INSTALLED[1], _INSTALLED[2], _INSTALLED[3]


def installed_distributions() -> tuple[dict[str, str], dict[str, list[str]]]:
    """Installed distributions (canonical name → version) and which distributions provide each top-level module."""
    versions, modules, _ = _installed()
    return versions, modules


def installed_requirements() -> dict[str, list[str]]:
    """Each installed distribution's ``Requires-Dist`` lines (canonical name → lines), from the same cache."""
    return _installed()[2]


def _cache_file() -> Path:
    from .config import user_cache

    # one file per interpreter and import path: the CLI's path starts with its script folder, a kernel's does not
    key = hashlib.sha256("\0".join([os.path.realpath(sys.executable), *sys.path]).encode()).hexdigest()[:16]
    return user_cache(f"installed-{key}.json")


def _read_cache(state: tuple) -> tuple[dict[str, str], dict[str, list[str]], dict[str, list[str]]] | None:
    try:
        data = json.loads(_cache_file().read_text("utf-8"))
        if [list(item) for item in state] == data["state"]:
            return (dict(data["distributions"]), {k: list(v) for k, v in data["modules"].items()},
                    {k: list(v) for k, v in data["requires"].items()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # no cache, another version's, or damaged: read the metadata again
    return None


def _write_cache(state: tuple, found: tuple[dict[str, str], dict[str, list[str]], dict[str, list[str]]]) -> None:
    from .hashing import replace_file

    data = {"state": [list(item) for item in state], "distributions": found[0], "modules": found[1],
            "requires": found[2]}
    try:
        replace_file(_cache_file(), json.dumps(data).encode())  # whole or not at all, even with two exports at once
    except OSError:
        pass  # a read-only home: the next export reads the metadata again


def _distributions() -> tuple[dict[str, str], dict[str, list[str]]]:
    """Every installed distribution (canonical name → version, and → requirement lines); the first on sys.path
    wins, as for imports."""
    found: dict[str, str] = {}
    requires: dict[str, list[str]] = {}
    for dist in metadata.distributions():
        fields = dist.metadata  # parsed once per access: read it once
        name = fields.get("Name") if fields else None
        if name and _canonical(name) not in found:
            found[_canonical(name)] = fields.get("Version") or dist.version
            requires[_canonical(name)] = list(fields.get_all("Requires-Dist") or [])
    return dict(sorted(found.items())), requires


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_distributions(modules: Iterable[str] | None = None,
                           installed: dict[str, str] | None = None) -> dict[str, str]:
    """Distributions whose top-level modules are imported right now, with versions."""
    if modules is None:
        modules = list(sys.modules)
    known, mapping, _ = _installed()
    installed = known if installed is None else installed
    tops = {m.split(".", 1)[0] for m in modules if not m.startswith("_")}
    result: dict[str, str] = {}
    for top in tops:
        for dist_name in mapping.get(top, ()):
            version = installed.get(_canonical(dist_name))
            if version is not None:
                result[_canonical(dist_name)] = version
    return dict(sorted(result.items()))


def _memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _gpus() -> list[str]:
    base = Path("/proc/driver/nvidia/gpus")
    names: list[str] = []
    if base.is_dir():
        for info in sorted(base.glob("*/information")):
            for line in info.read_text(errors="replace").splitlines():
                if line.startswith("Model:"):
                    names.append(line.split(":", 1)[1].strip())
    return names


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _kernel_specs() -> dict[str, dict[str, Any]]:
    """Installed kernel specs by name, the first found on Jupyter's data path winning, as for Jupyter.

    Read from the ``kernel.json`` files themselves: jupyter_client's KernelSpecManager would import
    IPython and ZeroMQ into a command that runs no kernel.
    """
    from jupyter_core.paths import jupyter_path

    specs: dict[str, dict[str, Any]] = {}
    for folder in jupyter_path("kernels"):
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            try:
                spec = json.loads(Path(folder, name, "kernel.json").read_text("utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(spec, dict):
                specs.setdefault(name.lower(), spec)
    if "python3" not in specs and importlib.util.find_spec("ipykernel") is not None:
        # the kernel ipykernel serves when none is installed (jupyter_client's "native" spec)
        specs["python3"] = {"argv": ["python", "-m", "ipykernel_launcher"], "language": "python",
                            "display_name": f"Python {sys.version_info[0]} (ipykernel)"}
    return specs


def kernel_spec() -> dict[str, Any]:
    """The kernel spec this interpreter serves, found by matching ``sys.executable``."""
    spec = {"name": os.environ.get("NBCAPSULE_KERNEL_NAME", "python3"),
            "display_name": f"Python {platform.python_version()}", "language": "python"}
    try:
        specs = _kernel_specs()
    except Exception:  # noqa: BLE001 - a broken Jupyter install must not stop an export
        return spec
    exe = os.path.realpath(sys.executable)
    for name, entry in sorted(specs.items()):
        argv = entry.get("argv") or []
        if argv and isinstance(argv[0], str) and argv[0] not in {"python", "python3"} and \
                os.path.realpath(argv[0]) == exe:
            return {"name": name, "display_name": entry.get("display_name", name),
                    "language": entry.get("language", "python")}
    entry = specs.get(spec["name"])
    if entry:
        spec["display_name"] = entry.get("display_name", spec["display_name"])
    return spec


@dataclass
class EnvironmentSnapshot:
    data: dict[str, Any]
    withheld: list[dict[str, str]] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return environment_digest(self.data)

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @property
    def python_version(self) -> str:
        return self.data["python"]["version"]

    @property
    def packages(self) -> dict[str, str]:
        return self.data["packages"]


def environment_digest(data: dict[str, Any]) -> str:
    """SHA-256 over sorted-key JSON of what determines behaviour (variables and hardware excluded)."""
    stable = {k: data[k] for k in ("python", "platform", "packages") if k in data}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def snapshot(*, imported_modules: Iterable[str] | None = None, environ: dict[str, str] | None = None) -> EnvironmentSnapshot:
    """Describe the running interpreter; environment variables are filtered for secrets."""
    env_vars, withheld = filter_environ(dict(os.environ if environ is None else environ))
    installed, _, _ = _installed()
    conda = None
    if os.environ.get("CONDA_PREFIX"):
        conda = {"prefix": os.environ["CONDA_PREFIX"], "name": os.environ.get("CONDA_DEFAULT_ENV"),
                 "conda": shutil.which("conda") is not None}
    data = {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
            "prefix": sys.prefix,
        },
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "libc": "-".join(platform.libc_ver()).strip("-") or None,
        },
        "kernel": kernel_spec(),
        "hardware": {
            "cpu_count": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "memory_bytes": _memory_bytes(),
            "gpus": _gpus(),
        },
        "conda": conda,
        "packages": installed,
        "imported": imported_distributions(imported_modules, installed),
        "environment_variables": env_vars,
    }
    return EnvironmentSnapshot(data, withheld)
