"""The fal client resource: fal_client.AsyncClient configured for a paid, slow, failure-prone queue."""

from __future__ import annotations

import fal_client
from dagster import ConfigurableResource
from pydantic import Field

from hailuo_pipeline.model_limits import ENDPOINT_ID
from hailuo_pipeline.shots.validation import ImageInput, ShotRequest


class FalResource(ConfigurableResource):
    """fal_client reads FAL_QUEUE_RUN_HOST (at import) and SSL_CERT_FILE from the environment, so the
    same resource reaches fal, a corporate proxy or the emulator; only the host and key differ."""

    key: str = Field(description="fal API key; set from EnvVar('FAL_KEY'). Never logged or stored.")
    endpoint_id: str = Field(default=ENDPOINT_ID, description="fal endpoint id of the model")
    submit_timeout_seconds: float = Field(
        default=30.0,
        description="How long to wait for fal to answer a submit. Sent as start_timeout too, which stops "
        "fal_client from silently replaying a submit whose answer timed out (a possible second paid job).",
    )
    poll_interval_seconds: float = Field(default=1.0, description="First wait between status polls")
    max_poll_interval_seconds: float = Field(default=5.0, description="Polls back off up to this wait")
    poll_backoff: float = Field(default=1.25, description="Each poll waits this much longer than the last")
    max_poll_errors: int = Field(
        default=6, description="Consecutive failed status polls (after fal_client's own retries) before giving up"
    )
    max_poll_error_seconds: float = Field(
        default=120.0, description="...or failing for this long: the step then fails (resumably) for Dagster to retry"
    )
    call_timeout_seconds: float = Field(
        default=90.0, description="Bound on one status or result call, fal_client's own retries included"
    )
    inline_image_max_bytes: int = Field(
        default=10 * 1024 * 1024,
        description="Local images up to this size travel as base64 data URIs; larger ones go through fal storage",
    )
    download_attempts: int = Field(default=4, description="Fetches of a result video before the step gives up")
    download_timeout_seconds: float = Field(default=300.0, description="Per-download timeout")

    def client(self) -> fal_client.AsyncClient:
        return fal_client.AsyncClient(key=self.key, default_timeout=self.submit_timeout_seconds)

    async def image_argument(self, client: fal_client.AsyncClient, request: ShotRequest) -> str:
        """http(s) images pass through unchanged; local ones are inlined or uploaded."""
        if request.shot.image_is_url:
            return request.shot.image
        image: ImageInput = request.image
        if len(image.data) <= self.inline_image_max_bytes:
            return fal_client.encode(image.data, image.content_type)
        return await client.upload(
            image.data, image.content_type, file_name=f"{request.shot_id}.{image.format.lower()}"
        )
