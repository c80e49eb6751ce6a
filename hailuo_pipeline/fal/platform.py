"""fal's Platform APIs (`https://api.fal.ai/v1`): the account's own record of prices, usage and requests, read
with the same distrust as the queue's answers. Plain Python over httpx: paging by cursor, retries on 429 and 5xx
with backoff, one total deadline per call, keys never in a message, and every field parsed before anything is
booked from it (unknown fields ignored; a missing or malformed one is a PlatformError naming it)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from hailuo_pipeline.errors import HailuoError
from hailuo_pipeline.fal.replies import BadReply, checked_request_id
from hailuo_pipeline.redact import describe_error, redact

DEFAULT_PLATFORM_URL = "https://api.fal.ai/v1"
PAGE_LIMIT = 100  # the most fal's listings give per page
MAX_PAGES = 10_000  # a listing that never ends is refused, not followed forever
RETRIED = (429, 500, 502, 503, 504)


class PlatformError(HailuoError):
    """fal's Platform API could not be used for this: refused, unreachable, or an answer that does not parse."""


class PlatformUnavailable(PlatformError):
    """fal's Platform API did not answer usably within the deadline (or after its retries)."""


class AdminKeyMissing(PlatformError):
    """Usage needs an admin key (FAL_ADMIN_KEY), and none is set."""


@dataclass(frozen=True)
class Price:
    endpoint_id: str
    unit_price: Decimal
    unit: str
    currency: str


@dataclass(frozen=True)
class UsageLine:
    bucket: datetime  # the start of the bucket (UTC, naive)
    endpoint_id: str
    unit: str
    quantity: Decimal
    unit_price: Decimal
    cost: Decimal  # what fal bills for the line: cost_total when fal gives it, else cost
    currency: str


