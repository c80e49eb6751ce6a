"""Audits of the catalog: recorded videos against their requests, charges against the price table."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from hailuo_pipeline.catalog.duckdb_ledger import PRICE_IN_EFFECT
from hailuo_pipeline.catalog.rows import PAID, Status
from hailuo_pipeline.catalog.store import Catalog


@dataclass(frozen=True)
class RecordedVideo:
    shot_id: str
    request_id: str
    path: str
    bytes: int
    requested_seconds: int


@dataclass(frozen=True)
class OffPriceCharge:
    shot_id: str
    request_key: str
    status: str
    cost_usd: Decimal
    price_usd: Decimal | None


def recorded_videos(catalog: Catalog, run_id: str | None = None) -> list[RecordedVideo]:
    """The videos recorded by `run_id`'s requests; every video when `run_id` is None."""
    scope, params = ("WHERE r.run_id = ?", [run_id]) if run_id is not None else ("", [])
    with catalog.connect(read_only=True) as conn:
        rows = conn.execute(
            "SELECT v.shot_id, v.request_id, v.path, v.bytes, r.duration_seconds FROM videos v "
            f"JOIN requests r USING (request_key) {scope} ORDER BY v.recorded_at",
            params,
        ).fetchall()
    return [RecordedVideo(*row) for row in rows]


def charges_off_price(catalog: Catalog) -> tuple[int, list[OffPriceCharge]]:
    """How many requests were checked, and those charged other than the price in effect on their day
    (paid ones), or charged at all (failed and cancelled ones)."""
    in_effect = (
        "(SELECT usd "
        + PRICE_IN_EFFECT.format(endpoint="r.endpoint", duration="r.duration_seconds", day="CAST(r.created_at AS DATE)")
        + ")"
    )
    with catalog.connect(read_only=True) as conn:
        found = conn.execute(
            f"""
            WITH expected AS (
                SELECT r.shot_id, r.request_key, r.status, r.cost_usd, {in_effect} AS price FROM requests r
            )
            SELECT shot_id, request_key, status, cost_usd, price FROM expected
            WHERE (list_contains($paid, status) AND cost_usd IS DISTINCT FROM price)
               OR (list_contains($free, status) AND cost_usd <> 0)
            """,
            {"paid": [s.value for s in PAID], "free": [Status.FAILED.value, Status.CANCELLED.value]},
        ).fetchall()
        checked = conn.execute("SELECT count(*) FROM requests").fetchone()
    return (checked[0] if checked else 0), [OffPriceCharge(*row) for row in found]
