"""Never pay twice, never lose a paid video: each failure injected at the emulator, each outcome
checked against the emulator's submission counts and the catalog."""

from __future__ import annotations

import os
import re
import signal
from decimal import Decimal

import pytest
from dagster import DagsterInstance, SkipReason

from hailuo_pipeline.defs.automation.sensors import orphaned_requests_sensor
from hailuo_pipeline.defs.headless import materialize, sync
from hailuo_pipeline.settings import Settings
from hailuo_pipeline_tests.helpers import hailuo, query, reason, tick_sensor, wait_for
from hailuo_pipeline_tests.shots import write_shots

ONE = [{"shot_id": "s1", "prompt": "the tide comes in"}]


def requests(data, columns="shot_id, status, cost_usd"):
    return query(data, f"SELECT {columns} FROM requests ORDER BY created_at")


def test_429_and_ingress_storm_on_submit_is_replayed_to_one_job(workspace, emulator):
    write_shots(workspace, ONE)  # answered refusals create no job, so fal_client's replays stay allowed
    emulator.configure({"faults": {"http": {"submit": [429, 503, 429, 502]}}})
    assert materialize().succeeded == ["s1"]
    stats = emulator.stats()
    assert stats["submissions"] == 1 and stats["calls"]["submit"] == 5
    assert requests(workspace) == [("s1", "succeeded", Decimal("0.19"))]


def test_5xx_on_status_polls(workspace, emulator):
    write_shots(workspace, ONE)
    emulator.configure({"faults": {"http": {"status": [503, 503, 500, 502, 500]}}})
    assert materialize().succeeded == ["s1"]
    assert emulator.stats()["submissions"] == 1
    assert requests(workspace) == [("s1", "succeeded", Decimal("0.19"))]


def test_transient_completed_with_error_is_retried_by_dagster(workspace, emulator):
    write_shots(workspace, ONE)
    emulator.configure(
        {
            "faults": {
                "job_errors": [{"error": "Runner disconnected", "error_type": "runner_disconnected", "status": 503}]
            }
        }
    )
    assert materialize().succeeded == ["s1"]
    assert emulator.stats()["submissions"] == 2
    assert requests(workspace, "status, cost_usd, error_type") == [
        ("failed", Decimal("0"), "runner_disconnected"),
        ("succeeded", Decimal("0.19"), None),
    ]


def test_content_policy_failure_is_not_retried(workspace, emulator):
    write_shots(workspace, ONE)
    detail = [{"loc": ["body", "prompt"], "msg": "Prompt was flagged", "type": "content_policy_violation"}]
    emulator.configure(
        {
            "faults": {
                "job_errors": [
                    {
                        "error": "Content policy violation",
                        "error_type": "content_policy_violation",
                        "status": 422,
                        "body": {"detail": detail},
                    },
                ]
            }
        }
    )
    summary = materialize()
    assert summary.succeeded == []
    assert "content_policy_violation" in reason(summary, "s1")
    assert emulator.stats()["submissions"] == 1
    assert requests(workspace, "status, cost_usd, possibly_charged, error_type") == [
        ("failed", Decimal("0"), True, "content_policy_violation")
    ]


def test_truncated_download_is_fetched_again_not_resubmitted(workspace, emulator):
    write_shots(workspace, ONE)
    emulator.configure({"faults": {"truncate_downloads": 1}})
    assert materialize().succeeded == ["s1"]
    stats = emulator.stats()
    assert stats["submissions"] == 1 and stats["calls"]["download"] == 2
    ((size, path),) = query(workspace, "SELECT bytes, path FROM videos")
    assert os.path.getsize(path) == size


def test_budget_exhausted_mid_batch(workspace, emulator, monkeypatch):
    monkeypatch.setenv("HAILUO_TOTAL_BUDGET_USD", "0.40")
    write_shots(workspace, [{"shot_id": f"s{i}", "prompt": f"shot {i}"} for i in range(1, 4)])
    summary = materialize()
    assert len(summary.succeeded) == 2
    (refused,) = summary.failed
    assert refused not in summary.succeeded
    assert "total budget $0.40 would be exceeded" in reason(summary, refused)
    assert "HAILUO_TOTAL_BUDGET_USD" in reason(summary, refused)  # the knob a CLI user has
    assert emulator.stats()["submissions"] == 2
    assert query(workspace, "SELECT sum(cost_usd), sum(reserved_usd) FROM requests") == [
        (Decimal("0.38"), Decimal("0"))
    ]


