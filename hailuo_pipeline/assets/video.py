"""hailuo_video: one paid Hailuo 2.3 Fast video per shot, delivered, verified and recorded."""

import asyncio
import os

from dagster import (
    AssetExecutionContext,
    Backoff,
    Config,
    DagsterExecutionInterruptedError,
    Failure,
    Jitter,
    MetadataValue,
    RetryPolicy,
    asset,
)
from pydantic import Field

from hailuo_pipeline.assets.batch import InstanceWriter, PartitionOutcome, finish_partitions
from hailuo_pipeline.assets.inputs import prompt, source_image
from hailuo_pipeline.automation.partitions import shots_backfill_policy, shots_partitions
from hailuo_pipeline.fal.resource import FalResource
from hailuo_pipeline.generation.runner import GenerationOptions, ShotGenerator, ShotOutcome
from hailuo_pipeline.resources import BudgetResource, CatalogResource, ShotsResource

# Dagster's retries sit on top of fal_client's own (at most 10 quick HTTP attempts per call), so the
# total stays bounded: 3 step retries, 10 s growing to 40 s apart, each resuming rather than repaying.
VIDEO_RETRY_POLICY = RetryPolicy(
    max_retries=3,
    delay=float(os.environ.get("HAILUO_RETRY_DELAY_SECONDS", "10")),
    backoff=Backoff.EXPONENTIAL,
    jitter=Jitter.PLUS_MINUS,
)


class VideoConfig(Config):
    new_take: bool = Field(
        default=False,
        description="Pay for a new video even if a verified one exists (the old one stays recorded)",
    )
    resubmit_ambiguous: bool = Field(
        default=False,
        description="Submit again after a submit whose answer never came (flagged as a possible double charge)",
    )
    concurrency: int = Field(default=16, description="Shots in flight at once within this step")


def shot_metadata(outcome: ShotOutcome) -> dict:
    video, request = outcome.video, outcome.request
    assert video is not None and request is not None
    return {
        "request_id": video.request_id,
        "take": request.take,
        "cost_usd": float(request.price_usd),
        "requested_duration_seconds": request.duration_seconds,
        "measured_duration_seconds": round(video.duration_seconds, 3),
        "resolution": f"{video.width}x{video.height}",
        "fps": video.fps,
        "frames": video.frames,
        "queue_seconds": _seconds(request.submitted_at, request.started_at),
        "inference_seconds": _seconds(request.started_at, request.completed_at),
        "total_seconds": round(outcome.seconds, 3),
        "status_polls": outcome.polls,
        "reused": outcome.reused,
        "path": MetadataValue.path(video.path),
        "source_url": MetadataValue.url(video.source_url or ""),
        "sha256": video.sha256,
        "bytes": video.bytes,
    }


def _seconds(start, end) -> float | None:
    return round((end - start).total_seconds(), 3) if start and end else None


@asset(
    partitions_def=shots_partitions,
    deps=[source_image, prompt],
    backfill_policy=shots_backfill_policy,
    retry_policy=VIDEO_RETRY_POLICY,
    pool="fal",
    group_name="videos",
    kinds={"fal", "video", "duckdb"},
    code_version="1",
    description="Hailuo 2.3 Fast (Standard, 768p) image-to-video on fal: never paid twice, never lost.",
)
def hailuo_video(
    context: AssetExecutionContext,
    config: VideoConfig,
    fal: FalResource,
    catalog: CatalogResource,
    shots: ShotsResource,
    budget: BudgetResource,
):
    keys = list(context.partition_keys)
    selected, missing = shots.select(keys)
    outcomes = {key: PartitionOutcome(error=reason) for key, reason in missing.items()}
    writes = InstanceWriter(context)
    generator = ShotGenerator(
        fal,
        catalog.ledger(),
        shots.videos_dir,
        writes,
        run_id=context.run_id,
        options=GenerationOptions(config.new_take, config.resubmit_ambiguous, budget.budget()),
    )
    todo = list(selected.values())

    def record(outcome: ShotOutcome) -> None:
        """As each shot finishes: its metadata now (overlapping the wait for others), its failure in the log."""
        if outcome.ok:
            outcomes[outcome.shot_id] = PartitionOutcome(metadata=shot_metadata(outcome))
            if len(keys) > 1:
                writes.add_asset_metadata(outcomes[outcome.shot_id].metadata, partition_key=outcome.shot_id)
        else:
            failure = outcome.failure
            outcomes[outcome.shot_id] = PartitionOutcome(
                error=str(failure), retryable=bool(failure is not None and not failure.permanent)
            )
            writes.error(str(failure))

    async def generate() -> list[ShotOutcome]:
        async with generator:
            return await generator.generate_many(todo, config.concurrency, on_done=record)

    async def cancel() -> list[str]:
        async with generator:
            return await generator.cancel_in_flight()

    try:
        asyncio.run(generate())
    except (DagsterExecutionInterruptedError, KeyboardInterrupt) as interrupt:
        cancelled = asyncio.run(cancel())
        writes.drain()
        # Not re-raised: Dagster answers an interrupt with the retry policy, and a retry of cancelled
        # requests would pay again. A terminated run ends here.
        raise Failure(
            description=f"run terminated: cancelled {len(cancelled)} fal request(s) at fal: {', '.join(cancelled)}",
            allow_retries=False,
        ) from interrupt
    writes.drain()
    yield from finish_partitions(context, outcomes, metadata_added=True)
