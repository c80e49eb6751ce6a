"""Hostile images, URLs, keys and fal replies, through the real pipeline: each refused by name with its
fix, nothing submitted for it, nothing written outside the data directory, the key found nowhere, and
the other shots of the batch delivered."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest
from PIL import Image

from hailuo_pipeline.defs.headless import materialize
from hailuo_pipeline.shots.remote import RemoteImageError, RemotePolicy, fetch_image
from hailuo_pipeline_tests.helpers import hailuo, query, reason
from hailuo_pipeline_tests.hostile import files_outside, image_server, png_header_only
from hailuo_pipeline_tests.shots import write_shots

KEY = "hailuo-test-0f3c:SECRETSECRET-9d2e41"
PASSWORD = "hunter2-in-a-url"


def everything_stored(workspace) -> bytes:
    """Every byte the pipeline keeps: the catalog's rows as text, and every file of the instance."""
    text = "\n".join(
        repr(row)
        for table in ("requests", "request_events", "shots", "videos")
        for row in query(workspace, f"SELECT * FROM {table}")
    )
    blobs = b"".join(p.read_bytes() for p in (workspace.parent / "dagster_home").rglob("*") if p.is_file())
    return text.encode() + blobs


def test_hostile_images_and_urls_are_refused_by_name_and_the_good_shots_delivered(workspace, emulator, monkeypatch):
    monkeypatch.setenv("FAL_KEY", KEY)
    monkeypatch.setenv("HAILUO_ALLOWED_PRIVATE_IMAGE_HOSTS", "127.0.0.1")  # the test's image server only
    images = workspace / "images"
    images.mkdir()
    (images / "bomb.png").write_bytes(png_header_only(30000, 30000))
    (images / "54mp.png").write_bytes(png_header_only(9000, 6000))
    (images / "a-directory.jpg").mkdir()
    os.mkfifo(images / "pipe.jpg")
    with image_server() as server:
        cases = {
            "bomb": ("images/bomb.png", "too large to decode safely"),
            "too-many-pixels": ("images/54mp.png", "54 megapixels"),
            "directory": ("images/a-directory.jpg", "is a directory"),
            "fifo": ("images/pipe.jpg", "not a regular file"),
            "file-url": ("file:///etc/hosts", "file: scheme"),
            "ftp-url": ("ftp://example.com/still.jpg", "ftp: scheme"),
            "loopback": ("http://127.0.0.2:9/x.jpg", "local or private address"),
            "ipv6-loopback": ("http://[::1]:9/x.jpg", "local or private address"),
            "cloud-metadata": ("http://169.254.169.254/latest/meta-data", "local or private address"),
            "private-with-password": (f"http://alice:{PASSWORD}@10.1.2.3/x.jpg", "local or private address"),
            "localhost": (f"{server.replace('127.0.0.1', 'localhost')}/ok.jpg", "local or private address"),
            "redirect-to-localhost": (f"{server}/to-localhost", "local or private address"),
            "redirect-loop": (f"{server}/loop", "redirects more than 5 times"),
            "not-found": (f"{server}/missing.jpg", "answered HTTP 404"),
            "announced-400mb": (f"{server}/huge", "400.0 MB"),
            "endless-body": (f"{server}/endless", "20 MB or more"),
            "html-not-image": (f"{server}/html", "cannot be decoded"),
        }
        rows = [{"shot_id": "good-local", "prompt": "the good local shot"}]
        rows.append({"shot_id": "good-remote", "prompt": "the good remote shot", "image": f"{server}/ok.jpg"})
        rows += [{"shot_id": sid, "prompt": f"p {sid}", "image": image} for sid, (image, _) in cases.items()]
        write_shots(workspace, rows)
        summary = materialize()

    assert sorted(summary.succeeded) == ["good-local", "good-remote"]
    assert set(summary.failed) == set(cases)
    for shot_id, (_, words) in cases.items():
        assert words in reason(summary, shot_id), (shot_id, reason(summary, shot_id))
    assert emulator.stats()["submissions"] == 2
    stored = everything_stored(workspace)
    assert KEY.encode() not in stored and PASSWORD.encode() not in stored
    assert files_outside(workspace.parent, [workspace, workspace.parent / "dagster_home"]) == []


@pytest.mark.parametrize(
    ("path", "words"),
    [("/slow", "took longer than 1 s"), ("/endless", "20 MB or more"), ("/huge", "400.0 MB")],
)
def test_a_remote_image_is_bounded_in_time_and_size(path, words):
    with image_server() as server:
        policy = RemotePolicy(private_hosts=frozenset({"127.0.0.1"}), deadline_seconds=1.0)
        with pytest.raises(RemoteImageError, match=words):
            fetch_image(f"{server}{path}", policy)


