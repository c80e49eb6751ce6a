"""Staleness after an edit, the sensor at 10,000 rows, the nightly sweep's run requests, and shots left to the
runs already queued or under way."""

from __future__ import annotations

import csv
import logging
import time
from datetime import datetime
from decimal import Decimal

from dagster import AssetKey, DagsterInstance, DagsterRun, DagsterRunStatus, RunRequest, SkipReason
from dagster._core.definitions.data_version import StaleStatus
from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData
from dagster._core.events.log import EventLogEntry
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._utils.test.data_versions import get_stale_status_resolver

from hailuo_pipeline.defs.automation.sensors import shots_generation_sensor, shots_manifest_sensor
from hailuo_pipeline.defs.definitions import build_definitions
from hailuo_pipeline.defs.headless import materialize
from hailuo_pipeline_tests.helpers import query, tick_schedule, tick_sensor
from hailuo_pipeline_tests.shots import make_image, write_shots


def video_status(instance: DagsterInstance, shot_id: str) -> StaleStatus:
    assets = build_definitions().get_assets_def(AssetKey("hailuo_video"))
    resolver = get_stale_status_resolver(instance, [assets])
    return resolver.get_status(AssetKey("hailuo_video"), shot_id)


def test_prompt_edit_marks_the_video_stale_and_a_new_take_keeps_the_old(workspace, emulator):
    write_shots(workspace, [{"shot_id": "s1", "prompt": "first prompt"}])
    materialize()
    instance = DagsterInstance.get()
    assert video_status(instance, "s1") == StaleStatus.FRESH

    write_shots(workspace, [{"shot_id": "s1", "prompt": "an edited prompt", "image": "images/s1.jpg"}])
    defs = build_definitions()
    result = tick_sensor(shots_manifest_sensor, instance)
    (edit,) = result.run_requests
    assert edit.partition_key == "s1"
    defs.resolve_job_def("shot_inputs").execute_in_process(instance=instance, partition_key="s1")
    assert video_status(instance, "s1") == StaleStatus.STALE
    assert emulator.stats()["submissions"] == 1  # an edit alone never pays

    assert materialize(["s1"]).succeeded == ["s1"]
    assert video_status(instance, "s1") == StaleStatus.FRESH
    assert emulator.stats()["submissions"] == 2
    assert query(workspace, "SELECT take, status, cost_usd FROM requests ORDER BY take") == [
        (1, "succeeded", Decimal("0.19")),
        (2, "succeeded", Decimal("0.19")),
    ]
    assert query(workspace, "SELECT count(*) FROM videos") == [(2,)]


def test_in_a_batch_run_an_edit_marks_only_that_shots_video_stale(workspace, emulator):
    write_shots(workspace, [{"shot_id": "s1", "prompt": "one"}, {"shot_id": "s2", "prompt": "two"}])
    summary = materialize()
    assert summary.succeeded == ["s1", "s2"] and len(summary.run_ids) == 1  # one run, both shots
    instance = DagsterInstance.get()
    assert [video_status(instance, s) for s in ("s1", "s2")] == [StaleStatus.FRESH, StaleStatus.FRESH]

    write_shots(
        workspace,
        [
            {"shot_id": "s1", "prompt": "one", "image": "images/s1.jpg"},
            {"shot_id": "s2", "prompt": "two, edited", "image": "images/s2.jpg"},
        ],
    )
    build_definitions().resolve_job_def("shot_inputs").execute_in_process(
        instance=instance, tags={"dagster/asset_partition_range_start": "s1", "dagster/asset_partition_range_end": "s2"}
    )
    assert [video_status(instance, s) for s in ("s1", "s2")] == [StaleStatus.FRESH, StaleStatus.STALE]
    assert emulator.stats()["submissions"] == 2


