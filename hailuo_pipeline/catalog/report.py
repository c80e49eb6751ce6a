"""The cost report: one pass of SQL over the catalog (either backend, the same SQL), shaped with pandas."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pandas as pd

from hailuo_pipeline.catalog.decisions import LEASE_SECONDS
from hailuo_pipeline.catalog.ledger import RequestLedger
from hailuo_pipeline.catalog.rows import Budget, RequestRow, Status
from hailuo_pipeline.catalog.storage import CatalogDatabase

# status names come from the Status enum; the views of schema.py keep the literals of their migration
DELIVERED = f"('{Status.SUCCEEDED}', '{Status.COMPLETED}')"  # paid, and the video is (or will be) ours
SUMMARY_SQL = f"""
SELECT
    coalesce(sum(cost_usd) FILTER (WHERE CAST(created_at AS DATE) = ?), 0) AS spend_today_usd,
    coalesce(sum(cost_usd) FILTER (WHERE created_at >= ?), 0) AS spend_month_to_date_usd,
    coalesce(sum(cost_usd), 0) AS spend_all_time_usd,
    coalesce(sum(reserved_usd), 0) AS reserved_usd,
    coalesce(sum(cost_usd + reserved_usd) FILTER (WHERE CAST(created_at AS DATE) = ?), 0) AS committed_today_usd,
    coalesce(sum(cost_usd + reserved_usd), 0) AS committed_all_time_usd,
    count(*) AS requests,
    count(*) - count(DISTINCT shot_id) AS retries,
    count(*) FILTER (WHERE status IN {DELIVERED}) AS succeeded,
    count(*) FILTER (WHERE status = '{Status.FAILED}') AS failures,
    count(*) FILTER (WHERE status = '{Status.CANCELLED}') AS cancellations,
    count(*) FILTER (WHERE status = '{Status.AMBIGUOUS}') AS ambiguous,
    count(*) FILTER (WHERE status = '{Status.LOST}') AS lost_requests,
    coalesce(sum(cost_usd) FILTER (WHERE status = '{Status.LOST}'), 0) AS lost_usd,
    count(*) FILTER (WHERE verdict = 'approve') AS approved_takes,
    count(*) FILTER (WHERE verdict = 'reject') AS rejected_takes,
    coalesce(sum(cost_usd) FILTER (WHERE verdict = 'reject'), 0) AS rejected_usd,
    count(*) FILTER (WHERE possible_double_charge) AS possible_double_charges,
    count(DISTINCT shot_id) AS shots,
    avg(wall_seconds) FILTER (WHERE status = '{Status.SUCCEEDED}') AS latency_mean_seconds,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY wall_seconds) FILTER (WHERE status = '{Status.SUCCEEDED}')
        AS latency_p95_seconds,
    avg(queue_seconds) FILTER (WHERE status IN {DELIVERED}) AS queue_mean_seconds,
    avg(inference_seconds) FILTER (WHERE status IN {DELIVERED}) AS inference_mean_seconds
FROM requests
"""

BY_DURATION_SQL = f"""
SELECT duration_seconds, count(*) AS requests,
       count(*) FILTER (WHERE status IN {DELIVERED}) AS videos,
       coalesce(sum(cost_usd), 0) AS spend_usd
FROM requests GROUP BY 1 ORDER BY 1
"""


LATENCY_SQL = f"""
SELECT CAST(floor(wall_seconds) AS INTEGER) AS seconds, count(*) AS videos
FROM requests WHERE status = '{Status.SUCCEEDED}' AND wall_seconds IS NOT NULL
GROUP BY 1 ORDER BY 1
"""


# fal's own figure (stored by `fal_usage`) beside the ledger's, per UTC day of fal finishing the requests
FAL_VS_LEDGER_SQL = """
SELECT u.day, u.cost_usd AS fal_billed_usd, coalesce(sum(r.cost_usd), 0) AS ledger_usd
FROM fal_usage u LEFT JOIN requests r
    ON CAST(coalesce(r.billed_at, r.completed_at) AS DATE) = u.day AND r.cost_usd > 0
GROUP BY u.day, u.cost_usd ORDER BY u.day DESC LIMIT ?
"""


@dataclass(frozen=True)
class CostReport:
    summary: dict[str, Any]
    by_duration: pd.DataFrame
    by_day: pd.DataFrame
    orphans: pd.DataFrame  # paid requests no live process follows: resumed by the next default run
    latency: pd.DataFrame  # delivered videos by whole seconds from reservation to delivery
    fal_vs_ledger: pd.DataFrame  # per day fal's usage was fetched: what fal billed, what the ledger booked

    def as_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "by_duration": self.by_duration.to_dict(orient="records"),
            "by_day": self.by_day.assign(day=self.by_day["day"].astype(str)).to_dict(orient="records"),
            "orphans": self.orphans.to_dict(orient="records"),
            "fal_vs_ledger": self.fal_vs_ledger.to_dict(orient="records"),
        }


def _plain(value: Any) -> Any:
    """A cell as plain Python: numbers rounded to 4 places, numpy scalars and Decimals unwrapped."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()  # numpy's int64 and float64 (pandas hands them out) are not JSON's or Dagster's
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float):
        return None if pd.isna(value) else round(value, 4)
    return value


