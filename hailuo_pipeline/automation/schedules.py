"""The nightly sweep: missing and failed shots, as many as the remaining daily budget affords."""

import os
from decimal import Decimal

from dagster import DefaultScheduleStatus, ScheduleEvaluationContext, SkipReason, schedule

from hailuo_pipeline.automation.partitions import SHOTS_PER_RUN, shots_partitions
from hailuo_pipeline.automation.registration import plan_shot_runs, range_run_requests
from hailuo_pipeline.automation.sensors import SHOT_ASSETS
from hailuo_pipeline.catalog.ledger import RequestLedger, utcnow
from hailuo_pipeline.model_limits import ENDPOINT_ID
from hailuo_pipeline.resources import BudgetResource, CatalogResource, ShotsResource

SWEEP_CRON = os.environ.get("HAILUO_SWEEP_CRON", "0 3 * * *")


def shots_to_sweep(
    ledger: RequestLedger, shot_ids: list[str], durations: dict[str, int], remaining_usd: Decimal | None
) -> list[str]:
    """Shots with no delivered or in-flight request, in order, while the money lasts.
    Ambiguous submits are left for a person to decide."""
    with ledger.catalog.connect(read_only=True) as conn:
        settled = {
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT shot_id FROM requests WHERE status NOT IN ('failed', 'cancelled')"
            ).fetchall()
        }
        prices = {d: ledger.price_for(conn, ENDPOINT_ID, d)[1] for d in set(durations.values())}
    chosen: list[str] = []
    spend = Decimal(0)
    for shot_id in shot_ids:
        if shot_id in settled:
            continue
        price = prices[durations[shot_id]]
        if remaining_usd is not None and spend + price > remaining_usd:
            break
        spend += price
        chosen.append(shot_id)
    return chosen


@schedule(
    cron_schedule=SWEEP_CRON,
    target=SHOT_ASSETS,
    default_status=DefaultScheduleStatus.STOPPED,
    description="Sweeps missing and failed shots within the daily budget (cron: HAILUO_SWEEP_CRON).",
)
def nightly_sweep(
    context: ScheduleEvaluationContext, shots: ShotsResource, catalog: CatalogResource, budget: BudgetResource
):
    manifest = shots.manifest()
    registered = context.instance.get_dynamic_partitions(shots_partitions.name)
    candidates = [s for s in registered if s in manifest.shots]
    durations = {}
    for shot_id in candidates:
        try:
            durations[shot_id] = int(manifest.shots[shot_id].duration)
        except ValueError:
            durations[shot_id] = 6  # the run will refuse it with the shot's own message
    limits = budget.budget()
    ledger = catalog.ledger()
    remaining = None
    if limits.daily_usd is not None:
        with ledger.catalog.connect(read_only=True) as conn:
            committed = conn.execute(
                "SELECT coalesce(sum(cost_usd + reserved_usd), 0) FROM requests WHERE CAST(created_at AS DATE) = ?",
                [utcnow().date()],
            ).fetchone()
        remaining = limits.daily_usd - Decimal(committed[0] if committed else 0)
    chosen = shots_to_sweep(ledger, candidates, durations, remaining)
    if not chosen:
        return SkipReason("no missing or failed shots (or no budget left today)")
    stamp = context.scheduled_execution_time.strftime("%Y%m%d%H%M") if context.scheduled_execution_time else "now"
    keys = [a.key for a in SHOT_ASSETS]
    return range_run_requests(plan_shot_runs(registered, chosen, manifest, SHOTS_PER_RUN), keys, f"sweep-{stamp}")
