"""The review server: a page per take, batch and shot; videos in the byte ranges a player seeks to, from the local
store or object storage; a take addressed by its ledger key only; every value escaped; a verdict only from the
server's own page (its token, its origin)."""

from __future__ import annotations

import re
import socket

import pytest
from starlette.testclient import TestClient

from hailuo_pipeline.catalog.backends import open_catalog
from hailuo_pipeline.defs.headless import materialize
from hailuo_pipeline.errors import HailuoError
from hailuo_pipeline.review.server import build_review_app, claim_review_port
from hailuo_pipeline.video.store import open_video_store
from hailuo_pipeline_tests.helpers import query
from hailuo_pipeline_tests.shots import write_shots

HOSTILE_PROMPT = "<script>alert('x')</script> & a harbour"


def client(workspace, store: str | None = None) -> TestClient:
    catalog = open_catalog(workspace / "catalog.duckdb")
    app = build_review_app(catalog, open_video_store(store or workspace / "videos"), "http://dagster.example:3000")
    return TestClient(app, base_url="http://testserver")


def delivered(workspace) -> list[tuple]:
    sql = "SELECT r.request_key, r.shot_id, r.run_id, v.path FROM requests r JOIN videos v USING (request_key)"
    return query(workspace, f"{sql} ORDER BY 2")


@pytest.fixture
def two_takes(workspace, emulator):
    write_shots(
        workspace, [{"shot_id": "a", "prompt": HOSTILE_PROMPT}, {"shot_id": "b", "prompt": "b", "duration": "10"}]
    )
    assert len(materialize().succeeded) == 2
    return delivered(workspace)


def test_a_take_page_shows_the_take_and_escapes_every_value(workspace, two_takes):
    (key, shot, run_id, _), _ = two_takes
    page = client(workspace).get(f"/takes/{key}")
    assert page.status_code == 200
    text = page.text
    assert f"poster='/takes/{key}/poster.jpg'" in text and f"src='/takes/{key}/video'" in text
    assert "$0.19" in text and "take 1" in text and f"/shots/{shot}" in text
    assert f"http://dagster.example:3000/runs/{run_id}" in text
    assert "<script>alert" not in text and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; a harbour" in text
    poster = client(workspace).get(f"/takes/{key}/poster.jpg")
    assert poster.headers["content-type"] == "image/jpeg" and poster.content[:2] == b"\xff\xd8"


@pytest.mark.parametrize("path", ["/takes/../../etc/passwd", "/takes/NOT-A-KEY", "/takes/" + "0" * 32,
                                  "/shots/..%2F..%2Fetc", "/runs/nope", "/takes/%2e%2e/video"])  # fmt: skip
def test_anything_but_a_ledger_key_is_not_found(workspace, two_takes, path):
    assert client(workspace).get(path).status_code == 404


def test_videos_are_served_in_the_ranges_a_player_seeks_to(workspace, two_takes):
    (key, _, _, path), _ = two_takes
    with open(path, "rb") as video:
        whole = video.read()
    web = client(workspace)
    full = web.get(f"/takes/{key}/video")
    assert full.status_code == 200 and full.content == whole and full.headers["accept-ranges"] == "bytes"
    head = web.get(f"/takes/{key}/video", headers={"range": "bytes=0-99"})
    assert head.status_code == 206 and head.content == whole[:100]
    assert head.headers["content-range"] == f"bytes 0-99/{len(whole)}"
    tail = web.get(f"/takes/{key}/video", headers={"range": "bytes=-500"})
    assert tail.status_code == 206 and tail.content == whole[-500:]
    middle = web.get(f"/takes/{key}/video", headers={"range": f"bytes={len(whole) - 10}-"})
    assert middle.content == whole[-10:]
    assert web.get(f"/takes/{key}/video", headers={"range": f"bytes={len(whole)}-"}).status_code == 416


def test_the_batch_page_shows_every_new_video_of_a_run_and_the_shot_page_every_take(workspace, two_takes):
    (key_a, _, run_id, _), (key_b, _, _, _) = two_takes
    web = client(workspace)
    batch = web.get(f"/runs/{run_id}").text
    assert f"/takes/{key_a}/video" in batch and f"/takes/{key_b}/video" in batch and "$0.51" in batch
    shot = web.get("/shots/a").text
    assert f"/takes/{key_a}" in shot and "no verdict" in shot


