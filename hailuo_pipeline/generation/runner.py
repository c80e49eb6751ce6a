"""One shot -> at most one paid request -> one verified video, resumable after any failure.

The ledger decides; this module only follows its decision: reuse a verified video, resume a request
by its fal id, wait for a concurrent submitter, refuse an ambiguous submit, or submit once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import fal_client
import httpx

from hailuo_pipeline.catalog.ledger import (
    Budget,
    BudgetExceededError,
    ClaimKind,
    NewRequest,
    NoPriceError,
    RequestLedger,
    RequestRow,
    Status,
    VideoRow,
)
from hailuo_pipeline.fal.polling import CompletionEstimate, PollSchedule
from hailuo_pipeline.fal.resource import FalResource
from hailuo_pipeline.fal.submit_once import SubmitReplayRefused, submit_once
from hailuo_pipeline.generation.download import DownloadError, download_video, file_matches
from hailuo_pipeline.generation.errors import (
    PermanentShotFailure,
    ShotFailure,
    TransientShotFailure,
    is_permanent_error,
)
from hailuo_pipeline.shots.manifest import Shot
from hailuo_pipeline.shots.validation import ShotInputError, ShotRequest, validate_shot
from hailuo_pipeline.video.probe import problems_with

NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
DETAILED_LOG_SHOTS = 8
SUMMARY_SECONDS = 15.0


class RunLog(Protocol):
    def info(self, msg: str) -> Any: ...
    def warning(self, msg: str) -> Any: ...


@dataclass(frozen=True)
class GenerationOptions:
    new_take: bool = False
    resubmit_ambiguous: bool = False
    budget: Budget = field(default_factory=Budget)


@dataclass
class ShotOutcome:
    shot_id: str
    video: VideoRow | None = None
    request: RequestRow | None = None
    reused: bool = False
    failure: ShotFailure | None = None
    polls: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure is None and self.video is not None


def fingerprint(shot_id: str, endpoint: str, arguments: dict[str, Any]) -> str:
    """Per shot: two shots with identical inputs are two videos, each paid once."""
    text = json.dumps({"shot_id": shot_id, "endpoint": endpoint, **arguments}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def ledger_arguments(request: ShotRequest) -> dict[str, Any]:
    """The request's arguments as the catalog keeps them: the image by hash, never as a data URI."""
    return {
        "prompt": request.prompt,
        "duration": str(request.duration),
        "prompt_optimizer": request.prompt_optimizer,
        "image_sha256": request.image.sha256,
    }


