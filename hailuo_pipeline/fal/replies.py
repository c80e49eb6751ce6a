"""fal's replies, checked before anything uses them: a reply is data from the network, not a promise.

A request id becomes part of a file name and a ledger key, a video URL is fetched, a size bounds a
download: each is checked against a strict shape here, and refused with the reason otherwise."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
MAX_URL_CHARS = 4096
MAX_VIDEO_BYTES = 512 * 1024 * 1024  # a 10 s 768p video is a few MB; anything near this is not one


class BadReply(ValueError):
    """fal (or whatever answered in its place) sent something the pipeline will not act on."""


class NoVideo(BadReply):
    """fal's result holds no video at all: the model produced none."""


def checked_request_id(value: Any) -> str:
    if not isinstance(value, str) or not REQUEST_ID.match(value):
        raise BadReply(f"fal answered with a malformed request id {str(value)[:80]!r}")
    return value


@dataclass(frozen=True)
class VideoEntry:
    url: str
    file_size: int | None  # None when fal did not say, or said something impossible


def checked_video(result: Any) -> VideoEntry:
    """The result's `video` entry: an http(s) URL, and its size when it is a plausible one."""
    video = result.get("video") if isinstance(result, dict) else None
    url = video.get("url") if isinstance(video, dict) else None
    if not isinstance(url, str) or not url:
        raise NoVideo("fal's result holds no video URL")
    if len(url) > MAX_URL_CHARS or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise BadReply(f"fal's result holds a video URL that is not an http(s) URL ({url[:80]!r})")
    assert isinstance(video, dict)
    size = video.get("file_size")
    plausible = isinstance(size, int) and not isinstance(size, bool) and 0 < size <= MAX_VIDEO_BYTES
    return VideoEntry(url, size if plausible else None)
