"""The shared mode, proven with processes that share nothing but the servers: a real PostgreSQL (ledger and
Dagster instance), an S3 API on localhost (videos and the catalog snapshot) and the fal emulator. Each worker
has its own data directory, DAGSTER_HOME and temporary directory, as pods with empty disks would."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from hailuo_pipeline.catalog.backends import open_catalog
from hailuo_pipeline.catalog.ledger import RequestLedger
from hailuo_pipeline.catalog.report import build_report
from hailuo_pipeline.catalog.rows import Budget, NewRequest, Status, VideoRow
from hailuo_pipeline.catalog.snapshot import write_snapshot
from hailuo_pipeline.fetch_policy import FetchPolicy
from hailuo_pipeline.model_limits import ENDPOINT_ID
from hailuo_pipeline.settings import Settings
from hailuo_pipeline_tests.helpers import hailuo, new_dagster_home, wait_for
from hailuo_pipeline_tests.shots import write_shots

pytestmark = pytest.mark.slow
SNAPSHOT_TABLES = ("requests", "request_events", "videos", "shots", "prices", "fal_usage")


@pytest.fixture
def shared(postgres_url, s3_server, emulator_server, tmp_path) -> dict[str, str]:
    """What every worker of one test shares: the ledger's schema, a bucket, the emulator."""
    bucket = s3_server.create_bucket(f"b{uuid.uuid4().hex[:12]}")
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("HAILUO_", "DAGSTER_"))},
        **emulator_server.env(),
        **s3_server.env(),
        "FAL_KEY": "test-key",
        "PYTHONUNBUFFERED": "1",
        "HAILUO_FAL_POLL_INTERVAL_SECONDS": "0.3",
        "HAILUO_CATALOG_URL": postgres_url,
        "HAILUO_VIDEO_STORE": f"{bucket}/videos",
    }


def worker_env(shared: dict[str, str], root: Path, shots: list[str], template: Path) -> dict[str, str]:
    """A machine of its own: a data directory holding a copy of the shots it is given, its own DAGSTER_HOME
    and temporary directory."""
    data, home, tmp = root / "data", root / "dagster_home", root / "tmp"
    (data / "images").mkdir(parents=True)
    new_dagster_home(home)
    tmp.mkdir()
    rows = (template / "shots.csv").read_text().splitlines()
    (data / "shots.csv").write_text("\n".join([rows[0], *(r for r in rows[1:] if r.split(",")[0] in shots)]) + "\n")
    for shot in shots:
        shutil.copy(template / "images" / f"{shot}.jpg", data / "images")
    return {**shared, "HAILUO_DATA_DIR": str(data), "DAGSTER_HOME": str(home), "TMPDIR": str(tmp)}


def template_shots(tmp_path: Path, count: int) -> tuple[Path, list[str]]:
    shots = [f"s{i:02d}" for i in range(count)]
    template = tmp_path / "template"
    write_shots(template, [{"shot_id": s, "prompt": f"prompt {s}"} for s in shots])
    return template, shots


def run_all(children: list[subprocess.Popen]) -> list[str]:
    outputs = [child.communicate(timeout=240)[0] for child in children]
    return outputs


def bucket_objects(shared: dict[str, str]) -> list[str]:
    import fsspec

    fs, prefix = fsspec.core.url_to_fs(shared["HAILUO_VIDEO_STORE"])
    return sorted(fs.find(prefix))


def spend_matches_delivered(database) -> None:
    """Catalog spend == the sum of the prices of the delivered videos, to the cent (nothing paid is lost)."""
    totals = database.read(
        "SELECT (SELECT coalesce(sum(cost_usd), 0) FROM requests) AS spend, "
        "(SELECT coalesce(sum(r.price_usd), 0) FROM videos v JOIN requests r ON r.request_key = v.request_key) "
        "AS delivered"
    )
    assert totals["spend"].iloc[0] == totals["delivered"].iloc[0]


