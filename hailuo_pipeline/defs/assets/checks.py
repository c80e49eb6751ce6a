"""Asset checks on hailuo_video: what was delivered is what was paid for, at the published price.

They are check specs of the step that makes the videos (assets/video.py), which evaluates them once its
shots are done; selected on their own (the UI's "Execute checks"), they cover the whole catalog."""

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MetadataValue

from hailuo_pipeline.catalog.rows import utcnow
from hailuo_pipeline.defs.resources import CatalogResource
from hailuo_pipeline.video.probe import VideoProbeError, probe_video, problems_with

MAX_LISTED = 20
LOST_WINDOW_DAYS = 7


VIDEOS_MATCH_REQUESTS = AssetCheckSpec(
    "videos_match_requests",
    asset="hailuo_video",
    description="The videos recorded by this run (all videos, when the check runs on its own) play and "
    "match their requests (length, 768p)",
)
COSTS_MATCH_PRICE_TABLE = AssetCheckSpec(
    "costs_match_price_table",
    asset="hailuo_video",
    description="Every charge equals the price table in effect when it was submitted",
)
NO_PAID_VIDEO_LOST = AssetCheckSpec(
    "no_paid_video_lost",
    asset="hailuo_video",
    description=f"No request paid for in the last {LOST_WINDOW_DAYS} days lost its video (its result expired or "
    "vanished at fal before it was delivered); `hailuo report` keeps the all-time figure",
)
VIDEO_CHECKS = [VIDEOS_MATCH_REQUESTS, COSTS_MATCH_PRICE_TABLE, NO_PAID_VIDEO_LOST]


def videos_match_requests(catalog: CatalogResource, run_id: str | None = None) -> AssetCheckResult:
    """The videos recorded by `run_id` (every video when None or when that run recorded none)."""
    with catalog.get_connection() as conn:
        in_run = conn.execute(
            "SELECT count(*) FROM requests r JOIN videos v USING (request_key) WHERE r.run_id = ?", [run_id]
        ).fetchone()
        scope = "WHERE r.run_id = ?" if run_id and in_run and in_run[0] else ""
        rows = conn.execute(
            "SELECT v.shot_id, v.request_id, v.path, v.bytes, r.duration_seconds FROM videos v "
            f"JOIN requests r USING (request_key) {scope} ORDER BY v.recorded_at",
            [run_id] if scope else [],
        ).fetchall()
    problems: list[str] = []
    for shot_id, request_id, path, size, requested in rows:
        file = Path(path)
        if not file.is_file() or file.stat().st_size != size:
            problems.append(f"{shot_id} ({request_id}): {path} is missing or not {size} bytes")
            continue
        try:
            found = problems_with(probe_video(file), requested)
        except VideoProbeError as exc:
            found = [str(exc)]
        problems.extend(f"{shot_id} ({request_id}): {p}" for p in found)
    return AssetCheckResult(
        asset_key=VIDEOS_MATCH_REQUESTS.asset_key,
        check_name=VIDEOS_MATCH_REQUESTS.name,
        passed=not problems,
        severity=AssetCheckSeverity.ERROR,
        metadata={"videos_checked": len(rows), "problems": len(problems), "first_problems": problems[:MAX_LISTED]},
    )


def costs_match_price_table(catalog: CatalogResource) -> AssetCheckResult:
    with catalog.get_connection() as conn:
        mismatches = conn.execute(
            """
            WITH expected AS (
                SELECT r.request_key, r.shot_id, r.status, r.cost_usd,
                       (SELECT p.usd FROM prices p WHERE p.endpoint = r.endpoint
                          AND p.duration_seconds = r.duration_seconds
                          AND p.effective_from <= CAST(r.created_at AS DATE)
                        ORDER BY p.effective_from DESC LIMIT 1) AS price
                FROM requests r
            )
            SELECT shot_id, request_key, status, cost_usd, price FROM expected
            WHERE (status IN ('completed', 'succeeded') AND cost_usd IS DISTINCT FROM price)
               OR (status IN ('failed', 'cancelled') AND cost_usd <> 0)
            """
        ).fetchall()
        checked = conn.execute("SELECT count(*) FROM requests").fetchone()
    listed = [f"{s} ({k}, {st}): charged {c}, price {p}" for s, k, st, c, p in mismatches[:MAX_LISTED]]
    return AssetCheckResult(
        asset_key=COSTS_MATCH_PRICE_TABLE.asset_key,
        check_name=COSTS_MATCH_PRICE_TABLE.name,
        passed=not mismatches,
        metadata={"requests_checked": checked[0] if checked else 0, "mismatches": len(mismatches), "first": listed},
    )


def no_paid_video_lost(catalog: CatalogResource) -> AssetCheckResult:
    now = utcnow()
    lost = catalog.ledger().lost_since(now - timedelta(days=LOST_WINDOW_DAYS))
    listed = [
        f"{r.shot_id} (request {r.request_id}, ${r.cost_usd:.2f}, lost {_age(now - (r.completed_at or now))} ago): "
        f"{r.error_message}"
        for r in lost[:MAX_LISTED]
    ]
    metadata: dict = {"lost_requests": len(lost), "lost_usd": float(sum((r.cost_usd for r in lost), Decimal(0)))}
    if listed:
        metadata["lost"] = MetadataValue.md("\n".join(f"- {line}" for line in listed))
    return AssetCheckResult(
        asset_key=NO_PAID_VIDEO_LOST.asset_key,
        check_name=NO_PAID_VIDEO_LOST.name,
        passed=not lost,
        severity=AssetCheckSeverity.ERROR,
        description=None
        if not lost
        else f"{len(lost)} paid video(s) lost in the last {LOST_WINDOW_DAYS} days; see `hailuo report`",
        metadata=metadata,
    )


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"
