"""cost_report: spend today, this month and all time, from the catalog; kept current after every batch by
Declarative Automation (`cost_report_automation`, on by default: the report spends nothing)."""

from dagster import (
    AssetExecutionContext,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    MaterializeResult,
    asset,
)

from hailuo_pipeline.defs.assets.shots import hailuo_video
from hailuo_pipeline.defs.partitions import ASSET_GROUP
from hailuo_pipeline.defs.resources import BudgetResource, CatalogResource

# After a batch: a video made (or the report missing) since the report was last handled (requested or made), once
# no video is being made and no report run is under way. Not Dagster's eager(): it waits for every shot to have a
# video (one refused shot: never), and a tick that sees both a new video and the report's own run counts the video
# as handled, so a batch that ended while the previous report ran was never reported (seen in the browser test).
# Here a tick with a new video is never a handled one.
UPDATED = AutomationCondition.newly_missing() | AutomationCondition.any_deps_updated()
HANDLED = (
    AutomationCondition.newly_requested()
    | AutomationCondition.newly_updated()
    | AutomationCondition.initial_evaluation()
)
AFTER_EVERY_BATCH = (
    UPDATED.since(HANDLED & ~UPDATED) & ~AutomationCondition.any_deps_in_progress() & ~AutomationCondition.in_progress()
).with_label("after every batch")


@asset(
    deps=[hailuo_video],
    group_name=ASSET_GROUP,
    kinds={"duckdb", "pandas"},
    automation_condition=AFTER_EVERY_BATCH,
    description="Spend and reliability of every fal request in the catalog, refreshed after every batch.",
)
def cost_report(context: AssetExecutionContext, catalog: CatalogResource, budget: BudgetResource) -> MaterializeResult:
    # Imported here, so that pandas loads in the run that builds a report: not in the code server, which loads
    # every definition and ticks the sensors, nor in the runs that make videos (44 MiB each; README: pandas).
    from hailuo_pipeline.catalog.report import build_report
    from hailuo_pipeline.defs.assets.report_metadata import report_metadata

    report = build_report(catalog.catalog(), budget.budget(), lease_seconds=catalog.lease_seconds)
    summary = report.summary
    context.log.info(
        f"spend today ${summary['spend_today_usd']:.2f}, month to date ${summary['spend_month_to_date_usd']:.2f}, "
        f"all time ${summary['spend_all_time_usd']:.2f}, lost ${summary['lost_usd']:.2f}, "
        f"{summary['orphans']} orphaned request(s) holding ${summary['orphan_usd']:.2f}"
    )
    return MaterializeResult(metadata=report_metadata(report))


cost_report_automation = AutomationConditionSensorDefinition(
    "cost_report_automation",
    target=AssetSelection.assets(cost_report),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="On by default, spends nothing: materializes cost_report once a batch of videos has ended.",
)
