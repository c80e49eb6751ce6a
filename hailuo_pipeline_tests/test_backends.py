"""The same ledger and report tests against both backends: the embedded DuckDB file and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import threading
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest

from hailuo_pipeline.catalog.backends import open_catalog
from hailuo_pipeline.catalog.decisions import ClaimKind, ClaimOptions
from hailuo_pipeline.catalog.ledger import BudgetExceededError, RequestLedger
from hailuo_pipeline.catalog.report import build_report
from hailuo_pipeline.catalog.rows import Budget, NewRequest, Status, VideoRow, utcnow
from hailuo_pipeline.catalog.schema import LATEST_VERSION, MIGRATIONS
from hailuo_pipeline.catalog.transitions import VerdictError
from hailuo_pipeline.generation.submit import SubmittedIds
from hailuo_pipeline.model_limits import ENDPOINT_ID

VIEWS = {
    "spend_by_day",
    "spend_by_month",
    "spend_by_shot",
    "spend_by_run",
    "failed_requests",
    "cancelled_requests",
    "latency_percentiles",
    "lost_requests",
}


def seed_known_rows(database) -> None:
    rows = [
        # key, shot, take, status, duration, created, cost, reserved, wall, queue
        ("r1", "a", 1, "succeeded", 6, "2026-11-28 10:00:00", "0.19", "0", 60.0, 10.0),
        ("r2", "b", 1, "succeeded", 10, "2026-11-28 11:00:00", "0.32", "0", 80.0, 20.0),
        ("r3", "c", 1, "failed", 6, "2026-11-28 12:00:00", "0", "0", None, None),
        ("r4", "c", 2, "succeeded", 6, "2026-11-27 12:00:00", "0.19", "0", 100.0, 30.0),
        ("r5", "d", 1, "cancelled", 10, "2026-11-28 13:00:00", "0", "0", None, None),
        ("r6", "e", 1, "in_queue", 6, "2026-11-28 14:00:00", "0", "0.19", None, None),
        ("r7", "f", 1, "succeeded", 10, "2026-10-31 09:00:00", "0.32", "0", 120.0, 40.0),
    ]
    with database.transaction() as t:
        for key, shot, take, status, duration, created, cost, reserved, wall, queue in rows:
            t.execute(
                "INSERT INTO requests (request_key, shot_id, take, fingerprint, endpoint, duration_seconds, status, "
                "created_at, cost_usd, reserved_usd, wall_seconds, queue_seconds) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    key,
                    shot,
                    take,
                    f"f-{key}",
                    ENDPOINT_ID,
                    duration,
                    status,
                    datetime.fromisoformat(created),
                    Decimal(cost),
                    Decimal(reserved),
                    wall,
                    queue,
                ],
            )


def test_migrates_to_the_latest_version_with_prices_and_views(database):
    with database.transaction(read_only=True) as t:
        versions = [r[0] for r in t.execute("SELECT version FROM schema_version ORDER BY 1")]
        prices = t.execute("SELECT duration_seconds, usd FROM prices ORDER BY 1")
        views = {
            r[0]
            for r in t.execute("SELECT table_name FROM information_schema.views WHERE table_schema = current_schema()")
        }
    assert versions == [m[0] for m in MIGRATIONS] and versions[-1] == LATEST_VERSION
    assert prices == [(6, Decimal("0.1900")), (10, Decimal("0.3200"))]
    assert views >= VIEWS


def test_report_numbers_against_known_rows(database):
    seed_known_rows(database)
    report = build_report(
        database, Budget(daily_usd=Decimal("1.00"), total_usd=Decimal("10")), today=date(2026, 11, 28)
    )
    s = report.summary
    assert {type(v) for v in s.values()} <= {int, float, type(None)}, s  # plain numbers for JSON and metadata
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
    assert report.by_day.to_dict(orient="records")[-1]["spend_usd"] == pytest.approx(0.51)


def test_views_answer_the_same_on_both_backends(database):
    seed_known_rows(database)
    month = database.read("SELECT month, requests, spend_usd FROM spend_by_month ORDER BY month")
    assert month.to_dict(orient="records") == [
        {"month": "2026-10", "requests": 1, "spend_usd": Decimal("0.3200")},
        {"month": "2026-11", "requests": 6, "spend_usd": Decimal("0.7000")},
    ]
    latency = database.read("SELECT requests, queue_p50, wall_p95 FROM latency_percentiles")
    assert latency.iloc[0].tolist() == [4, pytest.approx(25.0), pytest.approx(117.0)]


def _request(shot: str, owner: str = "me", duration: int = 10) -> NewRequest:
    return NewRequest(shot, f"fp-{shot}", ENDPOINT_ID, {}, duration, "run", shot, owner)


def test_claim_reserves_then_resumes_by_id(database):
    ledger = RequestLedger(database)
    first = ledger.claim(_request("s"), Budget())
    assert first.kind == "submit" and first.row.price_usd == Decimal("0.32")
    ledger.mark_submitted(first.row.request_key, "fal-1")
    again = ledger.claim(_request("s"), Budget())
    assert again.kind == "resume" and again.row.request_id == "fal-1"


def test_times_come_from_the_database_clock(database):
    ledger = RequestLedger(database)
    with database.transaction(read_only=True) as t:
        clock = t.now()
    row = ledger.claim(_request("s"), Budget()).row
    assert abs((row.created_at - clock).total_seconds()) < 5
    assert abs((row.created_at - utcnow()).total_seconds()) < 5  # this machine's clock agrees here


def test_budget_race_between_threads_pays_at_most_what_fits(database):
    """Eight threads, each with its own connections, race for a total budget that fits 3 videos."""
    ledger = RequestLedger(database)
    budget = Budget(total_usd=Decimal("0.57"))
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def claim(i: int) -> None:
        start.wait()  # all eight at the same moment
        try:
            outcomes.append(ledger.claim(_request(f"s{i}", owner=f"w{i}", duration=6), budget).kind.value)
        except BudgetExceededError:
            outcomes.append("refused")

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused"] * 5 + ["submit"] * 3
    assert database.read("SELECT sum(reserved_usd) AS held FROM requests")["held"].iloc[0] == Decimal("0.5700")


def test_one_live_claim_per_fingerprint_even_without_the_lock(postgres_url):
    """The partial unique index refuses a second live row of a fingerprint written around the ledger."""
    import psycopg

    database = open_catalog(postgres_url)
    RequestLedger(database).claim(_request("s"), Budget())
    values = "('k2', 's', 2, 'fp-s', 'e', 6, 'submitted', localtimestamp)"
    with pytest.raises(psycopg.errors.UniqueViolation), database.transaction() as t:
        t.execute(
            "INSERT INTO requests (request_key, shot_id, take, fingerprint, endpoint, duration_seconds, status, "
            f"created_at) VALUES {values}"
        )
    with database.transaction() as t:  # a finished row of the same fingerprint is fine
        t.execute(
            "INSERT INTO requests (request_key, shot_id, take, fingerprint, endpoint, duration_seconds, status, "
            f"created_at) VALUES {values.replace('submitted', 'failed')}"
        )


def _writer(location: str, worker: int, count: int) -> None:
    ledger = RequestLedger(open_catalog(location))
    for i in range(count):
        request = NewRequest(
            f"w{worker}-{i}", f"fp-{worker}-{i}", ENDPOINT_ID, {"i": i}, 6, f"run-{worker}", None, f"worker-{worker}"
        )
        row = ledger.claim(request, Budget()).row
        ledger.mark_submitted(row.request_key, f"fal-{worker}-{i}")
        ledger.mark_progress(row.request_key, Status.IN_PROGRESS)
        ledger.mark_completed(row.request_key, {"video": {"url": "u"}}, "u", 1.0)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["duckdb", "postgresql"])
def test_four_processes_writing_at_once_lose_nothing(backend, tmp_path, request):
    """Four processes race for the first migration and then write 25 requests each."""
    location = str(tmp_path / "c.duckdb") if backend == "duckdb" else request.getfixturevalue("postgres_url")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(location, w, 25)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=240)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    database = open_catalog(location)
    totals = database.read(
        "SELECT count(*) AS n, count(DISTINCT request_id) AS ids, sum(cost_usd) AS usd, "
        "(SELECT count(*) FROM request_events) AS events, (SELECT count(*) FROM schema_version) AS versions "
        "FROM requests"
    )
    assert totals.iloc[0].tolist() == [100, 100, Decimal("19.0000"), 400, LATEST_VERSION]


PLANNER_OPTIONS = [
    ClaimOptions(),
    ClaimOptions(new_take=True),
    ClaimOptions(resubmit_ambiguous=True),
    ClaimOptions(retry_refused=True),
    ClaimOptions(repay_lost=True),
    ClaimOptions(retake_rejected=True),
]


@pytest.mark.parametrize(
    "options", PLANNER_OPTIONS, ids=["plain", "new_take", "resubmit", "retry", "repay_lost", "retake"]
)
def test_the_planner_answers_as_the_claim_on_a_varied_ledger(database, options):
    """The planner reads, for many shots at once, only the rows the judge depends on; the step's claim reads all
    of a shot's rows. Over a varied ledger (every status, several inputs per shot, live, silent, dead and
    released owners), for every option, the planner's answer is the claim's: a shot the planner would not pay
    for is not paid for by the claim, and the other way round."""
    rng = random.Random(hash(options) % 1000)
    statuses = [s.value for s in Status]
    active = ["reserved", "submitted", "in_queue", "in_progress", "completed"]
    start = datetime(2026, 11, 1)
    with database.transaction() as t:
        now = t.now()
        for shot in range(120):
            for take in range(rng.randint(0, 5)):
                fingerprint = f"fp-s{shot}" if rng.random() < 0.7 else f"old-s{shot}-{rng.randint(0, 1)}"
                status = rng.choice(statuses)
                if status in active and t.execute(
                    "SELECT 1 FROM requests WHERE shot_id = ? AND status = ANY(?)", [f"s{shot}", active]
                ):
                    status = "failed"  # one request in flight per shot, as the ledger keeps it
                key = f"k{shot}-{take}"
                t.execute(
                    "INSERT INTO requests (request_key, request_id, shot_id, take, fingerprint, endpoint, "
                    "duration_seconds, status, owner, heartbeat_at, created_at, price_usd, permanent_failure, run_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, 6, ?, ?, ?, ?, 0.19, ?, ?)",
                    [
                        key,
                        None if status == "reserved" else f"r{shot}-{take}",
                        f"s{shot}",
                        take,
                        fingerprint,
                        ENDPOINT_ID,
                        status,
                        rng.choice([None, "elsewhere:1:x", "dead"]),
                        now - timedelta(seconds=rng.choice([1, 600])),  # live and expired leases
                        start + timedelta(minutes=shot * 10 + take),
                        status == "failed" and rng.random() < 0.5,
                        rng.choice(["run-a", "run-b"]),  # earlier runs: the claim is a new run's, as planned
                    ],
                )
                if status == "succeeded":
                    t.execute(
                        "INSERT INTO videos VALUES (?, ?, ?, 'p', 'h', 1, 1, 1, 1.0, 1, 6.0, NULL, ?)",
                        [f"r{shot}-{take}", key, f"s{shot}", now],
                    )
                    verdict = rng.choice([None, None, "approve", "reject"])
                    t.execute("UPDATE requests SET verdict = ? WHERE request_key = ?", [verdict, key])
    ledger = RequestLedger(database, alive=lambda owner: owner != "dead")
    shots = [f"s{i}" for i in range(120)]
    planned = ledger.judge_shots({s: (lambda r, s=s: r.fingerprint == f"fp-{s}") for s in shots}, options)
    claimed = {s: ledger.claim(_request(s, duration=6), Budget(), options).kind for s in shots}
    paying = {ClaimKind.SUBMIT: ClaimKind.SUBMIT, ClaimKind.REMAKE: ClaimKind.SUBMIT}
    assert {s: paying.get(d.kind, d.kind) for s, d in planned.items()} == claimed
    assert len({d.kind for d in planned.values()}) >= 6  # the ledger really is varied


def test_claim_kinds_match_across_backends(database):
    """A short life of one shot: submit, wait for a live owner, resume an orphan, reuse the video."""
    ledger = RequestLedger(database, alive=lambda owner: owner != "dead")
    first = ledger.claim(_request("s", owner="other"), Budget())
    ledger.mark_submitted(first.row.request_key, "fal-1")
    assert ledger.claim(_request("s"), Budget()).kind is ClaimKind.WAIT
    ledger.release("other")
    taken = ledger.take_over_orphans("s", "me")
    assert [r.request_id for r in taken] == ["fal-1"] and taken[0].attempts == 2


def test_total_limit_at_fal_holds_across_owners_and_frees_as_requests_finish(database):
    """Three places at fal in all: three owners' requests fill them; a fourth claim, from anyone, is told
    FULL without reserving money; a request fal finished, or one whose owner died, gives its place back."""
    ledger = RequestLedger(database, alive=lambda owner: owner != "dead")
    held = [ledger.claim(_request(f"s{i}", owner=f"w{i}", duration=6), Budget(), max_in_flight=3) for i in range(3)]
    assert [c.kind for c in held] == [ClaimKind.SUBMIT] * 3
    ledger.mark_submitted(held[0].row.request_key, "fal-0")
    full = ledger.claim(_request("s3", owner="w3", duration=6), Budget(), max_in_flight=3)
    assert full.kind is ClaimKind.FULL
    assert ledger.claim(_request("s3", owner="w3", duration=6), Budget()).kind is ClaimKind.SUBMIT  # no limit asked
    ledger.release("w3")
    ledger.mark_completed(
        held[0].row.request_key, {"video": {"url": "https://fal.example/v0.mp4"}}, "https://fal.example/v0.mp4", None
    )
    room = ledger.claim(_request("s4", owner="w4", duration=6), Budget(), max_in_flight=3)
    assert room.kind is ClaimKind.SUBMIT
    assert ledger.claim(_request("s5", owner="w5", duration=6), Budget(), max_in_flight=3).kind is ClaimKind.FULL
    ledger.release("w1")  # an owner that stopped: its request no longer holds a place
    assert ledger.claim(_request("s5", owner="w5", duration=6), Budget(), max_in_flight=3).kind is ClaimKind.SUBMIT


def test_ids_answered_together_are_written_together_and_a_bad_one_fails_alone(database):
    """fal's ids for submits answered at once go into the ledger in one transaction of set-based statements
    (the window in which a killed process leaves a paid submit ambiguous is one write, not one write per
    answer), each with its event; a row that cannot take its id fails its own caller only."""
    ledger = RequestLedger(database)
    rows = [ledger.claim(_request(f"s{i}"), Budget()).row for i in range(8)]
    ids = SubmittedIds(ledger)

    async def answered(keys: list[str]) -> list[object]:
        return await asyncio.gather(*(ids.record(key, f"fal-{key}") for key in keys), return_exceptions=True)

    burst = [row.request_key for row in rows[:6]]
    assert asyncio.run(answered(burst)) == [None] * 6
    recorded = [ledger.get(key) for key in burst]
    assert [(row.status, row.request_id) for row in recorded] == [(Status.SUBMITTED, f"fal-{key}") for key in burst]
    assert len({row.submitted_at for row in recorded}) == 1  # one transaction's clock
    with database.transaction(read_only=True) as t:
        events = t.execute("SELECT request_key, status, detail FROM request_events WHERE status = 'submitted'")
    assert sorted(events) == sorted((key, "submitted", f"fal request id fal-{key}") for key in burst)

    late = [rows[6].request_key, "no-such-request", rows[7].request_key]
    outcomes = asyncio.run(answered(late))
    assert outcomes[0] is None and outcomes[2] is None and isinstance(outcomes[1], ValueError)
    assert [ledger.get(key).request_id for key in (late[0], late[2])] == [f"fal-{late[0]}", f"fal-{late[2]}"]
    assert ledger.claim(_request("s0"), Budget()).kind == "resume"  # a recorded id is resumed, never resubmitted


def test_a_request_id_another_row_holds_is_a_lie_the_new_row_is_ambiguous_the_holder_untouched(database):
    """fal's id is one job: an answer repeating an id (replayed, or false) cannot book that job twice. The new
    row is ambiguous (fal may bill the job this submit really created), naming the holder; the holder is kept.
    Two answers of one group sharing an id, and a row written around the ledger, are refused the same way."""
    ledger = RequestLedger(database)
    a, b, c, d = (ledger.claim(_request(s), Budget()).row for s in ("a", "b", "c", "d"))
    assert ledger.mark_submitted(a.request_key, "fal-1") == {}
    refused = ledger.mark_submitted(b.request_key, "fal-1")
    assert list(refused) == [b.request_key] and a.request_key in refused[b.request_key]
    together = ledger.mark_submitted_together({c.request_key: "fal-2", d.request_key: "fal-2"})
    assert list(together) == [d.request_key] and c.request_key in together[d.request_key]
    rows = {key: ledger.get(key) for key in (a.request_key, b.request_key, c.request_key, d.request_key)}
    assert [(r.status, r.request_id) for r in rows.values()] == [
        (Status.SUBMITTED, "fal-1"),
        (Status.AMBIGUOUS, None),
        (Status.SUBMITTED, "fal-2"),
        (Status.AMBIGUOUS, None),
    ]
    assert rows[b.request_key].possible_double_charge and rows[b.request_key].reserved_usd == Decimal("0.32")
    assert "shot a, take 1" in (rows[b.request_key].error_message or "")
    with pytest.raises(Exception, match=r"(?i)duplicate|unique"), database.transaction() as t:
        t.execute("UPDATE requests SET request_id = 'fal-1' WHERE request_key = ?", [c.request_key])


def test_rows_of_earlier_versions_sharing_a_request_id_are_made_ambiguous_by_the_migration(tmp_path):
    import duckdb

    from hailuo_pipeline.catalog.store import Catalog, migrate

    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as conn:
        migrate(conn, target=4)
        for key, created in (("first", "2026-01-02 03:04:05"), ("replayed", "2026-01-02 03:04:06")):
            conn.execute(
                "INSERT INTO requests (request_key, request_id, shot_id, take, fingerprint, endpoint, "
                "duration_seconds, status, created_at, price_usd, cost_usd) "
                "VALUES (?, 'fal-1', ?, 1, ?, ?, 6, 'succeeded', ?, 0.19, 0.19)",
                [key, key, key, ENDPOINT_ID, created],
            )
    with Catalog(path).connect(read_only=True) as conn:
        rows = conn.execute("SELECT request_key, status, request_id, cost_usd, reserved_usd FROM requests ORDER BY 1")
        assert rows.fetchall() == [
            ("first", "succeeded", "fal-1", Decimal("0.1900"), Decimal("0.0000")),
            ("replayed", "ambiguous", None, Decimal("0.0000"), Decimal("0.1900")),
        ]


def test_verdicts_are_kept_as_history_and_one_take_of_a_shot_is_approved(database):
    ledger = RequestLedger(database)
    for take in (1, 2):  # two runs, each paying for a take
        request = NewRequest("s", "fp-s", ENDPOINT_ID, {}, 6, f"run-{take}", "s", f"w{take}")
        row = ledger.claim(request, Budget(), ClaimOptions(new_take=True)).row
        ledger.mark_submitted(row.request_key, f"fal-{take}")
        ledger.mark_completed(row.request_key, {"video": {"url": "u"}}, "u", 1.0)
        video = VideoRow(f"fal-{take}", row.request_key, "s", f"p{take}", "h", 1, 1, 1, 1, 1, 6, "u")
        ledger.record_video(row.request_key, video)
    assert ledger.record_verdict("s", None, "reject", "too dark").take == 2  # the latest by default
    assert ledger.record_verdict("s", 1, "approve").verdict == "approve"
    assert ledger.record_verdict("s", 2, "approve").verdict == "approve"  # the approval moves to take 2
    with database.transaction(read_only=True) as t:
        history = t.execute("SELECT take, verdict, note FROM verdicts ORDER BY decided_at, take")
        latest = t.execute("SELECT take, verdict FROM requests WHERE shot_id = 's' ORDER BY take")
    assert [tuple(r) for r in history] == [
        (2, "reject", "too dark"),
        (1, "approve", None),
        (1, "withdraw", "take 2 approved instead"),
        (2, "approve", None),
    ]
    assert [tuple(r) for r in latest] == [(1, None), (2, "approve")]
    with pytest.raises(VerdictError, match="no delivered take 7"):
        ledger.record_verdict("s", 7, "reject")
    with pytest.raises(VerdictError, match="has no delivered take"):
        ledger.record_verdict("nobody", None, "approve")
