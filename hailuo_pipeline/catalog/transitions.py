"""How a request's ledger row moves through its statuses, each move with its event: the transitions the
generation code reports (submitted, progress, completed, failed, lost, delivered). What may be paid for is
decided in `ledger.py`."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from hailuo_pipeline.catalog.decisions import LEASE_SECONDS, OwnerAlive, owner_alive
from hailuo_pipeline.catalog.rows import ACTIVE, PAID, PROGRESS_ORDER, RequestRow, Status, VideoRow
from hailuo_pipeline.catalog.storage import LedgerStore, LedgerTransaction
from hailuo_pipeline.errors import HailuoError
from hailuo_pipeline.redact import redact

MESSAGE_CHARS = 4000
VERDICTS = ("approve", "reject", "withdraw")


class VerdictError(HailuoError):
    """A verdict that cannot be recorded: no such delivered take, or no such verdict."""


def one_row(t: LedgerTransaction, request_key: str) -> RequestRow:
    (row,) = t.requests(request_key=request_key)
    return row


class LedgerTransitions:
    def __init__(
        self, store: LedgerStore, lease_seconds: float = LEASE_SECONDS, alive: OwnerAlive = owner_alive
    ) -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        self.alive = alive

    # -- transitions -----------------------------------------------------------------------
    def mark_submitted(self, request_key: str, request_id: str) -> dict[str, str]:
        return self.mark_submitted_together({request_key: request_id})

    def mark_submitted_together(self, request_ids: dict[str, str]) -> dict[str, str]:
        """fal's ids for several submits, with their events, in one transaction of two set-based statements:
        ids answered together are durable together, as soon as one of them alone would be (until written, a
        killed process leaves its submit ambiguous). A key with no row fails the whole group.

        A request id is one job at fal, so it belongs to one row: an id that another row already holds (or that
        two answers of the group share) is a replayed or false answer. The new row is recorded ambiguous (fal
        may have billed a job we cannot see), the row holding the id is untouched. Returns those refused rows'
        keys, each with the reason naming both rows."""
        with self.store.transaction() as t:
            holders = {row.request_id: row for row in t.requests(request_ids=list(request_ids.values()))}
            refused: dict[str, str] = {}
            accepted: dict[str, str] = {}
            for request_key, request_id in request_ids.items():
                holder = holders.get(request_id)
                if holder is not None and holder.request_key != request_key:
                    refused[request_key] = (
                        f"fal answered with request id {request_id}, which ledger row {holder.request_key} (shot "
                        f"{holder.shot_id}, take {holder.take}) already holds: a replayed or false answer, so the job "
                        "this submit created (and fal may bill) cannot be seen"
                    )
                elif request_id in accepted.values():
                    first = next(k for k, i in accepted.items() if i == request_id)
                    refused[request_key] = (
                        f"fal answered with request id {request_id} for this submit and for ledger row {first} "
                        "at once: a replayed or false answer, so one of the two jobs (and fal may bill both) "
                        "cannot be seen"
                    )
                else:
                    accepted[request_key] = request_id
            details = [redact(f"fal request id {request_id}") for request_id in accepted.values()]
            missing = set(accepted) - (t.record_submits(accepted, t.now(), details) if accepted else set())
            if missing:
                raise ValueError(f"no ledger row for {sorted(missing)}")
            for request_key, message in refused.items():
                self._transition(t, one_row(t, request_key), Status.AMBIGUOUS, message, possible_double_charge=True)
        return refused

    def record_arguments_digest(self, request_key: str, digest: str) -> None:
        with self.store.transaction() as t:
            t.update_request(request_key, {"arguments_sha256": digest})

    def mark_progress(self, request_key: str, status: Status, detail: str | None = None) -> None:
        """Record in_queue / in_progress, only moving forward."""
        with self.store.transaction() as t:
            row = one_row(t, request_key)
            if PROGRESS_ORDER.get(row.status, 99) < PROGRESS_ORDER[status]:
                started = t.now() if status is Status.IN_PROGRESS and row.started_at is None else row.started_at
                self._change(t, row, {"status": status, "started_at": started}, detail)

    def mark_completed(
        self,
        request_key: str,
        result: dict[str, Any],
        video_url: str,
        inference_seconds: float | None,
        polls: int = 0,
    ) -> None:
        """fal finished and billed: store the result before anything else can go wrong (and the status
        calls it took, in the same transaction)."""
        with self.store.transaction() as t:
            if polls:
                t.add_polls(request_key, polls)
            row = one_row(t, request_key)
            if row.status not in ACTIVE or row.status is Status.COMPLETED:
                return
            now = t.now()
            started = row.started_at or now
            values: dict[str, Any] = {
                "status": Status.COMPLETED,
                "result_json": result,
                "video_url": video_url,
                "completed_at": row.completed_at or now,
                "started_at": started,
                "queue_seconds": (started - row.submitted_at).total_seconds() if row.submitted_at else None,
                "cost_usd": row.price_usd,
                "reserved_usd": Decimal(0),
            }
            if inference_seconds is not None:
                values["inference_seconds"] = inference_seconds
            self._change(t, row, values, video_url)

    def mark_failed(
        self,
        request_key: str,
        error_type: str,
        message: str,
        *,
        possibly_charged: bool = False,
        permanent: bool = False,
    ) -> None:
        """`permanent`: fal refused these very inputs; later attempts with them are refused before any
        request (decisions.decide_claim), unless the user insists."""
        self._finish(request_key, Status.FAILED, error_type, message, possibly_charged, permanent)

    def mark_cancelled(self, request_key: str, message: str) -> None:
        self._finish(request_key, Status.CANCELLED, "cancelled", message, False, False)

    def mark_lost(self, request_key: str, error_type: str, message: str) -> None:
        """fal billed the request (or may have), and its result can no longer be fetched: the money is
        spent and counted as lost, and no later attempt waits for this request again."""
        with self.store.transaction() as t:
            row = one_row(t, request_key)
            if row.status in ACTIVE:
                self._end(
                    t, row, Status.LOST, error_type, message, {"possibly_charged": True, "cost_usd": row.price_usd}
                )

    def mark_ambiguous(self, request_key: str, message: str) -> None:
        with self.store.transaction() as t:
            self._transition(t, one_row(t, request_key), Status.AMBIGUOUS, message, possible_double_charge=True)

    def _finish(
        self,
        request_key: str,
        status: Status,
        error_type: str,
        message: str,
        possibly_charged: bool,
        permanent: bool,
    ) -> None:
        with self.store.transaction() as t:
            row = one_row(t, request_key)
            if row.status not in PAID:  # a paid request is never turned into a failure
                extra = {"possibly_charged": possibly_charged, "permanent_failure": permanent, "cost_usd": Decimal(0)}
                self._end(t, row, status, error_type, message, extra)

    def _end(
        self, t: LedgerTransaction, row: RequestRow, status: Status, error_type: str, message: str, extra: dict
    ) -> None:
        """A final status: no reservation held, no lease, the reason kept."""
        values = {
            "status": status,
            "error_type": error_type,
            "error_message": redact(message)[:MESSAGE_CHARS],
            "completed_at": row.completed_at or t.now(),
            "reserved_usd": Decimal(0),
            "owner": None,
            **extra,
        }
        self._change(t, row, values, f"{error_type}: {message[:500]}")

    def _transition(
        self, t: LedgerTransaction, row: RequestRow, status: Status, message: str, *, possible_double_charge: bool
    ) -> None:
        values = {
            "status": status,
            "error_type": status.value,
            "error_message": redact(message),
            "owner": None,
            "possible_double_charge": row.possible_double_charge or possible_double_charge,
        }
        self._change(t, row, values, message)

    def record_verdict(self, shot_id: str, take: int | None, verdict: str, note: str | None = None) -> RequestRow:
        """Approve, reject or withdraw a delivered take of a shot (its latest when `take` is None); approving one
        withdraws the approval of the shot's other takes (a shot has one approved take). The take's row after."""
        if verdict not in VERDICTS:
            raise VerdictError(f"the verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
        with self.store.transaction(decides=True) as t:
            delivered = [r for r in t.requests(shot_id=shot_id) if r.status is Status.SUCCEEDED]
            if not delivered:
                raise VerdictError(f"shot {shot_id!r} has no delivered take to judge")
            takes = sorted(r.take for r in delivered)
            chosen = (
                max(delivered, key=lambda r: r.take)
                if take is None
                else next((r for r in delivered if r.take == take), None)
            )
            if chosen is None:
                raise VerdictError(f"shot {shot_id!r} has no delivered take {take} (its takes: {takes})")
            now = t.now()
            if verdict == "approve":
                for other in delivered:
                    if other.request_key != chosen.request_key and other.verdict == "approve":
                        t.add_verdict(other, "withdraw", f"take {chosen.take} approved instead", now)
            t.add_verdict(chosen, verdict, None if note is None else redact(note)[:MESSAGE_CHARS], now)
            return one_row(t, chosen.request_key)

    def verdicts_since(self, after: datetime | None) -> list[tuple[str, int, str, str | None, datetime]]:
        with self.store.transaction(read_only=True) as t:
            return t.verdicts_since(after)

    def approved_take(self, shot_id: str) -> RequestRow | None:
        """The shot's approved take (a shot has one at most), or None."""
        with self.store.transaction(read_only=True) as t:
            return next((r for r in t.requests(shot_id=shot_id) if r.verdict == "approve"), None)

    def add_polls(self, request_key: str, polls: int) -> None:
        if polls:
            with self.store.transaction() as t:
                t.add_polls(request_key, polls)

    def record_video(self, request_key: str, video: VideoRow) -> tuple[VideoRow, RequestRow]:
        """Record a verified file; idempotent when two attempts deliver the same request. Returns the
        recorded video and the request's row as it now stands."""
        with self.store.transaction() as t:
            now = t.now()
            existing = t.video(request_id=video.request_id)
            if existing is None:
                t.insert_video(video, now)
            row = one_row(t, request_key)
            if row.status is not Status.SUCCEEDED:  # a second delivery is not a new transition
                wall = (now - row.created_at).total_seconds()
                self._change(t, row, {"status": Status.SUCCEEDED, "owner": None, "wall_seconds": wall}, video.path)
                row = one_row(t, request_key)
            return existing or video, row

    @staticmethod
    def _event(t: LedgerTransaction, request_key: str, status: Status, detail: str | None) -> None:
        t.add_event(request_key, status, t.now(), None if detail is None else redact(detail))

    def _change(self, t: LedgerTransaction, row: RequestRow, values: dict[str, Any], detail: str | None) -> None:
        """Write `values` to the row and record the transition (to its new status, or the same one)."""
        t.update_request(row.request_key, values)
        self._event(t, row.request_key, values.get("status", row.status), detail)
