"""The nightly sweep: orphaned requests, then missing and failed shots, as many as the daily budget affords."""

from decimal import Decimal

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from hailuo_pipeline.defs.automation.run_requests import shot_run_requests, shots_in_live_runs
from hailuo_pipeline.defs.jobs import shots_job
from hailuo_pipeline.defs.partitions import SHOTS
from hailuo_pipeline.defs.resources import BudgetResource, CatalogResource, ShotsResource
from hailuo_pipeline.generation.planning import ShotPlan, plan_shot_runs, plan_shots
from hailuo_pipeline.generation.settle import settle_on_default_path
from hailuo_pipeline.model_limits import ENDPOINT_ID
from hailuo_pipeline.settings import SHOTS_PER_RUN


def shots_to_sweep(
    plan: ShotPlan, prices: dict[int, Decimal], durations: dict[str, int], remaining_usd: Decimal | None
) -> list[str]:
    """Orphans first (resumed by id: free), then shots to generate, in order, while the money lasts.
    Shots that need a person (ambiguous, refused, lost) are left to one (see `hailuo materialize`)."""
    chosen = [s for s in plan.order if s in plan.to_resume]
    spend = Decimal(0)
    for shot_id in plan.to_generate:
        price = prices[durations[shot_id]]
        if remaining_usd is not None and spend + price > remaining_usd:
            break
        spend += price
        chosen.append(shot_id)
    return chosen


def build_nightly_sweep(cron: str) -> ScheduleDefinition:
    @schedule(
        cron_schedule=cron,
        job=shots_job,
        default_status=DefaultScheduleStatus.STOPPED,
        description="Resumes orphaned requests, then sweeps missing and failed shots within the daily budget "
        "(cron: HAILUO_SWEEP_CRON).",
    )
    def nightly_sweep(
        context: ScheduleEvaluationContext, shots: ShotsResource, catalog: CatalogResource, budget: BudgetResource
    ):
        return sweep(context, shots, catalog, budget)

    return nightly_sweep


def sweep(
    context: ScheduleEvaluationContext, shots: ShotsResource, catalog: CatalogResource, budget: BudgetResource
) -> SkipReason | list[RunRequest]:
    manifest = shots.manifest()
    registered = context.instance.get_dynamic_partitions(SHOTS)
    taken = shots_in_live_runs(context.instance, registered)  # left to the runs that will make them
    candidates = [s for s in registered if s in manifest.shots and s not in taken]
    durations = {s: manifest.shots[s].budgeted_seconds() for s in candidates}
    limits = budget.budget()
    ledger = catalog.ledger()
    for settled in settle_on_default_path(ledger):  # before planning: a released shot is swept once, an adopted resumed
        context.log.info(settled.said)
    remaining = None
    if limits.daily_usd is not None:
        remaining = limits.daily_usd - ledger.committed_today_usd()
    prices = ledger.prices(ENDPOINT_ID, set(durations.values()))
    plan = plan_shots(candidates, manifest, ledger)
    chosen = shots_to_sweep(plan, prices, durations, remaining)
    if not chosen:
        return SkipReason("no missing, failed or orphaned shots (or no budget left today)")
    for note in plan.notes():
        context.log.info(note)
    stamp = context.scheduled_execution_time.strftime("%Y%m%d%H%M")
    runs = plan_shot_runs(registered, chosen, manifest, SHOTS_PER_RUN)
    return shot_run_requests(runs, shots_job.name, f"sweep-{stamp}")
