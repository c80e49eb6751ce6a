"""cost_report: spend today, this month and all time, from the catalog, plotted across materializations."""

import pandas as pd
from dagster import (
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from hailuo_pipeline.catalog.report import CostReport, build_report
from hailuo_pipeline.defs.assets.charts import latency_chart, markdown_image, spend_per_day_chart
from hailuo_pipeline.defs.assets.shots import hailuo_video
from hailuo_pipeline.defs.resources import BudgetResource, CatalogResource


def dagster_table(frame: pd.DataFrame) -> MetadataValue:
    def kind(series: pd.Series) -> str:
        if pd.api.types.is_integer_dtype(series):
            return "int"
        if pd.api.types.is_float_dtype(series):
            return "float"
        return "string"

    kinds = {str(column): kind(frame[column]) for column in frame.columns}

    def cell(column: str, value: object) -> str | int | float | None:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return None
        if kinds[column] == "string" or not isinstance(value, int | float):
            return str(value)
        return value

    records = [
        TableRecord({str(c): cell(str(c), v) for c, v in rec.items()}) for rec in frame.to_dict(orient="records")
    ]
    return MetadataValue.table(
        records=records, schema=TableSchema(columns=[TableColumn(name, kinds[name]) for name in kinds])
    )


def charts(report: CostReport) -> dict[str, MetadataValue]:
    """Spend per day and the latency distribution, drawn (only when there is something to draw)."""
    drawn: dict[str, MetadataValue] = {}
    if len(report.by_day):
        drawn["spend_per_day_chart"] = markdown_image("spend per day", spend_per_day_chart(report.by_day))
    if len(report.latency):
        drawn["latency_chart"] = markdown_image("latency distribution", latency_chart(report.latency))
    return drawn


@asset(
    deps=[hailuo_video],
    group_name="reporting",
    kinds={"duckdb", "pandas"},
    description="Spend and reliability of every fal request in the catalog.",
)
def cost_report(context: AssetExecutionContext, catalog: CatalogResource, budget: BudgetResource) -> MaterializeResult:
    report = build_report(catalog.catalog(), budget.budget(), lease_seconds=catalog.lease_seconds)
    summary = report.summary
    numbers = {k: v for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    context.log.info(
        f"spend today ${summary['spend_today_usd']:.2f}, month to date ${summary['spend_month_to_date_usd']:.2f}, "
        f"all time ${summary['spend_all_time_usd']:.2f}, lost ${summary['lost_usd']:.2f}, "
        f"{summary['orphans']} orphaned request(s) holding ${summary['orphan_usd']:.2f}"
    )
    return MaterializeResult(
        metadata={
            **numbers,
            "spend_by_day": dagster_table(report.by_day),
            "spend_by_duration": dagster_table(report.by_duration),
            **({"orphans_table": dagster_table(report.orphans)} if len(report.orphans) else {}),
            **charts(report),
        }
    )
