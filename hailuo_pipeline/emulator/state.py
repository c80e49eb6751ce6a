"""The emulator's jobs, latency model, injected faults and counters; all in memory, all thread-safe."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

import httpx
from PIL import Image, UnidentifiedImageError

from hailuo_pipeline import model_limits as limits
from hailuo_pipeline.emulator.faults import EmulatorConfig, Faults, JobFaults, Latency
from hailuo_pipeline.emulator.render import render_video

__all__ = ["EmulatorConfig", "EmulatorState", "Faults", "JobFaults", "Latency"]


class ValidationFailed(Exception):
    def __init__(self, details: list[dict[str, Any]]) -> None:
        super().__init__(details)
        self.details = details


@dataclass
class Job:
    request_id: str
    endpoint: str
    body_sha256: str
    created: float
    queue_seconds: float
    inference_seconds: float
    duration: int
    render: Future[bytes]
    error: dict[str, Any] | None = None
    cancelled_at: float | None = None
    completed_at: float | None = None
    downloaded_at: float | None = None  # when its video was last sent in full
    result_answered_at: float | None = None  # when its result was first answered
    sent_wall: float = field(default_factory=time.time)  # when it was sent, by the wall clock (the history's)
    body: Any = None  # the arguments as sent (the history's json_input)
    faults: JobFaults = field(default_factory=JobFaults)

    @property
    def ends(self) -> float:
        """When the job stops occupying a place at fal (its account's concurrency limit counts it until then)."""
        finish = self.created + self.queue_seconds + self.inference_seconds
        return finish if self.cancelled_at is None else min(finish, self.cancelled_at)

    def phase(self, now: float) -> str:
        if self.cancelled_at is not None:
            return "COMPLETED"
        if now < self.created + self.queue_seconds:
            return "IN_QUEUE"
        if now < self.created + self.queue_seconds + self.inference_seconds or (
            self.error is None and not self.render.done()
        ):
            return "IN_PROGRESS"
        if self.completed_at is None:
            self.completed_at = now
        return "COMPLETED"


def _detail(loc: str, msg: str, kind: str, value: Any = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"loc": ["body", loc], "msg": msg, "type": kind}
    if value is not None:
        entry["input"] = value
    return entry


def decode_image_url(image_url: str, uploads: dict[str, bytes] | None = None) -> bytes:
    upload = image_url.rsplit("/uploads/", 1)[-1] if "/uploads/" in image_url else None
    if upload is not None and uploads is not None and upload in uploads:  # our own storage stand-in
        return uploads[upload]
    if image_url.startswith("data:"):
        header, _, payload = image_url.partition(",")
        if ";base64" not in header:
            raise ValueError("data URI is not base64")
        return base64.b64decode(payload, validate=True)
    if image_url.startswith(("http://", "https://")):
        response = httpx.get(image_url, timeout=30, follow_redirects=True)
        response.raise_for_status()
        return response.content
    raise ValueError("image_url must be an http(s) URL or a data URI")


def validate_arguments(body: Any, uploads: dict[str, bytes] | None = None) -> tuple[bytes, int]:
    """The model's own input checks, answered as fal's 422 detail list."""
    if not isinstance(body, dict):
        raise ValidationFailed([_detail("body", "Input should be a JSON object", "model_attributes_type")])
    details: list[dict[str, Any]] = []
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        details.append(_detail("prompt", "Field required", "missing"))
    elif len(prompt) > limits.MAX_PROMPT_CHARS:
        details.append(
            _detail("prompt", f"String should have at most {limits.MAX_PROMPT_CHARS} characters", "string_too_long")
        )
    duration = body.get("duration", str(limits.DEFAULT_DURATION_SECONDS))
    if duration not in [str(d) for d in limits.DURATIONS_SECONDS]:
        details.append(_detail("duration", "Input should be '6' or '10'", "literal_error", duration))
    if not isinstance(body.get("prompt_optimizer", True), bool):
        details.append(_detail("prompt_optimizer", "Input should be a valid boolean", "bool_type"))
    image_bytes = b""
    image_url = body.get("image_url")
    if not isinstance(image_url, str) or not image_url:
        details.append(_detail("image_url", "Field required", "missing"))
    else:
        try:
            image_bytes = decode_image_url(image_url, uploads)
            image_problem = _image_problem(image_bytes)
        except (ValueError, httpx.HTTPError) as exc:
            image_problem = f"image could not be read: {exc}"
        if image_problem:
            details.append(_detail("image_url", image_problem, "image_load_error"))
    if details:
        raise ValidationFailed(details)
    return image_bytes, int(duration)


def _image_problem(data: bytes) -> str | None:
    if len(data) >= limits.MAX_IMAGE_BYTES:
        return "Image must be smaller than 20MB"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            fmt, (width, height) = image.format, image.size
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        return f"Image could not be decoded: {exc}"
    if fmt not in limits.IMAGE_FORMATS:
        return f"Unsupported image format {fmt}; use JPEG, PNG or WebP"
    if min(width, height) <= limits.MIN_SHORT_SIDE_PX:
        return f"Image short side must be greater than {limits.MIN_SHORT_SIDE_PX}px"
    if not limits.MIN_ASPECT <= Fraction(width, height) <= limits.MAX_ASPECT:
        return "Image aspect ratio must be between 2:5 and 5:2"
    return None


def peak_at_fal(jobs: Iterable[Job]) -> int:
    """The most jobs queued or running at one moment."""
    moments = sorted(edge for job in jobs for edge in ((job.created, 1), (job.ends, -1)))
    peak = running = 0
    for _, change in moments:  # at equal times an end (-1) sorts before a start (+1)
        running += change
        peak = max(peak, running)
    return peak


def mean_at_fal(spans: Iterable[tuple[float, float]]) -> float:
    """How many jobs were queued or running on average, from the first submit to the last job's end,
    given each job's (created, ends)."""
    spans = list(spans)
    if not spans:
        return 0.0
    elapsed = max(end for _, end in spans) - min(start for start, _ in spans)
    return sum(end - start for start, end in spans) / elapsed if elapsed > 0 else float(len(spans))


class EmulatorState:
    def __init__(self, config: EmulatorConfig | None = None, render_workers: int = 2) -> None:
        self.config = config or EmulatorConfig()
        self.jobs: dict[str, Job] = {}
        self.counters: Counter[str] = Counter()
        self.submissions_by_body: Counter[str] = Counter()
        self.submissions_by_prompt: Counter[str] = Counter()
        self.cancelled: list[str] = []
        self.answered_ids: list[str] = []  # the ids submits were answered with, in order
        self.uploads: OrderedDict[str, bytes] = OrderedDict()  # fal storage stand-in: id -> bytes
        self.upload_tokens: set[str] = set()
        self.lock = threading.Lock()
        self._renders: OrderedDict[tuple[str, int], Future[bytes]] = OrderedDict()
        self._pool = ThreadPoolExecutor(max_workers=render_workers, thread_name_prefix="emulator-render")

    # -- control ---------------------------------------------------------------------------
    def configure(self, patch: dict[str, Any]) -> None:
        with self.lock:
            if "latency" in patch:
                self.config.latency = Latency(**{**asdict(self.config.latency), **patch["latency"]})
            if "faults" in patch:
                self.config.faults = Faults(**{**asdict(self.config.faults), **patch["faults"]})
            for key in ("result_ttl_seconds", "large_result_ttl_seconds", "require_key", "account_price", "admin_key"):
                if key in patch:
                    setattr(self.config, key, patch[key])

    def reset(self) -> None:
        with self.lock:
            self.config = EmulatorConfig(require_key=self.config.require_key)
            self.jobs.clear()
            self.counters.clear()
            self.submissions_by_body.clear()
            self.submissions_by_prompt.clear()
            self.cancelled.clear()
            self.answered_ids.clear()

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "submissions": self.counters["submit_accepted"],
                "calls": dict(self.counters),
                "submissions_by_body": dict(self.submissions_by_body),
                "submissions_by_prompt": dict(self.submissions_by_prompt),
                "cancelled": list(self.cancelled),
                "answered_ids": list(self.answered_ids),
                "peak_at_fal": peak_at_fal(self.jobs.values()),
                "spans_at_fal": sorted((job.created, job.ends) for job in self.jobs.values()),
                "config": asdict(self.config),
            }

    def take_http_fault(self, endpoint: str) -> int | None:
        with self.lock:
            self.counters[endpoint] += 1
            queue = self.config.faults.http.get(endpoint)
            return queue.pop(0) if queue else None

    def take_list_fault(self, name: str) -> Any:
        """The next value of a list fault (request_ids, results), or None when there is none."""
        with self.lock:
            queue = getattr(self.config.faults, name)
            return queue.pop(0) if queue else None

    def take_html_fault(self, endpoint: str) -> bool:
        with self.lock:
            left = self.config.faults.html.get(endpoint, 0)
            if left > 0:
                self.config.faults.html[endpoint] = left - 1
            return left > 0

    def store_upload(self, data: bytes) -> str:
        with self.lock:
            upload_id = uuid.uuid4().hex
            self.uploads[upload_id] = data
            while len(self.uploads) > 32:
                self.uploads.popitem(last=False)
            return upload_id

    def take_counter_fault(self, name: str) -> bool:
        with self.lock:
            remaining = getattr(self.config.faults, name)
            if remaining > 0:
                setattr(self.config.faults, name, remaining - 1)
                return True
            return False

    # -- jobs ------------------------------------------------------------------------------
    def submit(self, endpoint: str, raw_body: bytes, body: dict[str, Any], image: bytes, duration: int) -> Job:
        latency = self.config.latency
        jitter = latency.jitter_seconds
        with self.lock:
            error = self.config.faults.job_errors.pop(0) if self.config.faults.job_errors else None
            lies = dict(self.config.faults.by_prompt.get(str(body.get("prompt"))) or {})
            if lies.get("first_error") and not self.submissions_by_prompt[str(body.get("prompt"))]:
                error = lies["first_error"]
            job = Job(
                request_id=str(uuid.uuid4()),
                endpoint=endpoint,
                body_sha256=hashlib.sha256(raw_body).hexdigest(),
                created=time.monotonic(),
                queue_seconds=max(0.0, latency.queue_seconds + random.uniform(-jitter, jitter)),
                inference_seconds=max(0.0, latency.inference_seconds + random.uniform(-jitter, jitter)),
                duration=duration,
                render=self._render(image, duration),
                error=error,
                faults=JobFaults(**lies) if lies else JobFaults(),
                body=body,
            )
            self.jobs[job.request_id] = job
            self.counters["submit_accepted"] += 1
            self.submissions_by_body[job.body_sha256] += 1
            self.submissions_by_prompt[str(body.get("prompt"))] += 1
            return job

    def _render(self, image: bytes, duration: int) -> Future[bytes]:
        key = (hashlib.sha256(image).hexdigest(), duration)
        if key in self._renders:
            self._renders.move_to_end(key)
            return self._renders[key]
        future = self._pool.submit(render_video, image, duration)
        self._renders[key] = future
        while len(self._renders) > 64:
            self._renders.popitem(last=False)
        return future

    def queue_position(self, job: Job, now: float) -> int:
        with self.lock:
            return sum(
                1 for other in self.jobs.values() if other.created < job.created and other.phase(now) == "IN_QUEUE"
            )

    def result_ttl(self, job: Job) -> float:
        size = len(json.dumps(self.result_body(job, "https://x")))
        large = size >= limits.RESULT_LARGE_BYTES
        return self.config.large_result_ttl_seconds if large else self.config.result_ttl_seconds

    def result_body(self, job: Job, base_url: str) -> dict[str, Any]:
        video = job.render.result()
        lies = job.faults
        return {
            "video": {
                "url": lies.video_url or f"{base_url}/files/{job.request_id}.mp4",
                "content_type": "video/mp4",
                "file_name": f"{job.request_id}.mp4",
                "file_size": len(video) if lies.file_size is None else lies.file_size,
            }
        }

    def answer_id(self, job: Job, lie: str | None = None) -> str:
        """The id the submit of `job` is answered with: its own, or a lie (`lie`, the job's own, or the real id
        an earlier submit was answered with)."""
        with self.lock:
            answered = lie or job.faults.request_id or job.request_id
            given = [i for i in self.answered_ids if i in self.jobs]  # ids of real jobs, given before
            if job.faults.replay_id and given:
                answered = given[-1]
            self.answered_ids.append(answered)
            return answered

    def take_job_count(self, job: Job, name: str) -> bool:
        """One use of a job's counted lie (status_html, result_html)."""
        with self.lock:
            left = getattr(job.faults, name)
            if left > 0:
                setattr(job.faults, name, left - 1)
            return left > 0

    def take_job_http(self, job: Job) -> int | None:
        with self.lock:
            return job.faults.result_http.pop(0) if job.faults.result_http else None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
