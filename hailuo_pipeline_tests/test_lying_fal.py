"""fal's answers as hostile input, through Dagster and the real fal_client, each kind of lie in a batch with good
shots beside it: the good shots are delivered; the bad one is paid for at most once across Dagster's retries,
booked as the README's table says, named with its cause in words; nothing is fetched from a refused host,
nothing written outside the data and instance folders, and the batch ends within its deadline."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hailuo_pipeline.defs.headless import materialize
from hailuo_pipeline_tests.helpers import query, reason
from hailuo_pipeline_tests.hostile import files_outside
from hailuo_pipeline_tests.shots import write_shots

GOOD = ["good-1", "good-2"]
REPR = re.compile(r"Traceback|object at 0x|[A-Z][a-zA-Z]+Error\(|[A-Z][a-zA-Z]+\('")


@contextmanager
def trap() -> Iterator[tuple[str, list[str]]]:
    """A loopback server that is never to be fetched from: its URL, and the paths fetched."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.end_headers()
            self.wfile.write(b"\x00" * 1024)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()


def run_batch(workspace: Path, emulator, lies: dict[str, dict]) -> tuple[object, float]:
    """The good shots and one shot per lie (its prompt names it) in one `hailuo materialize` batch."""
    write_shots(workspace, [{"shot_id": s, "prompt": f"the {s} shot"} for s in [*GOOD, *lies]])
    emulator.configure({"faults": {"by_prompt": {f"the {s} shot": lie for s, lie in lies.items()}}})
    started = time.monotonic()
    summary = materialize()
    return summary, time.monotonic() - started


def ledger(workspace: Path) -> dict[str, tuple[str, Decimal, Decimal]]:
    """shot -> (status, cost, reserved) of its one row."""
    rows = query(workspace, "SELECT shot_id, status, cost_usd, reserved_usd FROM requests ORDER BY created_at")
    return {shot: (status, cost, reserved) for shot, status, cost, reserved in rows}


def check_promises(workspace: Path, emulator, summary, seconds: float, bad: dict[str, tuple[str, str]]) -> None:
    """bad: shot -> (ledger status, words in its failure)."""
    assert sorted(summary.succeeded) == GOOD, summary
    assert set(summary.failed) == set(bad), summary.failed
    by_prompt = emulator.stats()["submissions_by_prompt"]
    assert {shot: by_prompt.get(f"the {shot} shot") for shot in [*GOOD, *bad]} == dict.fromkeys([*GOOD, *bad], 1)
    rows = ledger(workspace)
    for shot, (status, words) in bad.items():
        assert rows[shot][0] == status, (shot, rows[shot])
        said = reason(summary, shot)
        assert words in said, (shot, said)
        assert not REPR.search(said), (shot, said)
    assert files_outside(workspace.parent, [workspace, workspace.parent / "dagster_home"]) == []
    assert sum(p.stat().st_size for p in workspace.rglob("*") if p.is_file()) < 64 * 2**20
    assert seconds < 90, seconds


PRICE = Decimal("0.1900")
HELD = (Decimal(0), PRICE)  # cost, reserved: money held until a person (or fal's records) settles it
BOOKED = (PRICE, Decimal(0))  # fal billed it: spent


def test_lying_request_ids_never_book_one_job_twice(workspace, emulator):
    """Malformed, path-like, too long, or another shot's: each submit is ambiguous, its money held."""
    write_shots(workspace, [{"shot_id": "earlier", "prompt": "an earlier shot"}])
    assert materialize().succeeded == ["earlier"]  # the id "replayed" is answered with is this shot's
    summary, seconds = run_batch(
        workspace,
        emulator,
        {
            "bad-shape": {"request_id": "not an id!"},
            "traversal": {"request_id": "x/../../../../../tmp/hailuo-evil"},
            "too-long": {"request_id": "a" * 300},
            "replayed": {"replay_id": True},
        },
    )
    check_promises(
        workspace,
        emulator,
        summary,
        seconds,
        {
            "bad-shape": ("ambiguous", "malformed request id"),
            "traversal": ("ambiguous", "malformed request id"),
            "too-long": ("ambiguous", "malformed request id"),
            "replayed": ("ambiguous", "a replayed or false answer"),
        },
    )
    rows = ledger(workspace)
    assert all(rows[s][1:] == HELD for s in ("bad-shape", "traversal", "too-long", "replayed"))
    assert not Path("/tmp/hailuo-evil").exists()
    # the replayed id is still the good shot's alone
    ids = query(workspace, "SELECT request_id, count(*) FROM requests WHERE request_id IS NOT NULL GROUP BY 1")
    assert all(count == 1 for _, count in ids)