def test_daily_budget_refuses_before_submitting(workspace, emulator, monkeypatch):
    monkeypatch.setenv("HAILUO_DAILY_BUDGET_USD", "0.30")
    write_shots(workspace, [{"shot_id": "long", "prompt": "p", "duration": "10"}])
    summary = materialize()
    assert "daily budget $0.30 would be exceeded" in reason(summary, "long")
    assert emulator.stats()["submissions"] == 0
    assert query(workspace, "SELECT count(*) FROM requests") == [(0,)]


def test_unanswered_submit_is_ambiguous_and_resubmitted_only_on_request(workspace, emulator, monkeypatch):
    monkeypatch.setenv("HAILUO_FAL_SUBMIT_TIMEOUT_SECONDS", "1.5")
    write_shots(workspace, ONE)
    # fal's request history does not show the job yet: the submit stays ambiguous until it is settled
    emulator.configure({"faults": {"hang_submits": 1, "hang_seconds": 30, "history_lag_seconds": 3600}})
    first = materialize()
    assert "resubmit_ambiguous" in reason(first, "s1")
    assert emulator.stats()["submissions"] == 1  # fal did create (and would bill) a job
    assert requests(workspace, "status, possible_double_charge, reserved_usd") == [("ambiguous", True, Decimal("0.19"))]
    second = materialize(["s1"])
    assert "resubmit_ambiguous" in reason(second, "s1")
    assert emulator.stats()["submissions"] == 1
    third = materialize(["s1"], resubmit_ambiguous=True)
    assert third.succeeded == ["s1"]
    assert emulator.stats()["submissions"] == 2
    assert requests(workspace, "status, possible_double_charge") == [("ambiguous", True), ("succeeded", True)]


@pytest.mark.parametrize("after", ["hailuo materialize", "orphan sensor"])
def test_a_submitter_killed_before_fals_answer_is_recorded_ambiguous_by_the_next_command(
    workspace, emulator, subprocess_env, after
):
    """A kill between fal creating the job and the ledger recording it leaves a reservation of a dead
    process. What runs next (the next command, or the orphan sensor's minute tick) records it ambiguous, as
    the plan calls it, so that `hailuo report` agrees; nothing is submitted again."""
    write_shots(workspace, ONE)
    emulator.configure(
        {"faults": {"hang_submits": 1, "hang_seconds": 60, "history_lag_seconds": 3600}}
    )  # not yet listed
    first = hailuo(["materialize"], subprocess_env, workspace.parent)
    wait_for(lambda: emulator.stats()["submissions"] == 1, what="fal creating the job")
    first.kill()
    first.wait(timeout=30)
    assert requests(workspace, "status") == [("reserved",)]
    if after == "orphan sensor":
        with DagsterInstance.get() as instance:
            assert isinstance(tick_sensor(orphaned_requests_sensor, instance), SkipReason)  # nothing to resume
    else:
        out = hailuo(["materialize"], subprocess_env, workspace.parent).communicate(timeout=120)[0]
        assert "1 shot(s) have a submit that never got fal's answer" in out, out
    assert requests(workspace, "status, possible_double_charge, reserved_usd") == [("ambiguous", True, Decimal("0.19"))]
    report = hailuo(["report"], subprocess_env, workspace.parent).communicate(timeout=60)[0]
    assert "ambiguous 1" in report and "reserved $0.19" in report, report
    assert emulator.stats()["submissions"] == 1


def test_submit_whose_answer_is_cut_off_is_not_replayed(workspace, emulator):
    write_shots(workspace, ONE)
    emulator.configure({"faults": {"cut_submit_answers": 1}})
    summary = materialize()
    assert "resubmit_ambiguous" in reason(summary, "s1")
    # said in words: once "(SubmitReplayRefused('... (ReadError(BrokenResourceError()))')"
    said = reason(summary, "s1")
    assert "did not come back (the server broke off its answer)" in said, said
    assert not re.search(r"\w+(Error|Refused)\(", said), said
    assert emulator.stats()["submissions"] == 1  # fal_client's own replay would have made a second paid job
    assert requests(workspace, "status, possible_double_charge, reserved_usd") == [("ambiguous", True, Decimal("0.19"))]


def test_killed_mid_poll_then_run_again_pays_once(workspace, emulator, subprocess_env):
    write_shots(workspace, ONE)
    emulator.configure({"latency": {"queue_seconds": 4.0, "inference_seconds": 0.5}})
    child = hailuo(["materialize"], subprocess_env, workspace.parent)
    wait_for(lambda: emulator.stats()["calls"].get("status", 0) >= 1, what="the first status poll")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert requests(workspace, "status") in ([("submitted",)], [("in_queue",)])

    assert materialize(["s1"]).succeeded == ["s1"]
    assert emulator.stats()["submissions"] == 1
    assert requests(workspace) == [("s1", "succeeded", Decimal("0.19"))]
    assert query(workspace, "SELECT count(*) FROM videos") == [(1,)]


