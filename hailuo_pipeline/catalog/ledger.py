"""The request ledger: the one place that decides whether a shot may spend money.

Every decision is one short transaction, so concurrent runs and processes see each other's rows:
a row is written (and its price reserved) before fal is called, fal's request id is stored the
moment it is known, and any later attempt for the same fingerprint resumes that id instead of
paying again. Each in-flight row carries a lease (owner + heartbeat): a row whose owner stopped
heart-beating is an orphan, which the next attempt at the shot takes over and resumes by id.
The decisions are pure functions (`decisions.py`); the rows live behind `storage.LedgerStore`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from hailuo_pipeline.catalog.decisions import (
    PAYS,
    ClaimKind,
    ClaimOptions,
    Decision,
    SameInputs,
    budget_refusal,
    is_dead_reservation,
    is_orphan,
    judge,
    next_take,
    room_at_fal,
)
from hailuo_pipeline.catalog.rows import (
    ACTIVE,
    AT_FAL,
    Budget,
    NewRequest,
    RequestRow,
    Status,
    VideoRow,
)
from hailuo_pipeline.catalog.settlements import LedgerSettlements
from hailuo_pipeline.catalog.storage import LedgerTransaction
from hailuo_pipeline.catalog.transitions import one_row
from hailuo_pipeline.errors import HailuoError


class BudgetExceededError(HailuoError, RuntimeError):
    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit  # "daily" or "total"


class NoPriceError(HailuoError, RuntimeError):
    pass


@dataclass(frozen=True)
class Claim:
    kind: ClaimKind
    row: RequestRow | None = None
    video: VideoRow | None = None


class RequestLedger(LedgerSettlements):
    """Decisions, leases and reads; the status transitions come from `LedgerTransitions`, the settlements with
    fal's records from `LedgerSettlements`."""

    # -- decisions -------------------------------------------------------------------------
    def claim(
        self,
        request: NewRequest,
        budget: Budget,
        options: ClaimOptions | None = None,
        max_in_flight: int | None = None,
    ) -> Claim:
        """Decide, atomically, what this attempt at a shot may do. With `max_in_flight`, a new request is
        reserved only while fewer than that many requests of any run or process are at fal."""
        options = options or ClaimOptions()
        with self.store.transaction(decides=True) as t:
            while True:
                decision = judge(
                    t.requests(shot_id=request.shot_id),
                    same_inputs=lambda row: row.fingerprint == request.fingerprint,
                    me=request.owner,
                    run_id=request.run_id,
                    now=t.now(),
                    lease_seconds=self.lease_seconds,
                    options=options,
                    alive=self.alive,
                )
                if decision.expire is None:
                    break
                self._expire_reservation(t, decision.expire)
            row = decision.row
            if decision.kind is ClaimKind.RESUME:
                assert row is not None
                return Claim(ClaimKind.RESUME, self._take_lease(t, row, request.owner))
            if decision.kind is ClaimKind.REUSE:
                assert row is not None
                video = t.video(request_key=row.request_key)
                if video is None:  # recorded as succeeded but its video row is gone: fetch it again
                    return Claim(ClaimKind.RESUME, self._take_lease(t, row, request.owner))
                return Claim(ClaimKind.REUSE, row, video)
            if decision.kind not in PAYS:
                return Claim(decision.kind, row)
            if max_in_flight is not None and not room_at_fal(
                t.requests(statuses=AT_FAL), max_in_flight, t.now(), self.lease_seconds, self.alive
            ):
                return Claim(ClaimKind.FULL, row)
            ambiguous_before = row is not None and row.status is Status.AMBIGUOUS
            return Claim(ClaimKind.SUBMIT, self._reserve(t, request, budget, ambiguous_before))

    def take_over_orphans(self, shot_id: str, owner: str) -> list[RequestRow]:
        """The shot's requests that fal has and nobody follows, now leased to `owner`, oldest first; a
        dead submitter's reservation is recorded ambiguous on the way (fal may have a job we cannot see)."""
        taken: list[RequestRow] = []
        with self.store.transaction(decides=True) as t:
            now = t.now()
            for row in t.requests(shot_id=shot_id, statuses=ACTIVE):
                if is_dead_reservation(row, now, self.lease_seconds, self.alive):
                    self._expire_reservation(t, row)
                elif is_orphan(row, now, self.lease_seconds, self.alive):
                    taken.append(self._take_lease(t, row, owner))
        return taken[::-1]

    def _take_lease(self, t: LedgerTransaction, row: RequestRow, owner: str) -> RequestRow:
        """Lease `row` to `owner`. Taking over someone else's row counts as a resume attempt."""
        values = {"owner": owner, "heartbeat_at": t.now()}
        if row.owner == owner:
            t.update_request(row.request_key, values)
        else:
            values["attempts"] = row.attempts + 1
            self._change(t, row, values, f"resumed by {owner} (was {row.owner or 'released'})")
        return one_row(t, row.request_key)

    def record_dead_reservations(self) -> list[RequestRow]:
        """Reservations whose submitter stopped before fal's answer was recorded, recorded ambiguous now, as a
        claim or a take-over of their shot would: the ledger and its reports then say what planning says,
        also for shots no run attempts. Returns them."""
        with self.store.transaction(decides=True) as t:
            now = t.now()
            dead = [
                row
                for row in t.requests(statuses=[Status.RESERVED])
                if is_dead_reservation(row, now, self.lease_seconds, self.alive)
            ]
            for row in dead:
                self._expire_reservation(t, row)
        return dead

    def _expire_reservation(self, t: LedgerTransaction, row: RequestRow) -> None:
        self._transition(
            t,
            row,
            Status.AMBIGUOUS,
            "the process that was submitting stopped before fal's answer was recorded",
            possible_double_charge=True,
        )

    def price_for(self, t: LedgerTransaction, endpoint: str, duration: int) -> tuple[str, Decimal]:
        found = t.price(endpoint, duration, t.now())
        if found is None:
            raise NoPriceError(
                f"no price in the catalog's prices table for {endpoint} at {duration} s; add a row to prices"
            )
        return found

    def prices(self, endpoint: str, durations: set[int]) -> dict[int, Decimal]:
        with self.store.transaction(read_only=True) as t:
            return {d: self.price_for(t, endpoint, d)[1] for d in durations}

    def _reserve(self, t: LedgerTransaction, request: NewRequest, budget: Budget, double_charge: bool) -> RequestRow:
        price_id, price = self.price_for(t, request.endpoint, request.duration_seconds)
        now = t.now()
        total, today = t.committed_usd(now.date())
        refusal = budget_refusal(budget, total, today, price)
        if refusal is not None:
            raise BudgetExceededError(refusal, "total" if refusal.startswith("the total") else "daily")
        key = uuid.uuid4().hex
        t.insert_request(
            {
                "request_key": key,
                "shot_id": request.shot_id,
                "take": next_take(t.requests(shot_id=request.shot_id)),
                "fingerprint": request.fingerprint,
                "endpoint": request.endpoint,
                "arguments_json": request.arguments,
                "duration_seconds": request.duration_seconds,
                "status": Status.RESERVED,
                "run_id": request.run_id,
                "partition_key": request.partition_key,
                "owner": request.owner,
                "arguments_sha256": request.arguments_sha256,
                "heartbeat_at": now,
                "created_at": now,
                "price_id": price_id,
                "price_usd": price,
                "reserved_usd": price,
                "possible_double_charge": double_charge,
            }
        )
        self._event(t, key, Status.RESERVED, f"reserved ${price} ({price_id})")
        return one_row(t, key)

    # -- leases ----------------------------------------------------------------------------
    def heartbeat(self, request_keys: list[str], owner: str) -> None:
        """Renew `owner`'s leases on these rows; a row another process has taken over stays theirs."""
        if request_keys:
            with self.store.transaction() as t:
                t.renew_leases(request_keys, owner, t.now())

    def release(self, owner: str) -> None:
        """Give up `owner`'s leases at once (a run ending, cleanly or not): its unfinished requests are
        orphans from now on, for the next attempt to resume without waiting out the lease."""
        with self.store.transaction() as t:
            t.release_leases(owner, ACTIVE)

    # -- reads -----------------------------------------------------------------------------
    def check_reachable(self) -> None:
        """One read: raises the store's error (e.g. CatalogUnavailableError) before any work starts."""
        with self.store.transaction(read_only=True) as t:
            t.now()

    def get(self, request_key: str) -> RequestRow:
        with self.store.transaction(read_only=True) as t:
            return one_row(t, request_key)

    def judge_shots(self, same_inputs: Mapping[str, SameInputs], options: ClaimOptions) -> dict[str, Decision]:
        """What a run with `options` may do for each of these shots (shot -> which of its rows carry the shot's
        inputs now): the judge the claim asks, over the rows it depends on, read in one query."""
        with self.store.transaction(read_only=True) as t:
            rows = t.standing_rows()
            now = t.now()
        by_shot: dict[str, list[RequestRow]] = {}
        for row in rows:
            by_shot.setdefault(row.shot_id, []).append(row)
        return {
            shot: judge(
                by_shot.get(shot, []),
                same_inputs=same,
                now=now,
                lease_seconds=self.lease_seconds,
                options=options,
                alive=self.alive,
            )
            for shot, same in same_inputs.items()
        }

    def requested_shots(self) -> set[str]:
        """The shots the ledger has any request for."""
        with self.store.transaction(read_only=True) as t:
            return t.requested_shots()

    def shots_in_flight(self) -> set[str]:
        """The shots with a request fal may still have or be finishing (only in-flight rows are read)."""
        with self.store.transaction(read_only=True) as t:
            return {row.shot_id for row in t.requests(statuses=ACTIVE)}

    def orphans(self) -> list[RequestRow]:
        """Requests fal has that no live process follows, oldest first (only in-flight rows are read)."""
        with self.store.transaction(read_only=True) as t:
            rows = t.requests(statuses=ACTIVE)
            now = t.now()
        return [r for r in reversed(rows) if is_orphan(r, now, self.lease_seconds, self.alive)]

    def lost_since(self, since: datetime) -> list[RequestRow]:
        with self.store.transaction(read_only=True) as t:
            return t.requests(statuses=[Status.LOST], completed_since=since)

    def committed_usd(self) -> tuple[Decimal, Decimal]:
        """Spent plus reserved, in all and on the current UTC day: what the budgets are measured against."""
        with self.store.transaction(read_only=True) as t:
            return t.committed_usd(t.now().date())

    def committed_today_usd(self) -> Decimal:
        """Spent plus reserved on the current UTC day: what the daily budget is measured against."""
        with self.store.transaction(read_only=True) as t:
            return t.committed_usd(t.now().date())[1]

    def result_of(self, request_key: str) -> dict[str, Any] | None:
        with self.store.transaction(read_only=True) as t:
            return t.result(request_key)
