"""Asset checks on hailuo_video: what was delivered is what was paid for, at the published price.

They are check specs of the step that makes the videos (assets/shots.py), which evaluates them once its
shots are done; selected on their own (the UI's "Execute checks"), they cover the whole catalog."""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MetadataValue

from hailuo_pipeline.catalog.audit import charges_off_price, recorded_videos
from hailuo_pipeline.catalog.rows import utcnow
from hailuo_pipeline.defs.assets.formats import dollars
from hailuo_pipeline.defs.resources import CatalogResource
from hailuo_pipeline.video.probe import problems_with
from hailuo_pipeline.video.store import VideoStore

MAX_LISTED = 20
LOST_WINDOW_DAYS = 7


VIDEOS_MATCH_REQUESTS = AssetCheckSpec(
    "videos_match_requests",
    asset="hailuo_video",
    description="The videos recorded by this run (all videos, when the check runs on its own) are in the video "
    "store at their recorded size, and what decoding them at delivery measured matches their requests "
    "(length, 768p)",
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


def videos_match_requests(catalog: CatalogResource, store: VideoStore, run_id: str | None = None) -> AssetCheckResult:
    """The videos recorded by `run_id` (every video when None). A run that recorded none says so: it does not
    pass over other runs' videos."""
    videos = recorded_videos(catalog.catalog(), run_id)
    if not videos and run_id is not None:
        return AssetCheckResult(
            asset_key=VIDEOS_MATCH_REQUESTS.asset_key,
            check_name=VIDEOS_MATCH_REQUESTS.name,
            passed=True,
            description="nothing to check: this run recorded no video",
            metadata={"videos_checked": 0},
        )
    problems: list[str] = []
    with ThreadPoolExecutor(max_workers=16) as pool:  # one metadata call each, also to an object store
        sizes = list(pool.map(lambda video: store.size(video.path), videos))
    for video, size in zip(videos, sizes, strict=True):
        where = f"{video.shot_id} ({video.request_id})"
        if size != video.bytes:
            problems.append(f"{where}: {video.path} is missing or not {video.bytes} bytes")
            continue
        problems.extend(f"{where}: {p}" for p in problems_with(video.measured, video.requested_seconds))
    return AssetCheckResult(
        asset_key=VIDEOS_MATCH_REQUESTS.asset_key,
        check_name=VIDEOS_MATCH_REQUESTS.name,
        passed=not problems,
        severity=AssetCheckSeverity.ERROR,
        metadata={"videos_checked": len(videos), "problems": len(problems), **listing("first_problems", problems)},
    )


def costs_match_price_table(catalog: CatalogResource) -> AssetCheckResult:
    checked, off = charges_off_price(catalog.catalog())
    listed = [f"{c.shot_id} ({c.request_key}, {c.status}): charged {c.cost_usd}, price {c.price_usd}" for c in off]
    return AssetCheckResult(
        asset_key=COSTS_MATCH_PRICE_TABLE.asset_key,
        check_name=COSTS_MATCH_PRICE_TABLE.name,
        passed=not off,
        metadata={"requests_checked": checked, "mismatches": len(off), **listing("first", listed)},
    )


def listing(name: str, lines: list[str]) -> dict:
    """The first lines as Markdown under `name`, or nothing at all: an empty list shows as a bare `[]`."""
    return {name: MetadataValue.md("\n".join(f"- {line}" for line in lines[:MAX_LISTED]))} if lines else {}


def no_paid_video_lost(catalog: CatalogResource) -> AssetCheckResult:
    now = utcnow()
    lost = catalog.ledger().lost_since(now - timedelta(days=LOST_WINDOW_DAYS))
    listed = [
        f"{r.shot_id} (request {r.request_id}, ${r.cost_usd:.2f}, lost {_age(now - (r.completed_at or now))} ago): "
        f"{r.error_message}"
        for r in lost[:MAX_LISTED]
    ]
    metadata: dict = {
        "lost_requests": len(lost),
        "lost_usd": dollars(sum((r.cost_usd for r in lost), Decimal(0))),
        **listing("lost", listed),
    }
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
