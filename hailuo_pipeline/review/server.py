"""`hailuo review --serve`: where takes are watched and judged. A page per take (a player with its poster, the
prompt, cost, fal request, take, links to its Dagster run and its shot, and the approve and reject forms), a page
per batch (a run's new videos in a grid) and per shot (its takes, newest first, with their verdicts).

Takes are addressed by their ledger key, checked against a strict pattern, never by a path; videos come from the
video store (local or object storage) in the byte ranges a player asks for, so it can seek. Every value shown is
escaped. A verdict is a POST that must carry the page's token and come from this server's own origin: a forged
or cross-site one is refused and records nothing."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import re
import secrets
import socket
import tempfile
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from hailuo_pipeline.catalog.ledger import RequestLedger
from hailuo_pipeline.catalog.storage import CatalogDatabase
from hailuo_pipeline.catalog.transitions import VerdictError
from hailuo_pipeline.errors import HailuoError
from hailuo_pipeline.video.store import VideoStore

REQUEST_KEY = re.compile(r"^[0-9a-f]{32}$")  # ledger keys are uuid4 hex
SHOT_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
RUN_ID = re.compile(r"^[0-9a-f-]{36}$")
CHUNK = 1024 * 1024
TAKES = """
SELECT r.request_key, r.shot_id, r.take, r.request_id, r.run_id, r.cost_usd, r.duration_seconds, r.verdict,
       v.path, v.bytes, v.duration_seconds, v.width, v.height, s.prompt
FROM requests r JOIN videos v ON v.request_key = r.request_key LEFT JOIN shots s ON s.shot_id = r.shot_id
"""
COLUMNS = ("key", "shot", "take", "request_id", "run_id", "cost", "asked", "verdict", "path", "bytes", "seconds",
           "width", "height", "prompt")  # fmt: skip
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; background: #fafafa; color: #222; max-width: 1200px; }
video { max-width: 100%; max-height: 70vh; background: #000; display: block; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 1rem; }
.grid figure { margin: 0; } .grid video { width: 100%; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
dt { color: #666; } .prompt { white-space: pre-wrap; } .reject { color: #a00; } .approve { color: #070; }
form { display: inline-block; margin-right: 1rem; }
"""


def _take(row: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(COLUMNS, row, strict=True))


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def _not_found() -> HTMLResponse:
    return HTMLResponse("<!doctype html><title>not found</title><p>not found</p>", status_code=404)


def _verdict(take: dict[str, Any]) -> str:
    word = {"approve": "approved", "reject": "rejected"}.get(take["verdict"] or "", "no verdict")
    return f"<span class='{html.escape(take['verdict'] or '')}'>{word}</span>"


