"""The manifest sensor: new rows become partitions and runs; an unchanged manifest costs one hash."""

import hashlib

from dagster import (
    DefaultSensorStatus,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from hailuo_pipeline.assets.inputs import prompt, source_image
from hailuo_pipeline.assets.video import hailuo_video
from hailuo_pipeline.automation.partitions import SHOTS_PER_RUN, shots_partitions
from hailuo_pipeline.automation.registration import (
    partition_ranges,
    plan_shot_runs,
    range_run_requests,
    record_shots,
)
from hailuo_pipeline.resources import CatalogResource, ShotsResource
from hailuo_pipeline.shots.manifest import ManifestError, read_manifest

SHOT_ASSETS = [source_image.key, prompt.key, hailuo_video.key]


@sensor(
    minimum_interval_seconds=30,
    asset_selection=SHOT_ASSETS,
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
    existing = context.instance.get_dynamic_partitions(shots_partitions.name)
    plan = record_shots(catalog.catalog(), manifest, set(existing))
    ordered = [*existing, *plan.new]
    run_requests = [
        *range_run_requests(plan_shot_runs(ordered, plan.new, manifest, SHOTS_PER_RUN), SHOT_ASSETS, digest[:12]),
        # An edited shot gets new input versions, which marks its video stale; paying again is the user's call.
        *range_run_requests(partition_ranges(ordered, plan.changed, 500), SHOT_ASSETS[:2], f"edit-{digest[:12]}"),
    ]
    context.log.info(f"{len(plan.new)} new shot(s), {len(plan.changed)} edited, {len(manifest.errors)} bad row(s)")
    return SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[shots_partitions.build_add_request(plan.new)] if plan.new else [],
        cursor=digest,
    )