def test_sensor_registers_a_10000_row_manifest_and_validates_and_generates_it_in_one_run_each(workspace):
    make_image(workspace / "images" / "still.jpg")
    with (workspace / "shots.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["shot_id", "image", "prompt", "duration"])
        for i in range(10_000):
            writer.writerow([f"shot-{i:05d}", "images/still.jpg", f"prompt {i}", "10" if i % 3 == 0 else "6"])
    instance = DagsterInstance.get()
    result = tick_sensor(shots_manifest_sensor, instance)
    (add,) = result.dynamic_partitions_requests
    assert len(add.partition_keys) == 10_000
    (inputs,) = result.run_requests  # free validation: one run for the batch, no run boundary
    assert len(inputs.run_config["ops"]["hailuo_shots"]["config"]["only"]) == 10_000
    assert query(workspace, "SELECT count(*) FROM shots") == [(10_000,)]
    instance.add_dynamic_partitions("shots", list(add.partition_keys))
    paid = tick_sensor(shots_generation_sensor, instance)  # the switch that spends, when it is on
    (run,) = paid
    assert (run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]) == (
        "shot-00000",
        "shot-09999",
    )


def test_nightly_sweep_requests_missing_shots_within_the_daily_budget_not_refused_ones(
    workspace, emulator, monkeypatch
):
    write_shots(workspace, [{"shot_id": f"s{i}", "prompt": f"p{i}"} for i in range(1, 6)])
    emulator.configure(
        {"faults": {"job_errors": [{"error": "flagged", "error_type": "content_policy_violation", "status": 422}]}}
    )
    materialize(["s1", "s2"], concurrency=1)  # s1 refused (content policy), s2 succeeds; s3..s5 never ran
    monkeypatch.setenv("HAILUO_DAILY_BUDGET_USD", "0.60")  # $0.19 spent: room for two more 6 s videos
    requests = tick_schedule("nightly_sweep", DagsterInstance.get(), datetime(2026, 11, 29, 3, 0))
    keys = [
        r.partition_key
        or r.tags["dagster/asset_partition_range_start"] + ".." + r.tags["dagster/asset_partition_range_end"]
        for r in requests
    ]
    assert keys == ["s3..s4"]  # s1's inputs were refused by fal: the sweep does not pay to hear it again
    assert all(r.job_name == "generate_shots" for r in requests)


def test_nightly_sweep_survives_an_invalid_duration(workspace):
    write_shots(workspace, [{"shot_id": "odd", "prompt": "p", "duration": "7"}, {"shot_id": "ok", "prompt": "p"}])
    instance = DagsterInstance.get()
    instance.add_dynamic_partitions("shots", ["odd", "ok"])
    requests = tick_schedule("nightly_sweep", instance, datetime(2026, 11, 29, 3, 0))
    assert sorted(r.partition_key for r in requests) == ["odd", "ok"]  # the invalid one in a run of its own


def run_of(instance: DagsterInstance, request: RunRequest, status: DagsterRunStatus) -> DagsterRun:
    """The run a daemon creates for `request`, in `status`, from the code location `dagster dev` loads."""
    tags = {**request.tags, **({"dagster/partition": request.partition_key} if request.partition_key else {})}
    job = build_definitions().resolve_job_def(request.job_name or "generate_shots")
    location = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("hailuo_pipeline"), "__repository__")
    return instance.create_run_for_job(
        job,
        run_config=request.run_config or {},
        tags=tags,
        status=status,
        remote_job_origin=RemoteJobOrigin(location, job.name),
    )


def heard_from(instance: DagsterInstance, run: DagsterRun, seconds_ago: float) -> None:
    event = DagsterEvent(
        DagsterEventType.ENGINE_EVENT.value, run.job_name, message="working", event_specific_data=EngineEventData()
    )
    entry = EventLogEntry(
        error_info=None,
        level=logging.INFO,
        user_message="",
        run_id=run.run_id,
        timestamp=time.time() - seconds_ago,
        job_name=run.job_name,
        dagster_event=event,
    )
    instance.store_event(entry)


def requested_shots(result: object) -> list[str]:
    assert isinstance(result, list), result
    shots = []
    for request in result:
        config = (request.run_config or {}).get("ops", {}).get("hailuo_shots", {}).get("config", {})
        shots += config.get("only") or [request.partition_key]
    return sorted(shots)


