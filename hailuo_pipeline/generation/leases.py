"""The leases a generator holds on the requests it follows: renewed every few seconds while it follows them,
so a process that stops leaves orphans (its leases run out) that the next attempt takes over."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from hailuo_pipeline.catalog.decisions import heartbeat_seconds
from hailuo_pipeline.catalog.ledger import RequestLedger
from hailuo_pipeline.catalog.rows import RequestRow
from hailuo_pipeline.generation.log import RunLog
from hailuo_pipeline.redact import describe_error


class Leases:
    def __init__(self, ledger: RequestLedger, owner: str, log: RunLog) -> None:
        self.ledger = ledger
        self.owner = owner
        self.log = log
        self.held: set[str] = set()  # request keys followed now; their leases are renewed

    @contextmanager
    def hold(self, row: RequestRow) -> Iterator[None]:
        """Renew the row's lease while the block runs (the ledger released or ended it otherwise)."""
        self.held.add(row.request_key)
        try:
            yield
        finally:
            self.held.discard(row.request_key)

    async def renew_forever(self) -> None:
        while True:
            await asyncio.sleep(heartbeat_seconds(self.ledger.lease_seconds))
            try:
                await asyncio.to_thread(self.ledger.heartbeat, sorted(self.held), self.owner)
            except Exception as exc:  # a missed renewal is survivable (the lease is 45 s); a dead task is not
                self.log.warning(
                    f"renewing the leases of {len(self.held)} request(s) failed ({describe_error(exc)}); trying again"
                )
