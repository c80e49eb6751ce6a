"""Named jobs over the shot assets, so runs show by name in the UI and the CLI."""

from dagster import AssetSelection, define_asset_job

from hailuo_pipeline.defs.assets.cost_report import cost_report
from hailuo_pipeline.defs.assets.inputs import prompt, source_image
from hailuo_pipeline.defs.assets.shots import hailuo_video
from hailuo_pipeline.defs.partitions import shots_partitions

shot_inputs_job = define_asset_job(
    "shot_inputs",
    selection=AssetSelection.assets(source_image.key, prompt.key),
    partitions_def=shots_partitions,
    description="Validate shots without spending",
)
shot_videos_job = define_asset_job(
    "shot_videos", selection=AssetSelection.assets(hailuo_video.key), partitions_def=shots_partitions
)
shots_job = define_asset_job(
    "generate_shots",
    selection=AssetSelection.assets(source_image.key, prompt.key, hailuo_video.key),
    partitions_def=shots_partitions,
    description="Validate shots and generate their videos, many shots per run",
)
cost_report_job = define_asset_job("cost_report_job", selection=AssetSelection.assets(cost_report))

JOBS = [shots_job, shot_inputs_job, shot_videos_job, cost_report_job]
