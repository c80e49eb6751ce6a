"""The Dagster code location. A classic `Definitions` object (not `defs/` autoloading): the package is
small, and one explicit file makes every asset, check, resource and automation visible at a glance."""

from __future__ import annotations

from dagster import Definitions, EnvVar, in_process_executor

from hailuo_pipeline.catalog.backends import is_shared
from hailuo_pipeline.defs.assets.approved import approved_video, approved_video_job, approved_videos_sensor
from hailuo_pipeline.defs.assets.catalog_snapshot import catalog_snapshot
from hailuo_pipeline.defs.assets.cost_report import cost_report, cost_report_automation
from hailuo_pipeline.defs.assets.fal_usage import fal_usage, fal_usage_job, fal_usage_schedule
from hailuo_pipeline.defs.assets.shots import build_hailuo_shots
from hailuo_pipeline.defs.automation.schedules import build_nightly_sweep
from hailuo_pipeline.defs.automation.sensors import (
    orphaned_requests_sensor,
    shots_generation_sensor,
    shots_manifest_sensor,
)
from hailuo_pipeline.defs.automation.snapshots import build_snapshot_automation
from hailuo_pipeline.defs.jobs import JOBS
from hailuo_pipeline.defs.resources import BudgetResource, CatalogResource, FalResource, ShotsResource
from hailuo_pipeline.settings import Settings


def build_definitions(settings: Settings | None = None) -> Definitions:
    """Settings are read from the environment now (not at import), so tests and the CLI can choose first."""
    settings = settings or Settings.from_env()
    assets: list = [build_hailuo_shots(settings.retry_delay_seconds), approved_video, cost_report, fal_usage]
    jobs: list = [*JOBS, fal_usage_job, approved_video_job]
    sensors: list = [
        shots_manifest_sensor,
        shots_generation_sensor,
        orphaned_requests_sensor,
        approved_videos_sensor,
        cost_report_automation,
    ]
    schedules: list = [build_nightly_sweep(settings.sweep_cron), fal_usage_schedule]
    if is_shared(settings.catalog_location):  # the ledger in PostgreSQL: keep a DuckDB copy to query
        snapshot_job, snapshot_schedule, snapshot_sensor = build_snapshot_automation()
        assets.append(catalog_snapshot)
        jobs.append(snapshot_job)
        schedules.append(snapshot_schedule)
        sensors.append(snapshot_sensor)
    # Every run executes its steps in the run's own process. A shots step is one process's event loop
    # whatever the executor, and Dagster's default (a process per step) would start a second interpreter
    # beside the run worker: about 250 MB and a few seconds more for each launched run.
    return Definitions(
        assets=assets,
        jobs=jobs,
        executor=in_process_executor,
        sensors=sensors,
        schedules=schedules,
        resources={
            "fal": FalResource(
                key=EnvVar("FAL_KEY"),
                submit_timeout_seconds=settings.submit_timeout_seconds,
                poll_interval_seconds=settings.poll_interval_seconds,
                max_in_flight=settings.max_in_flight,
                concurrency=settings.concurrency,
                allowed_private_hosts=settings.fetch_hosts,
                download_deadline_seconds=settings.download_deadline_seconds,
            ),
            "catalog": CatalogResource(
                database=settings.snapshot_location if settings.catalog_url else str(settings.catalog_path),
                url=settings.catalog_url,
                lease_seconds=settings.lease_seconds,
            ),
            "shots": ShotsResource(
                data_dir=str(settings.data_dir),
                video_store=settings.video_store,
                allowed_private_hosts=settings.fetch_hosts,
            ),
            "budget": BudgetResource(daily_usd=settings.daily_budget_usd, total_usd=settings.total_budget_usd),
        },
    )


defs = build_definitions()
