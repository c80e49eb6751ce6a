"""The manifest sensor registers new shots, requests their runs, and ignores an unchanged manifest."""

from __future__ import annotations

from dagster import DagsterInstance, SensorResult, SkipReason

from hailuo_pipeline.defs.automation.sensors import shots_manifest_sensor
from hailuo_pipeline_tests.helpers import tick_sensor
from hailuo_pipeline_tests.shots import make_image, write_shots


def evaluate(instance: DagsterInstance, cursor: str | None):
    return tick_sensor(shots_manifest_sensor, instance, cursor)


def test_registers_new_shots_and_skips_an_unchanged_manifest(workspace):
    write_shots(workspace, [{"shot_id": "a", "prompt": "p"}, {"shot_id": "b", "prompt": "q", "duration": "10"}])
    instance = DagsterInstance.get()
    result = evaluate(instance, None)
    assert isinstance(result, SensorResult)
    (add,) = result.dynamic_partitions_requests
    assert list(add.partition_keys) == ["a", "b"]
    assert len(result.run_requests) == 1
    assert result.run_requests[0].job_name == "generate_shots"  # named in the UI, not __ASSET_JOB
    instance.add_dynamic_partitions("shots", list(add.partition_keys))

    again = evaluate(instance, result.cursor)
    assert isinstance(again, SkipReason) and "unchanged" in again.skip_message


def test_only_new_rows_are_requested_and_edits_reversion_inputs(workspace):
    write_shots(workspace, [{"shot_id": "a", "prompt": "p"}])
    instance = DagsterInstance.get()
    first = evaluate(instance, None)
    instance.add_dynamic_partitions("shots", ["a"])
    make_image(workspace / "images" / "b.jpg")
    write_shots(
        workspace,
        [
            {"shot_id": "a", "prompt": "an edited prompt", "image": "images/a.jpg"},
            {"shot_id": "b", "prompt": "q", "image": "images/b.jpg"},
        ],
    )
    second = evaluate(instance, first.cursor)
    assert list(second.dynamic_partitions_requests[0].partition_keys) == ["b"]
    by_job = {r.job_name: r.partition_key for r in second.run_requests}
    assert by_job == {"generate_shots": "b", "shot_inputs": "a"}  # the edited shot is re-validated, not repaid


def test_a_doubtful_shot_gets_a_run_of_its_own(workspace):
    write_shots(
        workspace,
        [
            {"shot_id": "good1", "prompt": "p"},
            {"shot_id": "good2", "prompt": "p"},
            {"shot_id": "bad", "prompt": "p", "duration": "7"},
            {"shot_id": "good3", "prompt": "p"},
        ],
    )
    result = evaluate(DagsterInstance.get(), None)
    keys = sorted(
        (
            r.partition_key
            or f"{r.tags['dagster/asset_partition_range_start']}..{r.tags['dagster/asset_partition_range_end']}"
        )
        for r in result.run_requests
    )
    assert keys == ["bad", "good1..good2", "good3"]
