"""Fetch a paid video to disk: streamed, measured, probed, then renamed into place atomically."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin

import httpx

from hailuo_pipeline.fal.replies import MAX_VIDEO_BYTES
from hailuo_pipeline.fetch_policy import MAX_REDIRECTS, FetchPolicy
from hailuo_pipeline.redact import describe_error, redact
from hailuo_pipeline.video.probe import VideoProbe, VideoProbeError, probe_video
from hailuo_pipeline.video.store import remove_abandoned_partials


class DownloadError(RuntimeError):
    def __init__(
        self, message: str, status_code: int | None = None, *, worth_retrying: bool = True, refused: bool = False
    ) -> None:
        super().__init__(message)
        self.status_code = status_code  # the HTTP answer, when the server gave one
        self.worth_retrying = worth_retrying  # False when the same URL will answer the same way
        self.refused = refused  # the fetch policy refused where the URL (or a redirect) points: it never will do


@dataclass(frozen=True)
class DownloadedVideo:
    path: Path
    sha256: str
    bytes: int
    probe: VideoProbe


@dataclass(frozen=True)
class DownloadBounds:
    """What one download may take: its deadline (the rest of its delivery's), a rate it must keep after its
    first seconds, and where it may be fetched from."""

    deadline_seconds: float
    min_bytes_per_second: int = 64 * 1024
    grace_seconds: float = 10.0  # how long a download may take to reach its rate
    policy: FetchPolicy = field(default_factory=FetchPolicy)


NOT_A_VIDEO = ("text/", "application/json", "application/xml", "image/")


async def download_video(
    http: httpx.AsyncClient, url: str, destination: Path, expected_bytes: int | None, bounds: DownloadBounds
) -> DownloadedVideo:
    """One attempt, within its deadline in all. The result URL needs no credentials, so the fal key is never
    sent with it; every URL (redirects too) passes the fetch policy first. The body is refused before a byte is
    written when its announced length is larger than any video or than fal's file_size says, and as soon as
    it grows past either."""
    make_private_dir(destination.parent)
    remove_abandoned_partials(destination.parent)
    partial = destination.with_name(f".{destination.name}.{os.getpid()}.partial")
    limit = min(expected_bytes or MAX_VIDEO_BYTES, MAX_VIDEO_BYTES)
    try:
        async with asyncio.timeout(bounds.deadline_seconds):
            for _ in range(MAX_REDIRECTS + 1):
                problem = await asyncio.to_thread(bounds.policy.problem, url, "fal's video URL")
                if problem:
                    raise DownloadError(problem, worth_retrying=False, refused=True)
                async with http.stream("GET", url) as response:
                    if response.is_redirect:
                        url = urljoin(url, response.headers.get("location", ""))
                        continue
                    size, digest = await _receive(response, url, partial, limit, expected_bytes, bounds)
                    break
            else:
                raise DownloadError(f"fal's video URL redirects more than {MAX_REDIRECTS} times", worth_retrying=False)
        try:
            probe = await asyncio.to_thread(probe_video, partial)
        except VideoProbeError as exc:
            raise DownloadError(str(exc)) from exc
        os.replace(partial, destination)
        return DownloadedVideo(destination, digest, size, probe)
    except TimeoutError as exc:
        raise DownloadError(f"GET {redact(url)} took longer than {bounds.deadline_seconds:.0f} s") from exc
    except httpx.HTTPError as exc:
        raise DownloadError(f"GET {redact(url)} failed: {describe_error(exc)}") from exc
    finally:
        partial.unlink(missing_ok=True)


async def _receive(
    response: httpx.Response,
    url: str,
    partial: Path,
    limit: int,
    expected_bytes: int | None,
    bounds: DownloadBounds,
) -> tuple[int, str]:
    """The body into `partial`: its size and sha256, or DownloadError at the first sign it is not the video."""
    if response.status_code != 200:
        raise DownloadError(f"GET {redact(url)} answered {response.status_code}", response.status_code)
    kind = response.headers.get("content-type", "").lower()
    if kind.startswith(NOT_A_VIDEO):
        raise DownloadError(f"GET {redact(url)} answered {kind[:60]}, not a video", worth_retrying=False)
    announced_text = response.headers.get("content-length", "").strip()
    announced = int(announced_text) if announced_text.isdigit() else None
    if announced is not None and announced > MAX_VIDEO_BYTES:
        raise DownloadError(
            f"the server announces {announced:,} bytes, more than any video ({MAX_VIDEO_BYTES:,})", worth_retrying=False
        )
    if announced is not None and expected_bytes is not None and announced != expected_bytes:
        raise DownloadError(
            f"the server announces {announced:,} bytes where fal's result says {expected_bytes:,}", worth_retrying=False
        )
    digest = hashlib.sha256()
    size = 0
    started = time.monotonic()
    with _private_file(partial) as handle:
        async for chunk in response.aiter_bytes():  # as it arrives: a trickle is measured, not buffered
            size += len(chunk)
            if size > limit:
                raise DownloadError(f"the video is larger than {limit:,} bytes", worth_retrying=False)
            handle.write(chunk)
            digest.update(chunk)
            elapsed = time.monotonic() - started
            if elapsed > bounds.grace_seconds and size < bounds.min_bytes_per_second * elapsed:
                raise DownloadError(
                    f"the video arrives at {size / elapsed / 1024:.1f} KiB/s, slower than the "
                    f"{bounds.min_bytes_per_second // 1024} KiB/s a download must keep",
                    worth_retrying=False,  # the same server, now: the next run's attempt tries again
                )
    if expected_bytes is not None and size != expected_bytes:
        raise DownloadError(f"got {size} bytes of {expected_bytes} (truncated download)")
    if announced is not None and size != announced:
        raise DownloadError(f"got {size} bytes, Content-Length said {announced}")
    return size, digest.hexdigest()


def make_private_dir(path: Path) -> None:
    """A shot's folder and the video store above it: the users' data, readable by their owner only."""
    for folder in (path.parent, path):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)


@contextmanager
def _private_file(path: Path) -> Iterator[BinaryIO]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        yield handle