def build_report(
    catalog: CatalogDatabase,
    budget: Budget,
    today: date | None = None,
    days: int = 31,
    lease_seconds: float = LEASE_SECONDS,
) -> CostReport:
    """`lease_seconds`: the lease the pipeline runs with, so the report's orphans are the pipeline's."""
    ledger = RequestLedger(catalog, lease_seconds)
    with catalog.transaction(read_only=True) as t:
        now = t.now()
    today = today or now.date()
    totals = catalog.read(SUMMARY_SQL, [today, today.replace(day=1), today])
    by_duration = catalog.read(BY_DURATION_SQL)
    by_day = catalog.read(
        "SELECT day, requests, succeeded, failed, cancelled, spend_usd FROM spend_by_day ORDER BY day DESC LIMIT ?",
        [days],
    )
    latency = catalog.read(LATENCY_SQL)
    fal_vs_ledger = catalog.read(FAL_VS_LEDGER_SQL, [days])
    summary = {str(name): _plain(value) for name, value in totals.iloc[0].items()}
    orphans = orphan_table(ledger.orphans(), now)
    summary["orphans"] = len(orphans)
    summary["orphan_usd"] = round(float(orphans["usd"].sum()), 4) if len(orphans) else 0.0
    summary["orphan_oldest_age_seconds"] = float(orphans["age_seconds"].max()) if len(orphans) else None
    summary["daily_budget_usd"] = _plain(budget.daily_usd)
    summary["total_budget_usd"] = _plain(budget.total_usd)
    summary["daily_budget_used"] = (
        round(summary["committed_today_usd"] / float(budget.daily_usd), 4) if budget.daily_usd else None
    )
    summary["total_budget_used"] = (
        round(summary["committed_all_time_usd"] / float(budget.total_usd), 4) if budget.total_usd else None
    )
    for frame in (by_duration, by_day, latency, fal_vs_ledger):
        for column in frame.columns:
            frame[column] = frame[column].map(_plain)
    by_day["day"] = by_day["day"].astype(str)
    fal_vs_ledger["day"] = fal_vs_ledger["day"].astype(str)
    fal_vs_ledger = fal_vs_ledger.sort_values("day").reset_index(drop=True)
    return CostReport(
        summary, by_duration, by_day.sort_values("day").reset_index(drop=True), orphans, latency, fal_vs_ledger
    )


def orphan_table(rows: list[RequestRow], now: datetime) -> pd.DataFrame:
    """One line per orphan: its age (since it was created) and the money it holds (paid or reserved)."""
    return pd.DataFrame(
        [
            {
                "shot_id": r.shot_id,
                "request_id": r.request_id,
                "status": r.status.value,
                "age_seconds": round((now - r.created_at).total_seconds(), 1),
                "usd": float(r.held_usd),
            }
            for r in rows
        ],
        columns=["shot_id", "request_id", "status", "age_seconds", "usd"],
    )


def render_report(catalog: CatalogDatabase, budget: Budget, lease_seconds: float, fmt: str) -> str:
    """`hailuo report`'s text: a table for people, csv or json for scripts."""
    report = build_report(catalog, budget, lease_seconds=lease_seconds)
    if fmt == "json":
        return json.dumps(report.as_dict(), indent=2, default=str)
    if fmt == "csv":
        return "metric,value\n" + "\n".join(f"{k},{'' if v is None else v}" for k, v in report.summary.items())
    s = report.summary
    lines = [
        f"catalog: {catalog.location}",
        f"spend today ${s['spend_today_usd']:.2f} | month to date ${s['spend_month_to_date_usd']:.2f} | "
        f"all time ${s['spend_all_time_usd']:.2f} | reserved ${s['reserved_usd']:.2f}",
        f"requests {s['requests']} | succeeded {s['succeeded']} | retries {s['retries']} | failures "
        f"{s['failures']} | cancelled {s['cancellations']} | ambiguous {s['ambiguous']}",
    ]
    if s["approved_takes"] or s["rejected_takes"]:
        lines.append(
            f"verdicts: {s['approved_takes']} take(s) approved, {s['rejected_takes']} rejected "
            f"(${s['rejected_usd']:.2f} spent on rejected takes)"
        )
    if s["lost_requests"]:
        lines.append(f"lost ${s['lost_usd']:.2f}: {s['lost_requests']} paid request(s) whose video fal no longer had")
    if s["orphans"]:
        lines.append(
            f"orphans {s['orphans']} holding ${s['orphan_usd']:.2f}, oldest {s['orphan_oldest_age_seconds']:.0f} s: "
            "paid requests no run follows; `hailuo materialize` resumes them by id"
        )
        lines.append(report.orphans.to_string(index=False))
    if s["latency_mean_seconds"] is not None:
        lines.append(f"latency mean {s['latency_mean_seconds']:.1f} s | p95 {s['latency_p95_seconds']:.1f} s")
    for name in ("daily", "total"):
        if s[f"{name}_budget_usd"] is not None:
            lines.append(f"{name} budget ${s[f'{name}_budget_usd']:.2f}, used {100 * s[f'{name}_budget_used']:.1f}%")
    if not report.by_duration.empty:
        lines.append(report.by_duration.to_string(index=False))
    for day in report.fal_vs_ledger.to_dict(orient="records"):
        fal, ledger = float(day["fal_billed_usd"]), float(day["ledger_usd"])
        verdict = "agree" if abs(fal - ledger) < 0.005 else f"differ by ${fal - ledger:+.2f} (`hailuo reconcile`)"
        lines.append(f"{day['day']}: fal billed ${fal:.2f}, the ledger booked ${ledger:.2f}: {verdict}")
    return "\n".join(lines)