MISBEHAVIOURS = [
    # (case, emulator configuration, shot delivered?, words in the refusal, ledger status)
    (
        "traversal id",
        {"faults": {"request_ids": ["x/../../../../../../../tmp/hailuo-evil"]}},
        False,
        "malformed request id",
        "ambiguous",
    ),
    ("negative size", {"faults": {"file_sizes": [-5]}}, True, "", "succeeded"),
    ("huge size", {"faults": {"file_sizes": [10**15]}}, True, "", "succeeded"),
    ("size as text", {"faults": {"file_sizes": ["12 MB"]}}, True, "", "succeeded"),
    (
        "file url",
        {"faults": {"results": [{"video": {"url": "file:///etc/passwd"}}]}},
        False,
        "not an http(s) URL",
        "lost",
    ),
    ("video not a dict", {"faults": {"results": [{"video": "nope"}]}}, False, "no video URL", "lost"),
    ("html result once", {"faults": {"html": {"result": 1}}}, True, "", "succeeded"),
    ("html status once", {"faults": {"html": {"status": 2}}}, True, "", "succeeded"),
    ("html submit answer", {"faults": {"html": {"submit": 1}}}, False, "could not be read", "ambiguous"),
    ("wrong content type", {"faults": {"download_content_type": "text/html"}}, False, "not a video", "completed"),
    ("endless download", {"faults": {"endless_downloads": 4}}, False, "larger than", "completed"),
]


@pytest.mark.parametrize(
    ("case", "config", "delivered", "words", "status"), MISBEHAVIOURS, ids=[m[0] for m in MISBEHAVIOURS]
)
def test_a_misbehaving_fal_is_refused_and_nothing_lands_outside_the_store(
    workspace, emulator, monkeypatch, case, config, delivered, words, status
):
    monkeypatch.setenv("FAL_KEY", KEY)
    write_shots(workspace, [{"shot_id": "s1", "prompt": "p"}])
    emulator.configure(config)
    summary = materialize()
    assert (summary.succeeded == ["s1"]) is delivered, summary
    if not delivered:
        assert words in reason(summary, "s1"), reason(summary, "s1")
    assert emulator.stats()["submissions"] == 1
    assert [row[0] for row in query(workspace, "SELECT status FROM requests")] == [status]
    assert files_outside(workspace.parent, [workspace, workspace.parent / "dagster_home"]) == []
    assert not os.path.exists("/tmp/hailuo-evil")
    assert KEY.encode() not in everything_stored(workspace)


def test_a_large_image_goes_through_the_configured_hosts_storage(workspace, emulator):
    noisy = workspace / "images" / "noisy.png"  # over the 10 MB inline limit: uploaded to fal's storage
    noisy.parent.mkdir(parents=True)
    Image.frombytes("RGB", (2600, 1600), os.urandom(2600 * 1600 * 3)).save(noisy, compress_level=0)
    assert 10 * 2**20 < noisy.stat().st_size < 20 * 2**20
    write_shots(workspace, [{"shot_id": "big", "prompt": "a large still", "image": "images/noisy.png"}])
    assert materialize().succeeded == ["big"]
    assert len(emulator.uploads) == 1 and emulator.stats()["submissions"] == 1


@pytest.mark.parametrize("bad_key", [f"{KEY}\n", f" {KEY}", f"{KEY}\r\n"], ids=["LF", "leading space", "CRLF"])
def test_a_badly_pasted_key_is_refused_before_anything_is_reserved(workspace, emulator, subprocess_env, bad_key):
    write_shots(workspace, [{"shot_id": "s1", "prompt": "p"}])
    child = hailuo(["materialize"], {**subprocess_env, "FAL_KEY": bad_key}, workspace.parent, stderr=subprocess.PIPE)
    out, err = child.communicate(timeout=120)
    assert child.returncode != 0 and "FAL_KEY" in err and "cannot be sent in a header" in err
    assert KEY not in out + err and KEY[10:] not in out + err
    assert emulator.stats()["submissions"] == 0
    assert not (workspace / "catalog.duckdb").exists() or query(workspace, "SELECT count(*) FROM requests") == [(0,)]


def test_files_the_pipeline_writes_are_its_owners_only(workspace, emulator, emulator_server):
    write_shots(workspace, [{"shot_id": "s1", "prompt": "p"}])
    assert materialize().succeeded == ["s1"]
    ((video,),) = query(workspace, "SELECT path FROM videos")

    def mode(path) -> int:
        return stat.S_IMODE(os.stat(path).st_mode)

    assert mode(workspace / "catalog.duckdb") == 0o600
    assert mode(video) == 0o600 and mode(os.path.dirname(video)) == 0o700 and mode(workspace / "videos") == 0o700
    assert mode(emulator_server.tls.key) == 0o600


def test_when_retries_run_out_the_reason_is_the_last_failure_not_a_pointer_to_the_log(workspace, emulator):
    write_shots(workspace, [{"shot_id": "s1", "prompt": "p"}])
    transient = {"error": "Runner disconnected", "error_type": "runner_disconnected", "status": 503}
    emulator.configure({"faults": {"job_errors": [transient] * 4}})  # one more than Dagster's 3 retries
    summary = materialize()
    assert "runner_disconnected" in reason(summary, "s1") and "see its run's log" not in reason(summary, "s1")
    assert emulator.stats()["submissions"] == 4


def test_the_next_batch_removes_partial_downloads_a_killed_process_left_in_any_shot(workspace, emulator):
    leftover = workspace / "videos" / "another-shot" / ".take001-abc.mp4.999999999.partial"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a video")
    write_shots(workspace, [{"shot_id": "s1", "prompt": "p"}])
    assert materialize().succeeded == ["s1"]
    assert not leftover.exists()
