"""Shared mode: the DuckDB snapshot of the ledger refreshed after every batch and on a schedule."""

from dagster import (
    AssetSelection,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    JobDefinition,
    RunRequest,
    RunStatusSensorContext,
    ScheduleDefinition,
    SensorDefinition,
    SkipReason,
    define_asset_job,
    run_status_sensor,
)

from hailuo_pipeline.defs.assets.catalog_snapshot import catalog_snapshot

SNAPSHOT_JOB = "catalog_snapshot_job"


def build_snapshot_automation(cron: str = "0 * * * *") -> tuple[JobDefinition, ScheduleDefinition, SensorDefinition]:
    job = define_asset_job(
        SNAPSHOT_JOB,
        selection=AssetSelection.assets(catalog_snapshot),
        description="Copy what changed in the shared ledger into the DuckDB catalog file",
    )
    schedule = ScheduleDefinition(
        name="catalog_snapshot_schedule",
        job=job,
        cron_schedule=cron,
        default_status=DefaultScheduleStatus.RUNNING,
        description="Refreshes the DuckDB snapshot of the shared ledger every hour, whatever ran",
    )

    @run_status_sensor(
        run_status=DagsterRunStatus.SUCCESS,
        request_job=job,
        default_status=DefaultSensorStatus.RUNNING,
        description="Refreshes the DuckDB snapshot of the shared ledger when a batch of shots finishes",
    )
    def snapshot_after_batch(context: RunStatusSensorContext):
        if context.dagster_run.job_name == SNAPSHOT_JOB:
            return SkipReason("a snapshot run itself")
        return RunRequest(run_key=f"after-{context.dagster_run.run_id}")

    return job, schedule, snapshot_after_batch  # type: ignore[return-value]