def test_the_generation_sensor_and_the_sweep_leave_shots_to_the_runs_queued_or_under_way(workspace):
    write_shots(workspace, [{"shot_id": f"s{i}", "prompt": f"p{i}"} for i in range(1, 9)])
    instance = DagsterInstance.get()
    instance.add_dynamic_partitions("shots", [f"s{i}" for i in range(1, 7)])
    (batch,) = tick_sensor(shots_generation_sensor, instance)
    queued = run_of(instance, batch, DagsterRunStatus.QUEUED)  # what the daemon does with it
    skipped = tick_sensor(shots_generation_sensor, instance)
    assert isinstance(skipped, SkipReason) and "in runs queued or under way" in (skipped.skip_message or "")

    instance.add_dynamic_partitions("shots", ["s7", "s8"])  # new rows while the batch waits: only they are asked
    assert requested_shots(tick_sensor(shots_generation_sensor, instance)) == ["s7", "s8"]
    assert requested_shots(tick_schedule("nightly_sweep", instance, datetime(2026, 11, 29, 3, 0))) == ["s7", "s8"]

    # a UI backfill's range (no `only`) takes all of it
    ui = RunRequest(
        job_name="generate_shots",
        tags={"dagster/asset_partition_range_start": "s7", "dagster/asset_partition_range_end": "s8"},
    )
    backfill = run_of(instance, ui, DagsterRunStatus.STARTING)
    assert isinstance(tick_sensor(shots_generation_sensor, instance), SkipReason)

    # a started run heard from lately takes its shot; a run that only validates takes none
    started = run_of(instance, RunRequest(job_name="generate_shots", partition_key="s8"), DagsterRunStatus.STARTED)
    heard_from(instance, started, seconds_ago=5)
    validating = run_of(instance, RunRequest(job_name="shot_inputs", partition_key="s7"), DagsterRunStatus.STARTED)
    heard_from(instance, validating, seconds_ago=5)
    instance.report_run_canceled(backfill)
    assert requested_shots(tick_sensor(shots_generation_sensor, instance)) == ["s7"]

    # a started run silent for longer than any live batch is taken for dead: its shot is asked for again
    silent = run_of(instance, RunRequest(job_name="generate_shots", partition_key="s8"), DagsterRunStatus.STARTED)
    heard_from(instance, silent, seconds_ago=3600)
    instance.report_run_canceled(started)
    assert requested_shots(tick_sensor(shots_generation_sensor, instance)) == ["s7", "s8"]

    # the batch's run ends without reaching its shots (canceled): they are pending again, and asked for
    instance.report_run_canceled(queued)
    assert requested_shots(tick_sensor(shots_generation_sensor, instance)) == [f"s{i}" for i in range(1, 9)]


def test_cost_report_is_requested_after_every_batch_even_with_a_refused_shot(workspace, emulator):
    """Declarative Automation keeps cost_report current: a batch that made a video (beside a refused shot, a
    partition of hailuo_video that stays missing) requests it once; once it is materialized, nothing more."""
    from dagster import evaluate_automation_conditions

    from hailuo_pipeline.defs.headless import instance as headless_instance
    from hailuo_pipeline.defs.headless import report_asset
    from hailuo_pipeline.settings import Settings

    write_shots(workspace, [{"shot_id": "good", "prompt": "one"}, {"shot_id": "bad", "prompt": "two", "duration": "7"}])
    defs = build_definitions()
    report = AssetKey("cost_report")
    with headless_instance(Settings.from_env()) as instance:
        assert report_asset(instance, Settings.from_env())
        first = evaluate_automation_conditions(defs=defs, instance=instance)  # the sensor's first tick
        quiet = evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert quiet.total_requested == 0
    summary = materialize()
    assert summary.succeeded == ["good"] and list(summary.failed) == ["bad"]
    with headless_instance(Settings.from_env()) as instance:
        after_batch = evaluate_automation_conditions(defs=defs, instance=instance, cursor=quiet.cursor)
        assert after_batch.get_requested_partitions(report) == {None}
        assert report_asset(instance, Settings.from_env())
    # the next batch ends after that report, before the next tick: it is reported too, not taken as handled
    assert materialize(["good"], new_take=True).succeeded == ["good"]
    with headless_instance(Settings.from_env()) as instance:
        after_both = evaluate_automation_conditions(defs=defs, instance=instance, cursor=after_batch.cursor)
        assert after_both.get_requested_partitions(report) == {None}
        assert report_asset(instance, Settings.from_env())
        settled = evaluate_automation_conditions(defs=defs, instance=instance, cursor=after_both.cursor)
        assert settled.total_requested == 0
