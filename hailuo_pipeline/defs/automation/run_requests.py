"""Run requests for runs of many shots (a range of shot partitions, and which of its shots to handle), each
naming its job, so the runs show under that name in the UI rather than as jobless asset materializations."""

from __future__ import annotations

from typing import Any

from dagster import RunRequest

from hailuo_pipeline.defs.compat import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from hailuo_pipeline.generation.planning import ShotRun

STEP = "hailuo_shots"


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
