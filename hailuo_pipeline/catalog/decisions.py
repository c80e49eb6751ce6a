"""What may be paid for: pure functions over ledger rows, no database and no clock of their own.

The ledger fetches the rows, calls these, and applies the answer in the same transaction, so every
decision can be unit-tested as a table of rows in and a decision out.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from hailuo_pipeline.catalog.rows import ACTIVE, PAID, Budget, RequestRow, Status
from hailuo_pipeline.processes import pid_alive

LEASE_SECONDS = 45.0  # an owner that stopped heart-beating this long ago no longer follows its request


class ClaimKind(StrEnum):
    REUSE = "reuse"  # a verified video exists: no request at all
    RESUME = "resume"  # a request we already paid for (or are paying for): follow it by id
    WAIT = "wait"  # another live process is submitting or following this very fingerprint right now
    AMBIGUOUS = "ambiguous"  # an earlier submit never answered; a person decides
    REFUSED = "refused"  # fal refused these very inputs for good; a person changes them or insists
    SUBMIT = "submit"  # a fresh row is reserved: go and submit
    FULL = "full"  # the limit of requests at fal is reached: wait for room, then ask again


@dataclass(frozen=True)
class ClaimOptions:
    new_take: bool = False  # pay for another video even where one exists (once per run)
    resubmit_ambiguous: bool = False
    retry_refused: bool = False


@dataclass(frozen=True)
class Decision:
    kind: ClaimKind
    row: RequestRow | None = None
    expire: RequestRow | None = None  # a dead submitter's reservation, to be recorded ambiguous first


OwnerAlive = Callable[[str], bool | None]


def owner_alive(owner: str) -> bool | None:
    """Owners are 'host:pid:nonce'. On this host a dead pid is known dead at once (a killed run need not
    wait out its lease); on another host nobody can tell (None), so the lease decides."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return None
    return pid_alive(int(pid))


def lease_live(row: RequestRow, now: datetime, lease_seconds: float, alive: OwnerAlive = owner_alive) -> bool:
    """Is a live process looking after this row? Released rows (no owner) and silent owners are not."""
    if row.owner is None:
        return False
    if now - (row.heartbeat_at or row.created_at) > timedelta(seconds=lease_seconds):
        return False
    return alive(row.owner) is not False


def lease_expires_in(row: RequestRow, now: datetime, lease_seconds: float) -> float:
    beat = row.heartbeat_at or row.created_at
    return max(0.0, lease_seconds - (now - beat).total_seconds())


def is_orphan(row: RequestRow, now: datetime, lease_seconds: float, alive: OwnerAlive = owner_alive) -> bool:
    """A request fal knows (it has an id, or a stored result) that no live process follows."""
    return (
        row.status in ACTIVE
        and (row.request_id is not None or row.status is not Status.RESERVED)
        and not lease_live(row, now, lease_seconds, alive)
    )


def is_dead_reservation(row: RequestRow, now: datetime, lease_seconds: float, alive: OwnerAlive = owner_alive) -> bool:
    """A reservation whose submitter stopped before fal's answer was recorded: fal may have a job."""
    return row.status is Status.RESERVED and row.request_id is None and not lease_live(row, now, lease_seconds, alive)


def decide_claim(
    rows: Sequence[RequestRow],
    *,
    me: str,
    run_id: str | None,
    now: datetime,
    lease_seconds: float,
    options: ClaimOptions,
    alive: OwnerAlive = owner_alive,
) -> Decision:
    """What an attempt at one fingerprint may do, given that fingerprint's rows, newest take first."""
    latest = rows[0] if rows else None
    if latest is not None and latest.status in ACTIVE:
        if latest.owner != me and lease_live(latest, now, lease_seconds, alive):
            return Decision(ClaimKind.WAIT, latest)
        if latest.request_id is not None or latest.status is not Status.RESERVED:
            return Decision(ClaimKind.RESUME, latest)
        return Decision(ClaimKind.AMBIGUOUS, latest, expire=latest)
    new_take_here = options.new_take and not any(r.run_id == run_id for r in rows if run_id is not None)
    if latest is not None and latest.status is Status.SUCCEEDED and not new_take_here:
        return Decision(ClaimKind.REUSE, latest)
    if latest is not None and latest.status is Status.AMBIGUOUS and not options.resubmit_ambiguous:
        return Decision(ClaimKind.AMBIGUOUS, latest)
    refused = latest is not None and latest.status is Status.FAILED and latest.permanent_failure
    if refused and not options.retry_refused:
        return Decision(ClaimKind.REFUSED, latest)
    return Decision(ClaimKind.SUBMIT, latest)


