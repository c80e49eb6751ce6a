"""Fetch a paid video to disk: streamed, measured, probed, then renamed into place atomically."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx

from hailuo_pipeline.fal.replies import MAX_VIDEO_BYTES
from hailuo_pipeline.redact import redact
from hailuo_pipeline.video.probe import VideoProbe, VideoProbeError, probe_video
from hailuo_pipeline.video.store import remove_abandoned_partials


class DownloadError(RuntimeError):
    def __init__(self, message: str, status_code: int | None = None, *, worth_retrying: bool = True) -> None:
        super().__init__(message)
        self.status_code = status_code  # the HTTP answer, when the server gave one
        self.worth_retrying = worth_retrying  # False when the same URL will answer the same way


@dataclass(frozen=True)
class DownloadedVideo:
    path: Path
    sha256: str
    bytes: int
    probe: VideoProbe


NOT_A_VIDEO = ("text/", "application/json", "application/xml", "image/")


async def download_video(
    http: httpx.AsyncClient, url: str, destination: Path, expected_bytes: int | None, deadline_seconds: float
) -> DownloadedVideo:
    """One attempt, within `deadline_seconds` in all. The result URL needs no credentials, so the fal key is
    never sent with it. The body is refused as soon as it is larger than announced or than any video."""
    make_private_dir(destination.parent)
    remove_abandoned_partials(destination.parent)
    partial = destination.with_name(f".{destination.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    size = 0
    limit = min(expected_bytes or MAX_VIDEO_BYTES, MAX_VIDEO_BYTES)
    try:
        async with asyncio.timeout(deadline_seconds), http.stream("GET", url) as response:
            if response.status_code != 200:
                raise DownloadError(f"GET {redact(url)} answered {response.status_code}", response.status_code)
            kind = response.headers.get("content-type", "").lower()
            if kind.startswith(NOT_A_VIDEO):
                raise DownloadError(f"GET {redact(url)} answered {kind!r}, not a video", worth_retrying=False)
            announced = response.headers.get("content-length")
            with _private_file(partial) as handle:
                async for chunk in response.aiter_bytes(1024 * 1024):
                    size += len(chunk)
                    if size > limit:
                        raise DownloadError(f"the video is larger than {limit} bytes", worth_retrying=False)
                    handle.write(chunk)
                    digest.update(chunk)
        if expected_bytes is not None and size != expected_bytes:
            raise DownloadError(f"got {size} bytes of {expected_bytes} (truncated download)")
        if announced is not None and announced.isdigit() and size != int(announced):
            raise DownloadError(f"got {size} bytes, Content-Length said {announced}")
        try:
            probe = await asyncio.to_thread(probe_video, partial)
        except VideoProbeError as exc:
            raise DownloadError(str(exc)) from exc
        os.replace(partial, destination)
        return DownloadedVideo(destination, digest.hexdigest(), size, probe)
    except TimeoutError as exc:
        raise DownloadError(f"GET {redact(url)} took longer than {deadline_seconds:.0f} s") from exc
    except httpx.HTTPError as exc:
        raise DownloadError(f"GET {redact(url)} failed: {redact(exc)}") from exc
    finally:
        partial.unlink(missing_ok=True)


def make_private_dir(path: Path) -> None:
    """A shot's folder and the video store above it: the users' data, readable by their owner only."""
    for folder in (path.parent, path):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)


@contextmanager
def _private_file(path: Path) -> Iterator[BinaryIO]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        yield handle
