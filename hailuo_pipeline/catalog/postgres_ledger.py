"""The catalog in PostgreSQL: the shared backend, for runs on many machines (chosen by HAILUO_CATALOG_URL).

Every money decision serialises on the server, not in a process: a deciding transaction takes an exclusive
transaction-level advisory lock that every other writing transaction takes shared, so a claim reads a ledger
no one is changing. A partial unique index (migration 4) keeps two live claims of one fingerprint from ever
coexisting, even if a code path forgot the lock. Times come from the server's clock.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from hailuo_pipeline.catalog.registry import CHANGED_SHOTS, SHOT_COLUMNS, UPSERT_SHOTS
from hailuo_pipeline.catalog.schema import POSTGRESQL, apply_migrations
from hailuo_pipeline.catalog.sql_ledger import SqlLedgerTransaction
from hailuo_pipeline.catalog.storage import CatalogUnavailableError
from hailuo_pipeline.redact import redact

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_SCHEMA = "hailuo"

# advisory lock keys (any two constants of our own): the ledger's decisions, and schema migrations
LEDGER_LOCK = 0x4A11_0001
MIGRATION_LOCK = 0x4A11_0002
POOL_SIZE = 16
CONNECT_TIMEOUT_SECONDS = 10


def split_schema(url: str) -> tuple[str, str]:
    """The connection URL without our own `schema` parameter, and the schema (default `hailuo`)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), DEFAULT_SCHEMA)
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    if not schema.isidentifier():
        raise ValueError(f"schema {schema!r} in HAILUO_CATALOG_URL is not a plain identifier")
    return urlunsplit(parts._replace(query=rest)), schema


def _marks(statement: str) -> str:
    return statement.replace("%", "%%").replace("?", "%s")


class PostgresLedgerTransaction(SqlLedgerTransaction):
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self.conn.execute(_marks(statement), list(params))  # type: ignore[call-overload]
        return cursor.fetchall() if cursor.description else []

    def now(self) -> datetime:
        found = self.conn.execute("SELECT localtimestamp").fetchone()  # the session's zone is UTC
        assert found is not None
        return found[0]


_pools: dict[tuple[str, str], ConnectionPool[Any]] = {}
_pools_guard = threading.Lock()


def _pool(url: str, schema: str) -> ConnectionPool[Any]:
    """One pool per process and database, opened (and the schema migrated) on first use."""
    with _pools_guard:
        pool = _pools.get((url, schema))
        if pool is None:

            def configure(conn: psycopg.Connection[Any]) -> None:
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
                conn.execute("SET TIME ZONE 'UTC'")
                conn.commit()

            try:
                _migrate(url, schema)
            except psycopg.OperationalError as exc:
                raise CatalogUnavailableError(
                    f"the shared catalog {redact(url)} cannot be reached: {redact(str(exc).strip())}. Fix: check "
                    "HAILUO_CATALOG_URL (host, port, database, user; the password from PGPASSWORD or ~/.pgpass) "
                    "and that the server accepts connections from this machine"
                ) from None
            pool = ConnectionPool(
                url,
                min_size=1,
                max_size=POOL_SIZE,
                configure=configure,
                kwargs={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
                open=True,
            )
            _pools[(url, schema)] = pool
        return pool


def _migrate(url: str, schema: str) -> None:
    with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        conn.execute("SET LOCAL TIME ZONE 'UTC'")
        apply_migrations(PostgresLedgerTransaction(conn).execute, POSTGRESQL)


def close_pools() -> None:
    with _pools_guard:
        for pool in _pools.values():
            pool.close()
        _pools.clear()


atexit.register(close_pools)  # the server sees each connection end, not drop


class PostgresCatalog:
    dialect = POSTGRESQL

    def __init__(self, url: str) -> None:
        self.url, self.schema = split_schema(url)
        self.location = f"{redact(self.url)} (schema {self.schema})"

    @property
    def pool(self) -> ConnectionPool[Any]:
        return _pool(self.url, self.schema)

    @contextmanager
    def transaction(self, *, read_only: bool = False, decides: bool = False) -> Iterator[PostgresLedgerTransaction]:
        with self.pool.connection() as conn, conn.transaction():
            if read_only:  # every read in the block sees the same moment (reports and snapshots add up)
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            elif decides:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [LEDGER_LOCK])
            else:
                conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", [LEDGER_LOCK])
            yield PostgresLedgerTransaction(conn)

    def read(self, statement: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        import pandas as pd  # for reports only: see the README's note on pandas

        with self.pool.connection() as conn, conn.transaction():
            cursor = conn.execute(_marks(statement), list(params))  # type: ignore[call-overload]
            return pd.DataFrame(cursor.fetchall(), columns=[d.name for d in cursor.description or ()])

    def rows(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.pool.connection() as conn, conn.transaction():
            return conn.execute(_marks(statement), list(params)).fetchall()  # type: ignore[call-overload]

    def upsert_shots(self, incoming: Sequence[tuple[Any, ...]], now: datetime) -> list[str]:
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(
                "CREATE TEMP TABLE incoming ON COMMIT DROP AS SELECT "
                + ", ".join(SHOT_COLUMNS)
                + " FROM shots WITH NO DATA"
            )
            with conn.cursor().copy(f"COPY incoming ({', '.join(SHOT_COLUMNS)}) FROM STDIN") as copy:
                for row in incoming:
                    copy.write_row(row)
            changed = conn.execute(CHANGED_SHOTS).fetchall()
            conn.execute(_marks(UPSERT_SHOTS), [now, now])  # type: ignore[call-overload]
        return [shot for (shot,) in changed]
