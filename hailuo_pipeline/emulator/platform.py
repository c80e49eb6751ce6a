"""fal's Platform APIs as the emulator serves them (`/v1/models/pricing`, `/usage`, `/requests/by-endpoint`), from
its own record of jobs and a configurable account price: the same shapes, cursor paging and key rules (usage
only with the admin key), and on demand a history that lags, leaves items out, repeats them, or breaks."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hailuo_pipeline.emulator.state import EmulatorState, Job
from hailuo_pipeline.model_limits import DEFAULT_DURATION_SECONDS

PUBLISHED = {6: Decimal("0.19"), 10: Decimal("0.32")}  # the model page's prices, which fal's unit price scales


def job_price(job: Job, price: dict[str, Any]) -> tuple[Decimal, Decimal]:
    """What fal bills for a job: (quantity, cost). Per second of video, or per video of the default length
    with the other length moving by the same factor."""
    unit_price = Decimal(str(price["unit_price"]))
    if price.get("unit") == "second":
        return Decimal(job.duration), unit_price * job.duration
    factor = unit_price / PUBLISHED[DEFAULT_DURATION_SECONDS]
    return Decimal(1), (PUBLISHED.get(job.duration, PUBLISHED[DEFAULT_DURATION_SECONDS]) * factor).quantize(
        Decimal("0.0001")
    )


def _wall(job: Job, monotonic: float | None) -> datetime | None:
    if monotonic is None:
        return None
    return datetime.fromtimestamp(job.sent_wall + (monotonic - job.created), UTC)


def _ended(job: Job) -> datetime | None:
    """When fal finished the job (the usage's day), or None while it runs."""
    return _wall(job, job.ends) if job.phase(time.monotonic()) == "COMPLETED" else None


def _billed(job: Job) -> bool:
    return _ended(job) is not None and job.error is None and job.cancelled_at is None


def _window(request: Request) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    end = _parse(request.query_params.get("end")) or now
    start = _parse(request.query_params.get("start")) or end - timedelta(hours=24)
    return start, end


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _page(items: list[Any], request: Request, field: str) -> dict[str, Any]:
    limit = max(1, min(100, int(request.query_params.get("limit", "100"))))
    offset = int(request.query_params.get("cursor") or 0)
    chunk = items[offset : offset + limit]
    more = offset + limit < len(items)
    return {field: chunk, "has_more": more, "next_cursor": str(offset + limit) if more else None}


def platform_routes(state: EmulatorState, base_url: Callable[[Request], str]) -> list[Route]:
    def key_of(request: Request) -> str:
        return request.headers.get("authorization", "").removeprefix("Key ").strip()

    def refused(request: Request, admin: bool = False) -> Response | None:
        key = key_of(request)
        if not key:
            return JSONResponse({"detail": "No credentials; send Authorization: Key <FAL_KEY>"}, status_code=401)
        if admin and key != state.config.admin_key:
            return JSONResponse({"detail": "This API needs an admin key"}, status_code=403)
        with state.lock:
            faults = state.config.faults
            if faults.platform_http:
                code = faults.platform_http.pop(0)
                return JSONResponse({"detail": "emulated"}, status_code=code)
            if faults.platform_malformed > 0:
                faults.platform_malformed -= 1
                return JSONResponse({"items": "not a list", "time_series": {"x": 1}, "has_more": "maybe"})
        return None

    def endpoints(request: Request) -> list[str]:
        return [e for value in request.query_params.getlist("endpoint_id") for e in value.split(",") if e]

    async def pricing(request: Request) -> Response:
        if (answer := refused(request)) is not None:
            return answer
        price = state.config.account_price
        prices = [
            {"endpoint_id": e, "unit_price": price["unit_price"], "unit": price["unit"], "currency": price["currency"]}
            for e in endpoints(request)
        ]
        return JSONResponse({"prices": prices, "has_more": False, "next_cursor": None})

    async def usage(request: Request) -> Response:
        if (answer := refused(request, admin=True)) is not None:
            return answer
        start, end = _window(request)
        wanted = set(endpoints(request))
        days: dict[tuple[str, str], list[Decimal]] = {}
        for job in list(state.jobs.values()):
            ended = _ended(job)
            if not _billed(job) or ended is None or not start <= ended < end or (wanted and job.endpoint not in wanted):
                continue
            quantity, cost = job_price(job, state.config.account_price)
            line = days.setdefault((ended.date().isoformat(), job.endpoint), [Decimal(0), Decimal(0)])
            line[0] += quantity
            line[1] += cost
        price = state.config.account_price
        buckets: dict[str, list[dict[str, Any]]] = {}
        for (day, endpoint), (quantity, cost) in sorted(days.items()):
            buckets.setdefault(day, []).append(
                {
                    "endpoint_id": endpoint,
                    "unit": price["unit"],
                    "quantity": float(quantity),
                    "unit_price": price["unit_price"],
                    "cost": float(cost),
                    "cost_total": str(cost),
                    "currency": price["currency"],
                    "auth_method": "key",
                }
            )
        series = [{"bucket": f"{day}T00:00:00+00:00", "results": results} for day, results in sorted(buckets.items())]
        return JSONResponse(_page(series, request, "time_series"))

    async def by_endpoint(request: Request) -> Response:
        if (answer := refused(request)) is not None:
            return answer
        start, end = _window(request)
        wanted = set(endpoints(request))
        only = request.query_params.get("request_id")
        payloads = request.query_params.get("expand") == "payloads"
        faults = state.config.faults
        now = datetime.now(UTC)
        items: list[dict[str, Any]] = []
        for job in sorted(state.jobs.values(), key=lambda j: j.sent_wall):
            sent = datetime.fromtimestamp(job.sent_wall, UTC)
            if only is not None and job.request_id != only:
                continue
            if only is None and not start <= sent < end:
                continue
            if (wanted and job.endpoint not in wanted) or now < sent + timedelta(seconds=faults.history_lag_seconds):
                continue
            if isinstance(job.body, dict) and job.body.get("prompt") in faults.history_hidden_prompts:
                continue
            ended = _ended(job)
            item: dict[str, Any] = {
                "request_id": job.request_id,
                "endpoint_id": job.endpoint,
                "sent_at": sent.isoformat(),
                "started_at": _wall(job, job.created + job.queue_seconds).isoformat(),  # type: ignore[union-attr]
                "ended_at": ended.isoformat() if ended else None,
                "status_code": None if ended is None else (200 if _billed(job) else 500),
                "duration": job.inference_seconds,
            }
            if payloads:
                item["json_input"] = job.body
                item["json_output"] = state.result_body(job, base_url(request)) if _billed(job) else None
            items.extend([item, item] if faults.history_duplicate else [item])
        return JSONResponse(_page(items, request, "items"))

    return [
        Route("/v1/models/pricing", pricing),
        Route("/v1/models/usage", usage),
        Route("/v1/models/requests/by-endpoint", by_endpoint),
    ]
