"""The capsule registry: a catalogue of registered capsules in SQLite (default) or PostgreSQL.

``open_registry()`` picks the backend from the URL; both share :class:`Registry`
so they behave the same. psycopg is imported only for ``postgresql://`` URLs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import RegistryError
from .base import CheckReport, CopyReport, RegisteredCapsule, Registry, redact_url

ENV_URL = "SCIDEX_NBCAPSULE_DB"


def default_url() -> str:
    """``$SCIDEX_NBCAPSULE_DB``, else a SQLite file in the user's data folder."""
    env = os.environ.get(ENV_URL)
    if env:
        return env
    import platformdirs

    return f"sqlite:///{Path(platformdirs.user_data_dir('scidex-nbcapsule')) / 'registry.sqlite3'}"


def open_registry(url: str | None = None, **options: Any) -> Registry:
    """Open (and migrate to the newest schema) the registry at ``url``; default :func:`default_url`."""
    url = url or default_url()
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        from .sqlite import SQLiteRegistry

        return SQLiteRegistry(url, **options)
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresRegistry

        return PostgresRegistry(url, **options)
    raise RegistryError(f"unsupported registry URL {redact_url(url)}",
                        hint="use sqlite:///path/to/registry.sqlite3 or postgresql://user@host/database")


__all__ = ["open_registry", "default_url", "redact_url", "Registry", "RegisteredCapsule", "CheckReport",
           "CopyReport"]