class ShotGenerator:
    def __init__(
        self,
        fal: FalResource,
        ledger: RequestLedger,
        videos_dir: Path,
        log: RunLog,
        *,
        run_id: str | None,
        options: GenerationOptions,
    ) -> None:
        self.fal = fal
        self.ledger = ledger
        self.videos_dir = videos_dir
        self.log = log
        self.run_id = run_id
        self.options = options
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.in_flight: dict[str, tuple[str, ShotRequest]] = {}  # request_key -> (fal id, shot)
        self.completion = CompletionEstimate()
        # Every run-log line is a write to the Dagster instance: big batches log each shot's submit and
        # delivery plus a periodic summary, not every queue position and progress line.
        self.detailed_logs = True
        self._client: fal_client.AsyncClient | None = None
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> ShotGenerator:
        self._client = self.fal.client()
        self._http = httpx.AsyncClient(timeout=self.fal.download_timeout_seconds, follow_redirects=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.aclose()

    @property
    def client(self) -> fal_client.AsyncClient:
        assert self._client is not None, "use ShotGenerator as an async context manager"
        return self._client

    # -- batches ---------------------------------------------------------------------------
    async def generate_many(
        self,
        shots: list[Shot],
        concurrency: int,
        on_done: Callable[[ShotOutcome], None] | None = None,
        on_valid: Callable[[ShotRequest], None] | None = None,
    ) -> list[ShotOutcome]:
        """Each shot validated, then paid for once and delivered, `concurrency` at a time. `on_valid`
        hears of each shot that passed validation (before its request), `on_done` of each outcome."""
        gate = asyncio.Semaphore(max(1, concurrency))
        self.detailed_logs = len(shots) <= DETAILED_LOG_SHOTS
        finished: list[ShotOutcome] = []

        async def one(shot: Shot) -> ShotOutcome:
            async with gate:
                outcome = await self.generate(shot, on_valid)
            finished.append(outcome)
            if on_done is not None:
                on_done(outcome)
            return outcome

        async def summarize() -> None:
            while True:
                await asyncio.sleep(SUMMARY_SECONDS)
                failed = sum(1 for o in finished if not o.ok)
                self.log.info(
                    f"progress: {len(finished) - failed} of {len(shots)} shot(s) delivered, {failed} failed, "
                    f"{len(self.in_flight)} request(s) at fal"
                )

        summary = None if self.detailed_logs else asyncio.create_task(summarize())
        try:
            return list(await asyncio.gather(*(one(shot) for shot in shots)))
        finally:
            if summary is not None:
                summary.cancel()

    async def generate(self, shot: Shot, on_valid: Callable[[ShotRequest], None] | None = None) -> ShotOutcome:
        started = time.monotonic()
        outcome = ShotOutcome(shot.shot_id)
        try:
            try:
                request = await asyncio.to_thread(validate_shot, shot)
            except ShotInputError as exc:
                raise PermanentShotFailure(shot.shot_id, f"{exc.problem}. Fix: {exc.fix}") from exc
            if on_valid is not None:
                on_valid(request)
            await self._generate(request, outcome)
        except ShotFailure as failure:
            outcome.failure = failure
        outcome.seconds = time.monotonic() - started
        return outcome

    # -- one shot --------------------------------------------------------------------------
    async def _generate(self, request: ShotRequest, outcome: ShotOutcome) -> None:
        arguments = ledger_arguments(request)
        new = NewRequest(
            shot_id=request.shot_id,
            fingerprint=fingerprint(request.shot_id, self.fal.endpoint_id, arguments),
            endpoint=self.fal.endpoint_id,
            arguments={**arguments, "image": request.shot.image},
            duration_seconds=request.duration,
            run_id=self.run_id,
            partition_key=request.shot_id,
            owner=self.owner,
        )
        wait = 0.5
        while True:
            try:
                claim = await asyncio.to_thread(
                    self.ledger.claim,
                    new,
                    self.options.budget,
                    new_take=self.options.new_take,
                    resubmit_ambiguous=self.options.resubmit_ambiguous,
                )
            except (BudgetExceededError, NoPriceError) as exc:
                raise PermanentShotFailure(request.shot_id, str(exc)) from exc
            if claim.kind is ClaimKind.WAIT:
                await asyncio.sleep(wait)  # another process is submitting this very request right now
                wait = min(wait * 1.5, 5.0)
                continue
            break
        row = claim.row
        assert row is not None
        outcome.request = row
        if claim.kind is ClaimKind.REUSE and claim.video is not None:
            if await asyncio.to_thread(file_matches, Path(claim.video.path), claim.video.sha256, claim.video.bytes):
                self.log.info(f"{request.shot_id}: reusing verified video {claim.video.path} (no request)")
                outcome.video, outcome.reused = claim.video, True
                return
            self.log.warning(f"{request.shot_id}: {claim.video.path} is missing or changed; fetching it again")
            await self._deliver(request, row, outcome, video=None)
            return
        if claim.kind is ClaimKind.AMBIGUOUS:
            raise PermanentShotFailure(
                request.shot_id,
                f"an earlier submit (ledger row {row.request_key}, {row.created_at:%Y-%m-%d %H:%M:%S} UTC) never "
                "got fal's answer, so fal may have created and billed a job we cannot see. Check the fal "
                "dashboard; to submit again anyway, rerun with run config resubmit_ambiguous: true "
                "(the new request is flagged as a possible double charge)",
            )
        submitted_at = None
        if claim.kind is ClaimKind.SUBMIT:
            request_id, submitted_at = await self._submit(request, row)
        else:
            request_id = row.request_id
            self.log.info(f"{request.shot_id}: resuming fal request {request_id} ({row.status.value})")
        assert request_id is not None
        if row.status in (Status.COMPLETED, Status.SUCCEEDED) and row.video_url:
            await self._deliver(request, row, outcome, video=None)
            return
        self.in_flight[row.request_key] = (request_id, request)
        try:
            video = await self._follow(request, row, request_id, outcome, submitted_at)
        except ShotFailure:
            self.in_flight.pop(row.request_key, None)
            raise
        # a cancelled task (run terminated) keeps its entry, so cancel_in_flight() can cancel it at fal
        self.in_flight.pop(row.request_key, None)
        await self._deliver(request, row, outcome, video=video)

    async def _submit(self, request: ShotRequest, row: RequestRow) -> tuple[str, float]:
        """Submit once; returns fal's request id and when the submit was sent (the job's earliest start)."""
        payload = {
            "prompt": request.prompt,
            "image_url": await self.fal.image_argument(self.client, request),
            "prompt_optimizer": request.prompt_optimizer,
            "duration": str(request.duration),
        }
        heartbeat = asyncio.create_task(self._heartbeat(row.request_key))
        sent_at = time.monotonic()
        try:
            handle = await submit_once(
                self.client, self.fal.endpoint_id, payload, start_timeout=self.fal.submit_timeout_seconds
            )
        except NOT_SENT as exc:
            await asyncio.to_thread(self.ledger.mark_failed, row.request_key, "not_sent", repr(exc))
            raise TransientShotFailure(
                request.shot_id, f"could not reach fal ({exc!r}); nothing was submitted"
            ) from exc
        except (httpx.TransportError, SubmitReplayRefused) as exc:  # sent, no answer: fal may have a job
            await asyncio.to_thread(self.ledger.mark_ambiguous, row.request_key, f"submit got no answer: {exc!r}")
            raise PermanentShotFailure(
                request.shot_id,
                f"the submit got no answer ({exc!r}); fal may have created a job we cannot see. Check the fal "
                "dashboard, then rerun with resubmit_ambiguous: true to submit again",
            ) from exc
        except fal_client.FalClientHTTPError as exc:
            permanent = is_permanent_error(exc.error_type, exc.status_code)
            message = f"fal refused the submit with HTTP {exc.status_code}: {_describe(exc.message)}"
            await asyncio.to_thread(self.ledger.mark_failed, row.request_key, f"http_{exc.status_code}", message)
            failure = PermanentShotFailure if permanent else TransientShotFailure
            raise failure(request.shot_id, message) from exc
        finally:
            heartbeat.cancel()
        await asyncio.to_thread(self.ledger.mark_submitted, row.request_key, handle.request_id)
        self.log.info(f"{request.shot_id}: submitted fal request {handle.request_id}")
        return handle.request_id, sent_at

    async def _heartbeat(self, request_key: str) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.ledger.lease_seconds / 3))
            await asyncio.to_thread(self.ledger.heartbeat, request_key)

    async def _follow(
        self,
        request: ShotRequest,
        row: RequestRow,
        request_id: str,
        outcome: ShotOutcome,
        submitted_at: float | None = None,
    ) -> dict[str, Any]:
        """Poll politely until fal finishes, then store the result before downloading anything.
        Returns the result's `video` entry (url, file_size, ...)."""
        handle = await self.client.get_handle(self.fal.endpoint_id, request_id)
        errors, polls, last_position, seen_logs = 0, 0, None, 0
        failing_since: float | None = None
        schedule = PollSchedule(
            self.fal.poll_interval_seconds,
            self.fal.poll_backoff,
            self.fal.max_poll_interval_seconds,
            self.completion,
            since=submitted_at,
        )
        recorded = row.status
        try:
            while True:
                try:
                    # one call includes fal_client's own quick retries; bound it as a whole
                    status = await asyncio.wait_for(
                        handle.status(with_logs=True), timeout=self.fal.call_timeout_seconds
                    )
                    polls += 1
                    errors, failing_since = 0, None
                except (fal_client.FalClientHTTPError, httpx.HTTPError, TimeoutError) as exc:
                    polls += 1
                    errors += 1
                    failing_since = failing_since or time.monotonic()
                    if isinstance(exc, fal_client.FalClientHTTPError) and exc.status_code in (401, 403, 404):
                        raise PermanentShotFailure(
                            request.shot_id, f"fal answered {exc.status_code} for request {request_id}: {exc.message}"
                        ) from exc
                    failing_for = time.monotonic() - failing_since
                    if errors >= self.fal.max_poll_errors or failing_for > self.fal.max_poll_error_seconds:
                        raise TransientShotFailure(
                            request.shot_id,
                            f"{errors} status polls in a row failed over {failing_for:.0f} s ({exc!r}); "
                            "the request is resumable",
                        ) from exc
                    self.log.warning(f"{request.shot_id}: status poll failed ({exc!r}); trying again")
                    await asyncio.sleep(schedule.next_wait())
                    continue
                if isinstance(status, fal_client.Queued):
                    if status.position != last_position and self.detailed_logs:
                        self.log.info(f"{request.shot_id}: in queue at position {status.position}")
                    last_position = status.position
                    if recorded in (Status.RESERVED, Status.SUBMITTED):
                        await asyncio.to_thread(self.ledger.mark_progress, row.request_key, Status.IN_QUEUE)
                        recorded = Status.IN_QUEUE
                elif isinstance(status, fal_client.InProgress):
                    if recorded is not Status.IN_PROGRESS:
                        await asyncio.to_thread(self.ledger.mark_progress, row.request_key, Status.IN_PROGRESS)
                        recorded = Status.IN_PROGRESS
                    for entry in (status.logs or [])[seen_logs:] if self.detailed_logs else []:
                        self.log.info(f"{request.shot_id}: {entry.get('message', entry)}")
                    seen_logs = max(seen_logs, len(status.logs or []))
                elif isinstance(status, fal_client.Completed):
                    schedule.finished()
                    break
                schedule.still_running()
                await schedule.sleep()
        finally:
            outcome.polls += polls
            await asyncio.to_thread(self.ledger.add_polls, row.request_key, polls)
        if status.error:
            await self._record_failure(request, row, handle, status)
        result = await self._fetch_result(request, row, handle)
        video = result.get("video") or {}
        if not video.get("url"):
            await asyncio.to_thread(
                self.ledger.mark_failed, row.request_key, "no_media_generated", f"result had no video: {result}"
            )
            raise PermanentShotFailure(request.shot_id, "fal completed the request but returned no video")
        inference = (status.metrics or {}).get("inference_time")
        await asyncio.to_thread(self.ledger.mark_completed, row.request_key, result, video["url"], inference)
        return video

    async def _fetch_result(self, request: ShotRequest, row: RequestRow, handle: fal_client.AsyncRequestHandle) -> dict:
        for attempt in range(1, self.fal.max_poll_errors + 1):
            try:
                return await asyncio.wait_for(
                    handle.get(interval=self.fal.poll_interval_seconds), timeout=self.fal.call_timeout_seconds
                )
            except fal_client.FalClientHTTPError as exc:
                if exc.status_code == 404:
                    await asyncio.to_thread(
                        self.ledger.mark_failed,
                        row.request_key,
                        "result_expired",
                        "fal no longer has the result (kept 1 h, 6 min when 10 KB or more)",
                        possibly_charged=True,
                    )
                    raise PermanentShotFailure(
                        request.shot_id,
                        f"fal's result for {handle.request_id} expired before it was fetched; it may have been billed",
                    ) from exc
                if exc.status_code < 500 and exc.status_code != 429:
                    raise PermanentShotFailure(
                        request.shot_id, f"fetching the result answered {exc.status_code}: {_describe(exc.message)}"
                    ) from exc
                self.log.warning(f"{request.shot_id}: fetching the result failed ({exc.status_code}); trying again")
            except (httpx.HTTPError, TimeoutError) as exc:
                self.log.warning(f"{request.shot_id}: fetching the result failed ({exc!r}); trying again")
            await asyncio.sleep(min(2.0**attempt, 10))
        raise TransientShotFailure(request.shot_id, "the result could not be fetched; the request is resumable")

    async def _record_failure(
        self, request: ShotRequest, row: RequestRow, handle: fal_client.AsyncRequestHandle, status: fal_client.Completed
    ) -> None:
        """fal reports a failed job as COMPLETED with an error; its result URL holds the model's error."""
        if status.error_type == "request_cancelled":
            await asyncio.to_thread(self.ledger.mark_cancelled, row.request_key, str(status.error))
            raise PermanentShotFailure(request.shot_id, f"fal request {handle.request_id} was cancelled")
        http_status, detail = None, status.error
        try:
            await asyncio.wait_for(
                handle.get(interval=self.fal.poll_interval_seconds), timeout=self.fal.call_timeout_seconds
            )
        except fal_client.FalClientHTTPError as exc:
            http_status, detail = exc.status_code, _describe(exc.message)
        except (httpx.HTTPError, TimeoutError) as exc:
            self.log.warning(f"{request.shot_id}: could not read the model's error ({exc!r})")
        error_type = status.error_type or "model_error"
        permanent = is_permanent_error(status.error_type, http_status)
        message = f"fal request {handle.request_id} failed: {status.error} ({error_type}; {detail})"
        await asyncio.to_thread(
            self.ledger.mark_failed, row.request_key, error_type, message, possibly_charged=http_status == 422
        )
        failure = PermanentShotFailure if permanent else TransientShotFailure
        raise failure(request.shot_id, message + ("" if permanent else "; a new attempt will submit again"))

    async def _deliver(
        self, request: ShotRequest, row: RequestRow, outcome: ShotOutcome, video: dict[str, Any] | None
    ) -> None:
        """Download (again, if need be) from the result's URL; never resubmit for a download problem.
        `video` is the result's video entry, or None to read the stored result from the ledger."""
        current = await asyncio.to_thread(self.ledger.get, row.request_key)
        assert current is not None and current.request_id is not None
        if video is None:
            video = ((await asyncio.to_thread(self.ledger.result_of, row.request_key)) or {}).get("video") or {}
        url = video.get("url") or current.video_url
        expected = video.get("file_size")
        if not url:
            raise TransientShotFailure(request.shot_id, "the ledger has no video URL for this request yet")
        destination = self.videos_dir / request.shot_id / f"take{current.take:03d}-{current.request_id}.mp4"
        assert self._http is not None
        last_error: Exception | None = None
        for attempt in range(1, self.fal.download_attempts + 1):
            try:
                downloaded = await download_video(self._http, url, destination, expected)
                break
            except DownloadError as exc:
                last_error = exc
                self.log.warning(f"{request.shot_id}: download attempt {attempt} failed ({exc}); fetching again")
                await asyncio.sleep(min(0.5 * attempt, 5))
        else:
            raise TransientShotFailure(
                request.shot_id,
                f"the paid video could not be downloaded ({last_error}); it stays in the ledger and the next "
                "attempt fetches it again without a new request",
            )
        probe = downloaded.probe
        mismatches = problems_with(probe, request.duration)
        if mismatches:  # paid and kept; the videos_match_requests check reports it
            self.log.warning(f"{request.shot_id}: delivered video does not match the request: {mismatches}")
        video = VideoRow(
            request_id=current.request_id,
            request_key=current.request_key,
            shot_id=request.shot_id,
            path=str(downloaded.path),
            sha256=downloaded.sha256,
            bytes=downloaded.bytes,
            width=probe.width,
            height=probe.height,
            fps=probe.fps,
            frames=probe.frames,
            duration_seconds=probe.duration_seconds,
            source_url=url,
        )
        outcome.video = await asyncio.to_thread(self.ledger.record_video, row.request_key, video)
        outcome.request = await asyncio.to_thread(self.ledger.get, row.request_key)
        self.log.info(
            f"{request.shot_id}: fal request {current.request_id} delivered, verified and recorded at {downloaded.path}"
        )

    # -- cancellation ----------------------------------------------------------------------
    async def cancel_in_flight(self) -> list[str]:
        """Cancel this generator's requests at fal; a request that had already completed is still
        delivered, because it was paid."""
        cancelled = []
        for request_key, (request_id, request) in list(self.in_flight.items()):
            try:
                await self.client.cancel(self.fal.endpoint_id, request_id)
                await asyncio.to_thread(self.ledger.mark_cancelled, request_key, "run terminated; cancelled at fal")
                cancelled.append(request_id)
                self.log.info(f"{request.shot_id}: cancelled fal request {request_id}")
            except fal_client.FalClientHTTPError as exc:
                if exc.status_code != 400:
                    self.log.warning(f"{request.shot_id}: cancel of {request_id} failed ({exc}); it stays resumable")
                    continue
                self.log.info(f"{request.shot_id}: {request_id} had already completed; delivering the paid video")
                row = await asyncio.to_thread(self.ledger.get, request_key)
                assert row is not None
                outcome = ShotOutcome(request.shot_id)
                try:
                    video = await self._follow(request, row, request_id, outcome)
                    await self._deliver(request, row, outcome, video=video)
                except ShotFailure as failure:
                    self.log.warning(str(failure))
        return cancelled


def _describe(detail: Any) -> str:
    """fal's error bodies: a string, or FastAPI-style detail lists."""
    if isinstance(detail, dict) and "detail" in detail:
        detail = detail["detail"]
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', [])[1:]) or 'input'}: {item.get('msg')} ({item.get('type')})"
            if isinstance(item, dict)
            else str(item)
            for item in detail
        )
    return str(detail)[:500]
