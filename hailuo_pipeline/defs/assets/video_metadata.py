"""A delivered video's metadata on its `hailuo_video` materialization: what this run did for the shot, its poster,
and the `watch` link to its take's page on the review server."""

import base64

from dagster import MetadataValue

from hailuo_pipeline.defs.assets.formats import dollars, tenths
from hailuo_pipeline.generation.outcome import ShotOutcome


def shot_metadata(outcome: ShotOutcome, review_url: str) -> dict:
    """What this run did for the shot. A reused video cost this run nothing and took no queue or inference
    time here: it says so, and names the request and run that paid for it, so summing `cost_usd` over
    materializations gives what was spent. Money is text with its dollar sign: see formats."""
    video, request = outcome.video, outcome.request
    assert video is not None and request is not None
    metadata: dict = {
        "request_id": video.request_id,
        "take": request.take,
        "cost_usd": dollars(0 if outcome.reused else request.price_usd),
        "resumed": outcome.resumed,
        "reused": outcome.reused,
        "requested_duration_seconds": request.duration_seconds,
        "measured_duration_seconds": tenths(video.duration_seconds),
        "resolution": f"{video.width}x{video.height}",
        "fps": video.fps,
        "frames": video.frames,
        "total_seconds": tenths(outcome.seconds),
        "status_polls": outcome.polls,
        # the one to click: the take's page plays it (Dagster shows images as links, dagster-io/dagster#16742)
        "watch": MetadataValue.url(f"{review_url.rstrip('/')}/takes/{request.request_key}"),
        "path": MetadataValue.url(video.path) if "://" in video.path else MetadataValue.path(video.path),
        "fal_source_url_expires": MetadataValue.text(video.source_url or ""),  # fal's copy, kept an hour at most
        "sha256": video.sha256,
        "bytes": video.bytes,
    }
    if outcome.poster:  # Dagster renders Markdown images: the shot is seen, not only described
        encoded = base64.b64encode(outcome.poster).decode()
        metadata["poster"] = MetadataValue.md(f"![{video.shot_id}](data:image/jpeg;base64,{encoded})")
    if outcome.reused:
        metadata["paid_by"] = f"request {request.request_id} (${request.price_usd:.2f}) in run {request.run_id}"
    else:
        metadata["queue_seconds"] = _seconds(request.submitted_at, request.started_at)
        metadata["inference_seconds"] = _seconds(request.started_at, request.completed_at)
    return {k: v for k, v in metadata.items() if v is not None}


def _seconds(start, end) -> float | None:
    return tenths((end - start).total_seconds()) if start and end else None
