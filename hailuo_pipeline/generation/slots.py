"""Places at fal: how many requests may be queued or running at fal at once.

Two limits. A batch's `concurrency` is a semaphore in its process. A total limit over every run and process
(a fal account's concurrency limit, `HAILUO_MAX_IN_FLIGHT`) is decided by the ledger when a request is
claimed (`ClaimKind.FULL`), so it holds wherever the runs are; `RoomAtFal` is how a process waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib

ROOM_POLL_SECONDS = 0.25  # how soon a place freed by another process is noticed


class RoomAtFal:
    """Waiting for room under the total limit. One waiting shot per process at a time asks the ledger
    again: at once when this process gives a place back, else every ROOM_POLL_SECONDS (another process
    may have), so a full limit costs each process about four claims a second, not one per waiting shot."""

    def __init__(self, poll_seconds: float = ROOM_POLL_SECONDS) -> None:
        self.poll_seconds = poll_seconds
        self._freed: asyncio.Event | None = None
        self._turn: asyncio.Lock | None = None

    @property
    def turn(self) -> asyncio.Lock:
        if self._turn is None:
            self._turn = asyncio.Lock()
        return self._turn

    def freed(self) -> None:
        if self._freed is not None:
            self._freed.set()

    async def wait(self) -> None:
        if self._freed is None:
            self._freed = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.poll_seconds):
                await self._freed.wait()
        self._freed.clear()


class FalSlot:
    """One shot's way to one of a batch's `concurrency` places at fal.

    Entering it joins the batch's lookahead (`ahead`, also `concurrency` shots): a shot is validated and
    its orphans taken over there, while others hold the places, so a freed place is used at once instead of
    after that work. `take()` waits for a place, just before the ledger's claim, and leaves the lookahead.
    The place is given back once fal has finished the request, so the next shot is submitted while this
    one's video downloads."""

    def __init__(self, gate: asyncio.Semaphore, ahead: asyncio.Semaphore, room: RoomAtFal | None = None) -> None:
        self._gate = gate
        self._ahead = ahead
        self._room = room
        self._held = False
        self._waiting = False

    async def __aenter__(self) -> FalSlot:
        await self._ahead.acquire()
        self._waiting = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
        self._leave_lookahead()

    async def take(self) -> None:
        if not self._held:
            await self._gate.acquire()
            self._held = True
            self._leave_lookahead()

    def _leave_lookahead(self) -> None:
        if self._waiting:
            self._waiting = False
            self._ahead.release()

    def release(self) -> None:
        if self._held:
            self._held = False
            self._gate.release()
            if self._room is not None:
                self._room.freed()