def test_unusable_results_are_booked_at_their_price_and_html_answers_are_polled_past(workspace, emulator):
    summary, seconds = run_batch(
        workspace,
        emulator,
        {
            "no-video": {"result": {"images": []}},
            "video-not-object": {"result": {"video": ["https://fal.media/x.mp4"]}},
            "url-not-text": {"result": {"video": {"url": 42}}},
            "html-status": {"status_html": 2},
            "html-result": {"result_html": 1},
        },
    )
    # the two HTML answers are passing: those shots are delivered with the good ones
    summary.succeeded = [s for s in summary.succeeded if s not in ("html-status", "html-result")]
    check_promises(
        workspace,
        emulator,
        summary,
        seconds,
        {
            "no-video": ("lost", "no video URL"),
            "video-not-object": ("lost", "no video URL"),
            "url-not-text": ("lost", "no video URL"),
        },
    )
    rows = ledger(workspace)
    assert all(rows[s][1:] == BOOKED for s in ("no-video", "video-not-object", "url-not-text"))
    assert rows["html-status"][0] == rows["html-result"][0] == "succeeded"


def test_video_urls_obey_the_fetch_policy_and_nothing_is_fetched_from_a_refused_host(workspace, emulator):
    with trap() as (trap_url, hits):
        summary, seconds = run_batch(
            workspace,
            emulator,
            {
                "file-url": {"video_url": "file:///etc/passwd"},
                "loopback": {"video_url": f"{trap_url}/stolen.mp4"},
                "private": {"video_url": "http://10.1.2.3/v.mp4"},
                "metadata": {"video_url": "http://169.254.169.254/latest/meta-data/"},
            },
        )
    check_promises(
        workspace,
        emulator,
        summary,
        seconds,
        {
            "file-url": ("lost", "not an http(s) URL"),
            "loopback": ("lost", "local or private address"),
            "private": ("lost", "local or private address"),
            "metadata": ("lost", "local or private address"),
        },
    )
    assert hits == []
    assert all(ledger(workspace)[s][1:] == BOOKED for s in ("file-url", "loopback", "private", "metadata"))


def test_downloads_are_bounded_in_size_and_time(workspace, emulator, monkeypatch):
    monkeypatch.setenv("HAILUO_DOWNLOAD_DEADLINE_SECONDS", "2")
    summary, seconds = run_batch(
        workspace,
        emulator,
        {
            "announces-5gb": {"content_length": 5 * 2**30},
            "unlike-file-size": {"content_length": 1000},
            "endless": {"endless": True},
            "trickle": {"bytes_per_second": 4000},
        },
    )
    check_promises(
        workspace,
        emulator,
        summary,
        seconds,
        {
            "announces-5gb": ("completed", "more than any video"),
            "unlike-file-size": ("completed", "where fal's result says"),
            "endless": ("completed", "larger than"),
            "trickle": ("completed", "slower than"),
        },
    )
    # paid (booked at the price) and kept resumable by id: a later run fetches again, never resubmits
    assert all(ledger(workspace)[s][1:] == BOOKED for s in ("announces-5gb", "unlike-file-size", "endless", "trickle"))
    assert not list(workspace.rglob("*.partial"))


