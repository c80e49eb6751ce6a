"""No paid request left behind: a killed run's requests are orphans, and every default path resumes them by
id (no new submission); a result fal no longer has is lost money, in the report and in a failing check;
a refusal is remembered across Dagster's retries."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from datetime import datetime
from decimal import Decimal

from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    SkipReason,
)

from hailuo_pipeline.cli import report_text
from hailuo_pipeline.defs.automation.sensors import orphaned_requests_sensor
from hailuo_pipeline.defs.definitions import build_definitions
from hailuo_pipeline.defs.headless import materialize
from hailuo_pipeline_tests.helpers import hailuo, query, reason, tick_schedule, tick_sensor, wait_for
from hailuo_pipeline_tests.shots import write_shots


def kill_mid_queue(workspace, emulator, env, count: int) -> list[str]:
    """`hailuo materialize` SIGKILLed while its `count` requests wait in fal's queue."""
    shots = [f"s{i}" for i in range(1, count + 1)]
    write_shots(workspace, [{"shot_id": s, "prompt": f"prompt {s}"} for s in shots])
    emulator.configure({"latency": {"queue_seconds": 3.0, "inference_seconds": 0.3}})
    child = hailuo(["materialize"], env, workspace.parent)
    wait_for(lambda: emulator.stats()["submissions"] == count, what="every submit")
    wait_for(lambda: query(workspace, "SELECT count(*) FROM requests WHERE request_id IS NOT NULL") == [(count,)])
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert {s for (s,) in query(workspace, "SELECT status FROM requests")} <= {"submitted", "in_queue"}
    return shots


def run_request(job_name: str, request, instance: DagsterInstance):
    job = build_definitions().resolve_job_def(job_name)
    kwargs = {"partition_key": request.partition_key} if request.partition_key else {"tags": request.tags}
    return job.execute_in_process(instance=instance, run_config=request.run_config, raise_on_error=False, **kwargs)


def test_after_a_kill_a_plain_materialize_delivers_every_orphan_without_submitting(workspace, emulator, subprocess_env):
    shots = kill_mid_queue(workspace, emulator, subprocess_env, 4)

    child = hailuo(["materialize"], subprocess_env, workspace.parent, stderr=subprocess.PIPE)
    out, err = child.communicate(timeout=180)
    assert child.returncode == 0, out + err
    assert "resuming 4 paid request(s) left behind by an earlier run" in out
    assert "4 of 4 shot(s) delivered" in out
    assert "Traceback" not in out + err and "Telemetry" not in out + err and "STEP_" not in out
    assert emulator.stats()["submissions"] == 4  # not one new submission
    assert query(workspace, "SELECT shot_id, status, cost_usd, attempts FROM requests ORDER BY shot_id") == [
        (s, "succeeded", Decimal("0.19"), 2) for s in shots
    ]
    assert query(workspace, "SELECT count(*) FROM videos") == [(4,)]


def test_the_orphan_sensor_launches_resume_runs_that_never_submit(workspace, emulator, subprocess_env):
    shots = kill_mid_queue(workspace, emulator, subprocess_env, 3)
    instance = DagsterInstance.get()
    requests = tick_sensor(orphaned_requests_sensor, instance)
    assert [
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"]) for r in requests
    ] == [("s1", "s3")]
    (request,) = requests
    assert request.run_config == {"ops": {"hailuo_shots": {"config": {"resume_only": True, "only": shots}}}}
    assert request.job_name == "shot_videos"

    result = run_request("shot_videos", request, instance)
    assert result.success
    assert emulator.stats()["submissions"] == 3
    assert query(workspace, "SELECT status FROM requests") == [("succeeded",)] * 3
    assert instance.get_materialized_partitions(AssetKey("hailuo_video")) == set(shots)
    # nothing left: the next tick skips
    after = tick_sensor(orphaned_requests_sensor, instance)
    assert isinstance(after, SkipReason) and after.skip_message == "no orphaned requests"


