"""The nightly sweep: missing and failed shots, as many as the remaining daily budget affords."""

import os
from decimal import Decimal

from dagster import DefaultScheduleStatus, ScheduleEvaluationContext, SkipReason, schedule

from hailuo_pipeline.automation.partitions import SHOTS_PER_RUN, shots_partitions
from hailuo_pipeline.automation.registration import plan_shot_runs, range_run_requests
from hailuo_pipeline.automation.sensors import SHOT_ASSETS
from hailuo_pipeline.catalog.ledger import RequestLedger
from hailuo_pipeline.model_limits import DEFAULT_DURATION_SECONDS, DURATIONS_SECONDS, ENDPOINT_ID
from hailuo_pipeline.resources import BudgetResource, CatalogResource, ShotsResource

SWEEP_CRON = os.environ.get("HAILUO_SWEEP_CRON", "0 3 * * *")


def shots_to_sweep(
    ledger: RequestLedger, shot_ids: list[str], durations: dict[str, int], remaining_usd: Decimal | None
) -> list[str]:
    """Shots with no delivered or in-flight request, in order, while the money lasts.
    Ambiguous submits are left for a person to decide."""
    settled = ledger.settled_shots()
    with ledger.catalog.connect(read_only=True) as conn:
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
    # an invalid duration is budgeted as the default; its run refuses it with the shot's own message
    offered = {str(d) for d in DURATIONS_SECONDS}
    durations = {
        s: int(manifest.shots[s].duration) if manifest.shots[s].duration in offered else DEFAULT_DURATION_SECONDS
        for s in candidates
    }
    limits = budget.budget()
    ledger = catalog.ledger()
    remaining = None
    if limits.daily_usd is not None:
        remaining = limits.daily_usd - ledger.committed_today_usd()
    chosen = shots_to_sweep(ledger, candidates, durations, remaining)
    if not chosen:
        return SkipReason("no missing or failed shots (or no budget left today)")
    stamp = context.scheduled_execution_time.strftime("%Y%m%d%H%M")
    runs = plan_shot_runs(registered, chosen, manifest, SHOTS_PER_RUN)
    return range_run_requests(runs, SHOT_ASSETS, f"sweep-{stamp}")
