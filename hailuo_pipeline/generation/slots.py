"""Places at fal: how many of a batch's requests may be queued or running at fal at once."""

from __future__ import annotations

import asyncio


class FalSlot:
    """One of a batch's `concurrency` places at fal: held from the claim until fal has finished the
    request, then given back, so the next shot is submitted while this one's video downloads."""

    def __init__(self, gate: asyncio.Semaphore) -> None:
        self._gate = gate
        self._held = False

    async def __aenter__(self) -> FalSlot:
        await self._gate.acquire()
        self._held = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        if self._held:
            self._held = False
            self._gate.release()
