"""Fetch a paid video to disk: streamed, measured, probed, then renamed into place atomically."""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import httpx

from hailuo_pipeline.video.probe import VideoProbe, VideoProbeError, probe_video


class DownloadError(RuntimeError):
    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code  # the HTTP answer, when the server gave one


@dataclass(frozen=True)
class DownloadedVideo:
    path: Path
    sha256: str
    bytes: int
    probe: VideoProbe


async def download_video(
    http: httpx.AsyncClient, url: str, destination: Path, expected_bytes: int | None
) -> DownloadedVideo:
    """One attempt. The result URL needs no credentials, so the fal key is never sent with it."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_partials(destination)
    partial = destination.with_name(f".{destination.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    size = 0
    try:
        async with http.stream("GET", url) as response:
            if response.status_code != 200:
                raise DownloadError(f"GET {url} answered {response.status_code}", response.status_code)
            announced = response.headers.get("content-length")
            with partial.open("wb") as handle:
                async for chunk in response.aiter_bytes(1024 * 1024):
                    handle.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
        if expected_bytes is not None and size != expected_bytes:
            raise DownloadError(f"got {size} bytes of {expected_bytes} (truncated download)")
        if announced is not None and size != int(announced):
            raise DownloadError(f"got {size} bytes, Content-Length said {announced}")
        try:
            probe = await asyncio.to_thread(probe_video, partial)
        except VideoProbeError as exc:
            raise DownloadError(str(exc)) from exc
        os.replace(partial, destination)
        return DownloadedVideo(destination, digest.hexdigest(), size, probe)
    except httpx.HTTPError as exc:
        raise DownloadError(f"GET {url} failed: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)


def remove_abandoned_partials(destination: Path) -> None:
    """Partial files left by killed processes; a live process's partial is left alone."""
    for partial in destination.parent.glob(f".{destination.name}.*.partial"):
        pid = partial.name.removeprefix(f".{destination.name}.").removesuffix(".partial")
        if pid.isdigit() and not _alive(int(pid)):
            partial.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def file_matches(path: Path, sha256: str, size: int) -> bool:
    if not path.is_file() or path.stat().st_size != size:
        return False
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest() == sha256
