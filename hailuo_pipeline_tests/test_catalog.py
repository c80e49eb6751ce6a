"""The catalog: migrations, the cost report's numbers, and concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from datetime import date
from decimal import Decimal

import duckdb
import pytest

from hailuo_pipeline.catalog.duckdb_ledger import DuckDBLedgerStore
from hailuo_pipeline.catalog.ledger import RequestLedger
from hailuo_pipeline.catalog.report import build_report
from hailuo_pipeline.catalog.rows import Budget, NewRequest, Status
from hailuo_pipeline.catalog.schema import LATEST_VERSION, MIGRATIONS, migrate
from hailuo_pipeline.catalog.store import Catalog
from hailuo_pipeline.cli import main as hailuo_main
from hailuo_pipeline.model_limits import ENDPOINT_ID
from hailuo_pipeline_tests.helpers import REPO_ROOT


def test_migrates_an_empty_file_to_the_latest_version(tmp_path):
    catalog = Catalog(tmp_path / "c.duckdb")
    with catalog.connect(read_only=True) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()]
        prices = conn.execute("SELECT duration_seconds, usd FROM prices ORDER BY 1").fetchall()
        views = {r[0] for r in conn.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert versions == [m[0] for m in MIGRATIONS] and versions[-1] == LATEST_VERSION
    assert prices == [(6, Decimal("0.1900")), (10, Decimal("0.3200"))]
    assert {
        "spend_by_day",
        "spend_by_month",
        "spend_by_shot",
        "spend_by_run",
        "failed_requests",
        "cancelled_requests",
        "latency_percentiles",
    } <= views


def test_upgrades_an_older_catalog_in_place_without_losing_rows(tmp_path):
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as conn:
        migrate(conn, target=1)
        conn.execute(
            "INSERT INTO requests (request_key, shot_id, take, fingerprint, endpoint, duration_seconds, status, "
            "created_at, cost_usd) VALUES ('k1', 's1', 1, 'f', ?, 6, 'succeeded', '2026-01-02 03:04:05', 0.19)",
            [ENDPOINT_ID],
        )
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (1,)
    with Catalog(path).connect(read_only=True) as conn:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (LATEST_VERSION,)
        assert conn.execute("SELECT day, spend_usd FROM spend_by_day").fetchall() == [
            (date(2026, 1, 2), Decimal("0.1900"))
        ]


def seed_known_rows(catalog: Catalog) -> None:
    rows = [
        # key, shot, take, status, duration, created, cost, reserved, wall
        ("r1", "a", 1, "succeeded", 6, "2026-11-28 10:00:00", "0.19", "0", 60.0),
        ("r2", "b", 1, "succeeded", 10, "2026-11-28 11:00:00", "0.32", "0", 80.0),
        ("r3", "c", 1, "failed", 6, "2026-11-28 12:00:00", "0", "0", None),
        ("r4", "c", 2, "succeeded", 6, "2026-11-27 12:00:00", "0.19", "0", 100.0),
        ("r5", "d", 1, "cancelled", 10, "2026-11-28 13:00:00", "0", "0", None),
        ("r6", "e", 1, "in_queue", 6, "2026-11-28 14:00:00", "0", "0.19", None),
        ("r7", "f", 1, "succeeded", 10, "2026-10-31 09:00:00", "0.32", "0", 120.0),
    ]
    with catalog.connect() as conn:
        for key, shot, take, status, duration, created, cost, reserved, wall in rows:
            conn.execute(
                "INSERT INTO requests (request_key, shot_id, take, fingerprint, endpoint, duration_seconds, status, "
                "created_at, cost_usd, reserved_usd, wall_seconds) VALUES (?, ?, ?, 'f', ?, ?, ?, ?, ?, ?, ?)",
                [key, shot, take, ENDPOINT_ID, duration, status, created, cost, reserved, wall],
            )


def test_report_numbers_against_known_rows(tmp_path):
    catalog = Catalog(tmp_path / "c.duckdb")
    seed_known_rows(catalog)
    report = build_report(catalog, Budget(daily_usd=Decimal("1.00"), total_usd=Decimal("10")), today=date(2026, 11, 28))
    s = report.summary
    assert s["spend_today_usd"] == pytest.approx(0.51)
    assert s["spend_month_to_date_usd"] == pytest.approx(0.70)
    assert s["spend_all_time_usd"] == pytest.approx(1.02)
    assert s["reserved_usd"] == pytest.approx(0.19)
    assert (s["requests"], s["retries"], s["succeeded"], s["failures"], s["cancellations"]) == (7, 1, 4, 1, 1)
    assert s["latency_mean_seconds"] == pytest.approx(90.0)
    assert s["latency_p95_seconds"] == pytest.approx(117.0)
    assert s["daily_budget_used"] == pytest.approx(0.70)
    assert s["total_budget_used"] == pytest.approx(0.121)
    assert report.by_duration.to_dict(orient="records") == [
        {"duration_seconds": 6, "requests": 4, "videos": 2, "spend_usd": pytest.approx(0.38)},
        {"duration_seconds": 10, "requests": 3, "videos": 2, "spend_usd": pytest.approx(0.64)},
    ]


def test_report_cli_formats(workspace, capsys):
    seed_known_rows(Catalog(workspace / "catalog.duckdb"))
    assert hailuo_main(["report", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["spend_all_time_usd"] == pytest.approx(1.02)
    assert hailuo_main(["report", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "metric,value" and "requests,7" in lines
    assert hailuo_main(["report"]) == 0
    assert "all time $1.02" in capsys.readouterr().out


def _writer(path: str, worker: int, count: int) -> None:
    ledger = RequestLedger(DuckDBLedgerStore(path))
    for i in range(count):
        request = NewRequest(
            shot_id=f"w{worker}-{i}",
            fingerprint=f"fp-{worker}-{i}",
            endpoint=ENDPOINT_ID,
            arguments={"i": i},
            duration_seconds=6,
            run_id=f"run-{worker}",
            partition_key=f"w{worker}-{i}",
            owner=f"worker-{worker}",
        )
        row = ledger.claim(request, Budget()).row
        ledger.mark_submitted(row.request_key, f"fal-{worker}-{i}")
        ledger.mark_progress(row.request_key, Status.IN_PROGRESS)
        ledger.mark_completed(row.request_key, {"video": {"url": "u"}}, "u", 1.0)


@pytest.mark.slow
def test_four_processes_writing_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "c.duckdb")
    Catalog(path)  # nothing opened yet: the writers race for the first migration too
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(path, w, 25)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=240)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    with Catalog(path).connect(read_only=True) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT request_id), sum(cost_usd) FROM requests").fetchone() == (
            100,
            100,
            Decimal("19.0000"),
        )
        assert conn.execute("SELECT count(*) FROM request_events").fetchone() == (400,)
        assert conn.execute("SELECT count(*) FROM schema_version").fetchone() == (LATEST_VERSION,)


# The child exits the moment its idle-close timer has taken the connection and begun closing it. A WAL of
# a few MB makes that close (a checkpoint) last tens of milliseconds. If the exit does not wait for it, the
# process ends mid-checkpoint (the WAL is left behind) or, when the close returns during interpreter
# finalisation, aborts ("terminate called ... FATAL: exception not rethrown"), as a CI run did.
_EXIT_DURING_IDLE_CLOSE = """
import sys
from hailuo_pipeline.catalog import store
from hailuo_pipeline_tests.helpers import wait_for
catalog = store.Catalog(sys.argv[1], linger_seconds=0.01, max_hold_seconds=60)
with catalog.connect() as conn:
    conn.execute("CREATE TABLE bulk (n BIGINT, h VARCHAR)")
    conn.execute("INSERT INTO bulk SELECT range, md5(range::VARCHAR) FROM range(100000)")
    conn.execute("UPDATE bulk SET h = h || 'x'")
