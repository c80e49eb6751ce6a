"""The ledger's reads and writes in SQL that DuckDB and PostgreSQL both run (`?` marks, `= ANY(?)` lists).

A backend supplies `_rows` (run one statement) and `now` (its clock); everything else is here once.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from hailuo_pipeline.catalog.rows import ACTIVE, ROW_COLUMNS, RequestRow, Status, VideoRow, request_row

# The one definition of the price in effect: the latest price of the endpoint and duration that took effect at or
# before a moment (a row's effective_at, or the start of its effective_from day). Placeholders: endpoint,
# duration, at (SQL expressions or ?).
PRICE_IN_EFFECT = (
    "FROM prices WHERE endpoint = {endpoint} AND duration_seconds = {duration} "
    "AND coalesce(effective_at, CAST(effective_from AS TIMESTAMP)) <= {at} "
    "ORDER BY coalesce(effective_at, CAST(effective_from AS TIMESTAMP)) DESC LIMIT 1"
)
VIDEO_COLUMNS = (
    "request_id, request_key, shot_id, path, sha256, bytes, width, height, fps, frames, duration_seconds, source_url"
)
_NEWEST_FIRST = "ORDER BY created_at DESC, take DESC"
# The rows the judge (decisions.judge) depends on, per shot: every row in flight, and for each set of inputs
# (fingerprint) its latest row and its latest delivered one. Placeholders: the in-flight statuses, 'succeeded'.
_STANDING = f"""
    WITH ranked AS (
        SELECT *,
            row_number() OVER (PARTITION BY shot_id, fingerprint {_NEWEST_FIRST}) AS nth,
            row_number() OVER (PARTITION BY shot_id, fingerprint, status = ? {_NEWEST_FIRST}) AS nth_alike
        FROM requests
    )
    SELECT {ROW_COLUMNS} FROM ranked WHERE nth = 1 OR status = ANY(?) OR (status = ? AND nth_alike = 1) {_NEWEST_FIRST}
