"""What the emulator is told to be: its latency, and the faults and lies it serves (consumed in order, or chosen
per job by its prompt)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hailuo_pipeline import model_limits as limits

PLATFORM_ADMIN_KEY = "emulator-admin-key"  # what `hailuo emulator` and the tests give as FAL_ADMIN_KEY


@dataclass
class Latency:
    queue_seconds: float = 1.0
    inference_seconds: float = 2.0
    jitter_seconds: float = 0.0


@dataclass
class JobFaults:
    """How fal lies about one job, chosen by its prompt (`Faults.by_prompt`), so a batch holds good shots beside
    the bad one. Every answer about the job can be a lie: its id, its status, its result, its video."""

    request_id: str | None = None  # the submit answers with this id (malformed, a path, too long...)
    replay_id: bool = False  # the submit answers with the id it gave the previous job (one job, two shots)
    status: Any = None  # status calls answer 200 with this body (missing or wrong-typed fields)
    status_times: int | None = None  # ... the next N of them (None: every one)
    status_html: int = 0  # the next N status calls answer 200 with an HTML page
    result: Any = None  # result calls answer 200 with this body
    result_html: int = 0
    result_http: list[int] = field(default_factory=list)  # the next result calls answer these codes (404: gone)
    video_url: str | None = None  # the result's video URL (a loopback, private or non-http one)
    file_size: Any = None  # the result's file_size
    content_length: int | None = None  # the download announces this length (and sends the real body)
    endless: bool = False  # the download never ends
    bytes_per_second: int = 0  # the download trickles at this rate
    first_error: dict[str, Any] | None = None  # the first job of the prompt completes with this error (job_errors)


@dataclass
class Faults:
    """Faults consumed in order. `http` maps an endpoint (submit, status, result, cancel, download)
    to the status codes its next calls answer with instead of the real answer."""

    http: dict[str, list[int]] = field(default_factory=dict)
    job_errors: list[dict[str, Any]] = field(default_factory=list)  # next jobs complete with these errors
    truncate_downloads: int = 0
    download_bytes_per_second: int = 0  # 0 = full speed
    result_delay_seconds: float = 0.0  # a slow result endpoint: each result answer waits this long
    hang_submits: int = 0  # next submits create the job but never answer
    cut_submit_answers: int = 0  # next submits create the job, then the connection drops mid-answer
    lose_submits: int = 0  # next submits never reach fal: no job, and the connection drops
    twin_submits: int = 0  # next submits create two jobs with the same arguments (fal accepted a replay)
    hang_seconds: float = 3600.0
    # a misbehaving fal: answers that lie or are not what they claim to be
    request_ids: list[str] = field(default_factory=list)  # next submits answer with these ids (jobs are real)
    results: list[Any] = field(default_factory=list)  # next result fetches answer 200 with these bodies
    file_sizes: list[Any] = field(default_factory=list)  # next real results claim these file sizes
    html: dict[str, int] = field(default_factory=dict)  # endpoint -> next N calls answer 200 with an HTML page
    download_content_type: str = "video/mp4"
    endless_downloads: int = 0  # next downloads never end
    by_prompt: dict[str, dict[str, Any]] = field(default_factory=dict)  # prompt -> JobFaults fields
    # fal's Platform APIs: a request history that lags, leaves items out, repeats them or answers broken pages
    history_lag_seconds: float = 0.0  # a job appears in the request history this long after it was sent
    history_hidden_prompts: list[str] = field(default_factory=list)  # jobs of these prompts never appear
    history_duplicate: bool = False  # every item is listed twice
    platform_malformed: int = 0  # the next N Platform answers are pages that do not parse
    platform_http: list[int] = field(default_factory=list)  # the next Platform answers are these codes


@dataclass
class EmulatorConfig:
    latency: Latency = field(default_factory=Latency)
    faults: Faults = field(default_factory=Faults)
    result_ttl_seconds: float = limits.RESULT_TTL_SECONDS
    large_result_ttl_seconds: float = limits.RESULT_TTL_LARGE_SECONDS
    require_key: bool = True
    # the account's price on fal's pricing API: per 6-s video ("video") or per second of video ("second")
    account_price: dict[str, Any] = field(
        default_factory=lambda: {"unit_price": 0.19, "unit": "video", "currency": "USD"}
    )
    admin_key: str = PLATFORM_ADMIN_KEY  # the key fal's usage API answers to
