"""scidex-nbcapsule: a running notebook analysis as a verifiable RO-Crate capsule."""

from __future__ import annotations

from .errors import CapsuleError

__version__ = "0.1.0"

__all__ = ["CapsuleError", "__version__", "export", "Capsule", "open_capsule", "toolbar", "load_ipython_extension",
           "unload_ipython_extension"]


def __getattr__(name: str):
    # The API pulls in rocrate and friends; keep ``import scidex_nbcapsule`` cheap for the kernel.
    if name == "toolbar":
        from .widgets import toolbar

        return toolbar
    if name in {"export", "Capsule", "open_capsule"}:
        from . import api

        return getattr(api, name)
    raise AttributeError(name)


def load_ipython_extension(ipython) -> None:
    from .magics import load

    load(ipython)


def unload_ipython_extension(ipython) -> None:
    from .magics import unload

    unload(ipython)
