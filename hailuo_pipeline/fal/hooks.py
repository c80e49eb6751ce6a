"""Hooks on fal_client's own httpx client: the one place that reaches into it.

fal_client has no public hook: its httpx client is a cached property of each AsyncClient. Two watchers
use it: `submit_once` (a submit is never replayed once it may have reached fal) and the status-call
counter here (polls counted as fal's server sees them: fal_client's replays and the status poll inside
`handle.get()` included)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import fal_client
import httpx

RequestHook = Callable[[httpx.Request], Awaitable[None]]
FAL_QUEUE_HOST = "queue.fal.run"


def route_storage_to_queue_host() -> str | None:
    """fal_client uploads to fal's own storage hosts (rest.fal.ai, v3.fal.media) whatever
    FAL_QUEUE_RUN_HOST says. Where the queue host is not fal's (the emulator, a proxy), send uploads
    there too, so that a stand-in never leads the key to fal's real storage. Returns the storage URL
    when it was routed."""
    from fal_client import client as fal_module

    host = fal_module.FAL_QUEUE_RUN_HOST  # read by fal_client from the environment when it was imported
    if host == FAL_QUEUE_HOST:
        return None
    fal_module.REST_URL = fal_module.CDN_URL = f"https://{host}"
    return fal_module.REST_URL


async def add_request_hook(client: fal_client.AsyncClient, hook: RequestHook) -> None:
    http: httpx.AsyncClient = await client._client
    hooks = http.event_hooks
    if hook not in hooks["request"]:
        http.event_hooks = {**hooks, "request": [*hooks["request"], hook]}


@dataclass
class StatusCalls:
    count: int = 0


_status_calls: ContextVar[StatusCalls | None] = ContextVar("hailuo_status_calls", default=None)


async def _count_status_call(request: httpx.Request) -> None:
    calls = _status_calls.get()
    if calls is not None and request.url.path.endswith("/status"):
        calls.count += 1


async def watch_status_calls(client: fal_client.AsyncClient) -> None:
    await add_request_hook(client, _count_status_call)


@contextmanager
def counting_status_calls() -> Iterator[StatusCalls]:
    """Counts the status calls made by this task (and the tasks it starts) while inside the block."""
    calls = StatusCalls()
    token = _status_calls.set(calls)
    try:
        yield calls
    finally:
        _status_calls.reset(token)