"""


class SqlLedgerTransaction(ABC):
    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement with `?` marks; its rows (none for a write)."""

    @abstractmethod
    def now(self) -> datetime:
        """The database's clock, in UTC without a zone: one clock for every machine sharing the ledger."""

    def requests(
        self,
        *,
        request_key: str | None = None,
        fingerprint: str | None = None,
        shot_id: str | None = None,
        statuses: Sequence[Status] | None = None,
        completed_since: datetime | None = None,
        request_ids: Sequence[str] | None = None,
    ) -> list[RequestRow]:
        where: list[str] = ["true"]
        params: list[Any] = []
        if request_ids is not None:
            where.append("request_id = ANY(?)")
            params.append(list(request_ids))
        for column, value in (("request_key", request_key), ("fingerprint", fingerprint), ("shot_id", shot_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if statuses is not None:
            where.append("status = ANY(?)")
            params.append([s.value for s in statuses])
        if completed_since is not None:
            where.append("completed_at >= ?")
            params.append(completed_since)
        found = self.execute(f"SELECT {ROW_COLUMNS} FROM requests WHERE {' AND '.join(where)} {_NEWEST_FIRST}", params)
        return [row for row in map(request_row, found) if row is not None]

    def standing_rows(self) -> list[RequestRow]:
        succeeded = Status.SUCCEEDED.value
        found = self.execute(_STANDING, [succeeded, [s.value for s in ACTIVE], succeeded])
        return [row for row in map(request_row, found) if row is not None]

    def store_usage(self, day: date, endpoint: str, line: Mapping[str, Any] | None, fetched_at: datetime) -> None:
        self.execute("DELETE FROM fal_usage WHERE day = ? AND endpoint = ?", [day, endpoint])
        if line is not None:
            self.execute(
                "INSERT INTO fal_usage VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [day, endpoint, line["unit"], line["quantity"], line["unit_price"], line["cost_usd"],
                 line["currency"], fetched_at],
            )  # fmt: skip

    def usage_cost(self, day: date, endpoint: str) -> Decimal | None:
        found = self.execute("SELECT cost_usd FROM fal_usage WHERE day = ? AND endpoint = ?", [day, endpoint])
        return Decimal(found[0][0]) if found else None

    def booked_on(self, day: date) -> dict[str, tuple[str, Decimal]]:
        """Requests the ledger booked as paid on `day` (UTC, by when fal finished them): fal id -> (shot, cost)."""
        found = self.execute(
            "SELECT request_id, shot_id, cost_usd FROM requests WHERE cost_usd > 0 AND request_id IS NOT NULL "
            "AND coalesce(billed_at, completed_at) >= ? AND coalesce(billed_at, completed_at) < ?",
            [day, day + timedelta(days=1)],
        )
        return {request_id: (shot, Decimal(cost)) for request_id, shot, cost in found}

    def set_billed_at(self, ended: Mapping[str, datetime]) -> None:
        if ended:  # one set-based statement: a day of 10,000 requests is one write, not 10,000
            self.execute(
                "UPDATE requests SET billed_at = s.ended FROM (SELECT UNNEST(CAST(? AS VARCHAR[])) AS request_id, "
                "UNNEST(CAST(? AS TIMESTAMP[])) AS ended) s WHERE requests.request_id = s.request_id "
                "AND (requests.billed_at IS NULL OR requests.billed_at <> s.ended)",
                [list(ended), list(ended.values())],
            )

    def add_verdict(self, row: RequestRow, verdict: str, note: str | None, at: datetime) -> None:
        self.execute(
            "INSERT INTO verdicts VALUES (?, ?, ?, ?, ?, ?)",
            [row.request_key, row.shot_id, row.take, verdict, note, at],
        )
        self.execute(
            "UPDATE requests SET verdict = ? WHERE request_key = ?",
            [None if verdict == "withdraw" else verdict, row.request_key],
        )

    def verdicts_since(self, after: datetime | None) -> list[tuple[str, int, str, str | None, datetime]]:
        found = self.execute(
            "SELECT shot_id, take, verdict, note, decided_at FROM verdicts WHERE decided_at > coalesce(?, "
            "CAST('1970-01-01' AS TIMESTAMP)) ORDER BY decided_at",
            [after],
        )
        return [tuple(row) for row in found]  # type: ignore[misc]

    def requested_shots(self) -> set[str]:
        return {shot for (shot,) in self.execute("SELECT DISTINCT shot_id FROM requests")}

    def insert_request(self, values: dict[str, Any]) -> None:
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        self.execute(f"INSERT INTO requests ({columns}) VALUES ({marks})", [_plain(v) for v in values.values()])

    def update_request(self, request_key: str, values: dict[str, Any]) -> None:
        assignments = ", ".join(f"{column} = ?" for column in values)
        self.execute(
            f"UPDATE requests SET {assignments} WHERE request_key = ?",
            [*(_plain(v) for v in values.values()), request_key],
        )

    def record_submits(self, request_ids: Mapping[str, str], at: datetime, details: Sequence[str]) -> set[str]:
        keys, ids = list(request_ids), list(request_ids.values())
        found = self.execute(
            "UPDATE requests SET request_id = s.request_id, submitted_at = CAST(? AS TIMESTAMP), "
            "status = CAST(? AS VARCHAR) FROM (SELECT UNNEST(CAST(? AS VARCHAR[])) AS request_key, "
            "UNNEST(CAST(? AS VARCHAR[])) AS request_id) s "
            "WHERE requests.request_key = s.request_key RETURNING requests.request_key",
            [at, Status.SUBMITTED.value, keys, ids],
        )
        self.execute(
            "INSERT INTO request_events SELECT UNNEST(CAST(? AS VARCHAR[])), CAST(? AS VARCHAR), "
            "CAST(? AS TIMESTAMP), UNNEST(CAST(? AS VARCHAR[]))",
            [keys, Status.SUBMITTED.value, at, list(details)],
        )
        return {key for (key,) in found}

    def add_polls(self, request_key: str, polls: int) -> None:
        self.execute("UPDATE requests SET polls = polls + ? WHERE request_key = ?", [polls, request_key])

    def renew_leases(self, request_keys: Sequence[str], owner: str, now: datetime) -> None:
        self.execute(
            "UPDATE requests SET heartbeat_at = ? WHERE owner = ? AND request_key = ANY(?)",
            [now, owner, list(request_keys)],
        )

    def release_leases(self, owner: str, statuses: Sequence[Status]) -> None:
        self.execute(
            "UPDATE requests SET owner = NULL WHERE owner = ? AND status = ANY(?)", [owner, [s.value for s in statuses]]
        )

    def add_event(self, request_key: str, status: Status, at: datetime, detail: str | None) -> None:
        self.execute("INSERT INTO request_events VALUES (?, ?, ?, ?)", [request_key, status.value, at, detail])

    def committed_usd(self, day: date) -> tuple[Decimal, Decimal]:
        found = self.execute(
            "SELECT coalesce(sum(cost_usd + reserved_usd), 0), "
            "coalesce(sum(cost_usd + reserved_usd) FILTER (WHERE CAST(created_at AS DATE) = ?), 0) FROM requests",
            [day],
        )
        return (Decimal(found[0][0]), Decimal(found[0][1])) if found else (Decimal(0), Decimal(0))

    def price(self, endpoint: str, duration_seconds: int, at: datetime) -> tuple[str, Decimal] | None:
        found = self.execute(
            "SELECT price_id, usd " + PRICE_IN_EFFECT.format(endpoint="?", duration="?", at="CAST(? AS TIMESTAMP)"),
            [endpoint, duration_seconds, at],
        )
        return (found[0][0], Decimal(found[0][1])) if found else None

    def insert_price(
        self, price_id: str, endpoint: str, duration: int, usd: Decimal, at: datetime, source: str
    ) -> None:
        self.execute(
            "INSERT INTO prices (price_id, endpoint, duration_seconds, usd, effective_from, source, effective_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [price_id, endpoint, duration, usd, at.date(), source, at],
        )

    def video(self, *, request_key: str | None = None, request_id: str | None = None) -> VideoRow | None:
        column, value = ("request_key", request_key) if request_key is not None else ("request_id", request_id)
        found = self.execute(f"SELECT {VIDEO_COLUMNS} FROM videos WHERE {column} = ?", [value])
        return VideoRow(*found[0]) if found else None

    def insert_video(self, video: VideoRow, recorded_at: datetime) -> None:
        self.execute(
            f"INSERT INTO videos ({VIDEO_COLUMNS}, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        found = self.execute("SELECT result_json FROM requests WHERE request_key = ?", [request_key])
        return json.loads(found[0][0]) if found and found[0][0] else None


def _plain(value: Any) -> Any:
    if isinstance(value, Status):
        return value.value
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value