def build_review_app(catalog: CatalogDatabase, videos: VideoStore, dagster_url: str) -> Starlette:
    secret = secrets.token_bytes(32)  # per server: a page's token is worthless to another site
    ledger = RequestLedger(catalog)
    posters: OrderedDict[str, bytes] = OrderedDict()
    e = html.escape

    def token(key: str) -> str:
        return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()

    def takes(where: str, params: list[Any]) -> list[dict[str, Any]]:
        return [_take(row) for row in catalog.rows(f"{TAKES} {where}", params)]

    async def take_of(key: str) -> list[dict[str, Any]]:
        """The take a ledger key names ([] for anything that is not a ledger key: never a path)."""
        return await asyncio.to_thread(takes, "WHERE r.request_key = ?", [key]) if REQUEST_KEY.match(key) else []

    def player(take: dict[str, Any]) -> str:
        key = e(take["key"])
        return f"<video controls preload='metadata' poster='/takes/{key}/poster.jpg' src='/takes/{key}/video'></video>"

    def card(take: dict[str, Any]) -> str:
        return (
            f"<figure>{player(take)}<figcaption><a href='/takes/{e(take['key'])}'>{e(take['shot'])}, take "
            f"{int(take['take'])}</a>: {float(take['seconds']):.1f} s, ${float(take['cost']):.2f}, "
            f"{_verdict(take)}</figcaption></figure>"
        )

    async def index(request: Request) -> Response:
        latest = await asyncio.to_thread(takes, "ORDER BY r.shot_id, r.take DESC", [])
        seen: dict[str, dict[str, Any]] = {}
        for take in latest:
            seen.setdefault(take["shot"], take)
        cards = "".join(card(t) for t in seen.values())
        return _page(
            "hailuo review", f"<h1>hailuo review</h1><p>{len(seen)} shot(s)</p><div class='grid'>{cards}</div>"
        )

    async def take_page(request: Request) -> Response:
        key = request.path_params["key"]
        found = await take_of(key)
        if not found:
            return _not_found()
        take = found[0]
        run = take["run_id"] or ""
        run_link = f"<a href='{e(dagster_url.rstrip('/'))}/runs/{e(run)}'>{e(run[:8])}</a>" if run else "none"
        forms = "".join(
            f"<form method='post' action='/takes/{e(key)}/verdict'><input type='hidden' name='token' "
            f"value='{token(key)}'><input type='hidden' name='verdict' value='{verdict}'>"
            f"<input name='note' placeholder='note'><button>{label}</button></form>"
            for verdict, label in (("approve", "Approve"), ("reject", "Reject"), ("withdraw", "Withdraw"))
        )
        body = (
            f"<p><a href='/shots/{e(take['shot'])}'>all takes of {e(take['shot'])}</a></p>{player(take)}"
            f"<dl><dt>shot</dt><dd><b>{e(take['shot'])}</b>, take {int(take['take'])}</dd>"
            f"<dt>prompt</dt><dd class='prompt'>{e(take['prompt'] or '')}</dd>"
            f"<dt>duration</dt><dd>{float(take['seconds']):.1f} s (asked {int(take['asked'])} s), "
            f"{int(take['width'])}x{int(take['height'])}</dd>"
            f"<dt>cost</dt><dd>${float(take['cost']):.2f}</dd>"
            f"<dt>fal request</dt><dd>{e(str(take['request_id']))}</dd>"
            f"<dt>Dagster run</dt><dd>{run_link}</dd>"
            f"<dt>verdict</dt><dd>{_verdict(take)}</dd></dl>{forms}"
        )
        return _page(f"{take['shot']} take {take['take']}", body)

    async def shot_page(request: Request) -> Response:
        shot = request.path_params["shot"]
        found = (
            await asyncio.to_thread(takes, "WHERE r.shot_id = ? ORDER BY r.take DESC", [shot])
            if SHOT_ID.match(shot)
            else []
        )
        if not found:
            return _not_found()
        cards = "".join(card(t) for t in found)
        return _page(
            shot, f"<h1>{e(shot)}</h1><p>{len(found)} take(s), newest first</p><div class='grid'>{cards}</div>"
        )

    async def run_page(request: Request) -> Response:
        run = request.path_params["run"]
        found = (
            await asyncio.to_thread(takes, "WHERE r.run_id = ? ORDER BY r.shot_id", [run]) if RUN_ID.match(run) else []
        )
        if not found:
            return _not_found()
        spent = sum(float(t["cost"]) for t in found)
        cards = "".join(card(t) for t in found)
        head = f"<h1>batch {e(run[:8])}</h1><p>{len(found)} new video(s), ${spent:.2f}</p>"
        return _page(f"batch {run[:8]}", f"{head}<div class='grid'>{cards}</div>")

    async def video(request: Request) -> Response:
        key = request.path_params["key"]
        found = await take_of(key)
        if not found:
            return _not_found()
        path, size = str(found[0]["path"]), int(found[0]["bytes"])
        start, end = _byte_range(request.headers.get("range"), size)
        if start is None:
            return Response(status_code=416, headers={"content-range": f"bytes */{size}"})

        async def body() -> AsyncIterator[bytes]:
            for offset in range(start, end, CHUNK):
                yield await asyncio.to_thread(videos.read, path, offset, min(end, offset + CHUNK))

        headers = {"accept-ranges": "bytes", "content-length": str(end - start)}
        if request.headers.get("range"):
            headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
            return StreamingResponse(body(), status_code=206, media_type="video/mp4", headers=headers)
        return StreamingResponse(body(), media_type="video/mp4", headers=headers)

    async def poster(request: Request) -> Response:
        key = request.path_params["key"]
        found = await take_of(key)
        if not found:
            return _not_found()
        if key not in posters:
            posters[key] = await asyncio.to_thread(_poster, videos, str(found[0]["path"]), int(found[0]["bytes"]))
            while len(posters) > 256:
                posters.popitem(last=False)
        return Response(posters[key], media_type="image/jpeg", headers={"cache-control": "max-age=3600"})

    async def verdict(request: Request) -> Response:
        key = request.path_params["key"]
        if not REQUEST_KEY.match(key):
            return _not_found()
        origin = request.headers.get("origin", "")
        if not origin or urlsplit(origin).netloc != request.headers.get("host", ""):
            return HTMLResponse("<p>refused: a verdict is given from this server's own pages</p>", status_code=403)
        form = await request.form()
        given = str(form.get("token", ""))
        if not hmac.compare_digest(given, token(key)):
            return HTMLResponse("<p>refused: the page's token is missing or wrong; reload the page</p>", 403)
        found = await take_of(key)
        if not found:
            return _not_found()
        note = str(form.get("note", "")).strip() or None
        try:
            await asyncio.to_thread(
                ledger.record_verdict, found[0]["shot"], int(found[0]["take"]), str(form.get("verdict")), note
            )
        except VerdictError as exc:
            return HTMLResponse(f"<p>{e(str(exc))}</p>", status_code=400)
        return RedirectResponse(f"/takes/{key}", status_code=303)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/takes/{key}", take_page),
            Route("/takes/{key}/video", video),
            Route("/takes/{key}/poster.jpg", poster),
            Route("/takes/{key}/verdict", verdict, methods=["POST"]),
            Route("/shots/{shot}", shot_page),
            Route("/runs/{run}", run_page),
        ]
    )