wait_for(lambda: catalog.path not in store._held, interval=0.001, what="the idle-close timer to take the connection")
print("closing")
"""


def test_exit_waits_for_a_close_already_under_way(tmp_path):
    path = tmp_path / "c.duckdb"
    child = subprocess.run(
        [sys.executable, "-c", _EXIT_DURING_IDLE_CLOSE, str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (child.returncode, child.stdout.strip()) == (0, "closing"), child.stderr
    assert not path.with_name(path.name + ".wal").exists()  # the checkpoint on close finished
    with Catalog(path).connect(read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM bulk WHERE h LIKE '%x'").fetchone() == (100000,)


def test_claim_reserves_then_resumes_by_id(tmp_path):
    ledger = RequestLedger(DuckDBLedgerStore(tmp_path / "c.duckdb"))
    request = NewRequest("s", "fp", ENDPOINT_ID, {}, 10, "run", "s", "me")
    first = ledger.claim(request, Budget())
    assert first.kind == "submit" and first.row.price_usd == Decimal("0.32")
    ledger.mark_submitted(first.row.request_key, "fal-1")
    again = ledger.claim(request, Budget())
    assert again.kind == "resume" and again.row.request_id == "fal-1"


def test_standings_read_at_scale_equal_standings_over_every_row(tmp_path):
    """The store hands the ledger only the rows a shot's standing depends on (plus the shots plainly
    delivered); over a varied catalog that must decide exactly as reading every row would."""
    import random
    from datetime import datetime, timedelta

    from hailuo_pipeline.catalog.decisions import shot_standing
    from hailuo_pipeline.catalog.rows import utcnow

    rng = random.Random(7)
    statuses = [
        "reserved",
        "submitted",
        "in_queue",
        "completed",
        "succeeded",
        "failed",
        "cancelled",
        "ambiguous",
        "lost",
    ]
    start = datetime(2026, 11, 1)
    catalog = Catalog(tmp_path / "c.duckdb")
    with catalog.connect() as conn:
        for shot in range(300):
            for take in range(rng.randint(1, 5)):
                status = rng.choice(statuses)
                beat = utcnow() - timedelta(seconds=rng.choice([1, 600]))  # live and expired leases
                conn.execute(
                    "INSERT INTO requests (request_key, request_id, shot_id, take, fingerprint, endpoint, "
                    "duration_seconds, status, owner, heartbeat_at, created_at, price_usd, permanent_failure) "
                    "VALUES (?, ?, ?, ?, 'f', ?, 6, ?, ?, ?, ?, 0.19, ?)",
                    [
                        f"k{shot}-{take}",
                        None if status == "reserved" else f"r{shot}-{take}",
                        f"s{shot}",
                        take,
                        ENDPOINT_ID,
                        status,
                        rng.choice([None, "elsewhere:1:x"]),
                        beat,
                        start + timedelta(minutes=shot * 10 + take),
                        status == "failed" and rng.random() < 0.5,
                    ],
                )
    ledger = RequestLedger(DuckDBLedgerStore(catalog))
    with ledger.store.transaction(read_only=True) as t:
        every_row = t.requests()
    by_shot: dict[str, list] = {}
    for row in every_row:
        by_shot.setdefault(row.shot_id, []).append(row)
    now = utcnow()
    expected = {s: shot_standing(rows, now, ledger.lease_seconds, ledger.alive).state for s, rows in by_shot.items()}
    assert {s: standing.state for s, standing in ledger.standings().items()} == expected
    assert len(set(expected.values())) >= 6  # the catalog really is varied
