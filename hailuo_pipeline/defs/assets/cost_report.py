"""cost_report: spend today, this month and all time, from the catalog, plotted across materializations."""

from dagster import AssetExecutionContext, MaterializeResult, asset

from hailuo_pipeline.defs.assets.shots import hailuo_video
from hailuo_pipeline.defs.resources import BudgetResource, CatalogResource


@asset(
    deps=[hailuo_video],
    group_name="reporting",
    kinds={"duckdb", "pandas"},
    description="Spend and reliability of every fal request in the catalog.",
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
