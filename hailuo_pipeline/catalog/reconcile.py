"""Reconciling the ledger with what fal billed, one UTC day at a time. A request belongs to the day fal finished
it (fal's usage buckets by billing, not by submit): the ledger keeps that moment (`billed_at`, from fal's request
history; until known, when the ledger saw it complete). The comparison is a pure function over the day's
figures; `audit_day` fetches them, stores fal's usage in the catalog and explains a difference request by
request: what fal billed that the ledger does not hold, and what the ledger booked that fal did not bill."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from hailuo_pipeline.catalog.storage import CatalogDatabase
from hailuo_pipeline.fal.platform import HistoryItem, PlatformClient

CENT = Decimal("0.01")


@dataclass(frozen=True)
class DayReconciliation:
    day: date
    fal_usd: Decimal  # what fal billed for the endpoint that day
    ledger_usd: Decimal  # what the ledger booked as paid that day
    billed_not_booked: tuple[str, ...] = ()  # fal request ids fal billed that no ledger row holds as paid
    booked_not_billed: tuple[str, ...] = ()  # ledger requests (fal ids) fal did not bill that day

    @property
    def difference(self) -> Decimal:
        return self.fal_usd - self.ledger_usd

    @property
    def agrees(self) -> bool:
        """To the cent, as an invoice is read."""
        return abs(self.difference) < CENT

    def said(self) -> str:
        head = f"{self.day}: fal billed ${self.fal_usd:.2f}, the ledger booked ${self.ledger_usd:.2f}"
        if self.agrees:
            return f"{head}: they agree"
        parts = [f"{head}: a difference of ${self.difference:+.2f}"]
        if self.billed_not_booked:
            parts.append(f"fal billed {len(self.billed_not_booked)} request(s) the ledger does not hold: "
                         f"{_ids(self.billed_not_booked)}")  # fmt: skip
        if self.booked_not_billed:
            parts.append(f"the ledger booked {len(self.booked_not_billed)} request(s) fal did not bill that day: "
                         f"{_ids(self.booked_not_billed)}")  # fmt: skip
        if not self.billed_not_booked and not self.booked_not_billed:
            parts.append("every request agrees, so the price differs (see `hailuo report` and the prices table)")
        return "; ".join(parts)


def compare_day(
    day: date, fal_usd: Decimal, booked: Mapping[str, Decimal], billed: Mapping[str, object]
) -> DayReconciliation:
    """fal's figure against the ledger's for one day; `booked` the ledger's paid requests of the day (fal id ->
    cost), `billed` the requests fal's history says it finished successfully that day (fal id -> anything)."""
    ledger_usd = sum(booked.values(), Decimal(0))
    return DayReconciliation(
        day,
        fal_usd,
        ledger_usd,
        tuple(sorted(set(billed) - set(booked))),
        tuple(sorted(set(booked) - set(billed))),
    )


def audit_day(catalog: CatalogDatabase, platform: PlatformClient, endpoint_id: str, day: date) -> DayReconciliation:
    """Fetch fal's usage for `day` (stored in `fal_usage`) and its request history around it (each billed
    request's end time stored as `billed_at`), then compare. Raises PlatformError (AdminKeyMissing without an
    admin key) before anything is stored when fal cannot be read."""
    start = datetime.combine(day, datetime.min.time())
    end = start + timedelta(days=1)
    lines = [line for line in platform.usage(start, end, endpoint_id) if line.endpoint_id == endpoint_id]
    lines = [line for line in lines if line.bucket.date() == day]
    history = platform.requests(endpoint_id, start - timedelta(days=1), end)
    billed = _finished_on(history, day)
    with catalog.transaction() as t:
        fal_usd = sum((line.cost for line in lines), Decimal(0))
        line = None
        if lines:
            line = {
                "unit": lines[0].unit,
                "quantity": sum((x.quantity for x in lines), Decimal(0)),
                "unit_price": lines[0].unit_price,
                "cost_usd": fal_usd,
                "currency": lines[0].currency,
            }
        t.store_usage(day, endpoint_id, line, t.now())
        t.set_billed_at({item.request_id: item.ended_at for item in history if item.ended_at is not None})
        booked = {request_id: cost for request_id, (_, cost) in t.booked_on(day).items()}
    return compare_day(day, fal_usd, booked, billed)


def _finished_on(history: list[HistoryItem], day: date) -> dict[str, HistoryItem]:
    return {i.request_id: i for i in history if i.succeeded and i.ended_at is not None and i.ended_at.date() == day}


def _ids(ids: tuple[str, ...], most: int = 10) -> str:
    return ", ".join(ids[:most]) + (f" and {len(ids) - most} more" if len(ids) > most else "")
