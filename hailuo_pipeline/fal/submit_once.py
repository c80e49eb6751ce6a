"""A submit that fal_client does not send twice once it may have reached fal.

fal_client replays a request after any transport error, a submit included (up to 10 attempts). When the
connection fails after the submit went out (a reset, an answer cut off), fal may already have created
the job, and it bills every job it completes: the replay would be a second paid video. `submit_once`
refuses such a replay, so the submit ends as ambiguous, which the ledger records and the user resolves.
Replays that cannot double-charge stay fal_client's to make: a submit that never left (connection
refused) and one that fal answered with a retry code (429, an ingress 502/503/504).

How: httpx's request hook runs before every attempt, and httpcore's `trace` extension reports whether an
attempt's request headers started going out and whether its whole answer came back.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import fal_client
import httpx

from hailuo_pipeline.fal.hooks import add_request_hook
from hailuo_pipeline.fal.replies import BadReply, checked_request_id
from hailuo_pipeline.redact import describe_error


class SubmitReplayRefused(Exception):
    """Raised in place of a replay. It is not an httpx error, so fal_client passes it straight up."""


class SubmitNotSent(Exception):
    """No attempt of this submit reached fal unanswered: nothing can have been created, nothing paid."""


class SubmitUnanswered(Exception):
    """The submit may have reached fal and its answer was lost, cut off or unreadable: fal may have a job."""


@dataclass
class _Attempts:
    sent: int = 0
    answered: int = 0
    failure: BaseException | None = None

    async def trace(self, event: str, info: Mapping[str, Any]) -> None:
        if event.endswith("send_request_headers.complete"):
            self.sent += 1
        elif event.endswith("receive_response_body.complete"):
            self.answered += 1
        elif event.endswith(".failed"):
            self.failure = info.get("exception")


_current_submit: ContextVar[_Attempts | None] = ContextVar("hailuo_current_submit", default=None)


async def _before_each_attempt(request: httpx.Request) -> None:
    attempts = _current_submit.get()
    if attempts is None:  # not a submit: status polls, results and cancels are safe to replay
        return
    if attempts.sent > attempts.answered:
        raise SubmitReplayRefused(
            "the submit reached the network but its answer did not come back"
            + (f" ({describe_error(attempts.failure)})" if attempts.failure is not None else "")
        )
    request.extensions["trace"] = attempts.trace


async def submit_once(
    client: fal_client.AsyncClient, application: str, arguments: dict[str, Any], *, start_timeout: float
) -> fal_client.AsyncRequestHandle:
    """`client.submit`, minus the replays that could create a second paid job."""
    await add_request_hook(client, _before_each_attempt)
    attempts = _Attempts()
    token = _current_submit.set(attempts)
    try:
        handle = await client.submit(application, arguments, start_timeout=start_timeout)
    except fal_client.FalClientHTTPError:
        raise  # fal answered, with an error: no job
    except (ValueError, KeyError, TypeError) as exc:  # an answer came, but not one fal_client could read
        raise SubmitUnanswered(f"fal's answer to the submit could not be read ({describe_error(exc)})") from exc
    except Exception as exc:
        if attempts.sent > attempts.answered:
            said = (
                str(exc)
                if isinstance(exc, SubmitReplayRefused)
                else f"the submit got no answer ({describe_error(exc)})"
            )
            raise SubmitUnanswered(said) from exc
        raise SubmitNotSent(f"the submit could not be sent ({describe_error(exc)})") from exc
    finally:
        _current_submit.reset(token)
    try:
        checked_request_id(handle.request_id)
    except BadReply as exc:
        raise SubmitUnanswered(str(exc)) from exc
    return handle
