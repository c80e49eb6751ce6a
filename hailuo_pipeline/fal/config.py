"""How the pipeline uses fal_client for a paid, slow, failure-prone queue: plain settings and the client.

fal_client reads FAL_QUEUE_RUN_HOST (at import) and SSL_CERT_FILE from the environment, so the same
settings reach fal, a corporate proxy or the emulator; only the host and key differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import fal_client

from hailuo_pipeline.errors import HailuoError
from hailuo_pipeline.fal.hooks import route_storage_to_queue_host
from hailuo_pipeline.fetch_policy import FetchPolicy
from hailuo_pipeline.model_limits import ENDPOINT_ID
from hailuo_pipeline.redact import masked
from hailuo_pipeline.shots.validation import ImageInput, ShotRequest


class FalKeyError(HailuoError, ValueError):
    """FAL_KEY is missing or cannot be sent as it is (a copy-paste brought whitespace or control characters)."""


def checked_fal_key(key: str) -> str:
    """The key as fal_client will send it, or FalKeyError with the key shown masked. A key with stray
    whitespace would otherwise fail inside the HTTP library, with the key in the error's text."""
    if not key:
        raise FalKeyError("FAL_KEY is not set; export your fal key (or run `hailuo demo` to try it offline)")
    stray = sorted({repr(ch) for ch in key if ch.isspace() or not ch.isprintable()})
    if stray:
        raise FalKeyError(
            f"FAL_KEY {masked(key)} contains {', '.join(stray)}, which cannot be sent in a header; "
            "copy the key again without surrounding spaces or line breaks"
        )
    if not key.isascii():
        raise FalKeyError(f"FAL_KEY {masked(key)} contains non-ASCII characters; copy the key again")
    return key


@dataclass(frozen=True)
class FalSettings:
    key: str  # never logged or stored
    endpoint_id: str = ENDPOINT_ID
    # How long to wait for fal to answer a submit. Sent as start_timeout too, which stops fal_client from
    # silently replaying a submit whose answer timed out (a possible second paid job).
    submit_timeout_seconds: float = 30.0
    poll_interval_seconds: float = 1.0  # first wait between status polls
    max_poll_interval_seconds: float = 5.0  # polls back off up to this wait
    poll_backoff: float = 1.25
    # status polls failing this many times in a row (after fal_client's own retries), or for this long,
    # fail the step attempt (resumably) for Dagster to retry
    max_poll_errors: int = 6
    max_poll_error_seconds: float = 120.0
    call_timeout_seconds: float = 90.0  # bound on one status or result call, fal_client's retries included
    inline_image_max_bytes: int = 10 * 1024 * 1024  # larger local images go through fal storage
    # A delivery's downloads: at most `download_attempts` tries within one total deadline, each refused at once
    # when its announced length is over the cap or differs from the result's file_size, and dropped when it
    # runs slower than the minimum rate after its first seconds. Dagster's 3 retries make at most 4 deliveries
    # of a shot per run: 4 x 120 s in the worst case, each holding at most one partial file.
    download_attempts: int = 4
    download_deadline_seconds: float = 120.0
    download_min_bytes_per_second: int = 64 * 1024
    fetch: FetchPolicy = field(default_factory=FetchPolicy)  # where fal's video URLs may point

    @property
    def download_grace_seconds(self) -> float:
        """How long a download may take to reach the minimum rate: 10 s, less under a short deadline."""
        return min(10.0, self.download_deadline_seconds / 4)

    def client(self) -> fal_client.AsyncClient:
        route_storage_to_queue_host()
        return fal_client.AsyncClient(key=checked_fal_key(self.key), default_timeout=self.submit_timeout_seconds)

    def inline_image_argument(self, request: ShotRequest) -> str | None:
        """The image argument when it needs no upload: an http(s) URL unchanged, a small local image inlined."""
        if request.shot.image_is_url:
            return request.shot.image
        image: ImageInput = request.image
        if len(image.data) <= self.inline_image_max_bytes:
            return fal_client.encode(image.data, image.content_type)
        return None

    async def image_argument(self, client: fal_client.AsyncClient, request: ShotRequest) -> str:
        """http(s) images pass through unchanged; local ones are inlined or uploaded."""
        inline = self.inline_image_argument(request)
        if inline is not None:
            return inline
        image: ImageInput = request.image
        return await client.upload(
            image.data, image.content_type, file_name=f"{request.shot_id}.{image.format.lower()}"
        )
