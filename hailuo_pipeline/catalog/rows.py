"""The ledger's rows and statuses: plain data shared by the decisions, the storage and the runner."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    RESERVED = "reserved"  # row written and money reserved; the submit is about to be sent
    SUBMITTED = "submitted"  # fal answered with a request id
    IN_QUEUE = "in_queue"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"  # fal finished and billed; the result (video URL) is stored
    SUCCEEDED = "succeeded"  # the video is downloaded, verified and recorded
    FAILED = "failed"
    CANCELLED = "cancelled"
    AMBIGUOUS = "ambiguous"  # a submit whose answer never came: a job may exist that we cannot see
    LOST = "lost"  # fal billed it, but its result could not be fetched any more: money spent, no video


ACTIVE = (Status.RESERVED, Status.SUBMITTED, Status.IN_QUEUE, Status.IN_PROGRESS, Status.COMPLETED)
PAID = (Status.COMPLETED, Status.SUCCEEDED, Status.LOST)
AT_FAL = (Status.RESERVED, Status.SUBMITTED, Status.IN_QUEUE, Status.IN_PROGRESS)  # fal holds (or is sent) these
PROGRESS_ORDER = {s: i for i, s in enumerate(ACTIVE)} | {Status.SUCCEEDED: 9}


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Budget:
    daily_usd: Decimal | None = None
    total_usd: Decimal | None = None

    @classmethod
    def from_usd(cls, daily_usd: float | None, total_usd: float | None) -> Budget:
        def exact(value: float | None) -> Decimal | None:
            return None if value is None else Decimal(str(value))

        return cls(exact(daily_usd), exact(total_usd))


@dataclass(frozen=True)
class RequestRow:
    request_key: str
    request_id: str | None
    shot_id: str
    take: int
    fingerprint: str
    status: Status
    duration_seconds: int
    price_usd: Decimal
    cost_usd: Decimal
    reserved_usd: Decimal
    video_url: str | None
    owner: str | None
    heartbeat_at: datetime | None
    run_id: str | None
    created_at: datetime
    submitted_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    possible_double_charge: bool
    permanent_failure: bool
    error_type: str | None
    error_message: str | None
    arguments_json: str | None
    attempts: int
    arguments_sha256: str | None = None  # the digest of exactly what the submit sent (fal's json_input matches it)
    history_checked: bool = False  # fal's request history was asked for this lost request's result
    verdict: str | None = None  # a delivered take's latest verdict: "approve", "reject", or none

    @property
    def held_usd(self) -> Decimal:
        """Money this request stands for: charged, or reserved until fal says."""
        return self.cost_usd + self.reserved_usd

    @property
    def arguments(self) -> dict[str, Any]:
        return json.loads(self.arguments_json) if self.arguments_json else {}


ROW_COLUMNS = (
    "request_key, request_id, shot_id, take, fingerprint, status, duration_seconds, price_usd, cost_usd, reserved_usd, "
    "video_url, owner, heartbeat_at, run_id, created_at, submitted_at, started_at, completed_at, "
    "possible_double_charge, coalesce(permanent_failure, false), error_type, error_message, arguments_json, attempts, "
    "arguments_sha256, coalesce(history_checked, false), verdict"
)


def request_row(values: tuple[Any, ...] | None) -> RequestRow | None:
    if values is None:
        return None
    row = RequestRow(*values)
    return replace(row, status=Status(row.status))


@dataclass(frozen=True)
class VideoRow:
    request_id: str
    request_key: str
    shot_id: str
    path: str
    sha256: str
    bytes: int
    width: int
    height: int
    fps: float
    frames: int
    duration_seconds: float
    source_url: str | None


@dataclass(frozen=True)
class NewRequest:
    shot_id: str
    fingerprint: str
    endpoint: str
    arguments: dict[str, Any]
    duration_seconds: int
    run_id: str | None
    partition_key: str | None
    owner: str
    arguments_sha256: str | None = None  # of the payload as it will be sent, when known before the claim
