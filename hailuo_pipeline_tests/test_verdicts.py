"""Verdicts on delivered takes (`hailuo verdict`), and remaking what was rejected (`--retake-rejected`): exactly one
new take of each shot whose latest take was rejected, through Dagster and the real fal_client; nothing more until
another take is rejected."""

from __future__ import annotations

from decimal import Decimal

from hailuo_pipeline.cli import main
from hailuo_pipeline.defs.headless import materialize
from hailuo_pipeline_tests.helpers import query
from hailuo_pipeline_tests.shots import write_shots


def takes(workspace) -> list[tuple]:
    return query(workspace, "SELECT shot_id, take, verdict FROM requests WHERE status = 'succeeded' ORDER BY 1, 2")


def test_rejecting_a_take_and_retaking_pays_exactly_one_new_take(workspace, emulator, capsys):
    write_shots(workspace, [{"shot_id": s, "prompt": f"p {s}"} for s in ("a", "b", "c")])
    assert len(materialize().succeeded) == 3
    assert main(["verdict", "a", "reject", "--note", "the <b>horizon</b> tilts"]) == 0
    assert main(["verdict", "b", "approve"]) == 0
    assert "a take 1 (fal request" in capsys.readouterr().out
    assert materialize().requested == []  # a plain run remakes nothing
    retake = materialize(retake_rejected=True)
    assert retake.requested == ["a"] and retake.succeeded == ["a"]
    assert emulator.stats()["submissions"] == 4
    assert takes(workspace) == [("a", 1, "reject"), ("a", 2, None), ("b", 1, "approve"), ("c", 1, None)]
    assert materialize(retake_rejected=True).requested == []  # nothing more until a new take is rejected
    assert emulator.stats()["submissions"] == 4
    assert main(["verdict", "a", "reject"]) == 0  # take 2, the latest
    assert materialize(["a", "c"], retake_rejected=True).succeeded == ["a", "c"]  # --shot narrows: c is reused
    assert emulator.stats()["submissions"] == 5
    capsys.readouterr()
    assert main(["report"]) == 0
    assert "1 take(s) approved, 2 rejected ($0.38 spent on rejected takes)" in capsys.readouterr().out
    (note,) = query(workspace, "SELECT note FROM verdicts WHERE take = 1 AND shot_id = 'a'")
    assert note == ("the <b>horizon</b> tilts",)


def test_a_verdict_on_a_take_that_is_not_there_is_refused_by_name(workspace, emulator, capsys):
    write_shots(workspace, [{"shot_id": "a", "prompt": "p"}])
    assert materialize().succeeded == ["a"]
    assert main(["verdict", "a", "reject", "--take", "3"]) == 2
    assert "shot 'a' has no delivered take 3 (its takes: [1])" in capsys.readouterr().err
    assert main(["verdict", "nobody", "approve"]) == 2
    assert "shot 'nobody' has no delivered take to judge" in capsys.readouterr().err
    assert query(workspace, "SELECT count(*) FROM verdicts") == [(0,)]
    assert query(workspace, "SELECT cost_usd FROM requests") == [(Decimal("0.1900"),)]


def test_an_approval_materializes_approved_video_within_a_tick_and_a_withdrawal_adds_one(workspace, emulator):
    from dagster import AssetKey, DagsterInstance

    from hailuo_pipeline.defs.assets.approved import approved_videos_sensor
    from hailuo_pipeline.defs.definitions import build_definitions
    from hailuo_pipeline_tests.helpers import tick_sensor

    write_shots(workspace, [{"shot_id": "a", "prompt": "p a"}, {"shot_id": "b", "prompt": "p b"}])
    assert len(materialize().succeeded) == 2
    with DagsterInstance.get() as instance:
        assert "no new verdict" in str(tick_sensor(approved_videos_sensor, instance))  # no verdict yet
        assert main(["verdict", "a", "approve"]) == 0
        assert main(["verdict", "b", "reject"]) == 0  # a rejection changes no approved take
        tick = tick_sensor(approved_videos_sensor, instance)
        assert [run.partition_key for run in tick.run_requests] == ["a"]
        job = build_definitions().resolve_job_def("approved_video_job")

        def materialize_approved(shot: str) -> dict:
            assert job.execute_in_process(instance=instance, partition_key=shot).success
            event = instance.get_latest_materialization_event(AssetKey("approved_video"))
            return {k: v.value for k, v in event.asset_materialization.metadata.items()}

        approved = materialize_approved("a")
        ((request_id,),) = query(workspace, "SELECT request_id FROM requests WHERE shot_id = 'a'")
        assert approved["approved"] is True and approved["take"] == 1 and approved["cost_usd"] == "$0.19"
        assert approved["request_id"] == request_id and approved["watch"].startswith("http://127.0.0.1:3001/takes/")
        assert main(["verdict", "a", "withdraw"]) == 0
        again = tick_sensor(approved_videos_sensor, instance, cursor=tick.cursor)
        assert [run.partition_key for run in again.run_requests] == ["a"]
        withdrawn = materialize_approved("a")
        assert withdrawn["approved"] is False and "no approved take" in withdrawn["said"]
        history = instance.fetch_materializations(AssetKey("approved_video"), limit=10).records
        assert len(history) == 2  # the approval is kept beside its withdrawal
    assert emulator.stats()["submissions"] == 2  # nothing paid
