"""Shots -> validated inputs -> paid videos -> catalog, through Dagster, the real fal_client and the emulator."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance

from hailuo_pipeline.catalog.store import Catalog
from hailuo_pipeline.defs.headless import materialize
from hailuo_pipeline.video.probe import probe_video
from hailuo_pipeline_tests.helpers import query
from hailuo_pipeline_tests.shots import make_image, write_shots

THREE_SHOTS = [
    {"shot_id": "s1", "prompt": "a slow pan over the bay"},
    {"shot_id": "s2", "prompt": "clouds drift", "duration": "10"},
    {"shot_id": "s3", "prompt": "leaves move", "prompt_optimizer": "false"},
]


def catalog(data: Path):
    return Catalog(data / "catalog.duckdb").connect(read_only=True)


def test_three_shots_end_to_end(workspace, emulator):
    write_shots(workspace, THREE_SHOTS)
    summary = materialize()
    assert sorted(summary.succeeded) == ["s1", "s2", "s3"] and not summary.failed

    with catalog(workspace) as db:
        requests = db.execute(
            "SELECT shot_id, status, cost_usd, duration_seconds, request_id FROM requests ORDER BY shot_id"
        ).fetchall()
        videos = db.execute(
            "SELECT shot_id, path, duration_seconds, width, height FROM videos ORDER BY shot_id"
        ).fetchall()
        spend = db.execute("SELECT sum(cost_usd) FROM requests").fetchone()[0]
    assert [(r[0], r[1], r[2], r[3]) for r in requests] == [
        ("s1", "succeeded", Decimal("0.19"), 6),
        ("s2", "succeeded", Decimal("0.32"), 10),
        ("s3", "succeeded", Decimal("0.19"), 6),
    ]
    assert spend == Decimal("0.70")
    assert len(videos) == 3
    for shot_id, path, duration, width, height in videos:
        probe = probe_video(Path(path))
        expected = 10 if shot_id == "s2" else 6
        assert probe.duration_seconds == pytest.approx(expected, abs=0.5)
        assert duration == pytest.approx(expected, abs=0.5)
        assert (probe.width, probe.height) == (width, height) == (1366, 768)
        assert Path(path).is_relative_to(workspace / "videos")
    assert emulator.stats()["submissions"] == 3

    instance = DagsterInstance.get()
    (run_id,) = summary.run_ids
    checks = instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    evaluations = [e.dagster_event.asset_check_evaluation_data for e in checks if e.dagster_event]
    assert {(c.check_name, c.passed) for c in evaluations} == {
        ("videos_match_requests", True),
        ("costs_match_price_table", True),
        ("no_paid_video_lost", True),
    }
    assert next(c for c in evaluations if c.check_name == "videos_match_requests").metadata["videos_checked"].value == 3
    for shot_id, _, cost, duration, request_id in requests:
        event = _latest(instance, "hailuo_video", shot_id)
        metadata = {k: v.value for k, v in event.metadata.items()}
        assert metadata["request_id"] == request_id
        assert metadata["cost_usd"] == f"${cost:.2f}"  # dollars with cents, not 0.19 or 0.3200
        assert metadata["requested_duration_seconds"] == duration
        assert metadata["measured_duration_seconds"] == pytest.approx(duration, abs=0.5)
        assert metadata["resolution"] == "1366x768" and metadata["fps"] == 25.0
        assert metadata["frames"] == duration * 25
        assert all(
            round(metadata[k], 1) == metadata[k] for k in ("queue_seconds", "inference_seconds", "total_seconds")
        )
        assert metadata["fal_source_url_expires"].startswith("https://127.0.0.1:")  # fal's, labelled as such
        ((key,),) = query(workspace, "SELECT request_key FROM requests WHERE request_id = ?", [request_id])
        assert metadata["watch"] == f"http://127.0.0.1:3001/takes/{key}"  # the one to click
        image_event = _latest(instance, "source_image", shot_id)
        assert {k: v.value for k, v in image_event.metadata.items()}["width"] == 640


def test_second_run_reuses_verified_videos_without_requests(workspace, emulator):
    write_shots(workspace, THREE_SHOTS)
    materialize()
    summary = materialize(["s1", "s2", "s3"])
    assert sorted(summary.succeeded) == ["s1", "s2", "s3"]
    assert emulator.stats()["submissions"] == 3
    with catalog(workspace) as db:
        assert db.execute("SELECT count(*), sum(cost_usd) FROM requests").fetchone() == (3, Decimal("0.70"))
    # the materializations add up to what was spent: the reuses say $0, and who paid, not the old timings
    events = DagsterInstance.get().fetch_materializations(AssetKey("hailuo_video"), limit=100).records
    metadata = [e.asset_materialization.metadata for e in events]
    assert sum(Decimal(m["cost_usd"].value.removeprefix("$")) for m in metadata) == Decimal("0.70")
    reused = [m for m in metadata if m["reused"].value]
    assert len(reused) == 3 and all(m["cost_usd"].value == "$0.00" for m in reused)
    assert all("queue_seconds" not in m and m["paid_by"].value.startswith("request ") for m in reused)


def test_new_take_pays_again_and_keeps_the_old_video(workspace, emulator):
    write_shots(workspace, THREE_SHOTS[:1])
    materialize()
    materialize(["s1"], new_take=True)
    assert emulator.stats()["submissions"] == 2
    with catalog(workspace) as db:
        rows = db.execute("SELECT take, status FROM requests ORDER BY take").fetchall()
        paths = [r[0] for r in db.execute("SELECT path FROM videos").fetchall()]
    assert rows == [(1, "succeeded"), (2, "succeeded")]
    assert len(paths) == 2 and all(Path(p).exists() for p in paths)


def _latest(instance: DagsterInstance, asset: str, partition: str):
    from dagster import AssetRecordsFilter

    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    assert records, f"no materialization of {asset} for {partition}"
    return records[0].asset_materialization


def test_two_shots_with_identical_inputs_are_two_videos(workspace, emulator):
    write_shots(
        workspace,
        [
            {"shot_id": "a", "prompt": "same", "image": "images/x.jpg"},
            {"shot_id": "b", "prompt": "same", "image": "images/x.jpg"},
        ],
    )
    make_image(workspace / "images" / "x.jpg")
    assert sorted(materialize().succeeded) == ["a", "b"]
    assert emulator.stats()["submissions"] == 2
    with catalog(workspace) as db:
        assert db.execute("SELECT shot_id FROM videos ORDER BY 1").fetchall() == [("a",), ("b",)]


def test_each_video_materialization_shows_a_small_poster_from_the_video_itself(workspace, emulator):
    import base64
    import io
    import re

    from PIL import Image, ImageChops

    write_shots(workspace, THREE_SHOTS[:2])
    materialize()
    records = DagsterInstance.get().fetch_materializations(AssetKey("hailuo_video"), limit=10).records
    assert len(records) == 2
    for record in records:
        metadata = record.asset_materialization.metadata
        match = re.fullmatch(r"!\[(.+)\]\(data:image/jpeg;base64,([A-Za-z0-9+/=]+)\)", metadata["poster"].value)
        assert match and match.group(1) == record.asset_materialization.partition
        data = base64.b64decode(match.group(2))
        assert len(data) < 12_000  # a few KB: the event log stays small
        poster = Image.open(io.BytesIO(data))
        assert poster.format == "JPEG" and poster.size == (192, 108)  # the video's 16:9, not the still's
        still = Image.open(workspace / "images" / f"{match.group(1)}.jpg").convert("RGB").resize(poster.size)
        assert ImageChops.difference(poster.convert("RGB"), still).getbbox() is not None  # not the input image
