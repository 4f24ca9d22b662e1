"""Environment drift (what differs from the recorded environment) and fresh environments rebuilt from a crate.

Drift is a warning, not a verdict: a result that still reproduces under other
package versions is stronger evidence, and one that does not is explained.
A rebuilt environment comes from the crate alone: its lock (``pylock.toml``, else
``requirements.txt``), the Python of ``binder/runtime.txt`` and the verifier wheel it
carries. Environments are cached by the digest of those, so capsules that share an
environment share one build.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
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
    """A virtual environment built from a crate's lock, with a private kernel spec for it."""

    prefix: Path
    python: Path
    kernel_dir: Path
    digest: str = ""
    #: False when an earlier build with the same digest was reused.
    built: bool = True
    warnings: list[str] = field(default_factory=list)

    def kernel_manager(self) -> Any:
        """A ``KernelManager`` that starts ipykernel with this environment's interpreter."""
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import AsyncKernelManager

        specs = KernelSpecManager(kernel_dirs=[str(self.kernel_dir)], ensure_native_kernel=False)
        return AsyncKernelManager(kernel_name=FRESH_KERNEL_NAME, kernel_spec_manager=specs)


#: Written last into a finished environment: what it was built from, and when it was last used.
ENV_RECORD = "nbcapsule-env.json"


def env_cache_dir() -> Path:
    from ..config import user_cache

    return user_cache("envs")


def _recorded_python(crate: Path) -> str | None:
    try:
        text = (crate / "binder" / "runtime.txt").read_text("utf-8").strip()
    except OSError:
        return None
    found = re.fullmatch(r"python-(\d+\.\d+)", text)
    return found.group(1) if found else None


def _verifier_wheel(crate: Path) -> Path | None:
    wheels = sorted((crate / "binder").glob("scidex_nbcapsule-*.whl"))
    return wheels[-1] if wheels else None


def _lock_file(crate: Path) -> Path:
    """The crate's lock: the project's own pylock.toml if it carried one, else ours when every pin is in it,
    else the pinned requirements."""
    carried = crate / "environment" / "pylock.toml"
    if carried.is_file():
        return carried
    ours = crate / "pylock.toml"
    try:
        summary = json.loads((crate / "capsule.json").read_text("utf-8")).get("environment_lock") or {}
    except (OSError, ValueError, AttributeError):
        summary = {}
    if ours.is_file() and summary.get("packages") == summary.get("with_hashes"):
        return ours
    if (crate / "requirements.txt").is_file():
        return crate / "requirements.txt"
    raise VerificationError(f"{crate} holds no lock (pylock.toml or requirements.txt) to rebuild from",
                            hint="re-export the capsule with this version of scidex-nbcapsule")


def environment_key(crate: Path, lock: Path | None = None) -> str:
    """What a rebuilt environment depends on, as a digest: the lock, the Python version and the verifier."""
    digest = hashlib.sha256()
    lock = lock or _lock_file(crate)
    wheel = _verifier_wheel(crate)
    for part in (lock.name.encode(), lock.read_bytes(), (_recorded_python(crate) or "").encode(),
                 wheel.read_bytes() if wheel else _nbcapsule_source().encode()):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def _nbcapsule_source() -> str:
    """For crates without a verifier wheel: this checkout, else this version from the index."""
    from .. import __version__

    checkout = Path(__file__).resolve().parent.parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "scidex_nbcapsule").is_dir():
        return str(checkout)
    return f"scidex-nbcapsule=={__version__}"


def _run(cmd: list[str], *, timeout: int, what: str) -> None:
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never")  # use an interpreter this machine has, never fetch one
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        raise VerificationError(f"{what} took longer than {timeout} s",
                                hint="raise --total-timeout, or verify without --fresh-env") from exc
    if result.returncode != 0:
        tail = result.stderr.strip()[-3000:] or result.stdout.strip()[-3000:]
        offline = re.search(r"(?i)network|offline|resolve host|connection|no matching distribution|not found in "
                            r"the package registry|failed to fetch", tail)
        raise VerificationError(
            f"{what} failed:\n{tail}",
            hint="the package index could not be reached or no longer offers a pinned version; connect to the "
                 "index (or point pip/uv at a mirror or a wheel cache) and rebuild" if offline else
                 "a pinned version may not install for this Python or platform; the error above says which")


def _uv() -> list[str] | None:
    found = shutil.which("uv")
    if found:
        return [found]
    try:
        from uv import find_uv_bin  # the uv wheel ships the binary beside this interpreter
    except ImportError:
        return None
    try:
        return [find_uv_bin()]
    except FileNotFoundError:
        return None


def _interpreter(version: str | None, warnings: list[str]) -> str:
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if version is None:
        warnings.append(f"the crate does not say which Python it ran on; rebuilt with Python {here}")
        return sys.executable
    if version == here:
        return sys.executable
    found = shutil.which(f"python{version}")
    if found:
        return found
    warnings.append(f"Python {version} was recorded but is not installed here; rebuilt with Python {here} "
                    "(results may drift)")
    return sys.executable


