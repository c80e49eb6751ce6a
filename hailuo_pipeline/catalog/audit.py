"""Audits of the catalog: recorded videos against their requests, charges against the price table."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from hailuo_pipeline.catalog.rows import PAID, Status
from hailuo_pipeline.catalog.sql_ledger import PRICE_IN_EFFECT
from hailuo_pipeline.catalog.storage import CatalogDatabase
from hailuo_pipeline.video.probe import VideoProbe


@dataclass(frozen=True)
class RecordedVideo:
    shot_id: str
    request_id: str
    path: str
    bytes: int
    requested_seconds: int
    width: int
    height: int
    fps: float
    frames: int
    duration_seconds: float

    @property
    def measured(self) -> VideoProbe:
        """What decoding the file measured when it was delivered (before it was stored)."""
        return VideoProbe(self.width, self.height, self.fps, self.frames, self.duration_seconds, "")


@dataclass(frozen=True)
class OffPriceCharge:
    shot_id: str
    request_key: str
    status: str
    cost_usd: Decimal
    price_usd: Decimal | None


def recorded_videos(catalog: CatalogDatabase, run_id: str | None = None) -> list[RecordedVideo]:
    """The videos recorded by `run_id`'s requests; every video when `run_id` is None."""
    scope, params = ("WHERE r.run_id = ?", [run_id]) if run_id is not None else ("", [])
    rows = catalog.rows(
        "SELECT v.shot_id, v.request_id, v.path, v.bytes, r.duration_seconds, v.width, v.height, v.fps, v.frames, "
        "v.duration_seconds FROM videos v "
        f"JOIN requests r ON r.request_key = v.request_key {scope} ORDER BY v.recorded_at",
        params,
    )
    return [RecordedVideo(*row) for row in rows]


def charges_off_price(catalog: CatalogDatabase) -> tuple[int, list[OffPriceCharge]]:
    """How many requests were checked, and those charged other than the price they were reserved at (the price
    row they name; without one, the price in effect when they were created) for paid ones, or charged at all
    for failed and cancelled ones."""
    in_effect = (
        "coalesce((SELECT p.usd FROM prices p WHERE p.price_id = r.price_id), (SELECT usd "
        + PRICE_IN_EFFECT.format(endpoint="r.endpoint", duration="r.duration_seconds", at="r.created_at")
        + "))"
    )
    found = catalog.rows(
        f"""
        WITH expected AS (
            SELECT r.shot_id, r.request_key, r.status, r.cost_usd, {in_effect} AS price FROM requests r
        )
        SELECT shot_id, request_key, status, cost_usd, price FROM expected
        WHERE (status = ANY(?) AND cost_usd IS DISTINCT FROM price) OR (status = ANY(?) AND cost_usd <> 0)
        """,
        [[s.value for s in PAID], [Status.FAILED.value, Status.CANCELLED.value]],
    )
    ((checked,),) = catalog.rows("SELECT count(*) FROM requests")
    return int(checked), [OffPriceCharge(*row) for row in found]
