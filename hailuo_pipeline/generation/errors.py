"""Failures, split by whether trying again could ever help."""

from __future__ import annotations

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


class ShotFailure(Exception):
    """A shot that did not produce a video. `permanent` failures are never retried."""

    permanent: bool = False

    def __init__(self, shot_id: str, message: str) -> None:
        super().__init__(f"shot {shot_id!r}: {message}")
        self.shot_id = shot_id


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
