"""The request ledger: the one place that decides whether a shot may spend money.

Every decision is one short transaction, so concurrent runs and processes see each other's rows:
a row is written (and its price reserved) before fal is called, fal's request id is stored the
moment it is known, and any later attempt for the same fingerprint resumes that id instead of
paying again. Each in-flight row carries a lease (owner + heartbeat): a row whose owner stopped
heart-beating is an orphan, which the next attempt at the shot takes over and resumes by id.
The decisions themselves are pure functions in `decisions.py`; this module applies them.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import duckdb

from hailuo_pipeline.catalog.decisions import (
    LEASE_SECONDS,
    ClaimKind,
    ClaimOptions,
    OwnerAlive,
    ShotStanding,
    budget_refusal,
    decide_claim,
    is_dead_reservation,
    is_orphan,
    next_take,
    owner_alive,
    shot_standing,
)
from hailuo_pipeline.catalog.rows import (
    ACTIVE,
    PROGRESS_ORDER,
    ROW_COLUMNS,
    Budget,
    NewRequest,
    RequestRow,
    Status,
    VideoRow,
    request_row,
    utcnow,
)
from hailuo_pipeline.catalog.store import Catalog


class BudgetExceededError(RuntimeError):
    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit  # "daily" or "total"


class NoPriceError(RuntimeError):
    pass


@dataclass(frozen=True)
class Claim:
    kind: ClaimKind
    row: RequestRow | None = None
    video: VideoRow | None = None


_VIDEO_COLUMNS = (
    "v.request_id, v.request_key, v.shot_id, v.path, v.sha256, v.bytes, v.width, v.height, v.fps, v.frames, "
    "v.duration_seconds, v.source_url"
)
_ACTIVE_VALUES = [s.value for s in ACTIVE]


def _committed(conn: duckdb.DuckDBPyConnection, day: date) -> tuple[Decimal, Decimal]:
    """Spent plus reserved: in all, and on one UTC day."""
    found = conn.execute(
        "SELECT coalesce(sum(cost_usd + reserved_usd), 0), "
        "coalesce(sum(cost_usd + reserved_usd) FILTER (WHERE CAST(created_at AS DATE) = ?), 0) FROM requests",
        [day],
    ).fetchone()
    return (Decimal(found[0]), Decimal(found[1])) if found else (Decimal(0), Decimal(0))


def _rows(conn: duckdb.DuckDBPyConnection, where: str, params: list[Any]) -> list[RequestRow]:
    found = conn.execute(
        f"SELECT {ROW_COLUMNS} FROM requests WHERE {where} ORDER BY created_at DESC, take DESC", params
    ).fetchall()
    return [row for row in map(request_row, found) if row is not None]


def _one(conn: duckdb.DuckDBPyConnection, request_key: str) -> RequestRow:
    (row,) = _rows(conn, "request_key = ?", [request_key])
    return row


class RequestLedger:
    def __init__(
        self, catalog: Catalog, lease_seconds: float = LEASE_SECONDS, alive: OwnerAlive = owner_alive
    ) -> None:
        self.catalog = catalog
        self.lease_seconds = lease_seconds
        self.alive = alive

    # -- decisions -------------------------------------------------------------------------
    def claim(self, request: NewRequest, budget: Budget, options: ClaimOptions | None = None) -> Claim:
        """Decide, atomically, what this attempt at a shot may do."""
        options = options or ClaimOptions()
        with self.catalog.connect() as conn:
            while True:
                rows = _rows(conn, "fingerprint = ?", [request.fingerprint])
                decision = decide_claim(
                    rows,
                    me=request.owner,
                    run_id=request.run_id,
                    now=utcnow(),
                    lease_seconds=self.lease_seconds,
                    options=options,
                    alive=self.alive,
                )
                if decision.expire is None:
                    break
                self._expire_reservation(conn, decision.expire)
            row = decision.row
            if decision.kind is ClaimKind.RESUME:
                assert row is not None
                return Claim(ClaimKind.RESUME, self._take_lease(conn, row, request.owner))
            if decision.kind is ClaimKind.REUSE:
                assert row is not None
                video = self._video(conn, row.request_key)
                if video is None:  # recorded as succeeded but its video row is gone: fetch it again
                    return Claim(ClaimKind.RESUME, self._take_lease(conn, row, request.owner))
                return Claim(ClaimKind.REUSE, row, video)
            if decision.kind is not ClaimKind.SUBMIT:
                return Claim(decision.kind, row)
            ambiguous_before = row is not None and row.status is Status.AMBIGUOUS
            return Claim(ClaimKind.SUBMIT, self._reserve(conn, request, budget, ambiguous_before))

    def take_over_orphans(self, shot_id: str, owner: str) -> list[RequestRow]:
        """The shot's requests that fal has and nobody follows, now leased to `owner`, oldest first; a
        dead submitter's reservation is recorded ambiguous on the way (fal may have a job we cannot see)."""
        taken: list[RequestRow] = []
        with self.catalog.connect() as conn:
            now = utcnow()
            for row in _rows(conn, "shot_id = ? AND list_contains(?, status)", [shot_id, _ACTIVE_VALUES]):
                if is_dead_reservation(row, now, self.lease_seconds, self.alive):
                    self._expire_reservation(conn, row)
                elif is_orphan(row, now, self.lease_seconds, self.alive):
                    taken.append(self._take_lease(conn, row, owner))
        return taken[::-1]

    def _take_lease(self, conn: duckdb.DuckDBPyConnection, row: RequestRow, owner: str) -> RequestRow:
        """Lease `row` to `owner`. Taking over someone else's row counts as a resume attempt."""
        conn.execute(
            "UPDATE requests SET owner = ?, heartbeat_at = ?, "
            "attempts = attempts + CASE WHEN owner IS DISTINCT FROM ? THEN 1 ELSE 0 END WHERE request_key = ?",
            [owner, utcnow(), owner, row.request_key],
        )
        if row.owner != owner:
            self._event(conn, row.request_key, row.status, f"resumed by {owner} (was {row.owner or 'released'})")
        return _one(conn, row.request_key)

    def _expire_reservation(self, conn: duckdb.DuckDBPyConnection, row: RequestRow) -> None:
        self._transition(
            conn,
            row.request_key,
            Status.AMBIGUOUS,
            "the process that was submitting stopped before fal's answer was recorded",
            possible_double_charge=True,
        )

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
        self, conn: duckdb.DuckDBPyConnection, request: NewRequest, budget: Budget, possible_double_charge: bool
    ) -> RequestRow:
        price_id, price = self.price_for(conn, request.endpoint, request.duration_seconds)
        now = utcnow()
        total, today = _committed(conn, now.date())
        refusal = budget_refusal(budget, total, today, price)
        if refusal is not None:
            raise BudgetExceededError(refusal, "total" if refusal.startswith("the total") else "daily")
        key = uuid.uuid4().hex
        take = next_take(_rows(conn, "shot_id = ?", [request.shot_id]))
        conn.execute(
            "INSERT INTO requests (request_key, shot_id, take, fingerprint, endpoint, arguments_json, "
            "duration_seconds, status, run_id, partition_key, owner, heartbeat_at, created_at, price_id, "
            "price_usd, reserved_usd, possible_double_charge) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                key,
                request.shot_id,
                take,
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
        return _one(conn, key)

    # -- leases ----------------------------------------------------------------------------
    def heartbeat(self, request_keys: list[str], owner: str) -> None:
        """Renew `owner`'s leases on these rows; a row another process has taken over stays theirs."""
        if request_keys:
            with self.catalog.connect() as conn:
                conn.execute(
                    "UPDATE requests SET heartbeat_at = ? WHERE owner = ? AND list_contains(?, request_key)",
                    [utcnow(), owner, request_keys],
                )

    def release(self, owner: str) -> None:
        """Give up `owner`'s leases at once (a run ending, cleanly or not): its unfinished requests are
        orphans from now on, for the next attempt to resume without waiting out the lease."""
        with self.catalog.connect() as conn:
            conn.execute(
                "UPDATE requests SET owner = NULL WHERE owner = ? AND list_contains(?, status)", [owner, _ACTIVE_VALUES]
            )

    # -- transitions -----------------------------------------------------------------------
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
            if not current or PROGRESS_ORDER.get(Status(current[0]), 99) >= PROGRESS_ORDER[status]:
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
            changed = conn.execute(
                "UPDATE requests SET status = ?, result_json = ?, video_url = ?, "
                "completed_at = coalesce(completed_at, ?), "
                "started_at = coalesce(started_at, ?), "
                "inference_seconds = coalesce(?, inference_seconds), "
                "queue_seconds = epoch(coalesce(started_at, ?) - submitted_at), "
                "cost_usd = price_usd, reserved_usd = 0 "
                "WHERE request_key = ? AND list_contains(?, status)",
                [
                    Status.COMPLETED.value,
                    json.dumps(result),
                    video_url,
                    now,
                    now,
                    inference_seconds,
                    now,
                    request_key,
                    [s.value for s in ACTIVE if s is not Status.COMPLETED],
                ],
            ).fetchone()
            if changed and changed[0]:
                self._event(conn, request_key, Status.COMPLETED, video_url)

    def mark_failed(
        self,
        request_key: str,
        error_type: str,
        message: str,
        *,
        possibly_charged: bool = False,
        permanent: bool = False,
    ) -> None:
        """`permanent`: fal refused these very inputs; later attempts with them are refused before any
        request (decisions.decide_claim), unless the user insists."""
        self._finish(request_key, Status.FAILED, error_type, message, possibly_charged, permanent)

    def mark_cancelled(self, request_key: str, message: str) -> None:
        self._finish(request_key, Status.CANCELLED, "cancelled", message, False, False)

    def mark_lost(self, request_key: str, error_type: str, message: str) -> None:
        """fal billed the request (or may have), and its result can no longer be fetched: the money is
        spent and counted as lost, and no later attempt waits for this request again."""
        with self.catalog.connect() as conn:
            changed = conn.execute(
                "UPDATE requests SET status = ?, error_type = ?, error_message = ?, possibly_charged = true, "
                "completed_at = coalesce(completed_at, ?), cost_usd = price_usd, reserved_usd = 0, owner = NULL "
                "WHERE request_key = ? AND list_contains(?, status)",
                [Status.LOST.value, error_type, message[:4000], utcnow(), request_key, _ACTIVE_VALUES],
            ).fetchone()
            if changed and changed[0]:
                self._event(conn, request_key, Status.LOST, f"{error_type}: {message[:500]}")

    def mark_ambiguous(self, request_key: str, message: str) -> None:
        with self.catalog.connect() as conn:
            self._transition(conn, request_key, Status.AMBIGUOUS, message, possible_double_charge=True)

    def _finish(
        self,
        request_key: str,
        status: Status,
        error_type: str,
        message: str,
        possibly_charged: bool,
        permanent: bool,
    ) -> None:
        with self.catalog.connect() as conn:
            changed = conn.execute(
                "UPDATE requests SET status = ?, error_type = ?, error_message = ?, possibly_charged = ?, "
                "permanent_failure = ?, completed_at = coalesce(completed_at, ?), reserved_usd = 0, cost_usd = 0, "
                "owner = NULL WHERE request_key = ? AND status NOT IN (?, ?, ?)",
                [
                    status.value,
                    error_type,
                    message[:4000],
                    possibly_charged,
                    permanent,
                    utcnow(),
                    request_key,
                    Status.COMPLETED.value,
                    Status.SUCCEEDED.value,
                    Status.LOST.value,
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
            "UPDATE requests SET status = ?, error_type = ?, error_message = ?, owner = NULL, "
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
                "UPDATE requests SET status = ?, owner = NULL, wall_seconds = epoch(? - created_at) "
                "WHERE request_key = ? AND status <> ?",
                [Status.SUCCEEDED.value, utcnow(), request_key, Status.SUCCEEDED.value],
            ).fetchone()
            if changed and changed[0]:  # a second delivery of the same request is not a new transition
                self._event(conn, request_key, Status.SUCCEEDED, video.path)
            return VideoRow(*existing) if existing else video

    # -- reads -----------------------------------------------------------------------------
    def get(self, request_key: str) -> RequestRow:
        with self.catalog.connect(read_only=True) as conn:
            return _one(conn, request_key)

    def standings(self) -> dict[str, ShotStanding]:
        """Every shot with a request: where it stands (decisions.shot_standing)."""
        with self.catalog.connect(read_only=True) as conn:
            rows = _rows(conn, "true", [])
        by_shot: dict[str, list[RequestRow]] = {}
        for row in rows:
            by_shot.setdefault(row.shot_id, []).append(row)
        now = utcnow()
        return {shot: shot_standing(found, now, self.lease_seconds, self.alive) for shot, found in by_shot.items()}

    def orphans(self) -> list[RequestRow]:
        """Requests fal has that no live process follows, oldest first (only in-flight rows are read)."""
        with self.catalog.connect(read_only=True) as conn:
            rows = _rows(conn, "list_contains(?, status)", [_ACTIVE_VALUES])
        now = utcnow()
        return [r for r in reversed(rows) if is_orphan(r, now, self.lease_seconds, self.alive)]

    def lost_since(self, since: datetime) -> list[RequestRow]:
        with self.catalog.connect(read_only=True) as conn:
            return _rows(conn, "status = ? AND completed_at >= ?", [Status.LOST.value, since])

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