def _byte_range(header: str | None, size: int) -> tuple[int | None, int]:
    """[start, end) of a `Range: bytes=a-b` header (one range; none: the whole file); (None, 0) when unsatisfiable."""
    if not header:
        return 0, size
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if match is None or not (match.group(1) or match.group(2)):
        return None, 0
    first, last = match.groups()
    if not first:  # the last N bytes
        start = max(0, size - int(last))
        return start, size
    start = int(first)
    end = min(size, int(last) + 1) if last else size
    return (start, end) if start < end else (None, 0)


def _poster(videos: VideoStore, path: str, size: int) -> bytes:
    from hailuo_pipeline.video.poster import poster_jpeg  # PyAV, where a video is opened

    with tempfile.TemporaryDirectory(prefix="hailuo-poster-") as folder:
        copy = Path(folder) / "video.mp4"
        copy.write_bytes(videos.read(path, 0, size))
        return poster_jpeg(copy)


class ReviewPortTaken(HailuoError):
    """The review server's address is in use: said, and nothing is served elsewhere."""


def review_address(review_url: str) -> tuple[str, int]:
    """Where the server listens: HAILUO_REVIEW_URL's host (loopback unless it names another interface) and port."""
    parts = urlsplit(review_url)
    return parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)


def claim_review_port(review_url: str) -> socket.socket:
    """The listening socket, bound now: a port another program holds is an error naming the setting."""
    host, port = review_address(review_url)
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise ReviewPortTaken(
            f"the review server cannot listen at {review_url} ({exc.strerror or 'address in use'}); stop what holds "
            "it, or set HAILUO_REVIEW_URL to another address (the `watch` links follow it)"
        ) from None
    return listener


def serve_review(catalog: CatalogDatabase, videos: VideoStore, review_url: str, dagster_url: str) -> None:
    """Serve until stopped (Ctrl-C)."""
    import uvicorn

    listener = claim_review_port(review_url)
    app = build_review_app(catalog, videos, dagster_url)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[listener])
