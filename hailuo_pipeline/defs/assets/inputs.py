"""source_image and prompt: a shot's validated inputs, versioned by their content. They are materialized
by the same step as the video (assets/shots.py), each shot's as soon as it passes validation."""

import hashlib

from dagster import AssetSpec, MetadataValue

from hailuo_pipeline.defs.partitions import ASSET_GROUP, shots_partitions
from hailuo_pipeline.redact import redact
from hailuo_pipeline.shots.manifest import Shot
from hailuo_pipeline.shots.validation import ShotRequest

SHOT_INPUT: dict = {
    "partitions_def": shots_partitions,
    "group_name": ASSET_GROUP,
    "code_version": "1",
    "skippable": True,  # each shot's materialization is logged as it is ready, not returned at the end
}

source_image = AssetSpec(
    "source_image",
    kinds={"image"},
    description="The shot's first frame, decoded and checked against the model's limits before any spend.",
    **SHOT_INPUT,
)

prompt = AssetSpec(
    "prompt",
    kinds={"text"},
    description="The shot's prompt, duration and prompt_optimizer flag, checked before any spend.",
    **SHOT_INPUT,
)


def image_metadata(request: ShotRequest) -> tuple[dict, str]:
    """source_image's metadata and data version (the image's content hash)."""
    image = request.image
    metadata = {
        "image": redact(request.shot.image),
        "sha256": image.sha256,
        "width": image.width,
        "height": image.height,
        "format": image.format,
        "bytes": len(image.data),
        "manifest_row": request.shot.row,
    }
    return metadata, image.sha256


def prompt_metadata(request: ShotRequest) -> tuple[dict, str]:
    """prompt's metadata and data version (a hash of prompt, duration and prompt_optimizer)."""
    return prompt_fields_metadata(request.shot, request.prompt, request.duration, request.prompt_optimizer)


def prompt_fields_metadata(shot: Shot, text: str, duration: int, optimizer: bool) -> tuple[dict, str]:
    """The same from validated fields alone: a shot whose image was refused still has a good prompt."""
    version = hashlib.sha256(f"{text}\x1f{duration}\x1f{optimizer}".encode()).hexdigest()
    metadata = {
        "prompt": MetadataValue.text(text[:500]),
        "prompt_length": len(text),
        "duration_seconds": duration,
        "prompt_optimizer": optimizer,
        "manifest_row": shot.row,
    }
    return metadata, version
