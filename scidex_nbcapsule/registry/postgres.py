"""PostgreSQL backend (psycopg 3): a small connection pool, JSONB manifests, advisory locks for lineages.

Imported only when a ``postgresql://`` URL is opened, so the core never needs psycopg.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from typing import Any, Iterator

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import CapsuleError, RegistryError, RegistryUnavailable
from .base import Registry, Tx, redact_url, url_password
from .migrations import POSTGRES

CONNECT_TIMEOUT = int(os.environ.get("SCIDEX_NBCAPSULE_DB_CONNECT_TIMEOUT", "10"))


def _lock_id(key: str) -> int:
    """A stable signed 64-bit advisory lock number for ``key``."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


def _configure(conn: psycopg.Connection) -> None:
    """Every catalogue query is a lookup of a few rows: a parallel plan only adds the start of its workers
    (about 6 ms; the planner picks one for digest lookups at 100,000 capsules when its statistics are stale)."""
    conn.execute("SET max_parallel_workers_per_gather = 0")
    conn.commit()


class PostgresRegistry(Registry):
    dialect = POSTGRES
    PARAM = "%s"
    JSON_PARAM = "CAST(%s AS jsonb)"
    NO_PARAMS = None

    def __init__(self, url: str, *, max_blob_bytes: int | None = None, migrate_to: int | None = None,
                 pool_size: int = 4) -> None:
        super().__init__(url, max_blob_bytes=max_blob_bytes)
        if url.lower().startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://"):]
        self._conninfo = url
        # A plain connection first: its error says why (refused, no such database, bad password), a pool's doesn't.
        try:
            psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT).close()
        except psycopg.Error as exc:
            raise self._error(exc) from exc
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=False, timeout=CONNECT_TIMEOUT,
                                    kwargs={"row_factory": dict_row, "connect_timeout": CONNECT_TIMEOUT},
                                    check=ConnectionPool.check_connection, configure=_configure,
                                    name="nbcapsule-registry")
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
            self.migrate(migrate_to)
        except BaseException as exc:
            self._pool.close()
            if isinstance(exc, PoolTimeout):
                raise RegistryUnavailable(f"cannot connect to the registry {self.safe_url}: {exc}") from exc
            raise

    def _scrub(self, text: str) -> str:
        password = url_password(self.url)
        return text.replace(password, "***") if password else text

    def _error(self, exc: Exception) -> RegistryError:
        text = self._scrub(str(exc).strip())
        if isinstance(exc, (psycopg.OperationalError, PoolTimeout)):
            return RegistryUnavailable(f"cannot use the registry {redact_url(self.url)}: {text}",
                                       hint="check that PostgreSQL is running, the database exists and the "
                                            "user may log in")
        return RegistryError(f"the registry {redact_url(self.url)} failed: {text}")

    @contextlib.contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Tx]:
        try:
            with self._pool.connection() as conn:
                with conn.transaction():
                    with conn.cursor() as cursor:
                        yield Tx(self, cursor)
        except CapsuleError:
            raise
        except (psycopg.Error, PoolTimeout) as exc:
            raise self._error(exc) from exc

    def _lock(self, tx: Tx, key: str) -> None:
        tx.cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_id(key),))

    def _script(self, cursor: Any, text: str) -> None:
        cursor.execute(text)

    def _integrity_problems(self) -> list[str]:
        """PostgreSQL has no page-level check to call; confirm the catalogue and every table can be read."""
        problems = []
        try:
            with self._transaction(write=False) as tx:
                tx.one("SELECT 1 AS ok")
                tables = {r["table_name"] for r in tx.all(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")}
        except RegistryError as exc:
            return [str(exc)]
        from .base import TABLES

        for table in TABLES:
            if table not in tables:
                problems.append(f"table {table} is missing")
        return problems

    def close(self) -> None:
        self._pool.close()