def test_overlapping_workers_pay_once_per_shot_and_keep_every_video(shared, emulator, tmp_path):
    template, shots = template_shots(tmp_path, 12)
    emulator.configure({"latency": {"queue_seconds": 0.5, "inference_seconds": 1.0}})
    envs = [
        worker_env(shared, tmp_path / f"w{i}", [shots[(3 * i + j) % 12] for j in range(6)], template) for i in range(4)
    ]
    children = [hailuo(["materialize"], env, tmp_path) for env in envs]
    outputs = run_all(children)
    assert [c.returncode for c in children] == [0] * 4, "\n\n".join(outputs)
    assert all("6 of 6 shot(s) delivered" in out for out in outputs), "\n\n".join(outputs)
    assert emulator.stats()["submissions_by_prompt"] == {f"prompt {s}": 1 for s in shots}

    database = open_catalog(shared["HAILUO_CATALOG_URL"])
    rows = database.read("SELECT shot_id, status, cost_usd FROM requests ORDER BY shot_id")
    assert rows.values.tolist() == [[s, "succeeded", Decimal("0.1900")] for s in shots]
    stored = bucket_objects(shared)
    assert len(stored) == 12 and {Path(o).parent.name for o in stored} == set(shots)
    paths = database.read("SELECT path FROM videos")["path"].tolist()
    assert all(p.startswith("s3://") for p in paths) and sorted(p.removeprefix("s3://") for p in paths) == stored
    spend_matches_delivered(database)
    # each worker refreshed its own snapshot after its batch; one more, now, equals the live ledger
    snapshot = tmp_path / "final.duckdb"
    write_snapshot(database, str(snapshot))
    budget = Budget()
    live = build_report(database, budget).summary
    copied = build_report(open_catalog(snapshot), budget).summary
    assert {k: v for k, v in copied.items() if "orphan" not in k} == {
        k: v for k, v in live.items() if "orphan" not in k
    }
    assert (tmp_path / "w0" / "data" / "catalog.duckdb").is_file()


def test_a_killed_worker_is_resumed_by_another_machine_not_repaid(shared, emulator, tmp_path):
    template, shots = template_shots(tmp_path, 4)
    emulator.configure({"latency": {"queue_seconds": 3.0, "inference_seconds": 0.3}})
    doomed = hailuo(["materialize"], worker_env(shared, tmp_path / "w0", shots, template), tmp_path)
    database = open_catalog(shared["HAILUO_CATALOG_URL"])
    wait_for(lambda: emulator.stats()["submissions"] == 4, timeout=60, what="every submit")
    wait_for(
        lambda: database.read("SELECT count(*) AS n FROM requests WHERE request_id IS NOT NULL")["n"].iloc[0] == 4,
        what="every request id recorded",
    )
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)

    other = hailuo(["materialize"], worker_env(shared, tmp_path / "w1", shots, template), tmp_path)
    (out,) = run_all([other])
    assert other.returncode == 0, out
    assert "resuming 4 paid request(s) left behind by an earlier run" in out
    assert "4 of 4 shot(s) delivered" in out
    assert emulator.stats()["submissions"] == 4  # resumed, not repaid
    rows = database.read("SELECT shot_id, status, cost_usd, attempts FROM requests ORDER BY shot_id")
    assert rows.values.tolist() == [[s, "succeeded", Decimal("0.1900"), 2] for s in shots]
    assert len(bucket_objects(shared)) == 4
    spend_matches_delivered(database)


def test_a_pod_restarted_on_another_host_waits_out_a_dead_pods_leases_and_delivers(shared, emulator, tmp_path):
    """Two workers on hosts with different names (pods): the first is SIGKILLed holding live requests; the
    second, started at once, cannot see that the first is dead. It says whose lease each shot is under, until
    when and when that owner was last heard, waits for the leases to end, takes the requests over and delivers
    every video without a new submit (it used to call the dead pod live and end with "0 of 0 delivered")."""
    template, shots = template_shots(tmp_path, 3)
    emulator.configure({"latency": {"queue_seconds": 2.0, "inference_seconds": 0.3}})
    lease = {"HAILUO_LEASE_SECONDS": "6"}
    pod_a = {**worker_env(shared, tmp_path / "a", shots, template), **lease, "HAILUO_HOST_NAME": "pod-a"}
    doomed = hailuo(["materialize"], pod_a, tmp_path)
    database = open_catalog(shared["HAILUO_CATALOG_URL"])
    wait_for(
        lambda: database.read("SELECT count(*) AS n FROM requests WHERE request_id IS NOT NULL")["n"].iloc[0] == 3,
        timeout=60,
        what="every request id recorded",
    )
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)

    pod_b = {**worker_env(shared, tmp_path / "b", shots, template), **lease, "HAILUO_HOST_NAME": "pod-b"}
    other = hailuo(["materialize"], pod_b, tmp_path)
    (out,) = run_all([other])
    assert other.returncode == 0, out
    assert all(f"{s}: request " in out for s in shots) and out.count("is leased to pod-a:") >= 3, out
    assert "(last heard " in out and re.search(r"takes (it|the request) over", out), out
    assert "resuming fal request" in out, out
    assert "3 of 3 shot(s) delivered" in out, out
    assert emulator.stats()["submissions"] == 3  # taken over, not repaid
    rows = database.read("SELECT shot_id, status, attempts FROM requests ORDER BY shot_id")
    assert rows.values.tolist() == [[s, "succeeded", 2] for s in shots]
    owners = database.read("SELECT DISTINCT detail FROM request_events WHERE detail LIKE 'resumed by %'")
    assert all(d.startswith("resumed by pod-b:") and "was pod-a:" in d for d in owners["detail"]), owners


