"""Run requests for runs of many shots (a range of shot partitions, and which of its shots to handle), each
naming its job, so the runs show under that name in the UI rather than as jobless asset materializations."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunRequest, RunsFilter

from hailuo_pipeline.defs.assets.shots import hailuo_video
from hailuo_pipeline.defs.compat import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)
from hailuo_pipeline.defs.jobs import shot_videos_job, shots_job
from hailuo_pipeline.generation.planning import ShotRun, shots_of_run

STEP = "hailuo_shots"
# a run still to come or under way; a canceling one will not reach the shots it has not started
LIVE_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]
# A started run silent this long is taken for dead: Dagster's default launcher cannot tell (its run monitoring
# has no health check for local run workers), and its shots must not wait for it forever. A batch logs each
# shot it delivers; the longest silence of a live one is fal's latency for its last wave, minutes at most.
SILENT_RUN_SECONDS = 15 * 60


def shot_run_requests(
    runs: list[ShotRun], job_name: str, key_prefix: str, step_config: dict | None = None
) -> list[RunRequest]:
    requests = []
    for run in runs:
        config = run.step_config(**(step_config or {}))
        key = run.start if run.start == run.end else f"{run.start}..{run.end}:{len(run.shots)}"
        requests.append(
            RunRequest(
                run_key=f"{key_prefix}:{key}",
                job_name=job_name,
                run_config={"ops": {STEP: {"config": config}}} if config else None,
                **run_target(run),
            )
        )
    return requests


def run_target(run: ShotRun) -> dict[str, Any]:
    """How a run names its shots to Dagster: one partition, or a range of them (tags)."""
    return {"partition_key": run.start} if run.start == run.end else {"tags": range_tags(run.start, run.end)}


def range_tags(start: str, end: str) -> dict[str, str]:
    return {ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end}


def shots_in_live_runs(instance: DagsterInstance, ordered: Sequence[str]) -> set[str]:
    """The shots whose videos a queued or running run will make. A sensor or schedule leaves them to it:
    a second run would race it for the shots it has not reached yet (money-safe, since the ledger claims
    each request once, but it shows two runs making the same videos, and holds two run workers)."""
    taken: set[str] = set()
    now = time.time()
    for record in instance.get_run_records(filters=RunsFilter(statuses=LIVE_STATUSES)):
        run = record.dagster_run
        if not makes_videos(run):
            continue
        if run.status == DagsterRunStatus.STARTED and now - last_heard(instance, run.run_id) > SILENT_RUN_SECONDS:
            continue
        ops: Any = run.run_config.get("ops") or {}  # Dagster checked it against the step's config schema
        config = (ops.get(STEP) or {}).get("config") or {}
        taken |= shots_of_run(
            ordered,
            run.tags.get(PARTITION_NAME_TAG),
            run.tags.get(ASSET_PARTITION_RANGE_START_TAG),
            run.tags.get(ASSET_PARTITION_RANGE_END_TAG),
            config.get("only") or (),
        )
    return taken


def makes_videos(run: DagsterRun) -> bool:
    if run.asset_selection is not None:
        return hailuo_video.key in run.asset_selection
    return run.job_name in (shots_job.name, shot_videos_job.name)


def last_heard(instance: DagsterInstance, run_id: str) -> float:
    records = instance.get_records_for_run(run_id, ascending=False, limit=1).records
    return records[0].timestamp if records else 0.0