def room_at_fal(
    at_fal: Sequence[RequestRow], limit: int, now: datetime, lease_seconds: float, alive: OwnerAlive = owner_alive
) -> bool:
    """May one more request go to fal under a limit on requests queued or running there (a fal account's
    concurrency limit)? Requests nobody follows any more are not counted: their owner stopped, and counting
    them would hold the limit until someone resumes them."""
    return sum(1 for row in at_fal if lease_live(row, now, lease_seconds, alive)) < limit


def next_take(rows_of_shot: Sequence[RequestRow]) -> int:
    """Takes number the shot's paid videos: attempts that failed, were cancelled or never answered do not
    use one up, so the first video after a failed attempt is still take 1."""
    return 1 + sum(1 for r in rows_of_shot if r.status in PAID)


def budget_refusal(budget: Budget, committed_total: Decimal, committed_today: Decimal, price: Decimal) -> str | None:
    """Why reserving `price` would break a budget (spent plus reserved), or None."""
    if budget.total_usd is not None and committed_total + price > budget.total_usd:
        return (
            f"the total budget ${budget.total_usd:.2f} would be exceeded (${committed_total:.2f} spent or "
            f"reserved, this video costs ${price:.2f})"
        )
    if budget.daily_usd is not None and committed_today + price > budget.daily_usd:
        return (
            f"the daily budget ${budget.daily_usd:.2f} would be exceeded (${committed_today:.2f} spent or "
            f"reserved today UTC, this video costs ${price:.2f})"
        )
    return None


class ShotState(StrEnum):
    """Where a shot stands, for planning runs and for telling the user."""

    TO_DO = "to_do"  # never tried, or its last attempt failed in a way another attempt may fix
    IN_FLIGHT = "in_flight"  # a live process follows its request
    ORPHANED = "orphaned"  # fal has (or had) its paid request, and nobody follows it: resume by id
    AMBIGUOUS = "ambiguous"  # a submit never answered: fal may have a job; a person decides
    REFUSED = "refused"  # fal refused these inputs for good
    LOST = "lost"  # paid, but the result could not be fetched any more
    DELIVERED = "delivered"


@dataclass(frozen=True)
class ShotStanding:
    state: ShotState
    row: RequestRow | None = None  # the row that decides the state


def shot_standing(
    rows_of_shot: Sequence[RequestRow], now: datetime, lease_seconds: float, alive: OwnerAlive = owner_alive
) -> ShotStanding:
    """One shot's standing from all its rows, newest first. Work under way comes first (it may be paid),
    then what needs a person, then what is done."""
    for row in rows_of_shot:
        if row.status in ACTIVE:
            if is_orphan(row, now, lease_seconds, alive):
                return ShotStanding(ShotState.ORPHANED, row)
            if is_dead_reservation(row, now, lease_seconds, alive):
                return ShotStanding(ShotState.AMBIGUOUS, row)
            return ShotStanding(ShotState.IN_FLIGHT, row)
    latest = rows_of_shot[0] if rows_of_shot else None
    if latest is not None and latest.status is Status.AMBIGUOUS:
        return ShotStanding(ShotState.AMBIGUOUS, latest)
    delivered = next((r for r in rows_of_shot if r.status is Status.SUCCEEDED), None)
    if delivered is not None:
        return ShotStanding(ShotState.DELIVERED, delivered)
    if latest is not None and latest.status is Status.FAILED and latest.permanent_failure:
        return ShotStanding(ShotState.REFUSED, latest)
    if latest is not None and latest.status is Status.LOST:
        return ShotStanding(ShotState.LOST, latest)
    return ShotStanding(ShotState.TO_DO, latest)