def test_a_total_budget_holds_across_four_racing_workers(shared, emulator, tmp_path):
    template, shots = template_shots(tmp_path, 12)
    shared = {**shared, "HAILUO_TOTAL_BUDGET_USD": "0.57"}  # three 6 s videos
    envs = [worker_env(shared, tmp_path / f"w{i}", shots[3 * i : 3 * i + 3], template) for i in range(4)]
    children = [hailuo(["materialize"], env, tmp_path) for env in envs]
    outputs = run_all(children)
    text = "\n".join(outputs)
    assert emulator.stats()["submissions"] == 3, text
    database = open_catalog(shared["HAILUO_CATALOG_URL"])
    assert database.read("SELECT sum(cost_usd) AS usd FROM requests")["usd"].iloc[0] == Decimal("0.5700")
    refused = [s for s in shots if f"failed {s}: the total budget" in text]
    assert len(refused) == 9, text
    assert all(
        "HAILUO_TOTAL_BUDGET_USD" in out for out, child in zip(outputs, children, strict=True) if child.returncode
    )
    spend_matches_delivered(database)


def test_dagster_instance_on_postgres_runs_the_cli_and_a_sensor_launched_run(
    shared, emulator, postgres_server, tmp_path, monkeypatch
):
    from dagster import AssetKey, DagsterInstance

    from hailuo_pipeline.defs.automation.sensors import shots_manifest_sensor
    from hailuo_pipeline.defs.definitions import build_definitions
    from hailuo_pipeline_tests.helpers import tick_sensor

    template, shots = template_shots(tmp_path, 3)
    env = worker_env(shared, tmp_path / "w0", shots[:2], template)
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, under which dagster-postgres's NOTIFY fails;
    # the driver is named, as docs/deploy.md says
    dagster_url = postgres_server.create_database(f"dagster_{uuid.uuid4().hex[:8]}").replace(
        "postgresql://", "postgresql+psycopg2://"
    )
    Path(env["DAGSTER_HOME"], "dagster.yaml").write_text(
        f"storage:\n  postgres:\n    postgres_url: {dagster_url}\ntelemetry:\n  enabled: false\n"
    )
    child = hailuo(["materialize"], env, tmp_path)
    (out,) = run_all([child])
    assert child.returncode == 0 and "2 of 2 shot(s) delivered" in out, out

    for name in ("HAILUO_DATA_DIR", "DAGSTER_HOME", "HAILUO_CATALOG_URL", "HAILUO_VIDEO_STORE", *shared):
        if name in env:
            monkeypatch.setenv(name, env[name])
    data = Path(env["HAILUO_DATA_DIR"])
    (data / "shots.csv").write_text((template / "shots.csv").read_text())  # a third row appears
    shutil.copy(template / "images" / "s02.jpg", data / "images")
    with DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert instance.get_materialized_partitions(AssetKey("hailuo_video")) == {"s00", "s01"}
        result = tick_sensor(shots_manifest_sensor, instance)
        (add,) = result.dynamic_partitions_requests  # what the daemon does with the sensor's result
        instance.add_dynamic_partitions("shots", list(add.partition_keys))
        (request,) = result.run_requests
        job = build_definitions().resolve_job_def("generate_shots")
        run = job.execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=request.tags, raise_on_error=False
        )
        assert run.success
        assert instance.get_materialized_partitions(AssetKey("hailuo_video")) == set(shots)
        # the CLI refreshed the snapshot after its batch, recorded as the asset's materialization
        snapshot = instance.get_latest_materialization_event(AssetKey("catalog_snapshot"))
        assert snapshot is not None and snapshot.asset_materialization.metadata["requests"].value == 2
    database = open_catalog(shared["HAILUO_CATALOG_URL"])
    assert database.read("SELECT count(*) AS n FROM videos")["n"].iloc[0] == 3
    assert emulator.stats()["submissions"] == 3


