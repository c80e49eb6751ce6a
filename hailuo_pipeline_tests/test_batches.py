"""Many shots per run: each shot its own materialization; a failed shot neither loses nor re-pays others."""

from __future__ import annotations

import asyncio

from dagster import AssetKey, AssetPartitionStatus, AssetRecordsFilter, DagsterInstance

from hailuo_pipeline.defs.headless import materialize
from hailuo_pipeline.defs.partitions import shots_partitions
from hailuo_pipeline.generation.slots import FalSlot
from hailuo_pipeline_tests.helpers import query, reason
from hailuo_pipeline_tests.shots import write_shots


def test_a_failed_shot_fails_the_run_by_name_and_a_rerun_touches_only_it(workspace, emulator):
    write_shots(workspace, [{"shot_id": f"s{i}", "prompt": f"shot {i}"} for i in range(1, 4)])
    emulator.configure(
        {"faults": {"job_errors": [{"error": "flagged", "error_type": "content_policy_violation", "status": 422}]}}
    )
    first = materialize(concurrency=1)  # one at a time: the first shot submitted (s1) gets the error
    assert len(first.run_ids) == 1
    assert first.succeeded == ["s2", "s3"]
    assert list(first.failed) == ["s1"] and "content_policy_violation" in reason(first, "s1")

    instance = DagsterInstance.get()
    run = instance.get_run_by_id(first.run_ids[0])
    assert run.is_failure
    materialized = instance.get_materialized_partitions(AssetKey("hailuo_video"))
    assert materialized == {"s2", "s3"}
    status = instance.get_status_by_partition(AssetKey("hailuo_video"), ["s1", "s2", "s3"], shots_partitions)
    assert status == {
        "s1": AssetPartitionStatus.FAILED,
        "s2": AssetPartitionStatus.MATERIALIZED,
        "s3": AssetPartitionStatus.MATERIALIZED,
    }
    assert instance.get_materialized_partitions(AssetKey("source_image")) == {"s1", "s2", "s3"}
    # the failed partition says why, as an observation of it (Dagster's own failure events are Dagster+ only)
    (said,) = instance.fetch_observations(
        AssetRecordsFilter(asset_key=AssetKey("hailuo_video"), asset_partitions=["s1"]), limit=5
    ).records
    observation = said.asset_observation
    assert observation is not None and observation.description is not None
    assert observation.description.startswith("not made: ") and "content_policy_violation" in observation.description
    assert observation.metadata["fix"].value == reason(first, "s1").split("Fix: ")[-1]
    assert observation.metadata["run"].value == first.run_ids[0]

    second = materialize()  # fal refused s1's inputs: a plain rerun says so and pays nothing
    assert second.requested == [] and emulator.stats()["submissions"] == 3
    assert any("refused by fal for these same inputs: s1" in note for note in second.notes)

    third = materialize(retry_refused=True)  # the user insists, for every refused shot
    assert third.requested == ["s1"] and third.succeeded == ["s1"]
    assert emulator.stats()["submissions"] == 4
    assert query(workspace, "SELECT shot_id, count(*) FROM requests GROUP BY 1 ORDER BY 1") == [
        ("s1", 2),
        ("s2", 1),
        ("s3", 1),
    ]
    assert instance.get_materialized_partitions(AssetKey("hailuo_video")) == {"s1", "s2", "s3"}


def test_a_shots_place_at_fal_is_given_back_when_fal_reports_it_finished(workspace, emulator):
    """With one place and a slow result endpoint, the next shot is submitted while the first one's result is
    still being answered: the place is fal's, and fal freed it when it reported the job finished."""
    write_shots(workspace, [{"shot_id": f"s{i}", "prompt": f"shot {i}"} for i in range(1, 3)])
    emulator.configure({"faults": {"result_delay_seconds": 2.0}})
    summary = materialize(concurrency=1)
    assert summary.succeeded == ["s1", "s2"]
    first, second = sorted(emulator.jobs.values(), key=lambda job: job.created)
    assert first.result_answered_at is not None and second.created < first.result_answered_at
    assert emulator.stats()["peak_at_fal"] == 1


def test_a_shots_place_at_fal_is_given_back_before_its_download(workspace, emulator):
    """`concurrency` bounds requests at fal, not downloads: with one place and slow downloads, the next
    shot is submitted while the first one's video is still arriving, and fal never holds two jobs."""
    write_shots(workspace, [{"shot_id": f"s{i}", "prompt": f"shot {i}"} for i in range(1, 4)])
    emulator.configure({"faults": {"download_bytes_per_second": 64 * 1024}})
    summary = materialize(concurrency=1)
    assert summary.succeeded == ["s1", "s2", "s3"]
    jobs = sorted(emulator.jobs.values(), key=lambda job: job.created)
    assert len(jobs) == 3 and all(job.downloaded_at is not None for job in jobs)
    assert jobs[1].created < jobs[0].downloaded_at and jobs[2].created < jobs[1].downloaded_at
    assert emulator.stats()["peak_at_fal"] == 1


async def _settle() -> None:
    """Let every task that can run, run until it waits (the loop is single-threaded: no timing involved)."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_shots_get_ready_while_the_places_at_fal_are_taken():
    """With C places taken, C more shots are let in ahead (to be validated, their orphans taken over) and no
    more; a place given back goes to a ready shot at once, and lets the next shot in ahead."""

    async def scenario() -> None:
        gate, ahead = asyncio.Semaphore(2), asyncio.Semaphore(2)
        slots = [FalSlot(gate, ahead) for _ in range(6)]
        entered: list[int] = []

        async def enter(i: int) -> None:
            await slots[i].__aenter__()
            entered.append(i)

        for i in (0, 1):
            await enter(i)
            await slots[i].take()
        waiting = [asyncio.create_task(enter(i)) for i in range(2, 6)]
        await _settle()
        assert entered == [0, 1, 2, 3]  # two ready ahead, two more kept out
        taking = asyncio.create_task(slots[2].take())
        await _settle()
        assert not taking.done()  # both places are held
        await slots[0].__aexit__(None, None, None)  # fal finished shot 0: its place goes to ready shot 2
        await _settle()
        assert taking.done() and entered == [0, 1, 2, 3, 4]  # ...which left room ahead for shot 4
        slots[1].release()  # given back before its download; leaving later gives nothing back twice
        await slots[1].__aexit__(None, None, None)
        await _settle()
        assert entered == [0, 1, 2, 3, 4] and not gate.locked()  # a place is free: shot 3 has not asked yet
        for task in waiting:
            task.cancel()

    asyncio.run(scenario())
