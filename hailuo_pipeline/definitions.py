"""The Dagster code location. A classic `Definitions` object (not `defs/` autoloading): the package is
small, and one explicit file makes every asset, check, resource and automation visible at a glance."""

from __future__ import annotations

import os

from dagster import AssetSelection, Definitions, EnvVar, define_asset_job

from hailuo_pipeline import settings
from hailuo_pipeline.assets.inputs import prompt, source_image
from hailuo_pipeline.assets.report import cost_report
from hailuo_pipeline.assets.video import hailuo_shots, hailuo_video
from hailuo_pipeline.automation.partitions import shots_partitions
from hailuo_pipeline.automation.schedules import nightly_sweep
from hailuo_pipeline.automation.sensors import orphaned_requests_sensor, shots_manifest_sensor
from hailuo_pipeline.catalog.decisions import LEASE_SECONDS
from hailuo_pipeline.fal.resource import FalResource
from hailuo_pipeline.resources import BudgetResource, CatalogResource, ShotsResource

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


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, "").strip() or default)


def build_definitions() -> Definitions:
    """Read the environment now (HAILUO_DATA_DIR, budgets), so tests and the CLI can choose it first."""
    return Definitions(
        assets=[hailuo_shots, cost_report],
        jobs=[shots_job, shot_inputs_job, shot_videos_job, cost_report_job],
        sensors=[shots_manifest_sensor, orphaned_requests_sensor],
        schedules=[nightly_sweep],
        resources={
            "fal": FalResource(
                key=EnvVar("FAL_KEY"),
                submit_timeout_seconds=_env_float("HAILUO_FAL_SUBMIT_TIMEOUT_SECONDS", 30.0),
                poll_interval_seconds=_env_float("HAILUO_FAL_POLL_INTERVAL_SECONDS", 1.0),
            ),
            "catalog": CatalogResource(
                database=str(settings.catalog_path()), lease_seconds=_env_float("HAILUO_LEASE_SECONDS", LEASE_SECONDS)
            ),
            "shots": ShotsResource(data_dir=str(settings.data_dir())),
            "budget": BudgetResource(
                daily_usd=settings.budget_usd_from_env(settings.DAILY_BUDGET_ENV),
                total_usd=settings.budget_usd_from_env(settings.TOTAL_BUDGET_ENV),
            ),
        },
    )


defs = build_definitions()
