"""Sensors: the manifest's new rows become partitions and runs (an unchanged manifest costs one hash), and
paid requests that no run follows any more are resumed by id."""

import hashlib

from dagster import (
    DefaultSensorStatus,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from hailuo_pipeline.catalog.registry import record_shots
from hailuo_pipeline.defs.automation.run_requests import range_run_requests
from hailuo_pipeline.defs.jobs import shot_inputs_job, shot_videos_job, shots_job
from hailuo_pipeline.defs.partitions import SHOTS, shots_partitions
from hailuo_pipeline.defs.resources import CatalogResource, ShotsResource
from hailuo_pipeline.generation.planning import partition_ranges, plan_shot_runs
from hailuo_pipeline.settings import SHOTS_PER_RUN
from hailuo_pipeline.shots.manifest import ManifestError, read_manifest


@sensor(
    minimum_interval_seconds=30,
    jobs=[shots_job, shot_inputs_job],
    default_status=DefaultSensorStatus.STOPPED,
    description="Registers new shots from shots.csv and requests their videos; re-versions edited shots.",
)
def shots_manifest_sensor(context: SensorEvaluationContext, shots: ShotsResource, catalog: CatalogResource):
    path = shots.manifest_path
    if not path.exists():
        return SkipReason(f"no manifest at {path}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if context.cursor == digest:
        return SkipReason("manifest unchanged")
    try:
        manifest = read_manifest(path)
    except ManifestError as exc:
        return SensorResult(skip_reason=SkipReason(str(exc)), cursor=digest)
    for error in manifest.errors:
        context.log.warning(str(error))
    existing = context.instance.get_dynamic_partitions(SHOTS)
    plan = record_shots(catalog.catalog(), manifest, set(existing))
    ordered = [*existing, *plan.new]
    run_requests = [
        *range_run_requests(plan_shot_runs(ordered, plan.new, manifest, SHOTS_PER_RUN), shots_job.name, digest[:12]),
        # An edited shot gets new input versions, which marks its video stale; paying again is the user's call.
        *range_run_requests(partition_ranges(ordered, plan.changed, 500), shot_inputs_job.name, f"edit-{digest[:12]}"),
    ]
    context.log.info(f"{len(plan.new)} new shot(s), {len(plan.changed)} edited, {len(manifest.errors)} bad row(s)")
    return SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[shots_partitions.build_add_request(plan.new)] if plan.new else [],
        cursor=digest,
    )


MAX_SENSOR_RESUMES = 5  # past this, an orphan that keeps failing is left to a person (`hailuo report` lists it)
RESUME_ONLY = {"ops": {"hailuo_shots": {"config": {"resume_only": True}}}}


@sensor(
    minimum_interval_seconds=60,
    job=shot_videos_job,
    default_status=DefaultSensorStatus.RUNNING,
    description="Finds paid requests no live run follows any more (a crash, an evicted pod) and launches runs "
    "that resume them by their fal id, before fal's result expires. Spends nothing: these runs never submit.",
)
def orphaned_requests_sensor(context: SensorEvaluationContext, catalog: CatalogResource):
    registered = context.instance.get_dynamic_partitions(SHOTS)
    known = set(registered)
    orphans = [r for r in catalog.ledger().orphans() if r.shot_id in known]
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
    ranges = partition_ranges(registered, list(todo), SHOTS_PER_RUN)
    return range_run_requests(ranges, shot_videos_job.name, f"resume-{digest}", RESUME_ONLY)
