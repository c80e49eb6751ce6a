"""Deliver a paid request: download its video (again, if need be), verify it, record it. Never resubmit
for a download problem: the stored result URL is fetched again instead."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from hailuo_pipeline.catalog.ledger import RequestLedger
from hailuo_pipeline.catalog.rows import RequestRow, VideoRow
from hailuo_pipeline.fal.config import FalSettings
from hailuo_pipeline.fal.replies import BadReply, VideoEntry, checked_video
from hailuo_pipeline.generation.download import DownloadBounds, DownloadedVideo, DownloadError, download_video
from hailuo_pipeline.generation.errors import (
    FIX_RESUMABLE,
    PermanentShotFailure,
    TransientShotFailure,
    fix_for_lost,
)
from hailuo_pipeline.generation.log import RunLog
from hailuo_pipeline.video.poster import poster_jpeg
from hailuo_pipeline.video.probe import problems_with
from hailuo_pipeline.video.store import VideoStore, VideoStoreError

GONE = (404, 410)


def poster_or_none(path: Path) -> bytes | None:
    """The poster is for looking; a video that plays but will not give one is still delivered."""
    try:
        return poster_jpeg(path)
    except (OSError, ValueError):
        return None


class Delivery:
    def __init__(
        self, fal: FalSettings, http: httpx.AsyncClient, ledger: RequestLedger, videos: VideoStore, log: RunLog
    ) -> None:
        self.fal = fal
        self.http = http
        self.ledger = ledger
        self.videos = videos
        self.log = log

    async def deliver(self, row: RequestRow, video: VideoEntry | None) -> tuple[VideoRow, RequestRow, bytes | None]:
        """`video` is the result's checked video entry, or None to use the result stored in the ledger.
        Returns the recorded video, the request's final row, and the video's poster frame (a small JPEG)."""
        assert row.request_id is not None
        if video is None:
            try:
                video = checked_video(await asyncio.to_thread(self.ledger.result_of, row.request_key))
            except BadReply as exc:
                cause = f"the ledger holds no usable result yet ({exc})"
                raise TransientShotFailure(row.shot_id, cause, FIX_RESUMABLE) from exc
        destination = self.videos.staging(row.shot_id, row.take, row.request_id)
        downloaded: DownloadedVideo | None = None
        kept: str | None = None
        poster: bytes | None = None
        last_error: DownloadError | None = None
        deadline = time.monotonic() + self.fal.download_deadline_seconds  # one for the delivery, every attempt in
        for attempt in range(1, self.fal.download_attempts + 1):
            bounds = DownloadBounds(
                max(0.0, deadline - time.monotonic()),
                self.fal.download_min_bytes_per_second,
                self.fal.download_grace_seconds,
                self.fal.fetch,
            )
            try:
                downloaded = await download_video(self.http, video.url, destination, video.file_size, bounds)
                poster = await asyncio.to_thread(poster_or_none, downloaded.path)  # before it leaves local disk
                kept = await asyncio.to_thread(self.videos.keep, downloaded.path, row.shot_id, row.take, row.request_id)
                break
            except (DownloadError, VideoStoreError) as exc:
                downloaded = None
                last_error = exc if isinstance(exc, DownloadError) else DownloadError(str(exc))
                again = last_error.worth_retrying and attempt < self.fal.download_attempts
                again = again and deadline - time.monotonic() > 1.0
                self.log.warning(
                    f"{row.shot_id}: download attempt {attempt} failed ({exc})" + ("; fetching again" if again else "")
                )
                if not again:
                    break
                await asyncio.sleep(min(0.5 * attempt, 5))
        if downloaded is None or kept is None:
            assert last_error is not None
            if last_error.status_code in GONE or last_error.refused:
                reason = "is gone" if last_error.status_code in GONE else "may not be fetched"
                message = f"fal's video for request {row.request_id} {reason} ({last_error})"
                error_type = "video_gone" if last_error.status_code in GONE else "video_url_refused"
                await asyncio.to_thread(self.ledger.mark_lost, row.request_key, error_type, message)
                raise PermanentShotFailure(row.shot_id, f"{message}; it was paid for", fix_for_lost(row.shot_id))
            raise TransientShotFailure(
                row.shot_id,
                f"the paid video of request {row.request_id} could not be downloaded and stored ({last_error})",
                "none needed: it stays in the ledger and the next attempt fetches it again, without a new request",
            )
        probe = downloaded.probe
        mismatches = problems_with(probe, row.duration_seconds)
        if mismatches:  # paid and kept; the videos_match_requests check reports it
            self.log.warning(f"{row.shot_id}: delivered video does not match the request: {mismatches}")
        recorded, final = await asyncio.to_thread(
            self.ledger.record_video,
            row.request_key,
            VideoRow(
                request_id=row.request_id,
                request_key=row.request_key,
                shot_id=row.shot_id,
                path=kept,
                sha256=downloaded.sha256,
                bytes=downloaded.bytes,
                width=probe.width,
                height=probe.height,
                fps=probe.fps,
                frames=probe.frames,
                duration_seconds=probe.duration_seconds,
                source_url=video.url,
            ),
        )
        self.log.info(f"{row.shot_id}: fal request {row.request_id} delivered, verified and recorded at {kept}")
        return recorded, final, poster