def test_an_incremental_snapshot_equals_a_full_one(postgres_url, tmp_path):
    database = open_catalog(postgres_url)
    ledger = RequestLedger(database)

    def deliver(shot: str, finish: bool = True) -> str:
        row = ledger.claim(NewRequest(shot, f"fp-{shot}", ENDPOINT_ID, {}, 6, "run", shot, "me"), Budget()).row
        ledger.mark_submitted(row.request_key, f"id-{shot}")
        if finish:
            ledger.mark_completed(row.request_key, {"video": {"url": "u"}}, "u", 1.0)
            video = VideoRow(
                f"id-{shot}", row.request_key, shot, f"s3://b/{shot}.mp4", "h", 1, 1364, 768, 24, 144, 6, "u"
            )
            ledger.record_video(row.request_key, video)
        return row.request_key

    for shot in ("a", "b"):
        deliver(shot)
    pending = deliver("c", finish=False)
    with database.transaction() as t:  # all of it an hour old: older than the refresh's margin
        for table, column in [
            ("requests", "created_at"),
            ("requests", "completed_at"),
            ("requests", "submitted_at"),
            ("request_events", "occurred_at"),
            ("videos", "recorded_at"),
        ]:
            t.execute(f"UPDATE {table} SET {column} = {column} - INTERVAL '1 hour'")
        usage = {"unit": "video", "quantity": 2, "unit_price": "0.19", "cost_usd": "0.38", "currency": "USD"}
        t.store_usage(t.now().date(), ENDPOINT_ID, usage, t.now())  # fal's own figure travels with the ledger
    incremental, full = tmp_path / "inc.duckdb", tmp_path / "full.duckdb"
    first = write_snapshot(database, str(incremental))
    assert not first.incremental and first.rows_total["requests"] == 3

    ledger.mark_completed(pending, {"video": {"url": "u"}}, "u", 1.0)  # an in-flight row finishes
    deliver("d")  # and a new one arrives
    second = write_snapshot(database, str(incremental))
    write_snapshot(database, str(full), full=True)
    assert second.incremental and second.rows_copied["requests"] < second.rows_total["requests"] == 4

    def tables(path: Path) -> dict[str, list]:
        snapshot = open_catalog(path)
        return {t: sorted(map(tuple, snapshot.read(f"SELECT * FROM {t}").astype(str).values)) for t in SNAPSHOT_TABLES}

    assert tables(incremental) == tables(full) and len(tables(incremental)["fal_usage"]) == 1
    statuses = open_catalog(incremental).read("SELECT shot_id, status FROM requests ORDER BY 1").values.tolist()
    assert statuses == [["a", "succeeded"], ["b", "succeeded"], ["c", Status.COMPLETED.value], ["d", "succeeded"]]
    live = build_report(database, Budget()).summary
    assert build_report(open_catalog(incremental), Budget()).summary == live
    assert timedelta(0) <= second.taken_at - first.taken_at


def test_shared_definitions_add_the_snapshot_asset_its_automation_and_it_materializes(postgres_url, tmp_path):
    from dagster import DagsterInstance

    from hailuo_pipeline.defs.definitions import build_definitions
    from hailuo_pipeline.settings import Settings

    snapshot = tmp_path / "snap" / "catalog.duckdb"
    snapshot.parent.mkdir()
    settings = Settings(data_dir=tmp_path, catalog_url=postgres_url, catalog_snapshot=str(snapshot))
    defs = build_definitions(settings)
    assert defs.get_sensor_def("snapshot_after_batch") and defs.get_schedule_def("catalog_snapshot_schedule")
    assert "catalog_snapshot" not in {
        k.to_user_string() for k in build_definitions(Settings(data_dir=tmp_path)).resolve_all_asset_keys()
    }
    RequestLedger(open_catalog(postgres_url)).claim(NewRequest("s", "f", ENDPOINT_ID, {}, 6, "r", "s", "me"), Budget())
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("catalog_snapshot_job").execute_in_process(instance=instance)
    assert result.success
    (materialization,) = result.asset_materializations_for_node("catalog_snapshot")
    assert materialization.metadata["requests"].value == 1
    assert open_catalog(snapshot).read("SELECT shot_id, status FROM requests").values.tolist() == [["s", "reserved"]]


