"""Failures, split by whether trying again could ever help, each with its cause and the user's fix.

Fixes name both knobs a user has: the `hailuo` flag and the run-config key of the Dagster launchpad."""

from __future__ import annotations

from typing import Any

from hailuo_pipeline.catalog.rows import RequestRow
from hailuo_pipeline.redact import redact

# fal's request error types (infrastructure), which fal itself retries and which may pass
TRANSIENT_ERROR_TYPES = frozenset(
    {
        "request_timeout",
        "startup_timeout",
        "runner_scheduling_failure",
        "runner_connection_timeout",
        "runner_disconnected",
        "runner_connection_refused",
        "runner_connection_error",
        "runner_incomplete_response",
        "runner_server_error",
        "internal_error",
        "internal_server_error",
    }
)
PERMANENT_ERROR_TYPES = frozenset(
    {"content_policy_violation", "image_load_error", "file_download_error", "validation_error", "no_media_generated"}
)

KEY_OR_ACCOUNT_STATUSES = (401, 402, 403)  # fal refuses the key or the account, not the request
RETRY_REFUSED = "--retry-refused (run config retry_refused: true)"
RESUBMIT_AMBIGUOUS = "--resubmit-ambiguous (run config resubmit_ambiguous: true)"
REPAY_LOST = "--repay-lost (run config repay_lost: true)"
FIX_RESUMABLE = (
    "none needed: the request is kept and resumed by its id, never submitted again; Dagster's retry policy "
    "tries again, or run `hailuo materialize`"
)
FIX_TRANSIENT = "none needed: it is temporary at fal; Dagster's retry policy tries again, or run `hailuo materialize`"
_FIX_BY_ERROR_TYPE = {
    "content_policy_violation": "rephrase the prompt (or use another image) so it passes fal's content policy",
    "image_load_error": "make sure the image is a complete JPEG, PNG or WebP that fal can download",
    "file_download_error": "make sure fal can download the image URL (public, no login, not expired)",
    "no_media_generated": "change the prompt or the image: fal produced no video for these inputs",
}
_BUDGET_KNOBS = {
    "total": ("HAILUO_TOTAL_BUDGET_USD", "total_usd", "wait for reservations to settle"),
    "daily": ("HAILUO_DAILY_BUDGET_USD", "daily_usd", "run again tomorrow (UTC)"),
}


class ShotFailure(Exception):
    """A shot that did not produce a video. `permanent` failures are never retried."""

    permanent: bool = False

    def __init__(self, shot_id: str, cause: str, fix: str, bad_input: str | None = None) -> None:
        cause, fix = redact(cause), redact(fix)  # every failure's text is shown and stored: never a secret
        super().__init__(f"shot {shot_id!r}: {cause}. Fix: {fix}")
        self.shot_id = shot_id
        self.bad_input = bad_input  # "image" or "prompt" when one of the shot's inputs was refused
        self.cause = cause
        self.fix = fix

    def as_metadata(self) -> dict[str, Any]:
        return {"cause": self.cause, "fix": self.fix, "retryable": not self.permanent}


class PermanentShotFailure(ShotFailure):
    permanent = True


class TransientShotFailure(ShotFailure):
    permanent = False


def is_permanent_error(error_type: str | None, http_status: int | None) -> bool:
    if error_type in PERMANENT_ERROR_TYPES:
        return True
    if error_type in TRANSIENT_ERROR_TYPES:
        return False
    return http_status is not None and 400 <= http_status < 500 and http_status not in (408, 409, 429)


def is_input_refusal(error_type: str | None, http_status: int | None) -> bool:
    """fal refused the inputs themselves (not the key, the account or its own health): the same inputs
    will be refused again, so the refusal is remembered for them."""
    return error_type in PERMANENT_ERROR_TYPES or http_status in (400, 422)


def failure_for_http(shot_id: str, status: int, error_type: str | None, detail: Any, doing: str) -> ShotFailure:
    """The one mapping from an HTTP answer of fal's to a shot failure."""
    cause = f"fal answered HTTP {status} when {doing}: {describe_fal_detail(detail)}"
    if status in KEY_OR_ACCOUNT_STATUSES:
        return PermanentShotFailure(
            shot_id,
            cause,
            "check FAL_KEY (missing, mistyped, or without access to this model) and the fal account's balance; "
            "a request already at fal is kept and resumed by its id once the key works",
        )
    if is_input_refusal(error_type, status):
        return PermanentShotFailure(shot_id, cause, fix_for_refusal(error_type))
    if is_permanent_error(error_type, status):
        return PermanentShotFailure(shot_id, cause, "see fal's answer above")
    return TransientShotFailure(shot_id, cause, FIX_TRANSIENT)


def describe_fal_detail(detail: Any) -> str:
    """fal's error bodies: a string, or FastAPI-style detail lists."""
    if isinstance(detail, dict) and "detail" in detail:
        detail = detail["detail"]
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', [])[1:]) or 'input'}: {item.get('msg')}"
            if isinstance(item, dict)
            else str(item)
            for item in detail
        )
    return str(detail)[:500]


def fix_for_lost(shot_id: str) -> str:
    return (
        "the money is spent (counted as lost in `hailuo report`); nothing pays for this shot again unless you "
        f"ask: `hailuo materialize --shot {shot_id} --repay-lost` (run config repay_lost: true)"
    )


def fix_for_refusal(error_type: str | None) -> str:
    """What to change after fal refused a shot's inputs for good."""
    change = _FIX_BY_ERROR_TYPE.get(error_type or "", "correct the input fal names")
    return f"{change}; to send the same inputs again anyway (fal may bill again), use {RETRY_REFUSED}"


def fix_for_budget(limit: str) -> str:
    variable, field, otherwise = _BUDGET_KNOBS[limit]
    return f"raise {variable} (the budget resource's {field} in the UI), or {otherwise}"


def fix_for_ambiguous(request_key: str) -> str:
    return (
        f"look for the job on the fal dashboard (ledger row {request_key}); to submit again anyway, use "
        f"{RESUBMIT_AMBIGUOUS}: the new request is flagged as a possible double charge"
    )


def failure_for_held_shot(shot_id: str, kind: str, row: RequestRow) -> PermanentShotFailure:
    """Why the judge would not pay for this shot (kind: ambiguous, lost or refused), naming the row that decided."""
    if kind == "ambiguous":
        return PermanentShotFailure(
            shot_id,
            f"an earlier submit ({row.created_at:%Y-%m-%d %H:%M:%S} UTC) never got fal's answer, so fal may "
            "have created and billed a job we cannot see",
            fix_for_ambiguous(row.request_key),
        )
    if kind == "lost":
        return PermanentShotFailure(
            shot_id,
            f"fal billed request {row.request_id} for these inputs on {row.created_at:%Y-%m-%d %H:%M} UTC but "
            f"its video was lost ({row.error_message or row.error_type}); nothing was sent this time",
            fix_for_lost(shot_id),
        )
    return PermanentShotFailure(
        shot_id,
        f"fal refused these same inputs on {row.created_at:%Y-%m-%d %H:%M} UTC (request {row.request_id}: "
        f"{row.error_message or row.error_type}); nothing was sent this time",
        fix_for_refusal(row.error_type),
    )