def test_a_lost_result_is_not_paid_again_by_dagsters_retries(workspace, emulator):
    """COMPLETED, then 404 for the result: lost. Another shot's passing failure makes Dagster retry the step;
    the retries resume and deliver it, and never pay for the lost shot again."""
    passing = {"error": "Runner disconnected", "error_type": "runner_disconnected", "status": 503}
    write_shots(workspace, [{"shot_id": s, "prompt": f"the {s} shot"} for s in [*GOOD, "lost", "flaky"]])
    emulator.configure(
        {
            "faults": {
                "by_prompt": {"the lost shot": {"result_http": [404]}, "the flaky shot": {"first_error": passing}},
                "history_hidden_prompts": ["the lost shot"],  # nor does fal's request history hold its video
            }
        }
    )
    summary = materialize()
    assert sorted(summary.succeeded) == sorted([*GOOD, "flaky"]) and list(summary.failed) == ["lost"]
    assert "--repay-lost" in reason(summary, "lost") and "repay_lost: true" in reason(summary, "lost")
    by_prompt = emulator.stats()["submissions_by_prompt"]
    assert by_prompt["the lost shot"] == 1 and by_prompt["the flaky shot"] == 2  # the model's error is not billed
    assert query(workspace, "SELECT status, cost_usd FROM requests WHERE shot_id = 'lost'") == [("lost", PRICE)]
    again = materialize()  # a plain run lists it; only --repay-lost pays again
    assert "lost" not in again.requested and emulator.stats()["submissions_by_prompt"]["the lost shot"] == 1
    repaid = materialize(["lost"], repay_lost=True)
    assert repaid.succeeded == ["lost"] and emulator.stats()["submissions_by_prompt"]["the lost shot"] == 2


def test_status_answers_of_the_wrong_shape_are_failed_polls_never_a_verdict(workspace, emulator):
    """A field missing, of the wrong type, or a list for an object: each is a failed poll, tried again. Told a few
    times, the request is delivered once fal answers properly; told more often than an attempt tolerates (6 in a
    row), the attempt ends resumably and Dagster's retry resumes the request by id: never refused, never paid
    twice."""
    lies = {
        "status-number": {"status": {"status": 42}, "status_times": 3},
        "status-missing": {"status": {"x": 1}, "status_times": 3},
        "status-list": {"status": ["COMPLETED"], "status_times": 8},
    }
    summary, seconds = run_batch(workspace, emulator, lies)
    summary.succeeded = [s for s in summary.succeeded if s not in lies]
    check_promises(workspace, emulator, summary, seconds, {})
    assert all(ledger(workspace)[s] == ("succeeded", *BOOKED) for s in lies)


def test_a_redirect_is_checked_again_and_the_key_never_travels_with_a_download(tmp_path):
    """An allowed host (named host:port) redirecting to a loopback port that is not allowed: refused before a
    byte is fetched there. No request of the download carries an Authorization header."""
    import asyncio

    import httpx

    from hailuo_pipeline.fetch_policy import FetchPolicy
    from hailuo_pipeline.generation.download import DownloadBounds, DownloadError, download_video

    with trap() as (trap_url, hits):
        seen: list[str | None] = []

        class Redirect(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                seen.append(self.headers.get("authorization"))
                self.send_response(302)
                self.send_header("Location", f"{trap_url}/elsewhere.mp4")
                self.end_headers()

        server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        allowed = FetchPolicy.allowing(f"127.0.0.1:{server.server_address[1]}")

        async def attempt() -> None:
            async with httpx.AsyncClient(follow_redirects=False) as http:
                bounds = DownloadBounds(5.0, policy=allowed)
                url = f"http://127.0.0.1:{server.server_address[1]}/v.mp4"
                await download_video(http, url, tmp_path / "shot" / "v.mp4", None, bounds)

        try:
            with pytest.raises(DownloadError, match="local or private address") as refused:
                asyncio.run(attempt())
        finally:
            server.shutdown()
    assert refused.value.refused and not refused.value.worth_retrying
    assert hits == [] and seen == [None]
    assert list((tmp_path / "shot").iterdir()) == []
