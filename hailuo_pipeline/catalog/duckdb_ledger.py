"""The ledger's storage in the embedded DuckDB catalog (`LedgerStore`); all of its SQL dialect is here."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from hailuo_pipeline.catalog.rows import ACTIVE, ROW_COLUMNS, RequestRow, Status, VideoRow, request_row
from hailuo_pipeline.catalog.store import Catalog

# The one definition of the price in effect: the latest price of the endpoint and duration on or before a day.
# Placeholders: endpoint, duration, day (SQL expressions or ?).
PRICE_IN_EFFECT = (
    "FROM prices WHERE endpoint = {endpoint} AND duration_seconds = {duration} AND effective_from <= {day} "
    "ORDER BY effective_from DESC LIMIT 1"
)
_VIDEO_COLUMNS = (
    "request_id, request_key, shot_id, path, sha256, bytes, width, height, fps, frames, duration_seconds, source_url"
)


class DuckDBLedgerTransaction:
    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self.conn = conn

    def requests(
        self,
        *,
        request_key: str | None = None,
        fingerprint: str | None = None,
        shot_id: str | None = None,
        statuses: Sequence[Status] | None = None,
        completed_since: datetime | None = None,
    ) -> list[RequestRow]:
        where: list[str] = ["true"]
        params: list[Any] = []
        for column, value in (("request_key", request_key), ("fingerprint", fingerprint), ("shot_id", shot_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if statuses is not None:
            where.append("list_contains(?, status)")
            params.append([s.value for s in statuses])
        if completed_since is not None:
            where.append("completed_at >= ?")
            params.append(completed_since)
        found = self.conn.execute(
            f"SELECT {ROW_COLUMNS} FROM requests WHERE {' AND '.join(where)} ORDER BY created_at DESC, take DESC",
            params,
        ).fetchall()
        return [row for row in map(request_row, found) if row is not None]

    def standing_rows(self) -> tuple[list[str], list[RequestRow]]:
        ranked = """
            WITH ranked AS (
                SELECT *,
                    row_number() OVER (PARTITION BY shot_id ORDER BY created_at DESC, take DESC) AS nth,
                    row_number() OVER (PARTITION BY shot_id, status ORDER BY created_at DESC, take DESC)
                        AS nth_of_status,
                    bool_or(list_contains($active, status)) OVER (PARTITION BY shot_id) AS busy,
                    first(status ORDER BY created_at DESC, take DESC) OVER (PARTITION BY shot_id) AS latest
                FROM requests
            )
        """
        params = {"active": [s.value for s in ACTIVE], "succeeded": Status.SUCCEEDED.value}
        delivered = self.conn.execute(
            ranked + "SELECT shot_id FROM ranked WHERE nth = 1 AND status = $succeeded AND NOT busy", params
        ).fetchall()
        found = self.conn.execute(
            ranked + f"SELECT {ROW_COLUMNS} FROM ranked WHERE (busy OR latest <> $succeeded) AND "
            "(nth = 1 OR list_contains($active, status) OR (status = $succeeded AND nth_of_status = 1)) "
            "ORDER BY created_at DESC, take DESC",
            params,
        ).fetchall()
        return [shot for (shot,) in delivered], [row for row in map(request_row, found) if row is not None]

    def insert_request(self, values: dict[str, Any]) -> None:
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        self.conn.execute(f"INSERT INTO requests ({columns}) VALUES ({marks})", [_plain(v) for v in values.values()])

    def update_request(self, request_key: str, values: dict[str, Any]) -> None:
        assignments = ", ".join(f"{column} = ?" for column in values)
        self.conn.execute(
            f"UPDATE requests SET {assignments} WHERE request_key = ?",
            [*(_plain(v) for v in values.values()), request_key],
        )

    def add_polls(self, request_key: str, polls: int) -> None:
        self.conn.execute("UPDATE requests SET polls = polls + ? WHERE request_key = ?", [polls, request_key])

    def renew_leases(self, request_keys: Sequence[str], owner: str, now: datetime) -> None:
        self.conn.execute(
            "UPDATE requests SET heartbeat_at = ? WHERE owner = ? AND list_contains(?, request_key)",
            [now, owner, list(request_keys)],
        )

    def release_leases(self, owner: str, statuses: Sequence[Status]) -> None:
        self.conn.execute(
            "UPDATE requests SET owner = NULL WHERE owner = ? AND list_contains(?, status)",
            [owner, [s.value for s in statuses]],
        )

    def add_event(self, request_key: str, status: Status, at: datetime, detail: str | None) -> None:
        self.conn.execute("INSERT INTO request_events VALUES (?, ?, ?, ?)", [request_key, status.value, at, detail])

    def committed_usd(self, day: date) -> tuple[Decimal, Decimal]:
        found = self.conn.execute(
            "SELECT coalesce(sum(cost_usd + reserved_usd), 0), "
            "coalesce(sum(cost_usd + reserved_usd) FILTER (WHERE CAST(created_at AS DATE) = ?), 0) FROM requests",
            [day],
        ).fetchone()
        return (Decimal(found[0]), Decimal(found[1])) if found else (Decimal(0), Decimal(0))

    def price(self, endpoint: str, duration_seconds: int, day: date) -> tuple[str, Decimal] | None:
        found = self.conn.execute(
            "SELECT price_id, usd " + PRICE_IN_EFFECT.format(endpoint="?", duration="?", day="?"),
            [endpoint, duration_seconds, day],
        ).fetchone()
        return (found[0], Decimal(found[1])) if found else None

    def video(self, *, request_key: str | None = None, request_id: str | None = None) -> VideoRow | None:
        column, value = ("request_key", request_key) if request_key is not None else ("request_id", request_id)
        found = self.conn.execute(f"SELECT {_VIDEO_COLUMNS} FROM videos WHERE {column} = ?", [value]).fetchone()
        return VideoRow(*found) if found else None

    def insert_video(self, video: VideoRow, recorded_at: datetime) -> None:
        self.conn.execute(
            f"INSERT INTO videos ({_VIDEO_COLUMNS}, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                video.request_id,
                video.request_key,
                video.shot_id,
                video.path,
                video.sha256,
                video.bytes,
                video.width,
                video.height,
                video.fps,
                video.frames,
                video.duration_seconds,
                video.source_url,
                recorded_at,
            ],
        )

    def result(self, request_key: str) -> dict[str, Any] | None:
        found = self.conn.execute("SELECT result_json FROM requests WHERE request_key = ?", [request_key]).fetchone()
        return json.loads(found[0]) if found and found[0] else None


class DuckDBLedgerStore:
    """Short transactions on the catalog file (see `store.Catalog` for how processes share it)."""

    def __init__(self, catalog: Catalog | Path | str) -> None:
        self.catalog = catalog if isinstance(catalog, Catalog) else Catalog(catalog)

    @contextmanager
    def transaction(self, *, read_only: bool = False, decides: bool = False) -> Iterator[DuckDBLedgerTransaction]:
        # `decides` needs nothing more here: DuckDB lets one transaction write at a time per file
        with self.catalog.connect(read_only=read_only) as conn:
            yield DuckDBLedgerTransaction(conn)


def _plain(value: Any) -> Any:
    if isinstance(value, Status):
        return value.value
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value
