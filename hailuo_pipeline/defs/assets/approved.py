"""approved_video: the take of each shot a person approved (`hailuo verdict`, or the review server's Approve), so
that downstream work (an edit, a delivery) depends on approved takes only. A sensor, on by default (it spends
nothing), materializes a shot within a tick of a verdict that changes its approved take; approving another take
or withdrawing the approval adds a materialization that says so, and the history stays."""

import hashlib
from typing import Any

from dagster import (
    AssetExecutionContext,
    DataVersion,
    DefaultSensorStatus,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    define_asset_job,
    sensor,
)

from hailuo_pipeline.defs.assets.formats import dollars
from hailuo_pipeline.defs.assets.shots import hailuo_video
from hailuo_pipeline.defs.partitions import ASSET_GROUP, SHOTS, shots_partitions
from hailuo_pipeline.defs.resources import CatalogResource
from hailuo_pipeline.settings import Settings


@asset(
    deps=[hailuo_video],
    partitions_def=shots_partitions,
    group_name=ASSET_GROUP,
    kinds={"video"},
    description="The shot's approved take: its request, take, cost and where it is kept. Materialized by "
    "approved_videos_sensor when a take is approved or the approval withdrawn; downstream work depends on it.",
)
def approved_video(context: AssetExecutionContext, catalog: CatalogResource) -> MaterializeResult:
    shot = context.partition_key
    ledger = catalog.ledger()
    take = ledger.approved_take(shot)
    if take is None:
        return MaterializeResult(
            metadata={"approved": False, "said": f"{shot} has no approved take (none given, or withdrawn)"},
            data_version=DataVersion("none"),
        )
    review = Settings.from_env().review_url.rstrip("/")
    video = catalog.catalog().rows("SELECT path FROM videos WHERE request_key = ?", [take.request_key])
    metadata: dict[str, Any] = {
        "approved": True,
        "take": take.take,
        "request_id": take.request_id or "",
        "cost_usd": dollars(take.cost_usd),
        "paid_by": f"fal request {take.request_id} (${take.cost_usd:.2f}) in run {take.run_id}",
        "watch": MetadataValue.url(f"{review}/takes/{take.request_key}"),
        **({"path": MetadataValue.text(str(video[0][0]))} if video else {}),
    }
    return MaterializeResult(metadata=metadata, data_version=DataVersion(take.request_key))


approved_video_job = define_asset_job("approved_video_job", selection=[approved_video], partitions_def=shots_partitions)


@sensor(
    minimum_interval_seconds=30,
    job=approved_video_job,
    default_status=DefaultSensorStatus.RUNNING,
    description="On by default, spends nothing: after a take is approved, or an approval withdrawn, materializes "
    "approved_video for the shot.",
)
def approved_videos_sensor(context: SensorEvaluationContext, catalog: CatalogResource):
    from datetime import datetime

    after = datetime.fromisoformat(context.cursor) if context.cursor else None
    verdicts = catalog.ledger().verdicts_since(after)
    if not verdicts:
        return SkipReason("no new verdict")
    registered = set(context.instance.get_dynamic_partitions(SHOTS))
    changed: dict[str, str] = {}
    for shot, take, verdict, _note, decided_at in verdicts:
        if shot in registered and verdict in ("approve", "withdraw"):
            changed[shot] = f"{shot}:{take}:{verdict}:{decided_at.isoformat()}"
    runs = [
        RunRequest(run_key=f"approved-{hashlib.sha256(key.encode()).hexdigest()[:16]}", partition_key=shot)
        for shot, key in sorted(changed.items())
    ]
    if runs:
        context.log.info(f"approved takes changed for {len(runs)} shot(s): {', '.join(sorted(changed))}")
    return SensorResult(run_requests=runs, cursor=verdicts[-1][4].isoformat())
