"""What the kernel ran on, with secrets removed, and a digest to tell two environments apart."""

from __future__ import annotations

import hashlib
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

_INSTALLED: tuple[tuple, dict[str, str], dict[str, list[str]]] | None = None


def _path_state() -> tuple:
    """What changes when packages are installed or removed: the import path and its folders' mtimes."""
    state = []
    for entry in sys.path:
        try:
            state.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            state.append((entry, None))
    return tuple(state)


def _installed() -> tuple[dict[str, str], dict[str, list[str]]]:
    """Installed distributions and the module→distribution map, re-read only after an install."""
    global _INSTALLED
    state = _path_state()
    if _INSTALLED is None or _INSTALLED[0] != state:
        _INSTALLED = (state, _distributions(), metadata.packages_distributions())
    return _INSTALLED[1], _INSTALLED[2]


def _distributions() -> dict[str, str]:
    """Every installed distribution (canonical name → version); the first on sys.path wins, as for imports."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name") if dist.metadata else None
        if name:
            found.setdefault(_canonical(name), dist.version)
    return dict(sorted(found.items()))


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_distributions(modules: Iterable[str] | None = None,
                           installed: dict[str, str] | None = None) -> dict[str, str]:
    """Distributions whose top-level modules are imported right now, with versions."""
    if modules is None:
        modules = list(sys.modules)
    known, mapping = _installed()
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


def kernel_spec() -> dict[str, Any]:
    """The kernel spec this interpreter serves, found by matching ``sys.executable``."""
    spec = {"name": os.environ.get("NBCAPSULE_KERNEL_NAME", "python3"),
            "display_name": f"Python {platform.python_version()}", "language": "python"}
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        specs = KernelSpecManager().get_all_specs()
    except Exception:  # noqa: BLE001 - a broken Jupyter install must not stop an export
        return spec
    exe = os.path.realpath(sys.executable)
    for name, entry in sorted(specs.items()):
        argv = entry.get("spec", {}).get("argv", [])
        if argv and argv[0] not in {"python", "python3"} and os.path.realpath(argv[0]) == exe:
            return {"name": name, "display_name": entry["spec"].get("display_name", name),
                    "language": entry["spec"].get("language", "python")}
    entry = specs.get(spec["name"])
    if entry:
        spec["display_name"] = entry.get("spec", {}).get("display_name", spec["display_name"])
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
    installed, _ = _installed()
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


def pinned_requirements(snap: EnvironmentSnapshot, *, only_imported: bool = False) -> str:
    """``name==version`` lines; what pip, uv and repo2docker all understand."""
    packages = snap.data["imported"] if only_imported else snap.data["packages"]
    skip = {"pip", "setuptools", "wheel", "scidex-nbcapsule"}
    lines = [f"{name}=={version}" for name, version in sorted(packages.items()) if name not in skip]
    return "\n".join(lines) + "\n"
