"""Choose the catalog's backend from one setting: a path (embedded DuckDB, the default) or a PostgreSQL URL."""

from __future__ import annotations

from pathlib import Path

from hailuo_pipeline.catalog.storage import CatalogDatabase


def is_shared(location: str | Path) -> bool:
    return str(location).startswith(("postgresql://", "postgres://"))


def open_catalog(location: str | Path) -> CatalogDatabase:
    """`postgresql://user@host/db?schema=hailuo` for the shared catalog; anything else is a DuckDB file."""
    if is_shared(location):
        from hailuo_pipeline.catalog.postgres_ledger import PostgresCatalog  # psycopg only when shared

        return PostgresCatalog(str(location))
    from hailuo_pipeline.catalog.duckdb_ledger import DuckDBCatalog

    return DuckDBCatalog(Path(location))
