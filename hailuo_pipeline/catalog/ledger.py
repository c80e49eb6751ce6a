"""The request ledger: the one place that decides whether a shot may spend money.

Every decision is one short transaction, so concurrent runs and processes see each other's rows:
a row is written (and its price reserved) before fal is called, fal's request id is stored the
moment it is known, and any later attempt for the same fingerprint resumes that id instead of
paying again. The interface is narrow on purpose: a server database can implement it later.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

import duckdb

from hailuo_pipeline.catalog.store import Catalog


class Status(StrEnum):
    RESERVED = "reserved"  # row written and money reserved; the submit is about to be sent
    SUBMITTED = "submitted"  # fal answered with a request id
    IN_QUEUE = "in_queue"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"  # fal finished and billed; the result (video URL) is stored
    SUCCEEDED = "succeeded"  # the video is downloaded, verified and recorded
    FAILED = "failed"
    CANCELLED = "cancelled"
    AMBIGUOUS = "ambiguous"  # a submit whose answer never came: a job may exist that we cannot see


ACTIVE = (Status.RESERVED, Status.SUBMITTED, Status.IN_QUEUE, Status.IN_PROGRESS, Status.COMPLETED)
_ORDER = {s: i for i, s in enumerate(ACTIVE)} | {Status.SUCCEEDED: 9}


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class BudgetExceededError(RuntimeError):
    pass


class NoPriceError(RuntimeError):
    pass


@dataclass(frozen=True)
class Budget:
    daily_usd: Decimal | None = None
    total_usd: Decimal | None = None

    @classmethod
    def from_usd(cls, daily_usd: float | None, total_usd: float | None) -> Budget:
        def exact(value: float | None) -> Decimal | None:
            return None if value is None else Decimal(str(value))

        return cls(exact(daily_usd), exact(total_usd))


@dataclass(frozen=True)
class RequestRow:
    request_key: str
    request_id: str | None
    shot_id: str
    take: int
    fingerprint: str
    status: Status
    duration_seconds: int
    price_usd: Decimal
    video_url: str | None
    owner: str | None
    heartbeat_at: datetime | None
    run_id: str | None
    created_at: datetime
    submitted_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    possible_double_charge: bool


@dataclass(frozen=True)
class VideoRow:
    request_id: str
    request_key: str
    shot_id: str
    path: str
    sha256: str
    bytes: int
    width: int
    height: int
    fps: float
    frames: int
    duration_seconds: float
    source_url: str | None


class ClaimKind(StrEnum):
    REUSE = "reuse"  # a verified video exists: no request at all
    RESUME = "resume"  # a request we already paid for (or are paying for): follow it by id
    WAIT = "wait"  # another live process is submitting this very fingerprint right now
    AMBIGUOUS = "ambiguous"  # an earlier submit never answered; policy decides
    SUBMIT = "submit"  # a fresh row is reserved: go and submit


@dataclass(frozen=True)
class Claim:
    kind: ClaimKind
    row: RequestRow | None = None
    video: VideoRow | None = None


_ROW_COLUMNS = (
    "request_key, request_id, shot_id, take, fingerprint, status, duration_seconds, price_usd, video_url, "
    "owner, heartbeat_at, run_id, created_at, submitted_at, started_at, completed_at, possible_double_charge"
)
_VIDEO_COLUMNS = (
    "v.request_id, v.request_key, v.shot_id, v.path, v.sha256, v.bytes, v.width, v.height, v.fps, v.frames, "
    "v.duration_seconds, v.source_url"
)


def _committed(conn: duckdb.DuckDBPyConnection, day: date) -> tuple[Decimal, Decimal]:
    """Spent plus reserved: in all, and on one UTC day."""
    found = conn.execute(
        "SELECT coalesce(sum(cost_usd + reserved_usd), 0), "
        "coalesce(sum(cost_usd + reserved_usd) FILTER (WHERE CAST(created_at AS DATE) = ?), 0) FROM requests",
        [day],
    ).fetchone()
    return (Decimal(found[0]), Decimal(found[1])) if found else (Decimal(0), Decimal(0))


def _row(values: tuple[Any, ...] | None) -> RequestRow | None:
    if values is None:
        return None
    data = dict(zip([c.strip() for c in _ROW_COLUMNS.split(",")], values, strict=True))
    data["status"] = Status(data["status"])
    return RequestRow(**data)


@dataclass(frozen=True)
class NewRequest:
    shot_id: str
    fingerprint: str
    endpoint: str
    arguments: dict[str, Any]
    duration_seconds: int
    run_id: str | None
    partition_key: str | None
    owner: str


class RequestLedger:
    def __init__(self, catalog: Catalog, lease_seconds: float = 45.0) -> None:
        self.catalog = catalog
        self.lease_seconds = lease_seconds

    # -- decisions -------------------------------------------------------------------------
    def claim(
        self,
        request: NewRequest,
        budget: Budget,
        *,
        new_take: bool = False,
        resubmit_ambiguous: bool = False,
    ) -> Claim:
        """Decide, atomically, what this attempt at a shot may do."""
        with self.catalog.connect() as conn:
            rows = [
                _row(r)
                for r in conn.execute(
                    f"SELECT {_ROW_COLUMNS} FROM requests WHERE fingerprint = ? ORDER BY take DESC",
                    [request.fingerprint],
                ).fetchall()
            ]
            latest = rows[0] if rows else None
            forced_here = new_take and not any(r and r.run_id == request.run_id for r in rows)
            if latest and latest.status in ACTIVE:
                if latest.request_id or latest.status is not Status.RESERVED:
                    return Claim(ClaimKind.RESUME, latest)
                if not self._stale(latest):
                    return Claim(ClaimKind.WAIT, latest)
                self._transition(
                    conn,
                    latest.request_key,
                    Status.AMBIGUOUS,
                    "the process that was submitting stopped before fal's answer was recorded",
                    possible_double_charge=True,
                )
                latest = _row(
                    conn.execute(
                        f"SELECT {_ROW_COLUMNS} FROM requests WHERE request_key = ?", [latest.request_key]
                    ).fetchone()
                )
            if latest and latest.status is Status.SUCCEEDED and not forced_here:
                video = self._video(conn, latest.request_key)
                if video is not None:
                    return Claim(ClaimKind.REUSE, latest, video)
                return Claim(ClaimKind.RESUME, latest)
            if latest and latest.status is Status.AMBIGUOUS and not resubmit_ambiguous:
                return Claim(ClaimKind.AMBIGUOUS, latest)
            row = self._reserve(
                conn,
                request,
                budget,
                possible_double_charge=bool(latest and latest.status is Status.AMBIGUOUS),
            )
            return Claim(ClaimKind.SUBMIT, row)

    def _stale(self, row: RequestRow) -> bool:
        beat = row.heartbeat_at or row.created_at
        return utcnow() - beat > timedelta(seconds=self.lease_seconds)

    def price_for(self, conn: duckdb.DuckDBPyConnection, endpoint: str, duration: int) -> tuple[str, Decimal]:
        found = conn.execute(
            "SELECT price_id, usd FROM prices WHERE endpoint = ? AND duration_seconds = ? "
            "AND effective_from <= ? ORDER BY effective_from DESC LIMIT 1",
            [endpoint, duration, utcnow().date()],
        ).fetchone()
        if not found:
            raise NoPriceError(
                f"no price in the catalog's prices table for {endpoint} at {duration} s; add a row to prices"
            )
        return found[0], Decimal(found[1])

    def _reserve(
        self,
        conn: duckdb.DuckDBPyConnection,
        request: NewRequest,
        budget: Budget,
        *,
        possible_double_charge: bool,
    ) -> RequestRow:
        price_id, price = self.price_for(conn, request.endpoint, request.duration_seconds)
        now = utcnow()
        total, today = _committed(conn, now.date())
        if budget.total_usd is not None and Decimal(total) + price > budget.total_usd:
            raise BudgetExceededError(
                f"total budget ${budget.total_usd:.2f} would be exceeded "
                f"(${Decimal(total):.2f} spent or reserved, this video costs ${price:.2f}); "
                "raise budget.total_usd or wait for reservations to settle"
            )
        if budget.daily_usd is not None and Decimal(today) + price > budget.daily_usd:
            raise BudgetExceededError(
                f"daily budget ${budget.daily_usd:.2f} would be exceeded "
                f"(${Decimal(today):.2f} spent or reserved today UTC, this video costs ${price:.2f}); "
                "raise budget.daily_usd or run again tomorrow"
            )
        take_row = conn.execute(
            "SELECT coalesce(max(take), 0) + 1 FROM requests WHERE shot_id = ?", [request.shot_id]
        ).fetchone()
        key = uuid.uuid4().hex
        conn.execute(
            "INSERT INTO requests (request_key, shot_id, take, fingerprint, endpoint, arguments_json, "
            "duration_seconds, status, run_id, partition_key, owner, heartbeat_at, created_at, price_id, "
            "price_usd, reserved_usd, possible_double_charge) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                key,
                request.shot_id,
                take_row[0] if take_row else 1,
                request.fingerprint,
                request.endpoint,
                json.dumps(request.arguments, sort_keys=True),
                request.duration_seconds,
                Status.RESERVED.value,
                request.run_id,
                request.partition_key,
                request.owner,
                now,
                now,
                price_id,
                price,
                price,
                possible_double_charge,
            ],
        )
        self._event(conn, key, Status.RESERVED, f"reserved ${price} ({price_id})")
        return _row(conn.execute(f"SELECT {_ROW_COLUMNS} FROM requests WHERE request_key = ?", [key]).fetchone())

    # -- transitions -----------------------------------------------------------------------
    def heartbeat(self, request_key: str) -> None:
        with self.catalog.connect() as conn:
            conn.execute("UPDATE requests SET heartbeat_at = ? WHERE request_key = ?", [utcnow(), request_key])

    def mark_submitted(self, request_key: str, request_id: str) -> None:
        with self.catalog.connect() as conn:
            conn.execute(
                "UPDATE requests SET request_id = ?, submitted_at = ?, status = ? WHERE request_key = ?",
                [request_id, utcnow(), Status.SUBMITTED.value, request_key],
            )
            self._event(conn, request_key, Status.SUBMITTED, f"fal request id {request_id}")

    def mark_progress(self, request_key: str, status: Status, detail: str | None = None) -> None:
        """Record in_queue / in_progress, only moving forward."""
        with self.catalog.connect() as conn:
            current = conn.execute("SELECT status FROM requests WHERE request_key = ?", [request_key]).fetchone()
            if not current or _ORDER.get(Status(current[0]), 99) >= _ORDER[status]:
                return
            extra = ", started_at = coalesce(started_at, ?)" if status is Status.IN_PROGRESS else ""
            params: list[Any] = [status.value] + ([utcnow()] if extra else []) + [request_key]
            conn.execute(f"UPDATE requests SET status = ?{extra} WHERE request_key = ?", params)
            self._event(conn, request_key, status, detail)

    def mark_completed(
        self, request_key: str, result: dict[str, Any], video_url: str, inference_seconds: float | None
    ) -> None:
        """fal finished and billed: store the result before anything else can go wrong."""
        with self.catalog.connect() as conn:
            now = utcnow()
            conn.execute(
                "UPDATE requests SET status = ?, result_json = ?, video_url = ?, "
                "completed_at = coalesce(completed_at, ?), "
                "started_at = coalesce(started_at, ?), "
                "inference_seconds = coalesce(?, inference_seconds), "
                "queue_seconds = epoch(coalesce(started_at, ?) - submitted_at), "
                "cost_usd = price_usd, reserved_usd = 0 "
                "WHERE request_key = ? AND status IN (?, ?, ?, ?)",
                [
                    Status.COMPLETED.value,
                    json.dumps(result),
                    video_url,
                    now,
                    now,
                    inference_seconds,
                    now,
                    request_key,
                    Status.RESERVED.value,
                    Status.SUBMITTED.value,
                    Status.IN_QUEUE.value,
                    Status.IN_PROGRESS.value,
                ],
            )
            self._event(conn, request_key, Status.COMPLETED, video_url)

    def mark_failed(self, request_key: str, error_type: str, message: str, *, possibly_charged: bool = False) -> None:
        self._finish(request_key, Status.FAILED, error_type, message, possibly_charged=possibly_charged)

    def mark_cancelled(self, request_key: str, message: str) -> None:
        self._finish(request_key, Status.CANCELLED, "cancelled", message)

    def mark_ambiguous(self, request_key: str, message: str) -> None:
        with self.catalog.connect() as conn:
            self._transition(conn, request_key, Status.AMBIGUOUS, message, possible_double_charge=True)

    def _finish(
        self, request_key: str, status: Status, error_type: str, message: str, *, possibly_charged: bool = False
    ) -> None:
        with self.catalog.connect() as conn:
            changed = conn.execute(
                "UPDATE requests SET status = ?, error_type = ?, error_message = ?, possibly_charged = ?, "
                "completed_at = coalesce(completed_at, ?), reserved_usd = 0, cost_usd = 0 "
                "WHERE request_key = ? AND status NOT IN (?, ?)",
                [
                    status.value,
                    error_type,
                    message[:4000],
                    possibly_charged,
                    utcnow(),
                    request_key,
                    Status.COMPLETED.value,
                    Status.SUCCEEDED.value,
                ],
            ).fetchone()
            if changed and changed[0]:  # a paid (completed) request is never turned into a failure
                self._event(conn, request_key, status, f"{error_type}: {message[:500]}")

    def _transition(
        self,
        conn: duckdb.DuckDBPyConnection,
        request_key: str,
        status: Status,
        message: str,
        *,
        possible_double_charge: bool = False,
    ) -> None:
        conn.execute(
            "UPDATE requests SET status = ?, error_type = ?, error_message = ?, "
            "possible_double_charge = possible_double_charge OR ? WHERE request_key = ?",
            [status.value, status.value, message, possible_double_charge, request_key],
        )
        self._event(conn, request_key, status, message)

    def add_polls(self, request_key: str, polls: int) -> None:
        if polls:
            with self.catalog.connect() as conn:
                conn.execute("UPDATE requests SET polls = polls + ? WHERE request_key = ?", [polls, request_key])

    def record_video(self, request_key: str, video: VideoRow) -> VideoRow:
        """Record a verified file; idempotent when two attempts deliver the same request."""
        with self.catalog.connect() as conn:
            existing = conn.execute(
                f"SELECT {_VIDEO_COLUMNS} FROM videos v WHERE v.request_id = ?", [video.request_id]
            ).fetchone()
            if existing is None:
                conn.execute(
                    "INSERT INTO videos VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                        utcnow(),
                    ],
                )
            changed = conn.execute(
                "UPDATE requests SET status = ?, wall_seconds = epoch(? - created_at) WHERE request_key = ? "
                "AND status <> ?",
                [Status.SUCCEEDED.value, utcnow(), request_key, Status.SUCCEEDED.value],
            ).fetchone()
            if changed and changed[0]:  # a second delivery of the same request is not a new transition
                self._event(conn, request_key, Status.SUCCEEDED, video.path)
            return VideoRow(*existing) if existing else video

    # -- reads -----------------------------------------------------------------------------
    def get(self, request_key: str) -> RequestRow | None:
        with self.catalog.connect(read_only=True) as conn:
            return _row(
                conn.execute(f"SELECT {_ROW_COLUMNS} FROM requests WHERE request_key = ?", [request_key]).fetchone()
            )

    def settled_shots(self) -> set[str]:
        """Shots with a delivered, in-flight or ambiguous request: nothing to sweep or retry there."""
        with self.catalog.connect(read_only=True) as conn:
            rows = conn.execute(
                "SELECT DISTINCT shot_id FROM requests WHERE status NOT IN (?, ?)",
                [Status.FAILED.value, Status.CANCELLED.value],
            ).fetchall()
        return {row[0] for row in rows}

    def committed_today_usd(self) -> Decimal:
        """Spent plus reserved on the current UTC day: what the daily budget is measured against."""
        with self.catalog.connect(read_only=True) as conn:
            return _committed(conn, utcnow().date())[1]

    def result_of(self, request_key: str) -> dict[str, Any] | None:
        with self.catalog.connect(read_only=True) as conn:
            found = conn.execute("SELECT result_json FROM requests WHERE request_key = ?", [request_key]).fetchone()
            return json.loads(found[0]) if found and found[0] else None

    @staticmethod
    def _video(conn: duckdb.DuckDBPyConnection, request_key: str) -> VideoRow | None:
        found = conn.execute(f"SELECT {_VIDEO_COLUMNS} FROM videos v WHERE v.request_key = ?", [request_key]).fetchone()
        return VideoRow(*found) if found else None

    @staticmethod
    def _event(conn: duckdb.DuckDBPyConnection, request_key: str, status: Status, detail: str | None) -> None:
        conn.execute("INSERT INTO request_events VALUES (?, ?, ?, ?)", [request_key, status.value, utcnow(), detail])
