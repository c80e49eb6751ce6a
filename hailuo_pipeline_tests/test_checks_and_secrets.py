"""The asset checks catch what they claim to, and the key and data URIs never reach logs or the catalog."""

from __future__ import annotations

import base64
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
    passing = [videos_match_requests(catalog, store), costs_match_price_table(catalog)]
    assert all(check.passed for check in passing)
    assert not {"first_problems", "first"} & {k for check in passing for k in check.metadata}  # no empty lists

    ((path,),) = query(workspace, "SELECT path FROM videos WHERE shot_id = 'b'")
    Path(path).write_bytes(Path(path).read_bytes()[:1000])
    damaged = videos_match_requests(catalog, store)
    assert not damaged.passed
    assert damaged.metadata["problems"].value == 1
    assert damaged.metadata["first_problems"].value.startswith("- b (")

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
    # the input images travel to fal as data URIs: none of their bytes reach the event log (the only
    # base64 there is each video's own poster frame, under `poster`)
    inputs = [base64.b64encode((workspace / "images" / f"{s['shot_id']}.jpg").read_bytes())[:64].decode() for s in TWO]
    instance = DagsterInstance.get()
    for run_id in summary.run_ids:
        for entry in instance.all_logs(run_id):
            message = entry.user_message + str(entry.dagster_event.event_specific_data if entry.dagster_event else "")
            assert "test-key" not in message and not any(data in message for data in inputs)
            assert message.count("base64,") == message.count("data:image/jpeg;base64,") <= 1


def test_a_run_that_made_no_video_skips_its_video_check_rather_than_passing_it(workspace, emulator):
    """A failed single-shot run made no video: its video check has nothing to check, so it is skipped (a green
    "check succeeded" row read as a pass); the catalog-wide checks still speak; a run that made videos has all."""
    write_shots(workspace, TWO)
    made = materialize()  # two videos in the catalog
    write_shots(workspace, [*TWO, {"shot_id": "bad", "prompt": "p", "duration": "7"}])
    summary = materialize(["bad"])
    assert "bad" in summary.failed

    def evaluations(run_id: str) -> list:
        return [
            e.dagster_event.event_specific_data
            for e in DagsterInstance.get().all_logs(run_id)
            if e.dagster_event and e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
        ]

    (run_id,) = summary.run_ids
    assert sorted(e.check_name for e in evaluations(run_id)) == ["costs_match_price_table", "no_paid_video_lost"]
    checked = evaluations(made.run_ids[0])
    assert len(checked) == 3 and all(e.passed for e in checked)