@dataclass(frozen=True)
class HistoryItem:
    request_id: str
    endpoint_id: str
    sent_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    status_code: int | None
    duration: float | None
    json_input: Any = None  # with expand=payloads
    json_output: Any = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class PlatformClient:
    def __init__(
        self,
        base_url: str,
        key: str,
        admin_key: str = "",
        *,
        deadline_seconds: float = 60.0,
        attempts: int = 5,
        backoff_seconds: float = 0.5,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.admin_key = admin_key
        self.deadline_seconds = deadline_seconds
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds

    def brief(self) -> PlatformClient:
        """The same client for a call on a hot path (a batch waits on it): 5 s and two attempts at most."""
        return PlatformClient(
            self.base_url, self.key, self.admin_key, deadline_seconds=5.0, attempts=2, backoff_seconds=0.2
        )

    # -- the three APIs --------------------------------------------------------------------
    def pricing(self, endpoint_ids: Sequence[str]) -> dict[str, Price]:
        """The account's unit price per endpoint (custom pricing and discounts included)."""
        prices: dict[str, Price] = {}
        for page in self._pages("/models/pricing", {"endpoint_id": ",".join(endpoint_ids)}, self.key, "prices"):
            for entry in _items(page, "prices"):
                price = Price(
                    _text(entry, "endpoint_id"), _money(entry, "unit_price"), _text(entry, "unit"),
                    _text(entry, "currency"),
                )  # fmt: skip
                prices[price.endpoint_id] = price
        return prices

    def usage(self, start: datetime, end: datetime, endpoint_id: str) -> list[UsageLine]:
        """fal's billed usage of one endpoint between `start` and `end` (exclusive), by day, in UTC."""
        if not self.admin_key:
            raise AdminKeyMissing("fal's usage needs an admin key: set FAL_ADMIN_KEY (fal dashboard, API keys, Admin)")
        params = {
            "start": _iso(start),
            "end": _iso(end),
            "timezone": "UTC",
            "timeframe": "day",
            "endpoint_id": endpoint_id,
        }
        lines: list[UsageLine] = []
        for page in self._pages("/models/usage", params, self.admin_key, "time_series"):
            for bucket in _items(page, "time_series"):
                when = _time(bucket, "bucket")
                for result in _items(bucket, "results"):
                    cost_total = result.get("cost_total")
                    lines.append(
                        UsageLine(
                            when,
                            _text(result, "endpoint_id"),
                            _text(result, "unit"),
                            _money(result, "quantity"),
                            _money(result, "unit_price"),
                            _money(result, "cost_total" if cost_total is not None else "cost"),
                            _text(result, "currency"),
                        )
                    )
        return lines

    def requests(
        self,
        endpoint_id: str,
        start: datetime,
        end: datetime,
        *,
        request_id: str | None = None,
        payloads: bool = False,
    ) -> list[HistoryItem]:
        """The endpoint's requests sent in [start, end), from fal's request history (each once, by id)."""
        params: dict[str, Any] = {"endpoint_id": endpoint_id, "start": _iso(start), "end": _iso(end)}
        if request_id is not None:
            params["request_id"] = request_id
        if payloads:
            params["expand"] = "payloads"
        found: dict[str, HistoryItem] = {}
        for page in self._pages("/models/requests/by-endpoint", params, self.key, "items"):
            for entry in _items(page, "items"):
                item = _history_item(entry, payloads)
                found.setdefault(item.request_id, item)  # a listing that repeats an item counts it once
        return list(found.values())

    # -- transport -------------------------------------------------------------------------
    def _pages(self, path: str, params: Mapping[str, Any], key: str, what: str) -> Iterator[dict[str, Any]]:
        deadline = time.monotonic() + self.deadline_seconds
        cursor: str | None = None
        seen: set[str] = set()
        with httpx.Client(timeout=min(30.0, self.deadline_seconds), follow_redirects=False) as http:
            for _ in range(MAX_PAGES):
                query = {**params, "limit": PAGE_LIMIT, **({"cursor": cursor} if cursor else {})}
                page = self._get(http, path, query, key, deadline)
                yield page
                more = page.get("has_more")
                cursor = page.get("next_cursor")
                if more is not True:
                    return
                if not isinstance(cursor, str) or not cursor or cursor in seen:
                    raise PlatformError(f"fal's {what} listing says it has more but gives no new cursor")
                seen.add(cursor)
        raise PlatformError(f"fal's {what} listing did not end after {MAX_PAGES} pages")

    def _get(
        self, http: httpx.Client, path: str, query: Mapping[str, Any], key: str, deadline: float
    ) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        last = "no answer"
        for attempt in range(self.attempts):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                response = http.get(url, params=query, headers={"Authorization": f"Key {key}"}, timeout=min(30.0, left))
            except httpx.HTTPError as exc:
                last = describe_error(exc)
            else:
                if response.status_code == 200:
                    return _json_object(response, path)
                if response.status_code in (401, 403):
                    raise PlatformError(
                        f"fal's Platform API refused the key for {path} (HTTP {response.status_code}); "
                        + ("usage needs an admin key (FAL_ADMIN_KEY)" if key == self.admin_key else "check FAL_KEY")
                    )
                if response.status_code not in RETRIED:
                    raise PlatformError(
                        f"fal's Platform API answered {path} with HTTP {response.status_code}: "
                        f"{redact(response.text[:200])}"
                    )
                last = f"HTTP {response.status_code}"
            time.sleep(min(self.backoff_seconds * 2**attempt, max(0.0, deadline - time.monotonic()), 8.0))
        raise PlatformUnavailable(
            f"fal's Platform API ({redact(self.base_url)}) did not answer {path} usably ({last}) within "
            f"{self.deadline_seconds:.0f} s"
        )


# -- parsing: every field checked, named when it is wrong -------------------------------------
def _json_object(response: httpx.Response, path: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise PlatformError(f"fal's Platform API answered {path} with something that is not JSON") from None
    if not isinstance(body, dict):
        raise PlatformError(f"fal's Platform API answered {path} with JSON that is not an object")
    return body


def _items(container: Mapping[str, Any], field: str) -> list[dict[str, Any]]:
    value = container.get(field)
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise PlatformError(f"fal's answer has no list of objects in {field!r}")
    return value


def _text(entry: Mapping[str, Any], field: str) -> str:
    value = entry.get(field)
    if not isinstance(value, str) or not value or len(value) > 200:
        raise PlatformError(f"fal's answer has no usable {field!r} ({str(value)[:40]})")
    return value


def _money(entry: Mapping[str, Any], field: str) -> Decimal:
    value = entry.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PlatformError(f"fal's answer has no number in {field!r}")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise PlatformError(f"fal's answer has no number in {field!r} ({str(value)[:40]})") from None
    if not number.is_finite() or number < 0:
        raise PlatformError(f"fal's answer has an impossible {field!r} ({number})")
    return number


def _maybe_time(entry: Mapping[str, Any], field: str) -> datetime | None:
    return None if entry.get(field) is None else _time(entry, field)


def _time(entry: Mapping[str, Any], field: str) -> datetime:
    value = entry.get(field)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise PlatformError(f"fal's answer has no ISO 8601 time in {field!r} ({str(value)[:40]})") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def _history_item(entry: Mapping[str, Any], payloads: bool) -> HistoryItem:
    try:
        request_id = checked_request_id(entry.get("request_id"))
    except BadReply as exc:
        raise PlatformError(f"fal's request history {exc}") from None
    status = entry.get("status_code")
    duration = entry.get("duration")
    return HistoryItem(
        request_id=request_id,
        endpoint_id=_text(entry, "endpoint_id"),
        sent_at=_time(entry, "sent_at"),
        started_at=_maybe_time(entry, "started_at"),
        ended_at=_maybe_time(entry, "ended_at"),
        status_code=status if isinstance(status, int) and not isinstance(status, bool) else None,
        duration=float(duration) if isinstance(duration, int | float) and not isinstance(duration, bool) else None,
        json_input=entry.get("json_input") if payloads else None,
        json_output=entry.get("json_output") if payloads else None,
    )


def _iso(moment: datetime) -> str:
    return moment.replace(tzinfo=UTC).isoformat() if moment.tzinfo is None else moment.astimezone(UTC).isoformat()
