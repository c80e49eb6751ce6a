"""cost_report's metadata, drawn from the report's frames: Dagster tables, and small charts (PNGs drawn with
matplotlib, embedded as Markdown images, which Dagster renders; a few KB each so the event log stays small).

Imported by the asset's body, with pandas: see cost_report."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import pandas as pd
from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

from hailuo_pipeline.catalog.report import CostReport
from hailuo_pipeline.defs.assets.formats import dollars, dollars_text, tenths

WIDTH_INCHES, HEIGHT_INCHES, DPI = 5.0, 2.0, 80


def _png(draw: Callable[[Any], None]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no screen: render to memory only
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(WIDTH_INCHES, HEIGHT_INCHES), dpi=DPI)
    try:
        draw(axes)
        for side in ("top", "right"):
            axes.spines[side].set_visible(False)
        figure.tight_layout()
        out = io.BytesIO()
        figure.savefig(out, format="png")
        return out.getvalue()
    finally:
        plt.close(figure)


def markdown_image(title: str, png: bytes) -> MetadataValue:
    return MetadataValue.md(f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})")


def spend_per_day_chart(by_day: pd.DataFrame) -> bytes:
    def draw(axes: Any) -> None:
        axes.bar([d[5:] for d in by_day["day"]], by_day["spend_usd"].fillna(0), color="#4f6bed")
        axes.set_ylabel("USD")
        axes.set_title("spend per day (UTC)", fontsize=9)
        axes.tick_params(labelsize=7)

    return _png(draw)


def latency_chart(latency: pd.DataFrame) -> bytes:
    def draw(axes: Any) -> None:
        axes.bar(latency["seconds"], latency["videos"], width=1.0, color="#2a9d8f")
        axes.set_xlabel("seconds from reservation to delivered video", fontsize=7)
        axes.set_ylabel("videos")
        axes.set_title("latency distribution", fontsize=9)
        axes.tick_params(labelsize=7)

    return _png(draw)


# What each table shows in Dagster and under which header: its metadata column is about 350 px wide beside the
# key and time columns (1280 px window), so a few columns with short headers, and money with its sign ("$0.19",
# header "spend"). `hailuo report` shows every column (failures and cancellations per day among them).
DAY_COLUMNS = {"day": "day", "requests": "requests", "succeeded": "videos", "spend_usd": "spend"}
DURATION_COLUMNS = {"duration_seconds": "seconds", "requests": "requests", "videos": "videos", "spend_usd": "spend"}
ORPHAN_COLUMNS = {"shot_id": "shot", "request_id": "request", "status": "status", "age_seconds": "age s", "usd": "held"}
FAL_COLUMNS = {"day": "day", "fal_billed_usd": "fal billed", "ledger_usd": "ledger"}


def dagster_table(frame: pd.DataFrame, headers: dict[str, str]) -> MetadataValue:
    """The frame's `headers` columns as a Dagster table: money as "$0.19", seconds to a tenth, a fal request id by
    its first 8 characters (the full id is in `hailuo report` and the catalog)."""

    def kind(column: str) -> str:
        series = frame[column]
        if is_money(column) or column == "request_id":
            return "string"
        if pd.api.types.is_integer_dtype(series):
            return "int"
        if pd.api.types.is_float_dtype(series):
            return "float"
        return "string"

    kinds = {column: kind(column) for column in headers}

    def cell(column: str, value: object) -> str | int | float | None:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return None
        if is_money(column) and isinstance(value, int | float):
            return dollars_text(value)
        if column == "request_id":
            return f"{str(value)[:8]}…"
        if kinds[column] == "string" or not isinstance(value, int | float):
            return str(value)
        return tenths(value) if column.endswith("_seconds") and isinstance(value, float) else value

    records = [TableRecord({headers[c]: cell(c, rec[c]) for c in headers}) for rec in frame.to_dict(orient="records")]
    columns = [TableColumn(headers[c], kinds[c]) for c in headers]
    return MetadataValue.table(records=records, schema=TableSchema(columns=columns))


def charts(report: CostReport) -> dict[str, MetadataValue]:
    """Spend per day and the latency distribution, drawn (only when there is something to draw)."""
    drawn: dict[str, MetadataValue] = {}
    if len(report.by_day):
        drawn["spend_per_day_chart"] = markdown_image("spend per day", spend_per_day_chart(report.by_day))
    if len(report.latency):
        drawn["latency_chart"] = markdown_image("latency distribution", latency_chart(report.latency))
    return drawn


def is_money(column: str) -> bool:
    return column == "usd" or column.endswith("_usd")


def summary_value(name: str, value: float) -> Any:
    if is_money(name):
        return dollars(value)
    if name.endswith("_budget_used"):
        return MetadataValue.text(f"{value:.0%}")
    return tenths(value) if name.endswith("_seconds") else value


def report_metadata(report: CostReport) -> dict[str, Any]:
    """The summary's numbers, the spend tables, and the charts (only when there is something to draw)."""
    numbers = {k: v for k, v in report.summary.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return {
        **{k: summary_value(k, v) for k, v in numbers.items()},
        "spend_by_day": dagster_table(report.by_day, DAY_COLUMNS),
        "spend_by_duration": dagster_table(report.by_duration, DURATION_COLUMNS),
        **({"orphans_table": dagster_table(report.orphans, ORPHAN_COLUMNS)} if len(report.orphans) else {}),
        **({"fal_vs_ledger": dagster_table(report.fal_vs_ledger, FAL_COLUMNS)} if len(report.fal_vs_ledger) else {}),
        **charts(report),
    }
