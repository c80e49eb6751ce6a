"""Follow one paid request at fal until its result is stored: polls, the model's error, the result.

Every outcome lands in the ledger before anything else happens: progress as it is seen, the result (the
video URL) before any download, a refusal as a permanent failure, a result fal no longer has as lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, NoReturn

import fal_client
import httpx

from hailuo_pipeline.catalog.ledger import RequestLedger
from hailuo_pipeline.catalog.rows import RequestRow, Status
from hailuo_pipeline.fal.config import FalSettings
from hailuo_pipeline.fal.hooks import StatusCalls, counting_status_calls
from hailuo_pipeline.fal.polling import CompletionEstimate, PollSchedule
from hailuo_pipeline.fal.replies import BadReply, VideoEntry, checked_video
from hailuo_pipeline.generation.errors import (
    FIX_RESUMABLE,
    FIX_TRANSIENT,
    KEY_OR_ACCOUNT_STATUSES,
    PermanentShotFailure,
    TransientShotFailure,
    describe_fal_detail,
    failure_for_http,
    fix_for_lost,
    fix_for_refusal,
    is_input_refusal,
    is_permanent_error,
)
from hailuo_pipeline.generation.log import RunLog
from hailuo_pipeline.redact import describe_error

# a call that failed, or an answer fal_client could not read: not JSON (ValueError), a field missing (KeyError)
# or of the wrong type (TypeError). Each is a failed poll, tried again; never a verdict on the request.
UNREADABLE = (httpx.HTTPError, TimeoutError, ValueError, KeyError, TypeError)


class RequestFollower:
    """Shared by a batch's requests: the client, the settings and what finished requests teach."""

    def __init__(self, fal: FalSettings, client: fal_client.AsyncClient, ledger: RequestLedger, log: RunLog) -> None:
        self.fal = fal
        self.client = client
        self.ledger = ledger
        self.log = log
        self.completion = CompletionEstimate()
        self.detailed_logs = True

    async def follow(
        self, row: RequestRow, submitted_at: float | None = None, on_finished: Callable[[], None] | None = None
    ) -> tuple[VideoEntry, int]:
        """Poll politely until fal finishes, then store the result; returns the result's `video` entry
        (url, file_size, ...) and the status calls fal saw, fal_client's replays included. `on_finished`
        hears the moment fal reports the job finished, before its result is fetched."""
        assert row.request_id is not None
        with counting_status_calls() as calls:
            try:
                video = await self._follow(row, row.request_id, submitted_at, calls, on_finished)
            except BaseException:  # a completed request's calls were stored with its result
                await asyncio.to_thread(self.ledger.add_polls, row.request_key, calls.count)
                raise
            return video, calls.count

    async def _follow(
        self,
        row: RequestRow,
        request_id: str,
        submitted_at: float | None,
        calls: StatusCalls,
        on_finished: Callable[[], None] | None,
    ) -> VideoEntry:
        handle = await self.client.get_handle(self.fal.endpoint_id, request_id)
        shot_id = row.shot_id
        errors, last_position, seen_logs = 0, None, 0
        failing_since: float | None = None
        schedule = PollSchedule(
            self.fal.poll_interval_seconds,
            self.fal.poll_backoff,
            self.fal.max_poll_interval_seconds,
            self.completion,
            since=submitted_at,
        )
        recorded = row.status
        while True:
            try:
                # one call includes fal_client's own quick retries; bound it as a whole
                async with asyncio.timeout(self.fal.call_timeout_seconds):
                    status = await handle.status(with_logs=True)
                errors, failing_since = 0, None
            except fal_client.FalClientHTTPError as exc:
                if exc.status_code == 404:
                    await self._lost(
                        row,
                        "request_unknown",
                        f"fal no longer knows request {request_id}; if it ran, it was billed, so it is booked as spent",
                    )
                if exc.status_code in KEY_OR_ACCOUNT_STATUSES:
                    raise failure_for_http(
                        shot_id, exc.status_code, None, exc.message, f"polling {request_id}"
                    ) from exc
                errors, failing_since = await self._poll_failed(row, exc, errors, failing_since)
                await asyncio.sleep(schedule.next_wait())
                continue
            except UNREADABLE as exc:
                errors, failing_since = await self._poll_failed(row, exc, errors, failing_since)
                await asyncio.sleep(schedule.next_wait())
                continue
            if isinstance(status, fal_client.Queued):
                if status.position != last_position and self.detailed_logs:
                    self.log.info(f"{shot_id}: in queue at position {status.position}")
                last_position = status.position
            elif isinstance(status, fal_client.InProgress):
                if recorded is not Status.IN_PROGRESS:
                    await asyncio.to_thread(self.ledger.mark_progress, row.request_key, Status.IN_PROGRESS)
                    recorded = Status.IN_PROGRESS
                for entry in (status.logs or [])[seen_logs:] if self.detailed_logs else []:
                    text = entry.get("message", entry) if isinstance(entry, dict) else entry
                    self.log.info(f"{shot_id}: fal: {str(text)[:300]}")
                seen_logs = max(seen_logs, len(status.logs or []))
            elif isinstance(status, fal_client.Completed):
                schedule.finished()
                if on_finished is not None:
                    on_finished()
                break
            schedule.still_running()
            await schedule.sleep()
        if status.error:
            await self._record_model_error(row, handle, status)
        result = await self._fetch_result(row, handle)
        try:
            video = checked_video(result)
        except BadReply as exc:  # fal reported success, so it bills: booked at its price, never as a free failure
            await self._lost(row, "bad_result", f"fal completed (and billed) request {request_id} but {exc}")
        metrics = status.metrics if isinstance(status.metrics, dict) else {}
        inference = metrics.get("inference_time")
        inference = float(inference) if isinstance(inference, int | float) and 0 <= inference < 86400 else None
        await asyncio.to_thread(self.ledger.mark_completed, row.request_key, result, video.url, inference, calls.count)
        return video

    async def _poll_failed(
        self, row: RequestRow, exc: Exception, errors: int, failing_since: float | None
    ) -> tuple[int, float]:
        errors += 1
        failing_since = failing_since or time.monotonic()
        failing_for = time.monotonic() - failing_since
        if errors >= self.fal.max_poll_errors or failing_for > self.fal.max_poll_error_seconds:
            raise TransientShotFailure(
                row.shot_id,
                f"{errors} status polls of request {row.request_id} in a row failed over {failing_for:.0f} s "
                f"({describe_error(exc)})",
                FIX_RESUMABLE,
            ) from exc
        self.log.warning(f"{row.shot_id}: status poll failed ({describe_error(exc)}); trying again")
        return errors, failing_since

    async def _fetch_result(self, row: RequestRow, handle: fal_client.AsyncRequestHandle) -> Any:
        for attempt in range(1, self.fal.max_poll_errors + 1):
            try:
                async with asyncio.timeout(self.fal.call_timeout_seconds):
                    return await handle.get(interval=self.fal.poll_interval_seconds)
            except fal_client.FalClientHTTPError as exc:
                if exc.status_code == 404:
                    await self._lost(
                        row,
                        "result_expired",
                        f"fal's result for request {handle.request_id} expired before it was fetched "
                        "(fal keeps results 1 h, 6 min when 10 KB or more); fal billed it",
                    )
                if exc.status_code < 500 and exc.status_code != 429:
                    raise failure_for_http(
                        row.shot_id, exc.status_code, None, exc.message, f"fetching the result of {handle.request_id}"
                    ) from exc
                self.log.warning(f"{row.shot_id}: fetching the result failed ({exc.status_code}); trying again")
            except UNREADABLE as exc:
                self.log.warning(f"{row.shot_id}: fetching the result failed ({describe_error(exc)}); trying again")
            await asyncio.sleep(min(2.0**attempt, 10))
        raise TransientShotFailure(
            row.shot_id, f"the result of request {handle.request_id} could not be fetched", FIX_RESUMABLE
        )

    async def _record_model_error(
        self, row: RequestRow, handle: fal_client.AsyncRequestHandle, status: fal_client.Completed
    ) -> None:
        """fal reports a failed job as COMPLETED with an error; its result URL holds the model's error."""
        if status.error_type == "request_cancelled":
            await asyncio.to_thread(self.ledger.mark_cancelled, row.request_key, str(status.error))
            raise PermanentShotFailure(
                row.shot_id, f"fal request {handle.request_id} was cancelled", "run the shot again to pay for it anew"
            )
        http_status, detail = None, status.error
        try:
            async with asyncio.timeout(self.fal.call_timeout_seconds):
                await handle.get(interval=self.fal.poll_interval_seconds)
        except fal_client.FalClientHTTPError as exc:
            http_status, detail = exc.status_code, describe_fal_detail(exc.message)
        except UNREADABLE as exc:
            self.log.warning(f"{row.shot_id}: could not read the model's error ({describe_error(exc)})")
        error_type = status.error_type or "model_error"
        refusal = is_input_refusal(status.error_type, http_status)
        await asyncio.to_thread(
            self.ledger.mark_failed,
            row.request_key,
            error_type,
            f"{status.error} ({error_type}; {detail})",
            possibly_charged=http_status == 422,
            permanent=refusal,
        )
        if refusal or is_permanent_error(status.error_type, http_status):
            raise PermanentShotFailure(
                row.shot_id,
                f"fal refused request {handle.request_id}: {status.error} ({error_type}; {detail})",
                fix_for_refusal(status.error_type),
            )
        raise TransientShotFailure(
            row.shot_id,
            f"fal request {handle.request_id} failed: {status.error} ({error_type}); a new attempt submits again",
            FIX_TRANSIENT,
        )

    async def _lost(self, row: RequestRow, error_type: str, message: str) -> NoReturn:
        await asyncio.to_thread(self.ledger.mark_lost, row.request_key, error_type, message)
        raise PermanentShotFailure(row.shot_id, message, fix_for_lost(row.shot_id))
