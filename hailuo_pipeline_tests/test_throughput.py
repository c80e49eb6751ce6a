"""Batches on the paths users take: the total limit of requests at fal over runs and processes, one run per
batch by default, and processes started together on one Dagster instance ending cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dagster import AssetKey, DagsterEventType, DagsterInstance

from hailuo_pipeline.defs.headless import materialize
from hailuo_pipeline.generation.planning import ShotRun, shot_runs, shots_of_run
from hailuo_pipeline_tests.helpers import REPO_ROOT, hailuo, new_dagster_home, query
from hailuo_pipeline_tests.shots import write_shots


def test_a_batch_is_one_run_whatever_lies_between_its_shots():
    order = [f"s{i}" for i in range(10)]
    wanted = ["s8", "s1", "s4", "s5"]  # not next to each other: s2, s3, s6, s7 are done or not asked for
    assert shot_runs(order, wanted) == [ShotRun("s1", "s8", ("s1", "s4", "s5", "s8"))]
    assert shot_runs(order, wanted, 3) == [ShotRun("s1", "s5", ("s1", "s4", "s5")), ShotRun("s8", "s8", ("s8",))]
    assert shot_runs(order, []) == []
    (run,) = shot_runs(order, wanted)
    assert run.step_config(resume_only=True) == {"resume_only": True, "only": ["s1", "s4", "s5", "s8"]}
    assert ShotRun("s8", "s8", ("s8",)).step_config() == {}


def test_the_shots_a_run_handles_are_read_back_from_its_partition_range_and_only():
    order = [f"s{i}" for i in range(10)]
    (run,) = shot_runs(order, ["s8", "s1", "s4"])
    assert shots_of_run(order, None, run.start, run.end, run.step_config()["only"]) == {"s1", "s4", "s8"}
    assert shots_of_run(order, None, "s2", "s4") == {"s2", "s3", "s4"}  # a UI backfill's range: all of it
    assert shots_of_run(order, "s7", None, None) == {"s7"}
    assert shots_of_run(order, None, "s2", "gone") == set()  # an end since removed: nothing can be read
    assert shots_of_run(order, None, None, None) == set()


def test_a_plain_materialize_is_one_run_spanning_what_it_leaves_alone(workspace, emulator):
    """Pending shots with delivered ones between them: one run, which materializes only the pending ones."""
    write_shots(workspace, [{"shot_id": f"s{i}", "prompt": f"shot {i}"} for i in range(6)])
    assert materialize(["s1", "s3"]).succeeded == ["s1", "s3"]
    summary = materialize()
    assert summary.requested == ["s0", "s2", "s4", "s5"] and summary.succeeded == summary.requested
    (run_id,) = summary.run_ids
    instance = DagsterInstance.get()
    run = instance.get_run_by_id(run_id)
    assert (run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]) == (
        "s0",
        "s5",
    )
    made = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
    videos = {r.event_log_entry.dagster_event.partition for r in made if r.asset_key == AssetKey("hailuo_video")}
    assert videos == {"s0", "s2", "s4", "s5"}  # s1 and s3 were left alone, not re-materialized
    assert emulator.stats()["submissions"] == 6


def _own_home(env: dict[str, str], home: Path) -> dict[str, str]:
    return {**env, "DAGSTER_HOME": str(new_dagster_home(home))}


def test_a_total_limit_holds_across_processes_and_is_used_in_full(workspace, emulator, subprocess_env, tmp_path):
    """Two processes (each its own Dagster instance: machines sharing the ledger), each allowed 16 at fal
    by its run, under HAILUO_MAX_IN_FLIGHT=3: fal never holds more than 3 jobs, and does hold 3."""
    write_shots(workspace, [{"shot_id": f"s{i:02d}", "prompt": f"shot {i}"} for i in range(8)])
    emulator.configure({"latency": {"queue_seconds": 0.3, "inference_seconds": 0.6}})
    env = {**subprocess_env, "HAILUO_MAX_IN_FLIGHT": "3"}
    halves = [[f"s{i:02d}" for i in range(0, 4)], [f"s{i:02d}" for i in range(4, 8)]]
    children = [
        hailuo(
            ["materialize", *[arg for shot in half for arg in ("--shot", shot)]],
            _own_home(env, tmp_path / f"home{n}"),
            tmp_path,
        )
        for n, half in enumerate(halves)
    ]
    outputs = [child.communicate(timeout=240)[0] for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    stats = emulator.stats()
    assert stats["submissions"] == 8
    assert stats["peak_at_fal"] == 3
    assert query(workspace, "SELECT count(*) FROM videos") == [(8,)]


# Fresh instances, each with two commands started together. Without the instance lock, 1 of 12 such starts
# here failed with `UNIQUE constraint failed: alembic_version.version_num` (Dagster creating its tables twice).
# The first starts run whole batches; the rest `hailuo sync`, which opens the instance the same way, quicker.
MATERIALIZE_STARTS, SYNC_STARTS = 1, 3


def test_processes_started_together_on_one_instance_end_cleanly(workspace, emulator, subprocess_env, tmp_path):
    """Two `hailuo` commands on one default (SQLite) Dagster instance at the same moment, on a fresh instance
    each time: both exit 0 without a traceback, and the shots are paid for once in all."""
    write_shots(workspace, [{"shot_id": f"s{i}", "prompt": f"shot {i}"} for i in range(3)])
    for start in range(MATERIALIZE_STARTS + SYNC_STARTS):
        env = _own_home(subprocess_env, tmp_path / f"home{start}")
        command = ["materialize"] if start < MATERIALIZE_STARTS else ["sync"]
        pair = [hailuo(command, env, tmp_path) for _ in range(2)]
        outputs = [child.communicate(timeout=240)[0] for child in pair]
        for child, output in zip(pair, outputs, strict=True):
            assert child.returncode == 0 and "Traceback" not in output, output[-3000:]
    assert emulator.stats()["submissions"] == 3
    assert query(workspace, "SELECT count(*) FROM videos") == [(3,)]


CODE_SERVER = """
import sys
from dagster import DagsterInstance
from hailuo_pipeline.defs.automation.sensors import orphaned_requests_sensor, shots_manifest_sensor
from hailuo_pipeline.defs.definitions import build_definitions
from hailuo_pipeline_tests.helpers import tick_sensor