def test_the_nightly_sweep_resumes_orphans_first_and_free(workspace, emulator, subprocess_env, monkeypatch):
    kill_mid_queue(workspace, emulator, subprocess_env, 2)
    monkeypatch.setenv("HAILUO_DAILY_BUDGET_USD", "0.38")  # exactly what the two orphans already hold
    instance = DagsterInstance.get()
    # resuming costs nothing new, so the budget does not stop it
    (request,) = tick_schedule("nightly_sweep", instance, datetime(2026, 11, 30, 3, 0))
    assert (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]) == (
        "s1",
        "s2",
    )
    assert run_request("generate_shots", request, instance).success
    assert emulator.stats()["submissions"] == 2
    assert query(workspace, "SELECT status, cost_usd FROM requests") == [("succeeded", Decimal("0.19"))] * 2


def test_an_orphan_whose_result_expired_is_money_lost_in_the_report_and_fails_the_check(
    workspace, emulator, subprocess_env
):
    kill_mid_queue(workspace, emulator, subprocess_env, 1)
    # expired, and fal's request history does not hold it either: lost for good
    emulator.configure(
        {"result_ttl_seconds": 0, "large_result_ttl_seconds": 0, "faults": {"history_lag_seconds": 3600}}
    )
    wait_for(lambda: all(j.phase(time.monotonic()) == "COMPLETED" for j in emulator.jobs.values()), what="fal")

    summary = materialize()
    assert summary.succeeded == [] and "expired" in reason(summary, "s1")
    assert "hailuo materialize --shot s1" in summary.failed["s1"].fix
    assert emulator.stats()["submissions"] == 1
    assert query(workspace, "SELECT status, cost_usd, reserved_usd, error_type FROM requests") == [
        ("lost", Decimal("0.19"), Decimal("0"), "result_expired")
    ]
    text = report_text("table")
    assert "lost $0.19: 1 paid request(s)" in text
    instance = DagsterInstance.get()
    checks = instance.all_logs(summary.run_ids[0], of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    lost_check = next(
        e.dagster_event.asset_check_evaluation_data
        for e in checks
        if e.dagster_event and e.dagster_event.asset_check_evaluation_data.check_name == "no_paid_video_lost"
    )
    assert not lost_check.passed and lost_check.metadata["lost_usd"].value == "$0.19"
    # a lost shot is not paid for again by a plain run; it is listed with what to do
    again = materialize()
    assert again.requested == [] and any("1 paid video(s) were lost" in n for n in again.notes)


def test_the_report_shows_orphans_their_age_and_the_money_they_hold(workspace, emulator, subprocess_env):
    kill_mid_queue(workspace, emulator, subprocess_env, 2)
    text = report_text("table")
    assert "orphans 2 holding $0.38" in text and "`hailuo materialize` resumes them" in text
    orphans = json.loads(report_text("json"))["orphans"]
    assert sorted((o["shot_id"], o["usd"]) for o in orphans) == [("s1", 0.19), ("s2", 0.19)]
    assert all(o["status"] in ("submitted", "in_queue") and o["age_seconds"] > 0 for o in orphans)


def test_a_retry_resubmits_the_transient_shots_and_never_the_refused_one(workspace, emulator):
    write_shots(workspace, [{"shot_id": f"s{i}", "prompt": f"prompt s{i}"} for i in range(1, 4)])
    transient = {"error": "Runner disconnected", "error_type": "runner_disconnected", "status": 503}
    policy = {"error": "flagged", "error_type": "content_policy_violation", "status": 422}
    emulator.configure({"faults": {"job_errors": [policy, transient, transient]}})

    summary = materialize(concurrency=1)  # one at a time: s1 refused, s2 and s3 fail transiently

    assert summary.succeeded == ["s2", "s3"]
    assert "content_policy_violation" in reason(summary, "s1") and "--retry-refused" in reason(summary, "s1")
    by_prompt = emulator.stats()["submissions_by_prompt"]
    assert by_prompt == {"prompt s1": 1, "prompt s2": 2, "prompt s3": 2}  # the retry never resent s1
    assert query(
        workspace, "SELECT shot_id, status, take, permanent_failure FROM requests ORDER BY shot_id, created_at"
    ) == [
        ("s1", "failed", 1, True),
        ("s2", "failed", 1, False),
        ("s2", "succeeded", 1, False),  # a failed attempt does not use up a take
        ("s3", "failed", 1, False),
        ("s3", "succeeded", 1, False),
    ]


def test_polls_are_counted_as_fal_sees_them(workspace, emulator):
    write_shots(workspace, [{"shot_id": "s1", "prompt": "p"}])
    emulator.configure({"faults": {"http": {"status": [503, 500]}}})  # fal_client replays these itself
    assert materialize().succeeded == ["s1"]
    assert query(workspace, "SELECT polls FROM requests") == [(emulator.stats()["calls"]["status"],)]


def test_waiting_on_another_process_says_so_then_decides(workspace, emulator, monkeypatch, capsys):
    monkeypatch.setenv("HAILUO_LEASE_SECONDS", "2")
    write_shots(workspace, [{"shot_id": "s1", "prompt": "p"}])
    materialize(["s1"])  # delivered once; now pretend another host is submitting a new take right now
    rows = query(workspace, "SELECT fingerprint, endpoint FROM requests")
    from hailuo_pipeline.catalog.store import Catalog

    with Catalog(workspace / "catalog.duckdb").connect() as conn:
        conn.execute(
            "INSERT INTO requests (request_key, shot_id, take, fingerprint, endpoint, duration_seconds, status, "
            "owner, heartbeat_at, created_at, price_usd, reserved_usd) "
            "VALUES ('other', 's1', 2, ?, ?, 6, 'reserved', 'another-host:7:x', now()::TIMESTAMP, now()::TIMESTAMP, "
            "0.19, 0.19)",
            list(rows[0]),
        )
    capsys.readouterr()
    summary = materialize(["s1"])
    out = capsys.readouterr().out
    assert "(reserved) is leased to another-host:7:x until " in out and "(last heard 0 s ago); waiting" in out
    # the other host's submit is recorded ambiguous for a person; this attempt reuses the video it already has
    assert summary.succeeded == ["s1"] and "reusing verified video" in out
    assert query(workspace, "SELECT status FROM requests WHERE request_key = 'other'") == [("ambiguous",)]
    assert emulator.stats()["submissions"] == 1


def test_resubmit_ambiguous_alone_acts_on_every_ambiguous_shot_after_saying_what_it_may_cost(
    workspace, emulator, subprocess_env
):
    write_shots(workspace, [{"shot_id": "s1", "prompt": "p1"}, {"shot_id": "s2", "prompt": "p2"}])
    env = {**subprocess_env, "HAILUO_FAL_SUBMIT_TIMEOUT_SECONDS": "1.5"}
    emulator.configure({"faults": {"hang_submits": 2, "hang_seconds": 30, "history_lag_seconds": 3600}})
    first = hailuo(["materialize"], env, workspace.parent)
    out = first.communicate(timeout=120)[0]
    assert first.returncode == 1 and out.count("    Fix: look for the job on the fal dashboard") == 2
    assert "--resubmit-ambiguous (run config resubmit_ambiguous: true)" in out

    plain = hailuo(["materialize"], env, workspace.parent)
    out = plain.communicate(timeout=120)[0]
    assert "2 shot(s) have a submit that never got fal's answer" in out and "up to $0.38" in out
    assert emulator.stats()["submissions"] == 2

    forced = hailuo(["materialize", "--resubmit-ambiguous"], env, workspace.parent)
    out = forced.communicate(timeout=120)[0]
    assert forced.returncode == 0, out
    assert "resubmitting 2 ambiguous shot(s); each may be a second charge, up to $0.38" in out
    assert "2 of 2 shot(s) delivered" in out and "Stack Trace" not in out
    assert emulator.stats()["submissions"] == 4
