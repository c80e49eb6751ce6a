"""Rows settled from fal's own records: an ambiguous submit found in fal's request history (its id adopted), one
fal never received (its reservation released), and a lost result fal's history still holds (recovered). Each
is one short transaction that re-reads the row and acts only if it is still as the settlement saw it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from hailuo_pipeline.catalog.rows import RequestRow, Status
from hailuo_pipeline.catalog.transitions import LedgerTransitions, one_row
from hailuo_pipeline.redact import redact

HISTORY_DAYS = 90  # fal's request history answers by request id this far back


class LedgerSettlements(LedgerTransitions):
    def now(self) -> datetime:
        with self.store.transaction(read_only=True) as t:
            return t.now()

    def ambiguous_to_settle(self) -> list[RequestRow]:
        """Ambiguous submits whose sent arguments are known by their digest, oldest first."""
        with self.store.transaction(read_only=True) as t:
            rows = t.requests(statuses=[Status.AMBIGUOUS])
        return [r for r in reversed(rows) if r.request_id is None and r.arguments_sha256]

    def lost_to_recover(self) -> list[RequestRow]:
        """Lost requests that fal's history has not been asked about yet, and may still hold."""
        with self.store.transaction(read_only=True) as t:
            since = t.now() - timedelta(days=HISTORY_DAYS)
            rows = t.requests(statuses=[Status.LOST])
        return [r for r in rows if r.request_id and not r.history_checked and r.created_at >= since]

    def held_request_ids(self, request_ids: Sequence[str]) -> set[str]:
        with self.store.transaction(read_only=True) as t:
            return {row.request_id for row in t.requests(request_ids=list(request_ids)) if row.request_id}

    def adopt(self, request_key: str, request_id: str, detail: str) -> bool:
        """The ambiguous submit is fal's `request_id`: an ordinary request from now on, resumed by id. False
        when the row moved meanwhile or another row holds the id."""
        with self.store.transaction(decides=True) as t:
            row = one_row(t, request_key)
            if row.status is not Status.AMBIGUOUS or row.request_id is not None or t.requests(request_ids=[request_id]):
                return False
            values = {
                "status": Status.SUBMITTED,
                "request_id": request_id,
                "submitted_at": row.submitted_at or row.created_at,
                "owner": None,
                "possible_double_charge": False,
                "error_type": None,
                "error_message": None,
            }
            self._change(t, row, values, redact(detail))
            return True

    def release_unsent(self, request_key: str, reason: str) -> bool:
        """fal never received the ambiguous submit: its reservation is released at $0 (the shot may be paid for
        once, as if the attempt had failed before sending)."""
        with self.store.transaction(decides=True) as t:
            row = one_row(t, request_key)
            if row.status is not Status.AMBIGUOUS or row.request_id is not None:
                return False
            extra = {"possibly_charged": False, "possible_double_charge": False, "cost_usd": Decimal(0)}
            self._end(t, row, Status.FAILED, "not_sent", reason, extra)
            return True

    def recover_lost(self, request_key: str, result: dict[str, Any], video_url: str, detail: str) -> bool:
        """fal's history still holds the lost request's result: completed again (still booked at its price),
        for the next attempt to download it by the usual rules."""
        with self.store.transaction(decides=True) as t:
            row = one_row(t, request_key)
            if row.status is not Status.LOST:
                return False
            values = {
                "status": Status.COMPLETED,
                "result_json": result,
                "video_url": video_url,
                "history_checked": True,
                "owner": None,
                "error_type": None,
                "error_message": None,
            }
            self._change(t, row, values, redact(detail))
            return True

    def mark_history_checked(self, request_key: str) -> None:
        with self.store.transaction() as t:
            t.update_request(request_key, {"history_checked": True})