def test_an_unreachable_catalog_is_a_clear_error_before_anything(shared, emulator, tmp_path):
    template, shots = template_shots(tmp_path, 1)
    env = worker_env(shared, tmp_path / "w0", shots, template)
    env["HAILUO_CATALOG_URL"] = "postgresql://hailuo:s3cret@127.0.0.1:1/nowhere"
    child = hailuo(["materialize"], env, tmp_path)
    (out,) = run_all([child])
    assert child.returncode == 2, out
    assert "the shared catalog postgresql://***@127.0.0.1:1/nowhere cannot be reached" in out
    assert "Fix: check HAILUO_CATALOG_URL" in out and "s3cret" not in out and "Traceback" not in out
    assert emulator.stats()["submissions"] == 0


def test_a_video_store_that_takes_nothing_refuses_the_batch_before_any_request(shared, emulator, tmp_path):
    template, shots = template_shots(tmp_path, 2)
    env = worker_env(shared, tmp_path / "w0", shots, template)
    env["HAILUO_VIDEO_STORE"] = "s3://no-such-bucket-here/videos"
    child = hailuo(["materialize"], env, tmp_path)
    (out,) = run_all([child])
    assert child.returncode == 1, out
    assert "the video store s3://no-such-bucket-here/videos does not take files" in out, out
    assert "Fix: check HAILUO_VIDEO_STORE" in out
    assert emulator.stats()["submissions"] == 0
    assert open_catalog(shared["HAILUO_CATALOG_URL"]).read("SELECT count(*) AS n FROM requests")["n"].iloc[0] == 0


def test_a_failed_upload_is_retried_from_fals_url_never_resubmitted(shared, s3_server, emulator, tmp_path):
    """The store fails after fal has billed: the request stays paid and completed in the ledger; the next
    attempt, with the store working again, downloads from the stored fal URL and uploads."""
    import asyncio

    from hailuo_pipeline.fal.config import FalSettings
    from hailuo_pipeline.generation.outcome import GenerationOptions
    from hailuo_pipeline.generation.runner import ShotGenerator
    from hailuo_pipeline.shots.manifest import read_manifest
    from hailuo_pipeline.video.store import open_video_store

    template, _ = template_shots(tmp_path, 1)
    (shot,) = read_manifest(template / "shots.csv").shots.values()
    ledger = RequestLedger(open_catalog(shared["HAILUO_CATALOG_URL"]))
    lines: list[str] = []

    class Log:
        def info(self, msg: str) -> None:
            lines.append(msg)

        warning = info

    def attempt(store_url: str):
        async def run():
            settings = FalSettings(  # the emulator's host is fal's here: allowed as FAL_QUEUE_RUN_HOST
                key="test-key", poll_interval_seconds=0.3, fetch=FetchPolicy.allowing(Settings.from_env().fetch_hosts)
            )
            generator = ShotGenerator(
                settings, ledger, open_video_store(store_url), Log(), run_id="r", options=GenerationOptions()
            )
            async with generator:
                return await generator.generate(shot)

        return asyncio.run(run())

    missing = "s3://bucket-not-made-yet/videos"
    first = attempt(missing)
    assert first.failure is not None and "could not be downloaded and stored" in first.failure.cause
    assert "storing the video at s3://bucket-not-made-yet/videos/s00/" in first.failure.cause
    with ledger.store.transaction(read_only=True) as t:
        (row,) = t.requests()
    assert row.status is Status.COMPLETED and row.cost_usd == Decimal("0.19")

    s3_server.create_bucket("bucket-not-made-yet")
    second = attempt(missing)
    assert second.ok and second.resumed and second.video.path.startswith(missing), second.failure
    assert emulator.stats()["submissions"] == 1  # paid once; the second attempt fetched fal's URL again
    assert any("download attempt" in line for line in lines)
