"""The manifest sensor registers and validates new shots for free; the generation sensor, off by default,
is the one switch that spends."""

from __future__ import annotations

from dagster import DagsterInstance, DefaultSensorStatus, SensorResult, SkipReason

from hailuo_pipeline.defs.automation.sensors import shots_generation_sensor, shots_manifest_sensor
from hailuo_pipeline.defs.headless import materialize
from hailuo_pipeline_tests.helpers import tick_sensor
from hailuo_pipeline_tests.shots import make_image, write_shots


def evaluate(instance: DagsterInstance, cursor: str | None):
    return tick_sensor(shots_manifest_sensor, instance, cursor)


def ranges(requests) -> list[str]:
    return sorted(
        r.partition_key
        or f"{r.tags['dagster/asset_partition_range_start']}..{r.tags['dagster/asset_partition_range_end']}"
        for r in requests
    )


def test_free_work_runs_by_default_and_spending_is_one_switch_that_is_off():
    assert shots_manifest_sensor.default_status is DefaultSensorStatus.RUNNING
    assert shots_generation_sensor.default_status is DefaultSensorStatus.STOPPED
    assert "SPENDS" in (shots_generation_sensor.description or "")
    assert "spends nothing" in (shots_manifest_sensor.description or "")


def test_registers_new_shots_validates_them_and_skips_an_unchanged_manifest(workspace):
    write_shots(workspace, [{"shot_id": "a", "prompt": "p"}, {"shot_id": "b", "prompt": "q", "duration": "10"}])
    instance = DagsterInstance.get()
    result = evaluate(instance, None)
    assert isinstance(result, SensorResult)
    (add,) = result.dynamic_partitions_requests
    assert list(add.partition_keys) == ["a", "b"]
    assert [r.job_name for r in result.run_requests] == ["shot_inputs"]  # validation only: free
    instance.add_dynamic_partitions("shots", list(add.partition_keys))

    again = evaluate(instance, result.cursor)
    assert isinstance(again, SkipReason) and "unchanged" in again.skip_message


def test_new_and_edited_rows_are_validated_again_never_paid_for(workspace):
    write_shots(workspace, [{"shot_id": "a", "prompt": "p"}, {"shot_id": "c", "prompt": "p"}])
    instance = DagsterInstance.get()
    first = evaluate(instance, None)
    instance.add_dynamic_partitions("shots", ["a", "c"])
    make_image(workspace / "images" / "b.jpg")
    write_shots(
        workspace,
        [
            {"shot_id": "a", "prompt": "an edited prompt", "image": "images/a.jpg"},
            {"shot_id": "c", "prompt": "p", "image": "images/c.jpg"},
            {"shot_id": "b", "prompt": "q", "image": "images/b.jpg"},
        ],
    )
    second = evaluate(instance, first.cursor)
    assert list(second.dynamic_partitions_requests[0].partition_keys) == ["b"]
    assert {r.job_name for r in second.run_requests} == {"shot_inputs"}
    (run,) = second.run_requests
    assert ranges([run]) == ["a..b"]  # the order is a, c, b: one run spans it...
    assert run.run_config["ops"]["hailuo_shots"]["config"]["only"] == ["a", "b"]  # ...and leaves c alone


def test_the_generation_sensor_requests_pending_shots_once_each_a_doubtful_one_alone(workspace, emulator):
    write_shots(
        workspace,
        [
            {"shot_id": "good1", "prompt": "p"},
            {"shot_id": "good2", "prompt": "p"},
            {"shot_id": "bad", "prompt": "p", "duration": "7"},
            {"shot_id": "good3", "prompt": "p"},
        ],
    )
    instance = DagsterInstance.get()
    instance.add_dynamic_partitions("shots", ["good1", "good2", "bad", "good3"])
    first = tick_sensor(shots_generation_sensor, instance)
    assert {r.job_name for r in first} == {"generate_shots"}
    assert ranges(first) == ["bad", "good1..good3"]  # the good shots in one run, spanning the bad one...
    (batch,) = [r for r in first if r.partition_key is None]
    assert batch.run_config["ops"]["hailuo_shots"]["config"]["only"] == ["good1", "good2", "good3"]  # ...not its
    assert [r.run_key for r in tick_sensor(shots_generation_sensor, instance)] == [r.run_key for r in first]

    materialize(["good1"])
    later = tick_sensor(shots_generation_sensor, instance)
    assert ranges(later) == ["bad", "good2..good3"]  # a delivered shot is not requested again


def test_a_partition_added_in_the_ui_without_a_row_is_removed_unless_it_was_paid_for(workspace, emulator):
    """The manifest decides which shots exist. A partition with no row that was never requested goes (the
    sensor looks again when the number of partitions changes); one with requests in the ledger stays."""
    write_shots(workspace, [{"shot_id": "a", "prompt": "p"}, {"shot_id": "paid", "prompt": "q"}])
    materialize(["a", "paid"])
    write_shots(workspace, [{"shot_id": "a", "prompt": "p"}])  # the row of a paid shot is deleted
    instance = DagsterInstance.get()
    settled = evaluate(instance, None)
    instance.add_dynamic_partitions("shots", ["typo-in-the-ui"])  # "Add a partition" in the UI

    result = evaluate(instance, settled.cursor)
    assert isinstance(result, SensorResult)  # not "unchanged": a partition appeared
    (delete,) = result.dynamic_partitions_requests
    assert list(delete.partition_keys) == ["typo-in-the-ui"]  # "paid" is kept: its money stays visible
    instance.delete_dynamic_partition("shots", "typo-in-the-ui")
    assert isinstance(evaluate(instance, result.cursor), SkipReason)


def test_launching_a_stray_shot_names_the_fix(workspace, emulator):
    write_shots(workspace, [{"shot_id": "a", "prompt": "p"}])
    materialize()
    DagsterInstance.get().add_dynamic_partitions("shots", ["ghost"])
    summary = materialize(["ghost"])
    failure = summary.failed["ghost"]
    assert "has no row in" in failure.cause and "added in the UI" in failure.cause
    assert "hailuo sync --prune" in failure.fix
    assert emulator.stats()["submissions"] == 1  # only a's


def test_stray_partitions_read_the_ledger_only_when_there_are_strays(tmp_path):
    from hailuo_pipeline.generation.planning import stray_partitions
    from hailuo_pipeline.shots.manifest import read_manifest

    manifest = read_manifest(write_shots(tmp_path, [{"shot_id": "a", "prompt": "p"}]))

    def unread() -> list[str]:
        raise AssertionError("the ledger was read although every partition has a row")

    assert stray_partitions(["a"], manifest, unread) == ([], [])
    assert stray_partitions(["a", "x", "y"], manifest, lambda: ["y"]) == (["x"], ["y"])
