"""What may be paid for: pure functions over ledger rows, no database and no clock of their own.

The ledger fetches the rows, calls these, and applies the answer in the same transaction, so every
decision can be unit-tested as a table of rows in and a decision out.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from hailuo_pipeline.catalog.rows import ACTIVE, PAID, Budget, RequestRow, Status
from hailuo_pipeline.processes import pid_alive

LEASE_SECONDS = 45.0  # an owner that stopped heart-beating this long ago no longer follows its request
HEARTBEAT_SECONDS = 5.0  # how often a process renews its leases (more often when the lease is short)


def heartbeat_seconds(lease_seconds: float) -> float:
    return min(HEARTBEAT_SECONDS, lease_seconds / 3)


class ClaimKind(StrEnum):
    """The one answer to "may this shot be paid for?", for the planner, the sensors, the sweep and the claim."""

    REUSE = "reuse"  # a verified video of these inputs exists: no request at all
    RESUME = "resume"  # a request fal has (or is being sent) that nobody else follows: follow it by id
    WAIT = "wait"  # another live process is submitting or following this shot's request right now
    AMBIGUOUS = "ambiguous"  # an earlier submit never answered: fal may have a job; a person decides
    REFUSED = "refused"  # fal refused these very inputs for good; a person changes them or insists
    LOST = "lost"  # fal billed a video of these inputs that could not be fetched; paid again only when asked
    REMAKE = "remake"  # edited since its video was made: a new video is paid when the shot is asked for by name
    SUBMIT = "submit"  # pay for a new request
    FULL = "full"  # (the claim only) the limit of requests at fal is reached: wait for room, then ask again


PAYS = (ClaimKind.SUBMIT, ClaimKind.REMAKE)  # the kinds for which the claim reserves money


@dataclass(frozen=True)
class ClaimOptions:
    new_take: bool = False  # pay for another video even where one exists (once per run)
    resubmit_ambiguous: bool = False
    retry_refused: bool = False
    repay_lost: bool = False  # the only way a shot whose paid video was lost is paid for again
    retake_rejected: bool = False  # pay for one new take of a shot whose latest take was rejected (once per run)


@dataclass(frozen=True)
class Decision:
    kind: ClaimKind
    row: RequestRow | None = None  # the row that decided it
    expire: RequestRow | None = None  # a dead submitter's reservation, to be recorded ambiguous first


OwnerAlive = Callable[[str], bool | None]
SameInputs = Callable[[RequestRow], bool]


def host_name() -> str:
    """This worker's name in lease owners: HAILUO_HOST_NAME (a pod's name), else the machine's host name."""
    return os.environ.get("HAILUO_HOST_NAME", "").strip() or socket.gethostname()


def owner_alive(owner: str) -> bool | None:
    """Owners are 'host:pid:nonce'. On this host a dead pid is known dead at once (a killed run need not
    wait out its lease); on another host nobody can tell (None), so the lease decides."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != host_name() or not pid.isdigit():
        return None
    return pid_alive(int(pid))


def lease_live(row: RequestRow, now: datetime, lease_seconds: float, alive: OwnerAlive = owner_alive) -> bool:
    """Is a live process looking after this row? Released rows (no owner) and silent owners are not."""
    if row.owner is None:
        return False
    if now - (row.heartbeat_at or row.created_at) > timedelta(seconds=lease_seconds):
        return False
    return alive(row.owner) is not False


def last_heard_seconds(row: RequestRow, now: datetime) -> float:
    return max(0.0, (now - (row.heartbeat_at or row.created_at)).total_seconds())


def is_silent(row: RequestRow, now: datetime, heartbeat_seconds: float) -> bool:
    """A lease whose owner has missed two heartbeats: most likely dead, on a host we cannot look into."""
    return last_heard_seconds(row, now) > 2 * heartbeat_seconds


def describe_lease(row: RequestRow, now: datetime, lease_seconds: float) -> str:
    """A lease as it is: whose, until when, and when its owner was last heard from."""
    until = (row.heartbeat_at or row.created_at) + timedelta(seconds=lease_seconds)
    return f"leased to {row.owner} until {until:%H:%M:%S} UTC (last heard {last_heard_seconds(row, now):.0f} s ago)"


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


def judge(
    rows: Sequence[RequestRow],
    *,
    same_inputs: SameInputs,
    now: datetime,
    lease_seconds: float,
    options: ClaimOptions,
    me: str | None = None,
    run_id: str | None = None,
    alive: OwnerAlive = owner_alive,
) -> Decision:
    """What an attempt at one shot may do, given the shot's rows, newest first, and which of them were sent
    with the inputs the shot has now. The one judge of money: the planner, the sensors, the sweep, the orphan
    path and the step's claim all ask it; nothing else looks at a row's status to decide.

    Work under way comes first (it may be paid already), then a video of these inputs, then what the latest
    attempt at these inputs says: an ambiguous submit, a refusal or a lost video is paid again only when its
    option says so."""
    expire = None
    while (active := next((r for r in rows if r.status in ACTIVE), None)) is not None:
        if active.owner != me and lease_live(active, now, lease_seconds, alive):
            return Decision(ClaimKind.WAIT, active, expire)
        if active.request_id is not None or active.status is not Status.RESERVED:
            return Decision(ClaimKind.RESUME, active, expire)
        # a dead submitter's reservation is ambiguous (fal may have a job); the claim records it so first
        expire = expire or active
        rows = [replace(r, status=Status.AMBIGUOUS) if r is active else r for r in rows]
    decided = _judge_settled(rows, same_inputs, options, run_id)
    return replace(decided, expire=expire)


def _judge_settled(
    rows: Sequence[RequestRow], same_inputs: SameInputs, options: ClaimOptions, run_id: str | None
) -> Decision:
    """The judge, for a shot with nothing in flight."""
    same = [r for r in rows if same_inputs(r)]
    paid_in_this_run = any(r.run_id == run_id for r in same if run_id is not None)
    delivered = next((r for r in same if r.status is Status.SUCCEEDED), None)
    retake = options.retake_rejected and delivered is not None and delivered.verdict == "reject"
    if delivered is not None and not ((options.new_take or retake) and not paid_in_this_run):
        return Decision(ClaimKind.REUSE, delivered)
    latest = same[0] if same else None
    if latest is None:
        older_video = next((r for r in rows if r.status is Status.SUCCEEDED), None)
        if older_video is not None and not options.new_take:
            return Decision(ClaimKind.REMAKE, older_video)
        return Decision(ClaimKind.SUBMIT, rows[0] if rows else None)
    if latest.status is Status.AMBIGUOUS and not options.resubmit_ambiguous:
        return Decision(ClaimKind.AMBIGUOUS, latest)
    if latest.status is Status.FAILED and latest.permanent_failure and not options.retry_refused:
        return Decision(ClaimKind.REFUSED, latest)
    if latest.status is Status.LOST and not options.repay_lost:
        return Decision(ClaimKind.LOST, latest)
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
