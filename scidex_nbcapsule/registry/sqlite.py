"""SQLite backend: one file, WAL journal, writers serialised with ``BEGIN IMMEDIATE`` and a busy timeout."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator

from ..errors import CapsuleError, RegistryError, RegistryUnavailable
from .base import Registry, Tx
from .migrations import SQLITE

BUSY_TIMEOUT_MS = 30_000


def sqlite_path(url: str) -> str:
    """``sqlite:///abs/path``, ``sqlite:////abs/path`` and ``sqlite://rel/path`` → a file path; ``:memory:`` kept."""
    rest = url[len("sqlite://"):] if url.lower().startswith("sqlite://") else url.split(":", 1)[1]
    rest = rest.split("?", 1)[0]
    if rest.startswith("//"):
        rest = rest[1:]
    if rest in ("/:memory:", ":memory:"):
        return ":memory:"
    if not rest:
        raise RegistryError(f"{url!r} names no database file", hint="use sqlite:///path/to/registry.sqlite3")
    return rest


class SQLiteRegistry(Registry):
    dialect = SQLITE

    def __init__(self, url: str, *, max_blob_bytes: int | None = None, migrate_to: int | None = None) -> None:
        super().__init__(url, max_blob_bytes=max_blob_bytes)
        self.path = sqlite_path(url)
        self._lock_thread = threading.RLock()
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RegistryUnavailable(f"cannot create the folder of the registry {self.safe_url}: "
                                          f"{exc.strerror or exc}") from exc
        try:
            self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                         check_same_thread=False)
        except sqlite3.Error as exc:
            raise RegistryUnavailable(f"cannot open the registry {self.safe_url}: {exc}") from exc
        self._conn.row_factory = sqlite3.Row
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._conn.execute("PRAGMA foreign_keys = ON")
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            self._conn.close()
            raise self._error(exc) from exc
        try:
            self.migrate(migrate_to)
        except BaseException:
            self._conn.close()
            raise

    def _error(self, exc: sqlite3.Error) -> RegistryError:
        text = str(exc)
        if isinstance(exc, sqlite3.DatabaseError) and ("malformed" in text or "not a database" in text):
            return RegistryError(f"the registry {self.safe_url} is corrupt: {text}",
                                 hint="run `nbcapsule db check`, then restore the registry from a copy "
                                      "(`nbcapsule db copy`) or a backup")
        if isinstance(exc, sqlite3.OperationalError) and ("unable to open" in text or "readonly" in text):
            return RegistryUnavailable(f"cannot use the registry {self.safe_url}: {text}",
                                       hint="check that the file and its folder exist and are writable")
        return RegistryError(f"the registry {self.safe_url} failed: {text}")

    @contextlib.contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Tx]:
        with self._lock_thread:
            cursor = self._conn.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield Tx(self, cursor)
                cursor.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        cursor.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error) and not isinstance(exc, CapsuleError):
                    raise self._error(exc) from exc
                raise
            finally:
                cursor.close()

    def _script(self, cursor: Any, text: str) -> None:
        statement = ""
        for line in text.splitlines(keepends=True):
            statement += line
            if sqlite3.complete_statement(statement):
                cursor.execute(statement)
                statement = ""
        if statement.strip():
            cursor.execute(statement)

    def _integrity_problems(self) -> list[str]:
        try:
            with self._lock_thread:
                rows = self._conn.execute("PRAGMA integrity_check").fetchall()
        except sqlite3.Error as exc:
            return [f"integrity check of {self.safe_url} failed: {exc}"]
        messages = [row[0] for row in rows]
        return [] if messages == ["ok"] else [f"SQLite integrity check: {m}" for m in messages]

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
