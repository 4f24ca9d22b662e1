"""Installing the "Python 3 (capsule)" kernel spec, and the IPython start-up entry behind ``nbcapsule enable``.

Both make capture start with the kernel, so no cell runs unobserved: the kernel
spec also preloads the interposer (native code and child processes seen); the
start-up entry works with any ipykernel a front end starts, with the audit hook
and the file watcher.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from ..errors import CaptureError

KERNEL_NAME = "python3-capsule"
DISPLAY_NAME = "Python 3 (capsule)"
STARTUP_FILE = "50-scidex-nbcapsule.py"

_STARTUP_CODE = '''\
# Written by `nbcapsule enable`: capture starts with every IPython kernel. `nbcapsule disable` removes it.
import sys as _sys

if "ipykernel" in _sys.modules:
    try:
        get_ipython().extension_manager.load_extension("scidex_nbcapsule")
    except Exception as _exc:  # never keep a kernel from starting
        print(f"scidex_nbcapsule: capture could not start: {_exc}", file=_sys.stderr)
'''


def kernel_spec() -> dict:
    return {"argv": [sys.executable, "-m", "scidex_nbcapsule.capture.launch", "-f", "{connection_file}"],
            "display_name": DISPLAY_NAME, "language": "python",
            "metadata": {"debugger": True, "scidex_nbcapsule": {"capture": "from the first cell"}}}


def install_kernel_spec(*, user: bool = False, prefix: str | None = None, name: str = KERNEL_NAME) -> Path:
    """Install the kernel spec (default: this environment's ``share/jupyter/kernels``) and return its folder."""
    from jupyter_client.kernelspec import KernelSpecManager

    with tempfile.TemporaryDirectory(prefix="nbcapsule-kernelspec-") as tmp:
        source = Path(tmp, name)
        source.mkdir()
        (source / "kernel.json").write_text(json.dumps(kernel_spec(), indent=1) + "\n", encoding="utf-8")
        try:
            where = KernelSpecManager().install_kernel_spec(str(source), kernel_name=name, user=user,
                                                            prefix=None if user else (prefix or sys.prefix))
        except OSError as exc:
            raise CaptureError(f"the kernel spec could not be installed: {exc.strerror or exc}",
                               hint="try --user, or a --prefix you can write to") from exc
    return Path(where)


def _profile_startup(profile: str) -> Path:
    base = Path(os.environ.get("IPYTHONDIR") or Path.home() / ".ipython").expanduser()
    return base / f"profile_{profile}" / "startup" / STARTUP_FILE


def enable(profile: str = "default") -> Path:
    """Load the extension in every IPython kernel of ``profile`` from its start; returns the start-up file."""
    path = _profile_startup(profile)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(_STARTUP_CODE, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise CaptureError(f"could not write {path}: {exc.strerror or exc}",
                           hint="check that the IPython folder (IPYTHONDIR) is writable") from exc
    return path


def disable(profile: str = "default") -> Path | None:
    """Undo :func:`enable`; returns the file removed, or None when capture was not enabled."""
    path = _profile_startup(profile)
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CaptureError(f"could not remove {path}: {exc.strerror or exc}") from exc
    return path


def is_enabled(profile: str = "default") -> bool:
    return _profile_startup(profile).is_file()