def _python_of(prefix: Path) -> Path:
    return prefix / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _build(crate: Path, lock: Path, prefix: Path, *, timeout: int, warnings: list[str]) -> None:
    """Create the virtual environment at ``prefix`` and install ``lock``, the verifier and ipykernel into it."""
    python_exe = _interpreter(_recorded_python(crate), warnings)
    others = sorted(p.name for p in (crate / "environment").glob("*") if p.name != "pylock.toml")
    if others:
        warnings.append(f"the project's own lock files ({', '.join(others)}) travel in environment/ for their "
                        f"tools; this environment was built from {lock.name}")
    uv = _uv()
    wheel = _verifier_wheel(crate)
    verifier = str(wheel) if wheel else _nbcapsule_source()
    python = _python_of(prefix)
    if uv:
        _run([*uv, "venv", "--quiet", "--relocatable", "--python", python_exe, str(prefix)], timeout=timeout,
             what="creating the virtual environment")
        _run([*uv, "pip", "install", "--quiet", "--python", str(python), "-r", str(lock)], timeout=timeout,
             what=f"installing {lock.name} (uv)")
        pins = crate / "requirements.txt"
        constraint = ["-c", str(pins)] if pins.is_file() else []
        _run([*uv, "pip", "install", "--quiet", "--python", str(python), *constraint, verifier, "ipykernel"],
             timeout=timeout, what="installing the verifier (uv)")
    else:
        try:
            subprocess.run([python_exe, "-m", "venv", str(prefix)], check=True, capture_output=True, timeout=timeout)
        except (OSError, subprocess.SubprocessError) as exc:
            raise VerificationError(f"a virtual environment could not be created in {prefix}: {exc}") from exc
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"]
        reqs = crate / "requirements.txt"
        _run([*pip, "-r", str(reqs)], timeout=timeout, what="installing requirements.txt (pip)")
        _run([*pip, "-c", str(reqs), verifier, "ipykernel"], timeout=timeout, what="installing the verifier (pip)")


def _ready(prefix: Path, key: str, *, built: bool, warnings: list[str]) -> FreshEnvironment:
    """The environment at its final place, with the private kernel spec that names its interpreter there."""
    spec_dir = prefix / "kernels" / FRESH_KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [str(_python_of(prefix)), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "nbcapsule verify (rebuilt environment)", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    return FreshEnvironment(prefix, _python_of(prefix), prefix / "kernels", key, built, warnings)


def rebuild(crate: str | os.PathLike, *, into: str | os.PathLike | None = None, timeout: int = 1800,
            cache: bool = True) -> FreshEnvironment:
    """A fresh virtual environment built from ``crate``'s lock alone (uv if available, else pip).

    Without ``into``, environments are kept in the user cache by :func:`environment_key`, so a second
    capsule with the same environment reuses the first build; a build is renamed into place only when
    complete, so an interrupted one is never reused.
    """
    crate = Path(crate).resolve()
    lock = _lock_file(crate)
    key = environment_key(crate, lock)
    warnings: list[str] = []
    if into is not None:
        prefix = Path(into).resolve()
        if prefix.exists() and any(prefix.iterdir()):
            raise VerificationError(f"{prefix} exists and is not empty", hint="name a new folder with --into")
        _build(crate, lock, prefix, timeout=timeout, warnings=warnings)
        _write_record(prefix, key, crate, lock, warnings)
        return _ready(prefix, key, built=True, warnings=warnings)
    final = env_cache_dir() / key[:24]
    record = _read_record(final)
    if cache and record is not None:
        record["last_used"] = time.time()
        _write_json(final / ENV_RECORD, record)
        return _ready(final, key, built=False, warnings=list(record.get("warnings", [])))
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.parent / f".partial-{key[:24]}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _build(crate, lock, partial, timeout=timeout, warnings=warnings)
        _write_record(partial, key, crate, lock, warnings)
        if final.exists():
            shutil.rmtree(final)
        try:
            os.rename(partial, final)
        except OSError:  # another process finished the same environment first: use that one
            if _read_record(final) is None:
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return _ready(final, key, built=True, warnings=warnings)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from ..hashing import replace_file

    replace_file(path, json.dumps(data, indent=2).encode())


def _write_record(prefix: Path, key: str, crate: Path, lock: Path, warnings: list[str]) -> None:
    now = time.time()
    _write_json(prefix / ENV_RECORD, {"digest": key, "python": _recorded_python(crate), "lock": lock.name,
                                      "built_from": str(crate), "created": now, "last_used": now,
                                      "warnings": warnings})


def _read_record(prefix: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((prefix / ENV_RECORD).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and _python_of(prefix).exists() else None


def cached_environments() -> list[dict[str, Any]]:
    """Every finished environment in the cache, with its folder and size, most recently used first."""
    found = []
    root = env_cache_dir()
    for prefix in sorted(root.iterdir()) if root.is_dir() else []:
        record = _read_record(prefix) if not prefix.name.startswith(".") else None
        if record is not None:
            size = sum(f.stat().st_size for f in prefix.rglob("*") if f.is_file() and not f.is_symlink())
            found.append({**record, "path": str(prefix), "bytes": size})
    return sorted(found, key=lambda r: -float(r.get("last_used", 0)))


def prune_environments(*, older_than_days: float | None = None) -> list[str]:
    """Remove cached environments not used for ``older_than_days`` (all when None), and abandoned partial builds."""
    removed = []
    root = env_cache_dir()
    cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
    for prefix in sorted(root.iterdir()) if root.is_dir() else []:
        if prefix.name.startswith(".partial-"):
            pid = prefix.name.rsplit("-", 1)[-1]
            if pid.isdigit() and Path(f"/proc/{pid}").exists():
                continue  # still being built
            shutil.rmtree(prefix, ignore_errors=True)
            continue
        record = _read_record(prefix)
        if record is None or cutoff is None or float(record.get("last_used", 0)) < cutoff:
            shutil.rmtree(prefix, ignore_errors=True)
            removed.append(str(prefix))
    return removed