build_definitions().get_repository_def().get_all_jobs()
instance = DagsterInstance.get()
registered = tick_sensor(shots_manifest_sensor, instance).dynamic_partitions_requests[0].partition_keys
tick_sensor(orphaned_requests_sensor, instance)
print(sorted(registered), sorted(name for name in ("pandas", "av") if name in sys.modules))
"""


def test_the_code_server_and_the_runs_that_make_videos_do_without_pandas(workspace, emulator, subprocess_env, tmp_path):
    """Memory of the `dagster dev` tree (issue 14): the code server loads every definition and ticks the
    sensors without pandas (44 MiB a process) or PyAV; `hailuo materialize`, which runs the batch in its
    own process as a launched run does, loads PyAV for the videos, and still not pandas."""
    write_shots(workspace, [{"shot_id": "a", "prompt": "p"}, {"shot_id": "b", "prompt": "q"}])
    env = {**subprocess_env, "PYTHONPATH": str(REPO_ROOT)}
    code_server = subprocess.run(
        [sys.executable, "-c", CODE_SERVER], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert code_server.returncode == 0, code_server.stderr
    assert code_server.stdout.split("\n")[-2] == "['a', 'b'] []"
    assert query(workspace, "SELECT shot_id, prompt FROM shots ORDER BY shot_id") == [("a", "p"), ("b", "q")]

    batch = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hailuo_pipeline.cli", "materialize"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert batch.returncode == 0, batch.stdout + batch.stderr
    lines = batch.stderr.splitlines()
    imported = {line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")}
    assert {"av", "hailuo_pipeline.generation.runner"} <= imported
    # -X importtime prints a module before the one that imported it: the lines after pandas name its importers
    assert "pandas" not in imported, "\n".join(lines[[line.endswith("| pandas") for line in lines].index(True) :][:20])
    assert query(workspace, "SELECT count(*) FROM videos") == [(2,)]
