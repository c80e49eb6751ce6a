"""source_image and prompt: a shot's validated inputs, versioned by their content."""

import hashlib
from concurrent.futures import ThreadPoolExecutor

from dagster import AssetExecutionContext, MetadataValue, asset

from hailuo_pipeline.assets.batch import PartitionOutcome, finish_partitions
from hailuo_pipeline.automation.partitions import shots_backfill_policy, shots_partitions
from hailuo_pipeline.resources import ShotsResource
from hailuo_pipeline.shots.manifest import Shot
from hailuo_pipeline.shots.validation import (
    ShotInputError,
    read_image_bytes,
    validate_duration,
    validate_image,
    validate_prompt,
    validate_prompt_optimizer,
)

SHOT_INPUT: dict = {
    "partitions_def": shots_partitions,
    "backfill_policy": shots_backfill_policy,
    "group_name": "shots",
    "code_version": "1",
}


@asset(
    **SHOT_INPUT,
    kinds={"image"},
    description="The shot's first frame, decoded and checked against the model's limits before any spend.",
)
def source_image(context: AssetExecutionContext, shots: ShotsResource):
    def inspect(shot: Shot) -> PartitionOutcome:
        try:
            image = validate_image(shot.shot_id, read_image_bytes(shot))
        except ShotInputError as exc:
            return PartitionOutcome(error=str(exc))
        return PartitionOutcome(
            metadata={
                "image": shot.image,
                "sha256": image.sha256,
                "width": image.width,
                "height": image.height,
                "format": image.format,
                "bytes": len(image.data),
                "manifest_row": shot.row,
            },
            data_version=image.sha256,
        )

    selected, missing = shots.select(list(context.partition_keys))
    outcomes = {key: PartitionOutcome(error=reason) for key, reason in missing.items()}
    with ThreadPoolExecutor(max_workers=4) as pool:  # decoding releases the GIL
        outcomes.update(zip(selected, pool.map(inspect, selected.values()), strict=True))
    yield from finish_partitions(context, outcomes)


@asset(
    **SHOT_INPUT,
    kinds={"text"},
    description="The shot's prompt, duration and prompt_optimizer flag, checked before any spend.",
)
def prompt(context: AssetExecutionContext, shots: ShotsResource):
    selected, missing = shots.select(list(context.partition_keys))
    outcomes = {key: PartitionOutcome(error=reason) for key, reason in missing.items()}
    for shot_id, shot in selected.items():
        try:
            text = validate_prompt(shot_id, shot.prompt)
            duration = validate_duration(shot_id, shot.duration)
            optimizer = validate_prompt_optimizer(shot_id, shot.prompt_optimizer)
        except ShotInputError as exc:
            outcomes[shot_id] = PartitionOutcome(error=str(exc))
            continue
        version = hashlib.sha256(f"{text}\x1f{duration}\x1f{optimizer}".encode()).hexdigest()
        outcomes[shot_id] = PartitionOutcome(
            metadata={
                "prompt": MetadataValue.text(text[:500]),
                "prompt_length": len(text),
                "duration_seconds": duration,
                "prompt_optimizer": optimizer,
                "manifest_row": shot.row,
            },
            data_version=version,
        )
    yield from finish_partitions(context, outcomes)
