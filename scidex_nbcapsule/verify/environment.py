"""Environment drift (what differs from the recorded environment) and fresh environments built from a crate.

Drift is a warning, not a verdict: a result that still reproduces under other
package versions is stronger evidence, and one that does not is explained.
"""

from __future__ import annotations

import json
import os
import subprocess
import venv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import VerificationError

#: Name of the kernel spec registered for a fresh environment (in a private folder, never globally).
FRESH_KERNEL_NAME = "nbcapsule-verify"


def environment_drift(recorded: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """Human-readable differences: other Python, packages the analysis imported that are missing or other versions."""
    if not recorded:
        return ["the crate has no environment.json; drift cannot be assessed"]
    warnings: list[str] = []
    rec_py, cur_py = recorded.get("python") or {}, current.get("python") or {}
    if rec_py.get("version") != cur_py.get("version") or rec_py.get("implementation") != cur_py.get("implementation"):
        warnings.append(f"Python {rec_py.get('implementation', '?')} {rec_py.get('version', '?')} was recorded; "
                        f"now {cur_py.get('implementation', '?')} {cur_py.get('version', '?')}")
    rec_plat, cur_plat = recorded.get("platform") or {}, current.get("platform") or {}
    for key in ("system", "machine"):
        if rec_plat.get(key) and rec_plat.get(key) != cur_plat.get(key):
            warnings.append(f"platform {key} {rec_plat.get(key)} was recorded; now {cur_plat.get(key)}")
    wanted = recorded.get("imported") or recorded.get("packages") or {}
    have = current.get("packages") or {}
    for name, version in sorted(wanted.items()):
        if name == "scidex-nbcapsule":
            continue
        if name not in have:
            warnings.append(f"package {name} {version} is missing")
        elif have[name] != version:
            warnings.append(f"package {name} {version} was recorded; now {have[name]}")
    return warnings


def current_environment(python: str | os.PathLike | None = None) -> dict[str, Any]:
    """A snapshot of this interpreter, or of ``python`` (a fresh environment's) run as a subprocess."""
    from .. import environment

    if python is None:
        return environment.snapshot(imported_modules=[]).data
    code = "import json; from scidex_nbcapsule.environment import snapshot; print(json.dumps(snapshot().data))"
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise VerificationError(f"the fresh environment cannot describe itself: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout)


@dataclass
class FreshEnvironment:
    """A virtual environment built from a crate's requirements, with a private kernel spec for it."""

    prefix: Path
    python: Path
    kernel_dir: Path

    def kernel_manager(self) -> Any:
        """A ``KernelManager`` that starts ipykernel with this environment's interpreter."""
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import AsyncKernelManager

        specs = KernelSpecManager(kernel_dirs=[str(self.kernel_dir)], ensure_native_kernel=False)
        return AsyncKernelManager(kernel_name=FRESH_KERNEL_NAME, kernel_spec_manager=specs)


def _nbcapsule_source() -> str:
    """What to pip-install so the kernel can run ``%load_ext scidex_nbcapsule``: this checkout, else this version."""
    from .. import __version__

    package_dir = Path(__file__).resolve().parent.parent
    checkout = package_dir.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "scidex_nbcapsule").is_dir():
        return str(checkout)
    return f"scidex-nbcapsule=={__version__}"


def _pip(python: Path, *args: str, timeout: int) -> None:
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", *args]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise VerificationError(f"pip install took longer than {timeout} s in the fresh environment",
                                hint="raise --total-timeout, or verify without --fresh-env") from exc
    if result.returncode != 0:
        raise VerificationError("pip could not install the crate's requirements in a fresh environment:\n"
                                + result.stderr.strip()[-3000:],
                                hint="the pinned versions may no longer be available for this Python; "
                                     "verify without --fresh-env to use the current environment")


def build_fresh_env(requirements: str | os.PathLike, workdir: str | os.PathLike, *, timeout: int = 1800,
                    install_nbcapsule: bool = True) -> FreshEnvironment:
    """``python -m venv`` + ``pip install -r requirements`` + ipykernel (+ scidex-nbcapsule without its dependencies)."""
    prefix = Path(workdir) / "venv"
    try:
        venv.EnvBuilder(with_pip=True, clear=True, symlinks=os.name != "nt").create(prefix)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise VerificationError(f"a fresh virtual environment could not be created in {prefix}: {exc}") from exc
    python = prefix / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    _pip(python, "-r", str(requirements), "ipykernel", timeout=timeout)
    if install_nbcapsule:
        _pip(python, "--no-deps", _nbcapsule_source(), timeout=timeout)
    kernel_dir = Path(workdir) / "kernels"
    spec_dir = kernel_dir / FRESH_KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "nbcapsule verify (fresh environment)", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    return FreshEnvironment(prefix=prefix, python=python, kernel_dir=kernel_dir)