def test_same_shot_in_two_runs_started_together_submits_once(workspace, emulator, subprocess_env):
    write_shots(workspace, ONE)
    sync(DagsterInstance.get(), Settings.from_env())
    emulator.configure({"latency": {"queue_seconds": 1.0, "inference_seconds": 0.5}})
    children = [hailuo(["materialize", "--shot", "s1"], subprocess_env, workspace.parent) for _ in range(2)]
    outputs = [child.communicate(timeout=180)[0] for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    assert emulator.stats()["submissions"] == 1
    assert requests(workspace) == [("s1", "succeeded", Decimal("0.19"))]
    assert query(workspace, "SELECT count(*) FROM videos") == [(1,)]


SIXTEEN = [{"shot_id": f"s{n:02d}", "prompt": "the tide comes in"} for n in range(16)]


@pytest.mark.parametrize(
    ("stop", "attempt"), [(signal.SIGTERM, 1), (signal.SIGTERM, 2), (signal.SIGINT, 1)], ids=["kill", "kill", "ctrl-c"]
)
def test_a_stopped_run_cancels_every_request_at_fal(workspace, emulator, subprocess_env, stop, attempt):
    """The signal lands while the event loop is busy with 16 requests polled every 10 ms: raised from a
    signal handler, it was taken for a broken connection inside asyncio about one time in five and the run
    went on paying. Each attempt is a new chance for it to land somewhere else."""
    write_shots(workspace, SIXTEEN)
    emulator.configure({"latency": {"queue_seconds": 60.0}})
    env = {**subprocess_env, "HAILUO_FAL_POLL_INTERVAL_SECONDS": "0.01"}
    child = hailuo(["materialize"], env, workspace.parent)
    wait_for(lambda: emulator.stats()["submissions"] == len(SIXTEEN), what="every shot's request")
    polled = emulator.stats()["calls"].get("status", 0)
    wait_for(lambda: emulator.stats()["calls"].get("status", 0) >= polled + 100, what="the requests being polled")
    child.send_signal(stop)
    output = child.communicate(timeout=60)[0]
    assert child.returncode != 0, output
    cancelled = requests(workspace, "request_id, status, cost_usd")
    assert sorted(emulator.stats()["cancelled"]) == sorted(request_id for request_id, _, _ in cancelled), output
    assert {(status, cost) for _, status, cost in cancelled} == {("cancelled", Decimal("0"))}
    assert len(cancelled) == len(SIXTEEN)


@pytest.mark.parametrize("force", [False])
def test_rerun_after_success_makes_no_request(workspace, emulator, force):
    write_shots(workspace, ONE)
    materialize()
    materialize(["s1"], new_take=force)
    assert emulator.stats()["submissions"] == 1


def test_terminated_after_fal_completed_still_delivers_the_paid_video(workspace, emulator, subprocess_env):
    import time as clock

    write_shots(workspace, ONE)
    emulator.configure({"latency": {"queue_seconds": 0.3, "inference_seconds": 0.3}})
    env = {**subprocess_env, "HAILUO_FAL_POLL_INTERVAL_SECONDS": "20"}  # asleep between polls when terminated
    child = hailuo(["materialize"], env, workspace.parent)
    wait_for(lambda: emulator.stats()["calls"].get("status", 0) >= 1, what="the first status poll")
    wait_for(
        lambda: [j for j in emulator.jobs.values() if j.phase(clock.monotonic()) == "COMPLETED"],
        what="the job to complete at fal",
    )
    child.send_signal(signal.SIGTERM)
    output = child.communicate(timeout=60)[0]
    assert emulator.stats()["cancelled"] == [], output
    assert requests(workspace) == [("s1", "succeeded", Decimal("0.19"))], output
    ((path,),) = query(workspace, "SELECT path FROM videos")
    assert os.path.exists(path)
    assert emulator.stats()["submissions"] == 1


def test_partial_files_of_dead_processes_are_removed(tmp_path):
    from hailuo_pipeline.video.store import remove_abandoned_partials

    destination = tmp_path / "shot" / "take001-x.mp4"
    destination.parent.mkdir()
    dead = destination.with_name(f".{destination.name}.999999999.partial")
    alive = destination.with_name(f".{destination.name}.{os.getpid()}.partial")
    dead.write_bytes(b"half")
    alive.write_bytes(b"half")
    remove_abandoned_partials(destination.parent)
    assert not dead.exists() and alive.exists()
