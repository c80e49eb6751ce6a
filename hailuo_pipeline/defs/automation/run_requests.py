"""Run requests for ranges of shot partitions (one run, many shots), each naming its job, so the runs show
under that name in the UI rather than as jobless asset materializations."""

from __future__ import annotations

from dagster import RunRequest

from hailuo_pipeline.defs.compat import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG


def range_run_requests(
    ranges: list[tuple[str, str]],
    job_name: str,
    key_prefix: str,
    run_config: dict | None = None,
) -> list[RunRequest]:
    requests = []
    for start, end in ranges:
        if start == end:
            requests.append(
                RunRequest(
                    run_key=f"{key_prefix}:{start}", job_name=job_name, partition_key=start, run_config=run_config
                )
            )
        else:
            requests.append(
                RunRequest(
                    run_key=f"{key_prefix}:{start}..{end}",
                    job_name=job_name,
                    tags=range_tags(start, end),
                    run_config=run_config,
                )
            )
    return requests


def range_tags(start: str, end: str) -> dict[str, str]:
    return {ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end}
