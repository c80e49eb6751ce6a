"""Sensors. Free work runs by default: the manifest's new rows become partitions whose inputs are validated
(an unchanged manifest costs one hash), and paid requests no run follows any more are resumed by id.
Spending has one switch, off by default: `shots_generation_sensor` pays for the videos of pending shots."""

import hashlib

from dagster import (
    AssetObservation,
    DefaultSensorStatus,
    MetadataValue,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from hailuo_pipeline.catalog.decisions import ClaimKind, ClaimOptions
from hailuo_pipeline.catalog.registry import record_shots
from hailuo_pipeline.defs.assets.formats import dollars
from hailuo_pipeline.defs.assets.shots import hailuo_video
from hailuo_pipeline.defs.automation.run_requests import shot_run_requests, shots_in_live_runs
from hailuo_pipeline.defs.jobs import shot_inputs_job, shot_videos_job, shots_job
from hailuo_pipeline.defs.partitions import SHOTS, shots_partitions
from hailuo_pipeline.defs.resources import BudgetResource, CatalogResource, ShotsResource
from hailuo_pipeline.generation.estimate import estimate_batch
from hailuo_pipeline.generation.planning import plan_shot_runs, plan_shots, shot_runs, stray_partitions
from hailuo_pipeline.generation.settle import settle_on_default_path
from hailuo_pipeline.model_limits import DURATIONS_SECONDS, ENDPOINT_ID
from hailuo_pipeline.settings import SHOTS_PER_RUN
from hailuo_pipeline.shots.manifest import Manifest, ManifestError, read_manifest


@sensor(
    minimum_interval_seconds=30,
    job=shot_inputs_job,
    default_status=DefaultSensorStatus.RUNNING,
    description="On by default, spends nothing: registers new rows of shots.csv as shots and validates their "
    "inputs (and re-validates edited ones). Paying for their videos is shots_generation_sensor's switch.",
)
def shots_manifest_sensor(
    context: SensorEvaluationContext, shots: ShotsResource, catalog: CatalogResource, budget: BudgetResource
):
    path = shots.manifest_path
    if not path.exists():
        return SkipReason(f"no manifest at {path}")
    existing = context.instance.get_dynamic_partitions(SHOTS)
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()

    def cursor(partitions: int) -> str:
        # the manifest and the number of partitions: one added in the UI is looked at, to be removed if stray
        return f"{digest}:{partitions}"

    if context.cursor == cursor(len(existing)):
        return SkipReason("manifest unchanged")
    try:
        manifest = read_manifest(path)
    except ManifestError as exc:
        return SensorResult(skip_reason=SkipReason(str(exc)), cursor=cursor(len(existing)))
    for error in manifest.errors:
        context.log.warning(str(error))
    plan = record_shots(catalog.catalog(), manifest, set(existing))
    removable, kept = stray_partitions(existing, manifest, catalog.ledger().requested_shots)
    if removable:
        context.log.info(f"removing {len(removable)} partition(s) with no row, never requested: {removable[:20]}")
    if kept:
        context.log.warning(f"{len(kept)} partition(s) have no row but have requests in the ledger; kept: {kept[:20]}")
    ordered = [s for s in [*existing, *plan.new] if s not in removable]
    # An edited shot gets new input versions, which marks its video stale; paying again is the user's call.
    run_requests = shot_run_requests(
        shot_runs(ordered, [*plan.new, *plan.changed]), shot_inputs_job.name, f"inputs-{digest[:12]}"
    )
    context.log.info(f"{len(plan.new)} new shot(s), {len(plan.changed)} edited, {len(manifest.errors)} bad row(s)")
    return SensorResult(
        run_requests=run_requests,
        asset_events=[batch_cost(ordered, manifest, catalog, budget)],
        dynamic_partitions_requests=[
            *([shots_partitions.build_add_request(plan.new)] if plan.new else []),
            *([shots_partitions.build_delete_request(removable)] if removable else []),
        ],
        cursor=cursor(len(existing) + len(plan.new) - len(removable)),
    )


def batch_cost(ordered: list[str], manifest: Manifest, catalog: CatalogResource, budget: BudgetResource):
    """What paying for the pending shots would cost now (`hailuo materialize --dry-run`'s figures), as an
    observation of hailuo_video: visible in the UI before the generation sensor is turned on."""
    ledger = catalog.ledger()
    plan = plan_shots(ordered, manifest, ledger)
    total, today = ledger.committed_usd()
    prices = ledger.prices(ENDPOINT_ID, set(DURATIONS_SECONDS))
    estimate = estimate_batch(plan, plan.targets(), manifest, prices, budget.budget(), total, today)
    found = estimate.as_dict()
    return AssetObservation(
        asset_key=hailuo_video.key,
        description=f"paying for the pending shots now would cost ${estimate.total_usd:.2f} "
        f"({len(estimate.to_pay)} video(s)); nothing is paid until shots_generation_sensor is on",
        metadata={
            "would_pay_usd": dollars(estimate.total_usd),
            "would_pay_videos": len(estimate.to_pay),
            "would_reuse": len(estimate.reused),
            "would_resume": len(estimate.resumed),
            "held_for_a_person": len(estimate.held),
            "over_budget": len(estimate.over_budget),
            "budgets": MetadataValue.json(found["budgets"]),
            "estimate": MetadataValue.md("\n".join(f"- {line.strip()}" for line in estimate.lines())),
        },
    )


@sensor(
    minimum_interval_seconds=60,
    job=shots_job,
    default_status=DefaultSensorStatus.STOPPED,
    description="OFF by default because it SPENDS: turn it on to pay for the video of every pending shot of "
    "shots.csv ($0.19 per 6 s, $0.32 per 10 s, within HAILUO_DAILY_BUDGET_USD / HAILUO_TOTAL_BUDGET_USD), "
    "one run per batch. Shots fal refused, ambiguous submits and lost videos are left to a person.",
)
def shots_generation_sensor(context: SensorEvaluationContext, shots: ShotsResource, catalog: CatalogResource):
    registered = context.instance.get_dynamic_partitions(SHOTS)
    manifest = shots.manifest()
    plan = plan_shots(registered, manifest, catalog.ledger())
    if not plan.to_generate:
        return SkipReason("no pending shots")
    taken = shots_in_live_runs(context.instance, registered)
    todo = [s for s in plan.to_generate if s not in taken]
    if not todo:
        return SkipReason(f"the {len(plan.to_generate)} pending shot(s) are in runs queued or under way")
    # keyed by the shots and their contents: a shot is requested once per version, not once per tick
    digest = hashlib.sha256("".join(f"{s}:{manifest.shots[s].content_hash()}" for s in todo).encode()).hexdigest()[:12]
    left = len(plan.to_generate) - len(todo)
    context.log.info(
        f"requesting the videos of {len(todo)} pending shot(s)"
        + (f"; {left} more are in runs queued or under way" if left else "")
    )
    runs = plan_shot_runs(registered, todo, manifest, SHOTS_PER_RUN)
    return shot_run_requests(runs, shots_job.name, f"generate-{digest}")


def any_inputs(_row: object) -> bool:
    """Whose inputs do not matter: a request in flight is resumed whatever it was sent with."""
    return True


MAX_SENSOR_RESUMES = 5  # past this, an orphan that keeps failing is left to a person (`hailuo report` lists it)
RESUME_ONLY = {"resume_only": True}


@sensor(
    minimum_interval_seconds=60,
    job=shot_videos_job,
    default_status=DefaultSensorStatus.RUNNING,
    description="Finds paid requests no live run follows any more (a crash, an evicted pod) and launches runs "
    "that resume them by their fal id, before fal's result expires. Spends nothing: these runs never submit.",
)
def orphaned_requests_sensor(context: SensorEvaluationContext, catalog: CatalogResource):
    registered = context.instance.get_dynamic_partitions(SHOTS)
    ledger = catalog.ledger()
    for settled in settle_on_default_path(ledger):  # adopted ids are resumed below; released shots wait for a run
        context.log.info(settled.said)
    # the judge's answer for a plain run: RESUME is a request fal has that no live process follows
    decisions = ledger.judge_shots(dict.fromkeys(registered, any_inputs), ClaimOptions())
    orphans = [d.row for d in decisions.values() if d.kind is ClaimKind.RESUME and d.row is not None]
    given_up = [r for r in orphans if r.attempts > MAX_SENSOR_RESUMES]
    for row in given_up:
        context.log.warning(
            f"{row.shot_id}: request {row.request_id} was resumed {row.attempts - 1} times without success; "
            "left to `hailuo materialize` (see `hailuo report`)"
        )
    todo = {r.shot_id: r for r in orphans if r.attempts <= MAX_SENSOR_RESUMES}
    if not todo:
        return SkipReason("no orphaned requests")
    # a new key each time a request is orphaned again, so a resume that died is launched once more
    digest = hashlib.sha256(
        "".join(f"{r.request_key}:{r.attempts}" for r in sorted(todo.values(), key=lambda r: r.request_key)).encode()
    ).hexdigest()[:12]
    context.log.info(f"resuming {len(todo)} orphaned request(s): {', '.join(sorted(todo))}")
    runs = shot_runs(registered, list(todo), SHOTS_PER_RUN)
    return shot_run_requests(runs, shot_videos_job.name, f"resume-{digest}", RESUME_ONLY)
