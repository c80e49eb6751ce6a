"""The shared ledger copied into a DuckDB file users query: the same tables and views as the embedded catalog.

Read in one repeatable-read transaction (a consistent picture), written to a temporary file and renamed into
place (or uploaded whole, for an object-store URL), so readers never see half a snapshot. A refresh starts
from the previous snapshot and copies only what can have changed since: rows created or finished after it
(less a margin for transactions still open then), and rows it held in flight. Rows that reached a final
status never change again.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from hailuo_pipeline.catalog.rows import ACTIVE
from hailuo_pipeline.catalog.storage import CatalogDatabase
from hailuo_pipeline.catalog.store import migrate
from hailuo_pipeline.redact import redact

MARGIN = timedelta(minutes=5)  # longer than any ledger transaction stays open
WHOLE_TABLES = ("prices", "shots", "schema_version", "fal_usage", "verdicts")  # small: copied whole every time
META = "snapshot_meta"


@dataclass(frozen=True)
class SnapshotResult:
    destination: str
    taken_at: datetime
    incremental: bool
    rows_copied: dict[str, int]
    rows_total: dict[str, int]
    bytes: int


def _columns(conn: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [d[0] for d in conn.execute(f"SELECT * FROM {table} LIMIT 0").description or ()]


def _copy(
    conn: duckdb.DuckDBPyConnection,
    t: Any,
    table: str,
    where: str = "",
    params: list[Any] | None = None,
    replace_where: str | None = None,
    key: str | None = None,
) -> int:
    """Copy `table`'s rows matching `where` from the ledger into the snapshot, replacing the snapshot's rows
    with the same `key` (or matching `replace_where`, or all of them when neither is given)."""
    import pandas as pd  # the fast way into DuckDB; loaded only when a snapshot is taken (README: pandas)

    columns = _columns(conn, table)
    rows = t.execute(f"SELECT {', '.join(columns)} FROM {table} {where}", params or [])
    frame = pd.DataFrame(rows, columns=columns)
    conn.register("incoming", frame)
    try:
        if key is not None:
            conn.execute(f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM incoming)")
        elif replace_where is not None:
            conn.execute(f"DELETE FROM {table} WHERE {replace_where}", params or [])
        else:
            conn.execute(f"DELETE FROM {table}")
        if len(frame):
            conn.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM incoming")
    finally:
        conn.unregister("incoming")
    return len(frame)


def write_snapshot(source: CatalogDatabase, destination: str, full: bool = False) -> SnapshotResult:
    """Refresh the DuckDB snapshot at `destination` (a path, or an fsspec URL such as s3://bucket/catalog.duckdb)
    from the shared ledger `source`."""
    remote = "://" in destination
    work = Path(tempfile.mkdtemp(prefix="hailuo-snapshot-"))
    try:
        local = work / "catalog.duckdb" if remote else Path(destination)
        fresh = local.with_name(f".{local.name}.{os.getpid()}.new")
        previous = _fetch_previous(destination, work / "previous.duckdb") if remote else local
        incremental = not full and previous.is_file()
        if incremental:
            shutil.copyfile(previous, fresh)
        conn = duckdb.connect(str(fresh))
        try:
            migrate(conn)
            conn.execute(f"CREATE TABLE IF NOT EXISTS {META} (taken_at TIMESTAMP, source VARCHAR)")
            before = conn.execute(f"SELECT max(taken_at) FROM {META}").fetchone()
            since: datetime | None = before[0] if incremental and before else None
            copied, taken_at = _refresh(conn, source, since)
            totals = {
                table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
                for table in copied
            }
            conn.execute("CHECKPOINT")
        finally:
            conn.close()
        fresh.chmod(0o600)
        size = fresh.stat().st_size
        if remote:
            _upload(fresh, destination)
        else:
            os.replace(fresh, local)  # readers see the old snapshot or the new one, never half of one
        return SnapshotResult(redact(destination), taken_at, since is not None, copied, totals, size)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _refresh(
    conn: duckdb.DuckDBPyConnection, source: CatalogDatabase, since: datetime | None
) -> tuple[dict[str, int], datetime]:
    """Copy the ledger's rows (all of them, or what can have changed since `since`); the rows copied per
    table, and the ledger's time of the copy."""
    copied: dict[str, int] = {}
    with source.transaction(read_only=True) as t:  # one moment of the ledger for every table
        taken_at = t.now()
        for table in WHOLE_TABLES:
            copied[table] = _copy(conn, t, table)
        if since is None:
            for table in ("requests", "request_events", "videos"):
                copied[table] = _copy(conn, t, table)
        else:
            cutoff = since - MARGIN
            active = [s.value for s in ACTIVE]
            held = conn.execute("SELECT request_key FROM requests WHERE status = ANY(?)", [active]).fetchall()
            copied["requests"] = _copy(
                conn,
                t,
                "requests",
                "WHERE created_at >= ? OR completed_at >= ? OR status = ANY(?) OR request_key = ANY(?)",
                [cutoff, cutoff, active, [k for (k,) in held]],
                key="request_key",
            )
            copied["request_events"] = _copy(
                conn, t, "request_events", "WHERE occurred_at >= ?", [cutoff], replace_where="occurred_at >= ?"
            )
            copied["videos"] = _copy(conn, t, "videos", "WHERE recorded_at >= ?", [cutoff], key="request_id")
        conn.execute(f"DELETE FROM {META}")
        conn.execute(f"INSERT INTO {META} VALUES (?, ?)", [taken_at, source.location])
    return copied, taken_at


def _fetch_previous(url: str, target: Path) -> Path:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path):
        fs.get_file(path, str(target))
    return target


def _upload(file: Path, url: str) -> None:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    fs.put_file(str(file), path)  # one PUT: the object is replaced whole
