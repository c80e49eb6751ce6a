"""fal's queue protocol, as `fal_client` uses it, served by Starlette."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from hailuo_pipeline.emulator.platform import platform_routes
from hailuo_pipeline.emulator.state import EmulatorState, Job, ValidationFailed, validate_arguments

INGRESS_PAGE = (
    "<html><head><title>{code}</title></head><body><center><h1>{code}</h1></center>"
    "<hr><center>nginx</center></body></html>"
)


def _fault_response(code: int) -> Response:
    if code in (502, 503, 504):  # what fal's ingress answers: fal_client retries these itself
        return HTMLResponse(INGRESS_PAGE.format(code=code), status_code=code)
    if code == 429:
        return JSONResponse({"detail": "Too many requests; concurrent request limit reached"}, status_code=429)
    return JSONResponse(
        {"detail": "Internal server error", "error_type": "internal_error"},
        status_code=code,
        headers={"x-fal-request-id": "emulator-fault"},
    )


class _CutOffAnswer(Response):
    """An answer whose connection drops part-way through the body (a reset, a proxy timing out): the
    client has sent its request and cannot tell whether it was acted on."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(self.body))],
            }
        )
        await send({"type": "http.response.body", "body": self.body[: len(self.body) // 2], "more_body": True})
        raise ConnectionResetError("emulated: connection dropped mid-answer")


class _AnnouncedLength(Response):
    """A download whose Content-Length lies: the header announces `announced` bytes, the body is the real video
    (a client that believes the header waits, or reads past it)."""

    def __init__(self, body: bytes, announced: int, media_type: str) -> None:
        super().__init__(body, media_type=media_type)
        self.announced = announced

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = [
            (b"content-type", (self.media_type or "video/mp4").encode()),
            (b"content-length", b"%d" % self.announced),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        body = self.body[: self.announced]
        await send({"type": "http.response.body", "body": body, "more_body": self.announced > len(body)})
        if self.announced > len(self.body):
            raise ConnectionResetError("emulated: the announced body never comes")


def _base_url(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def _urls(request: Request, owner: str, alias: str, request_id: str) -> dict[str, str]:
    base = f"{_base_url(request)}/{owner}/{alias}/requests/{request_id}"
    return {"response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}


ADMIN_HEADER = "x-emulator-admin"


def build_app(state: EmulatorState, admin_token: str) -> Starlette:
    def authorized(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        return not state.config.require_key or (header.startswith("Key ") and len(header) > 4)

    def admin(request: Request) -> Response | None:
        """The control endpoints switch faults and keys and read every prompt: they need the admin token."""
        if secrets.compare_digest(request.headers.get(ADMIN_HEADER, ""), admin_token):
            return None
        return JSONResponse({"detail": f"send the emulator's admin token in {ADMIN_HEADER}"}, status_code=401)

    def unauthorized() -> JSONResponse:
        return JSONResponse({"detail": "No credentials; send Authorization: Key <FAL_KEY>"}, status_code=401)

    def refusal(request: Request, endpoint: str) -> Response | None:
        """What fal would answer instead of the real thing: no key, or an injected fault."""
        if not authorized(request):
            return unauthorized()
        if (code := state.take_http_fault(endpoint)) is not None:
            return _fault_response(code)
        return None

    def job_or_refusal(request: Request, endpoint: str) -> Job | Response:
        refused = refusal(request, endpoint)
        if refused is not None:
            return refused
        job = state.jobs.get(request.path_params["request_id"])
        return job if job is not None else JSONResponse({"detail": "Request not found"}, status_code=404)

    async def submit(request: Request) -> Response:
        if (refused := refusal(request, "submit")) is not None:
            return refused
        raw = await request.body()
        try:
            body = json.loads(raw)
            image, duration = await asyncio.to_thread(validate_arguments, body, dict(state.uploads))
        except json.JSONDecodeError:
            return JSONResponse({"detail": [{"loc": ["body"], "msg": "Invalid JSON", "type": "json_invalid"}]}, 422)
        except ValidationFailed as failed:
            return JSONResponse({"detail": failed.details}, status_code=422)
        endpoint = request.path_params["endpoint"]
        owner, alias = endpoint.split("/")[:2]
        if state.take_counter_fault("lose_submits"):  # a proxy that dropped it: no job, and no answer
            return _CutOffAnswer(b'{"detail": "lost on the way"}')
        job = state.submit(endpoint, raw, body, image, duration)
        if state.take_counter_fault("twin_submits"):  # accepted twice on the way (a replaying proxy)
            state.submit(endpoint, raw, body, image, duration)
        if state.take_counter_fault("hang_submits"):
            await asyncio.sleep(state.config.faults.hang_seconds)
        answered_id = state.answer_id(job, state.take_list_fault("request_ids"))  # maybe a lie
        answer = {
            "status": "IN_QUEUE",
            "request_id": answered_id,
            "queue_position": state.queue_position(job, time.monotonic()),
            **_urls(request, owner, alias, job.request_id),
        }
        if state.take_html_fault("submit"):
            return HTMLResponse(INGRESS_PAGE.format(code="OK"))
        if state.take_counter_fault("cut_submit_answers"):
            return _CutOffAnswer(json.dumps(answer).encode())
        return JSONResponse(answer, headers={"x-fal-request-id": job.request_id})

    async def status(request: Request) -> Response:
        job = job_or_refusal(request, "status")
        if isinstance(job, Response):
            return job
        if state.take_html_fault("status") or state.take_job_count(job, "status_html"):
            return HTMLResponse(INGRESS_PAGE.format(code="OK"))
        lies = job.faults
        if lies.status is not None and (lies.status_times is None or state.take_job_count(job, "status_times")):
            return JSONResponse(lies.status)
        now = time.monotonic()
        phase = job.phase(now)
        owner, alias = request.path_params["owner"], request.path_params["alias"]
        payload: dict[str, Any] = {
            "status": phase,
            "request_id": job.request_id,
            **_urls(request, owner, alias, job.request_id),
        }
        with_logs = request.query_params.get("logs", "0").lower() in ("1", "true")
        if phase == "IN_QUEUE":
            payload["queue_position"] = state.queue_position(job, now)
            return JSONResponse(payload, status_code=202)
        logs = _progress_logs(job, now) if with_logs else None
        payload["logs"] = logs
        if phase == "IN_PROGRESS":
            return JSONResponse(payload, status_code=202)
        payload["metrics"] = {"inference_time": job.inference_seconds}
        if job.cancelled_at is not None:
            payload["error"], payload["error_type"] = "Request was cancelled", "request_cancelled"
        elif job.error is not None:
            payload["error"] = job.error.get("error", "Model error")
            payload["error_type"] = job.error.get("error_type", "internal_error")
        return JSONResponse(payload)

    async def result(request: Request) -> Response:
        job = job_or_refusal(request, "result")
        if isinstance(job, Response):
            return job
        now = time.monotonic()
        if job.phase(now) != "COMPLETED":
            return JSONResponse({"detail": "Request is still in progress"}, status_code=400)
        if job.cancelled_at is not None:
            return JSONResponse({"detail": "Request was cancelled", "error_type": "request_cancelled"}, 400)
        if job.error is not None:
            error = job.error
            body = error.get("body") or {
                "detail": error.get("error", "Model error"),
                "error_type": error.get("error_type"),
            }
            return JSONResponse(
                body,
                status_code=int(error.get("status", 500)),
                headers={"x-fal-error-type": str(error.get("error_type", "")), "x-fal-request-id": job.request_id},
            )
        assert job.completed_at is not None
        if now > job.completed_at + state.result_ttl(job):
            return JSONResponse({"detail": "Request result has expired"}, status_code=404)
        if (code := state.take_job_http(job)) is not None:
            return _fault_response(code) if code != 404 else JSONResponse({"detail": "Not found"}, status_code=404)
        if (lie := state.take_list_fault("results")) is not None or (lie := job.faults.result) is not None:
            return JSONResponse(lie)
        if state.take_job_count(job, "result_html"):
            return HTMLResponse(INGRESS_PAGE.format(code="OK"))
        body = state.result_body(job, _base_url(request))
        if (size := state.take_list_fault("file_sizes")) is not None:
            body["video"]["file_size"] = size
        if state.take_html_fault("result"):
            return HTMLResponse(INGRESS_PAGE.format(code="OK"))
        if state.config.faults.result_delay_seconds:
            await asyncio.sleep(state.config.faults.result_delay_seconds)
        job.result_answered_at = job.result_answered_at or time.monotonic()
        return JSONResponse(body, headers={"x-fal-request-id": job.request_id})

    async def cancel(request: Request) -> Response:
        job = job_or_refusal(request, "cancel")
        if isinstance(job, Response):
            return job
        if job.phase(time.monotonic()) == "COMPLETED":
            return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)
        job.cancelled_at = time.monotonic()
        with state.lock:
            state.cancelled.append(job.request_id)
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)

    async def download(request: Request) -> Response:
        if (code := state.take_http_fault("download")) is not None:
            return _fault_response(code)
        request_id = request.path_params["name"].removesuffix(".mp4")
        job = state.jobs.get(request_id)
        if job is None or not job.render.done() or job.error is not None:
            return JSONResponse({"detail": "File not found"}, status_code=404)
        data = job.render.result()
        if state.take_counter_fault("truncate_downloads"):
            data = data[: len(data) // 2]
        kind = state.config.faults.download_content_type
        lies = job.faults
        if lies.content_length is not None:
            return _AnnouncedLength(data, lies.content_length, kind)
        if state.take_counter_fault("endless_downloads") or lies.endless:

            async def endless() -> AsyncIterator[bytes]:
                while True:
                    yield data[: 64 * 1024]
                    await asyncio.sleep(0)

            return StreamingResponse(endless(), media_type=kind)
        rate = lies.bytes_per_second or state.config.faults.download_bytes_per_second

        async def chunks() -> AsyncIterator[bytes]:
            step = max(256, min(64 * 1024, rate // 4)) if rate else 64 * 1024  # a trickle drips, it does not pause
            for offset in range(0, len(data), step):
                chunk = data[offset : offset + step]
                if rate:
                    await asyncio.sleep(len(chunk) / rate)
                yield chunk
            job.downloaded_at = time.monotonic()

        return StreamingResponse(chunks(), media_type=kind, headers={"content-length": str(len(data))})

    async def storage_token(request: Request) -> Response:
        """fal's CDN token endpoint (fal_client asks it before an upload): needs the fal key."""
        if not authorized(request):
            return unauthorized()
        token = uuid.uuid4().hex
        with state.lock:
            state.upload_tokens.add(token)
        expires = datetime.now(UTC) + timedelta(hours=1)
        return JSONResponse(
            {"token": token, "token_type": "Bearer", "base_url": _base_url(request), "expires_at": expires.isoformat()}
        )

    async def upload(request: Request) -> Response:
        """fal's CDN upload: the body is the file; answers the URL it is served at."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or token not in state.upload_tokens:
            return JSONResponse({"detail": "upload needs a storage token"}, status_code=401)
        body = await request.body()
        if len(body) > 64 * 1024 * 1024:
            return JSONResponse({"detail": "file too large"}, status_code=413)
        upload_id = state.store_upload(body)
        return JSONResponse({"access_url": f"{_base_url(request)}/uploads/{upload_id}"})

    async def uploaded(request: Request) -> Response:
        data = state.uploads.get(request.path_params["upload_id"])
        if data is None:
            return JSONResponse({"detail": "File not found"}, status_code=404)
        return Response(data, media_type="application/octet-stream")

    async def stats(request: Request) -> Response:
        return admin(request) or JSONResponse(state.stats())

    async def configure(request: Request) -> Response:
        if (refused := admin(request)) is not None:
            return refused
        state.configure(await request.json())
        return JSONResponse(state.stats()["config"])

    async def reset(request: Request) -> Response:
        if (refused := admin(request)) is not None:
            return refused
        state.reset()
        return JSONResponse({"reset": True})

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/_emulator/health", health),
            Route("/_emulator/stats", stats),
            Route("/_emulator/config", configure, methods=["POST"]),
            Route("/_emulator/reset", reset, methods=["POST"]),
            Route("/storage/auth/token", storage_token, methods=["POST"]),
            Route("/files/upload", upload, methods=["POST"]),
            Route("/uploads/{upload_id}", uploaded),
            Route("/files/{name}", download),
            *platform_routes(state, _base_url),
            Route("/{owner}/{alias}/requests/{request_id}/status", status),
            Route("/{owner}/{alias}/requests/{request_id}/cancel", cancel, methods=["PUT"]),
            Route("/{owner}/{alias}/requests/{request_id}", result),
            Route("/{endpoint:path}", submit, methods=["POST"]),
        ]
    )


def _progress_logs(job: Job, now: float) -> list[dict[str, Any]]:
    started = job.created + job.queue_seconds
    fraction = 1.0 if job.inference_seconds <= 0 else min(1.0, max(0.0, (now - started) / job.inference_seconds))
    steps = int(fraction * 4)
    stamp = datetime.now(UTC).isoformat()
    return [
        {"message": f"Generating video: {25 * (i + 1)}%", "level": "INFO", "source": "user", "timestamp": stamp}
        for i in range(steps)
    ]
