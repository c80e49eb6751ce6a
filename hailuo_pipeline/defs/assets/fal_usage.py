"""fal_usage: what fal billed for the endpoint, one UTC day per partition, stored in the catalog, and the check
that the ledger booked the same to the cent (a difference is explained request by request from fal's request
history). Without an admin key (FAL_ADMIN_KEY) fal's usage cannot be read: the partition is skipped, not failed."""

from datetime import date
from typing import Any

from dagster import (
    AllPartitionMapping,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetSpec,
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    Failure,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    ScheduleEvaluationContext,
    define_asset_job,
    multi_asset,
    schedule,
)

from hailuo_pipeline.catalog.reconcile import DayReconciliation, audit_day
from hailuo_pipeline.defs.assets.formats import dollars
from hailuo_pipeline.defs.assets.shots import hailuo_video
from hailuo_pipeline.defs.partitions import ASSET_GROUP
from hailuo_pipeline.defs.resources import CatalogResource
from hailuo_pipeline.fal.platform import AdminKeyMissing, PlatformError
from hailuo_pipeline.model_limits import ENDPOINT_ID
from hailuo_pipeline.settings import Settings

USAGE_CHECK = "fal_usage_matches_ledger"
# today included: its figure grows during the day, and the schedule fetches it again
fal_usage_days = DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC", end_offset=1)


def reconciliation_metadata(result: DayReconciliation) -> dict[str, Any]:
    return {
        "day": str(result.day),
        "fal_billed_usd": dollars(result.fal_usd),
        "ledger_usd": dollars(result.ledger_usd),
        "difference_usd": dollars(result.difference),
        "billed_not_booked": MetadataValue.text(", ".join(result.billed_not_booked) or "none"),
        "booked_not_billed": MetadataValue.text(", ".join(result.booked_not_billed) or "none"),
    }


@multi_asset(
    specs=[
        AssetSpec(
            "fal_usage",
            # every shot's video feeds every day's bill: no shot maps to one day
            deps=[AssetDep(hailuo_video, partition_mapping=AllPartitionMapping())],
            skippable=True,
            group_name=ASSET_GROUP,
            kinds={"duckdb"},
            description="fal's own record of what it billed for the endpoint on the day (its usage API), kept in "
            "the catalog's fal_usage table. Needs FAL_ADMIN_KEY; without it the day is skipped.",
        )
    ],
    check_specs=[
        AssetCheckSpec(
            USAGE_CHECK,
            asset="fal_usage",
            description="fal's billed cost for the day equals the ledger's spend for it, to the cent; a "
            "difference names the requests that explain it",
        )
    ],
    partitions_def=fal_usage_days,
    can_subset=True,
)
def fal_usage(context: AssetExecutionContext, catalog: CatalogResource):
    day = date.fromisoformat(context.partition_key)
    platform = Settings.from_env().platform()
    if platform is None:
        context.log.warning(f"FAL_KEY is not set: fal's usage for {day} is not read; skipped")
        return
    try:
        result = audit_day(catalog.catalog(), platform, ENDPOINT_ID, day)
    except AdminKeyMissing as exc:
        context.log.warning(f"{exc}; fal's usage for {day} is skipped, not failed")
        return
    except PlatformError as exc:
        raise Failure(description=f"fal's usage for {day} could not be read: {exc}") from None
    context.log.info(result.said())
    metadata = reconciliation_metadata(result)
    yield MaterializeResult(asset_key="fal_usage", metadata=metadata)
    yield AssetCheckResult(
        asset_key="fal_usage",
        check_name=USAGE_CHECK,
        passed=result.agrees,
        severity=AssetCheckSeverity.ERROR,
        description=result.said(),
        metadata=metadata,
    )


fal_usage_job = define_asset_job("fal_usage_job", selection=[fal_usage], partitions_def=fal_usage_days)


@schedule(
    cron_schedule="15 0 * * *",
    job=fal_usage_job,
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Spends nothing: fetches fal's usage for yesterday (complete now) and today, and checks the ledger "
    "against it. Needs FAL_ADMIN_KEY.",
)
def fal_usage_schedule(context: ScheduleEvaluationContext):
    today = context.scheduled_execution_time.date()
    for day in (date.fromordinal(today.toordinal() - 1), today):
        yield RunRequest(
            run_key=f"fal-usage-{day}-{context.scheduled_execution_time:%Y%m%d%H%M}", partition_key=str(day)
        )
