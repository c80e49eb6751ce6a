"""One shot's request: its fingerprint, and its submit, sent once and recorded whatever fal answers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any, NoReturn

import fal_client

from hailuo_pipeline.catalog.ledger import RequestLedger
from hailuo_pipeline.catalog.rows import RequestRow
from hailuo_pipeline.fal.config import FalSettings
from hailuo_pipeline.fal.submit_once import SubmitNotSent, SubmitUnanswered, submit_once
from hailuo_pipeline.generation.errors import (
    PermanentShotFailure,
    TransientShotFailure,
    failure_for_http,
    fix_for_ambiguous,
    is_input_refusal,
)
from hailuo_pipeline.redact import describe_error
from hailuo_pipeline.shots.validation import ShotRequest


class SubmittedIds:
    """A batch's writer of fal's request ids. Submits answered while an earlier write is under way wait for
    the next one, which records them all in one transaction: at a burst of answers the last id is written
    after two transactions, not after as many as there are answers. Each caller hears its own outcome; a
    group that fails is written again one id at a time, so that one bad row fails only its own shot."""

    def __init__(self, ledger: RequestLedger) -> None:
        self.ledger = ledger
        self._waiting: dict[str, tuple[str, asyncio.Future[None]]] = {}
        self._writer: asyncio.Task[None] | None = None

    async def record(self, request_key: str, request_id: str) -> None:
        written = asyncio.get_running_loop().create_future()
        self._waiting[request_key] = (request_id, written)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_while_waiting())
        # shielded: a shot cancelled now (a terminated run) still has its id written by the writer
        await asyncio.shield(written)

    async def _write_while_waiting(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, {}
            try:
                refused = await asyncio.to_thread(
                    self.ledger.mark_submitted_together, {k: i for k, (i, _) in group.items()}
                )
            except (asyncio.CancelledError, KeyboardInterrupt):
                for _, written in group.values():
                    written.cancel()
                raise
            except Exception:
                for request_key, (request_id, written) in group.items():
                    try:
                        alone = await asyncio.to_thread(self.ledger.mark_submitted, request_key, request_id)
                    except Exception as exc:
                        written.set_exception(exc)
                    else:
                        _settle(written, alone.get(request_key))
            else:
                for request_key, (_, written) in group.items():
                    _settle(written, refused.get(request_key))


class RequestIdTaken(Exception):
    """fal answered a submit with a request id another row holds: the row is recorded ambiguous."""


def _settle(written: asyncio.Future[None], refusal: str | None) -> None:
    if refusal is None:
        written.set_result(None)
    else:
        written.set_exception(RequestIdTaken(refusal))


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


def payload_for(request: ShotRequest, image_url: str) -> dict[str, Any]:
    """Exactly the arguments a submit sends."""
    return {
        "prompt": request.prompt,
        "image_url": image_url,
        "prompt_optimizer": request.prompt_optimizer,
        "duration": str(request.duration),
    }


def arguments_digest(arguments: Any) -> str:
    """The digest of a submit's arguments, as sent, or as fal's request history echoes them (`json_input`):
    the same canonical JSON, so the two match. Only the digest is stored, never an image or a credential."""
    text = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def sent_arguments(fal: FalSettings, request: ShotRequest) -> tuple[str | None, str | None]:
    """The image argument and the digest of the arguments the submit will send, when no upload is needed:
    stored with the reservation, so a submit whose answer is lost can be found in fal's request history."""
    image_url = fal.inline_image_argument(request)
    return image_url, None if image_url is None else arguments_digest(payload_for(request, image_url))


async def submit(
    fal: FalSettings,
    client: fal_client.AsyncClient,
    ids: SubmittedIds,
    request: ShotRequest,
    row: RequestRow,
    image_url: str | None = None,
) -> tuple[str, float]:
    """Submit once; returns fal's request id and when the submit was sent (the job's earliest start).
    `image_url`: the image argument when it is known already (no upload)."""
    if image_url is None:
        try:
            image_url = await fal.image_argument(client, request)
        except Exception as exc:  # uploading to fal's storage is not a submit: nothing can be paid yet
            await _not_sent(
                ids.ledger, row, request, f"uploading the image to fal's storage failed ({describe_error(exc)})"
            )
    payload = payload_for(request, image_url)
    if row.arguments_sha256 is None:  # known only now (an upload): stored before the submit can reach fal
        await asyncio.to_thread(ids.ledger.record_arguments_digest, row.request_key, arguments_digest(payload))
    sent_at = time.monotonic()
    try:
        handle = await submit_once(client, fal.endpoint_id, payload, start_timeout=fal.submit_timeout_seconds)
    except SubmitNotSent as exc:
        await _not_sent(ids.ledger, row, request, str(exc))
    except SubmitUnanswered as exc:  # fal may have a job
        await asyncio.to_thread(ids.ledger.mark_ambiguous, row.request_key, str(exc))
        raise PermanentShotFailure(
            request.shot_id, f"{exc}; fal may have created a job we cannot see", fix_for_ambiguous(row.request_key)
        ) from exc
    except fal_client.FalClientHTTPError as exc:
        failure = failure_for_http(request.shot_id, exc.status_code, exc.error_type, exc.message, "submitting")
        await asyncio.to_thread(
            ids.ledger.mark_failed,
            row.request_key,
            f"http_{exc.status_code}",
            failure.cause,
            permanent=is_input_refusal(exc.error_type, exc.status_code),
        )
        raise failure from exc
    try:
        await ids.record(row.request_key, handle.request_id)
    except RequestIdTaken as exc:  # recorded ambiguous: fal may bill a job we cannot see
        raise PermanentShotFailure(request.shot_id, str(exc), fix_for_ambiguous(row.request_key)) from exc
    return handle.request_id, sent_at


async def _not_sent(ledger: RequestLedger, row: RequestRow, request: ShotRequest, cause: str) -> NoReturn:
    """Nothing reached fal: the reservation is released and the shot may simply be run again."""
    await asyncio.to_thread(ledger.mark_failed, row.request_key, "not_sent", cause)
    raise TransientShotFailure(
        request.shot_id,
        f"{cause}; nothing was submitted",
        "check the network (and FAL_QUEUE_RUN_HOST, if set); nothing was paid, so running again is safe",
    )