def test_a_verdict_needs_the_pages_token_and_its_origin(workspace, two_takes):
    (key, _, _, _), _ = two_takes
    web = client(workspace)
    token = re.search(r"name='token' value='([0-9a-f]+)'", web.get(f"/takes/{key}").text).group(1)
    form = {"verdict": "reject", "note": "tilted", "token": token}
    forged = [
        ({}, form),  # no Origin (not a browser form)
        ({"origin": "https://evil.example"}, form),  # cross-site
        ({"origin": "http://testserver"}, {**form, "token": "0" * 64}),  # a made-up token
        ({"origin": "http://testserver"}, {k: v for k, v in form.items() if k != "token"}),
    ]
    for headers, data in forged:
        refused = web.post(f"/takes/{key}/verdict", data=data, headers=headers, follow_redirects=False)
        assert refused.status_code == 403, (headers, refused.text)
    assert query(workspace, "SELECT count(*) FROM verdicts") == [(0,)]
    given = web.post(
        f"/takes/{key}/verdict", data=form, headers={"origin": "http://testserver"}, follow_redirects=False
    )
    assert given.status_code == 303 and given.headers["location"] == f"/takes/{key}"
    assert query(workspace, "SELECT verdict FROM requests WHERE request_key = ?", [key]) == [("reject",)]
    assert "rejected" in web.get(f"/takes/{key}").text


def test_the_review_server_serves_from_object_storage(workspace, emulator, s3_server, monkeypatch):
    bucket = s3_server.create_bucket("review")
    monkeypatch.setenv("HAILUO_VIDEO_STORE", f"{bucket}/videos")
    write_shots(workspace, [{"shot_id": "a", "prompt": "a"}])
    assert materialize().succeeded == ["a"]
    ((key, _, _, path),) = delivered(workspace)
    assert path.startswith("s3://")
    web = client(workspace, f"{bucket}/videos")
    whole = web.get(f"/takes/{key}/video").content
    assert (
        len(whole) > 1000 and web.get(f"/takes/{key}/video", headers={"range": "bytes=10-19"}).content == whole[10:20]
    )
    assert web.get(f"/takes/{key}/poster.jpg").content[:2] == b"\xff\xd8"


def test_a_taken_port_is_said_not_served_elsewhere():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    url = f"http://127.0.0.1:{holder.getsockname()[1]}"
    try:
        with pytest.raises(HailuoError, match="HAILUO_REVIEW_URL"):
            claim_review_port(url)
    finally:
        holder.close()


def test_hailuo_ui_says_a_taken_review_port_and_stops(workspace, monkeypatch, capsys):
    from hailuo_pipeline.cli import main

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    monkeypatch.setenv("HAILUO_REVIEW_URL", f"http://127.0.0.1:{holder.getsockname()[1]}")
    try:
        assert main(["ui"]) == 2  # before dagster dev is started: nothing is served elsewhere
    finally:
        holder.close()
    assert "the review server cannot listen at" in capsys.readouterr().err


def test_the_review_server_of_a_ui_session_serves_and_ends_with_it(workspace, emulator, tmp_path):
    """`hailuo ui` starts the review server, then becomes `dagster dev` (exec): the server answers at
    HAILUO_REVIEW_URL and ends when the process it became ends."""
    import json
    import os
    import subprocess
    import sys

    import httpx

    from hailuo_pipeline.local_servers import free_port
    from hailuo_pipeline_tests.helpers import REPO_ROOT, wait_for
    from hailuo_pipeline_tests.test_cli import stat_state

    write_shots(workspace, [{"shot_id": "a", "prompt": "a"}])
    assert materialize().succeeded == ["a"]
    url = f"http://127.0.0.1:{free_port()}"
    script = (
        "import json, os, sys\n"
        "from pathlib import Path\n"
        "from hailuo_pipeline.local_servers.review import start_review_process\n"
        "child = start_review_process(Path(os.environ['HAILUO_DATA_DIR']) / 'review', os.environ)\n"
        "print(json.dumps(child.pid), flush=True)\n"
        "os.execv(sys.executable, [sys.executable, '-c', 'import sys; sys.stdin.readline()'])\n"
    )
    env = {**os.environ, "HAILUO_REVIEW_URL": url, "PYTHONPATH": str(REPO_ROOT)}
    became = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    assert became.stdout is not None and became.stdin is not None
    server = str(json.loads(became.stdout.readline()))
    ((key,),) = query(workspace, "SELECT request_key FROM requests")

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/takes/{key}", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(answers, timeout=60, what="the review server to answer")
    finally:
        became.stdin.close()
        became.wait(timeout=30)
    wait_for(lambda: stat_state(server) == "Z", what="the review server to end")
