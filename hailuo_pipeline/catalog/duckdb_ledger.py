"""The catalog in an embedded DuckDB file: the default backend, for one machine."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from hailuo_pipeline.catalog.registry import CHANGED_SHOTS, SHOT_COLUMNS, UPSERT_SHOTS
from hailuo_pipeline.catalog.rows import utcnow
from hailuo_pipeline.catalog.schema import DUCKDB
from hailuo_pipeline.catalog.sql_ledger import SqlLedgerTransaction
from hailuo_pipeline.catalog.store import Catalog

if TYPE_CHECKING:
    import pandas as pd


class DuckDBLedgerTransaction(SqlLedgerTransaction):
    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        result = self.conn.execute(sql, list(params))
        return result.fetchall() if result.description else []

    def now(self) -> datetime:
        return utcnow()  # one file on one machine: this machine's clock is the catalog's


class DuckDBCatalog:
    """Short transactions on the catalog file (see `store.Catalog` for how processes share it)."""

    dialect = DUCKDB

    def __init__(self, catalog: Catalog | Path | str) -> None:
        self.catalog = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
        self.location = self.catalog.path

    @contextmanager
    def transaction(self, *, read_only: bool = False, decides: bool = False) -> Iterator[DuckDBLedgerTransaction]:
        # `decides` needs nothing more here: DuckDB lets one transaction write at a time per file
        with self.catalog.connect(read_only=read_only) as conn:
            yield DuckDBLedgerTransaction(conn)

    def read(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        import pandas as pd  # for reports only: see the README's note on pandas

        with self.catalog.connect(read_only=True) as conn:
            result = conn.execute(sql, list(params))
            return pd.DataFrame(result.fetchall(), columns=[d[0] for d in result.description or ()])

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.catalog.connect(read_only=True) as conn:
            return conn.execute(sql, list(params)).fetchall()

    def upsert_shots(self, incoming: Sequence[tuple[Any, ...]], now: datetime) -> list[str]:
        columns = ", ".join(SHOT_COLUMNS)
        with self.catalog.connect() as conn:
            conn.execute(f"CREATE OR REPLACE TEMP TABLE incoming AS SELECT {columns} FROM shots LIMIT 0")
            try:
                # one list per column, unnested side by side: one statement, whatever the number of rows
                conn.execute(
                    f"INSERT INTO incoming SELECT {', '.join('UNNEST(?)' for _ in SHOT_COLUMNS)}",
                    [list(column) for column in zip(*incoming, strict=True)],
                )
                changed = conn.execute(CHANGED_SHOTS).fetchall()
                conn.execute(UPSERT_SHOTS, [now, now])
            finally:
                conn.execute("DROP TABLE IF EXISTS incoming")
        return [shot for (shot,) in changed]
