"""The asset checks catch what they claim to, and the key and data URIs never reach logs or the catalog."""

from __future__ import annotations

from pathlib import Path

from dagster import DagsterInstance

from hailuo_pipeline.catalog.store import Catalog
from hailuo_pipeline.defs.assets.checks import costs_match_price_table, videos_match_requests
from hailuo_pipeline.defs.headless import materialize
from hailuo_pipeline.defs.resources import CatalogResource
from hailuo_pipeline.video.store import LocalVideoStore
from hailuo_pipeline_tests.helpers import query
from hailuo_pipeline_tests.shots import write_shots

TWO = [{"shot_id": "a", "prompt": "p"}, {"shot_id": "b", "prompt": "q", "duration": "10"}]


def resource(data: Path) -> CatalogResource:
    return CatalogResource(database=str(data / "catalog.duckdb"))


def test_checks_pass_then_catch_a_damaged_video_and_a_wrong_charge(workspace, emulator):
    write_shots(workspace, TWO)
    materialize()
    catalog = resource(workspace)
    store = LocalVideoStore(workspace / "videos")
    assert videos_match_requests(catalog, store).passed
    assert costs_match_price_table(catalog).passed

    ((path,),) = query(workspace, "SELECT path FROM videos WHERE shot_id = 'b'")
    Path(path).write_bytes(Path(path).read_bytes()[:1000])
    damaged = videos_match_requests(catalog, store)
    assert not damaged.passed
    assert damaged.metadata["problems"].value == 1
    assert "b (" in damaged.metadata["first_problems"].value[0]

    with Catalog(workspace / "catalog.duckdb").connect() as db:
        db.execute("UPDATE requests SET cost_usd = 0.19 WHERE shot_id = 'b'")
    wrong = costs_match_price_table(catalog)
    assert not wrong.passed and wrong.metadata["mismatches"].value == 1


def test_key_and_data_uris_stay_out_of_logs_and_catalog(workspace, emulator):
    write_shots(workspace, TWO)
    summary = materialize()
    assert sorted(summary.succeeded) == ["a", "b"]
    rows = query(workspace, "SELECT arguments_json, coalesce(result_json, '') FROM requests")
    text = " ".join(" ".join(r) for r in rows)
    assert "data:" not in text and "base64" not in text and "test-key" not in text
    assert '"image_sha256"' in text
    instance = DagsterInstance.get()
    for run_id in summary.run_ids:
        for entry in instance.all_logs(run_id):
            message = entry.user_message + str(entry.dagster_event.event_specific_data if entry.dagster_event else "")
            assert "base64," not in message and "test-key" not in message
