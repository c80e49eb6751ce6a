"""Where delivered videos are kept: a local folder (the default) or an object store (`s3://bucket/prefix`, and
any other URL fsspec has a filesystem for, e.g. gs:// with gcsfs or az:// with adlfs).

A video is always downloaded and verified on local disk first (`staging`), then `keep` puts it in place:
renamed within the folder, or uploaded (streamed from the file) to the object store. Each take has its own
name (take number and fal request id), so a new take never overwrites another. Object-store credentials
come from the library's standard chain (environment, profile, instance role) and never from our settings.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from hailuo_pipeline.errors import HailuoError
from hailuo_pipeline.fal.replies import BadReply, checked_request_id
from hailuo_pipeline.processes import pid_alive
from hailuo_pipeline.redact import redact


class VideoStoreError(HailuoError, RuntimeError):
    """The store would not take or give back a video (retried from fal's stored URL, never resubmitted)."""


def video_path(videos_dir: Path, shot_id: str, take: int, request_id: str) -> Path:
    """Where a take's video lives under a folder: built from a validated shot id and request id, and checked
    to resolve inside the folder whatever those held."""
    name = f"take{take:03d}-{checked_request_id(request_id)}.mp4"
    store = videos_dir.resolve()
    path = (store / shot_id / name).resolve()
    if not path.is_relative_to(store) or path.parent.parent != store:
        raise BadReply(f"the video path for shot {shot_id!r} and request {request_id!r} leaves the video store")
    return path


class VideoStore(Protocol):
    location: str  # for messages

    def staging(self, shot_id: str, take: int, request_id: str) -> Path:
        """Local path the download is written to and verified at."""
        ...

    def keep(self, staged: Path, shot_id: str, take: int, request_id: str) -> str:
        """Put the verified file in place; the location recorded in the catalog."""
        ...

    def holds(self, location: str, sha256: str, size: int) -> bool:
        """The recorded video is there, whole and unchanged."""
        ...

    def size(self, location: str) -> int | None:
        """The stored video's size in bytes (None when it is missing): one metadata call, no download."""
        ...

    def read(self, location: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of a stored video (what a player seeking in it asks for)."""
        ...

    def sweep_abandoned(self) -> None:
        """Remove partial downloads of processes that died."""
        ...

    def check_writable(self) -> None:
        """Raise VideoStoreError, with the fix, unless a video could be stored now (checked before any spend)."""
        ...


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


class LocalVideoStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)

    def staging(self, shot_id: str, take: int, request_id: str) -> Path:
        return video_path(self.root, shot_id, take, request_id)  # downloaded in place, renamed in atomically

    def keep(self, staged: Path, shot_id: str, take: int, request_id: str) -> str:
        return str(staged)

    def holds(self, location: str, sha256: str, size: int) -> bool:
        path = Path(location)
        return path.is_file() and path.stat().st_size == size and sha256_of(path) == sha256

    def size(self, location: str) -> int | None:
        path = Path(location)
        return path.stat().st_size if path.is_file() else None

    def read(self, location: str, start: int, end: int) -> bytes:
        with open(location, "rb") as handle:
            handle.seek(start)
            return handle.read(max(0, end - start))

    def check_writable(self) -> None:
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            writable = os.access(self.root, os.W_OK | os.X_OK)
        except OSError as exc:
            raise VideoStoreError(f"the video folder {self.root} cannot be created ({exc})") from None
        if not writable:
            raise VideoStoreError(f"the video folder {self.root} is not writable by this user")

    def sweep_abandoned(self) -> None:
        if self.root.is_dir():
            for folder in self.root.iterdir():
                if folder.is_dir():
                    remove_abandoned_partials(folder)


def remove_abandoned_partials(folder: Path) -> None:
    """Partial files left in `folder` by killed processes; a live process's partial is left alone."""
    for partial in folder.glob(".*.partial"):
        pid = partial.name.removesuffix(".partial").rpartition(".")[2]
        if pid.isdigit() and not pid_alive(int(pid)):
            partial.unlink(missing_ok=True)


class ObjectVideoStore:
    """Videos as objects under a URL prefix, through fsspec (s3fs for s3://)."""

    def __init__(self, url: str) -> None:
        import fsspec  # only in the object-store mode

        self.url = url.rstrip("/")
        self.location = redact(self.url)
        self.fs: Any
        self.fs, self.prefix = fsspec.core.url_to_fs(self.url)
        self.protocol = url.split("://", 1)[0]
        self.scratch = Path(tempfile.mkdtemp(prefix="hailuo-videos-"))  # this process's local staging disk

    def _key(self, shot_id: str, take: int, request_id: str) -> str:
        relative = self.staging(shot_id, take, request_id).relative_to(self.scratch.resolve())
        return f"{self.prefix}/{relative.as_posix()}"

    def staging(self, shot_id: str, take: int, request_id: str) -> Path:
        return video_path(self.scratch, shot_id, take, request_id)

    def keep(self, staged: Path, shot_id: str, take: int, request_id: str) -> str:
        key = self._key(shot_id, take, request_id)
        size = staged.stat().st_size
        try:
            # one take, one name: an object already there is this very request's video, delivered by another
            # process; it is kept, never overwritten
            if not (self.fs.exists(key) and self.fs.size(key) == size):
                self.fs.put_file(str(staged), key)  # streamed from the file, multipart when large
        except Exception as exc:
            raise VideoStoreError(f"storing the video at {redact(self._url(key))} failed: {redact(exc)}") from exc
        finally:
            staged.unlink(missing_ok=True)
        return self._url(key)

    def _url(self, key: str) -> str:
        return f"{self.protocol}://{key}"

    def _key_of(self, location: str) -> str:
        return location.split("://", 1)[1] if "://" in location else location

    def holds(self, location: str, sha256: str, size: int) -> bool:
        if self.size(location) != size:
            return False
        with self._download(location) as copy:
            return copy is not None and sha256_of(copy) == sha256

    def size(self, location: str) -> int | None:
        try:
            return int(self.fs.info(self._key_of(location))["size"])
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise VideoStoreError(f"reading {redact(location)} failed: {redact(exc)}") from exc

    def read(self, location: str, start: int, end: int) -> bytes:
        try:
            return bytes(self.fs.cat_file(self._key_of(location), start=start, end=end))
        except Exception as exc:
            raise VideoStoreError(f"reading {redact(location)} failed: {redact(exc)}") from exc

    @contextmanager
    def _download(self, location: str) -> Iterator[Path | None]:
        folder = Path(tempfile.mkdtemp(prefix="hailuo-video-", dir=self.scratch))
        try:
            target = folder / "video.mp4"
            try:
                self.fs.get_file(self._key_of(location), str(target))
            except FileNotFoundError:
                yield None
                return
            except Exception as exc:
                raise VideoStoreError(f"reading {redact(location)} failed: {redact(exc)}") from exc
            yield target
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def sweep_abandoned(self) -> None:
        """Staging is this process's own temporary folder: nothing of other processes is there."""

    def check_writable(self) -> None:
        probe = f"{self.prefix}/.hailuo-write-check-{uuid.uuid4().hex}"
        try:
            self.fs.pipe_file(probe, b"ok")
            self.fs.rm_file(probe)
        except Exception as exc:
            raise VideoStoreError(
                f"the video store {self.location} does not take files ({redact(exc)}). Fix: check "
                "HAILUO_VIDEO_STORE (bucket and prefix) and the credentials of the standard AWS variables, "
                "profile or role (AWS_ENDPOINT_URL for an S3-compatible store)"
            ) from None


def open_video_store(location: str | Path) -> VideoStore:
    text = str(location)
    if "://" in text and not text.startswith("file://"):
        return ObjectVideoStore(text)
    return LocalVideoStore(Path(text.removeprefix("file://")))
