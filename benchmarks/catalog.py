"""The catalog at scale: 1,000,000 request rows, the cost report under 1 s, 200 simultaneous completions.

    python benchmarks/catalog.py [--rows 1000000] [--completions 200]

Prints, measured in the same run:
  - baseline: a bare `SELECT count(*), sum(cost_usd)` over the table (a fresh connection, as the report uses);
  - build_report (what `hailuo report` and the cost_report asset compute), its ratio to the baseline;
  - `hailuo report` as a whole process, and the cost_report asset materialized by Dagster;
  - 200 completions landing at once from 4 processes: how many were recorded, lock failures, wall time.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hailuo_pipeline.catalog.duckdb_ledger import DuckDBLedgerStore  # noqa: E402
from hailuo_pipeline.catalog.ledger import RequestLedger  # noqa: E402
from hailuo_pipeline.catalog.report import build_report  # noqa: E402
from hailuo_pipeline.catalog.rows import Budget, NewRequest, VideoRow  # noqa: E402
from hailuo_pipeline.catalog.store import Catalog  # noqa: E402
from hailuo_pipeline.model_limits import ENDPOINT_ID  # noqa: E402

FILL_SQL = """
INSERT INTO requests (request_key, request_id, shot_id, take, fingerprint, endpoint, duration_seconds, status,
                      run_id, created_at, submitted_at, started_at, completed_at, queue_seconds, inference_seconds,
                      wall_seconds, price_id, price_usd, cost_usd, reserved_usd)
SELECT 'k' || i, 'fal-' || i, 'shot-' || (i % 250000), 1 + i // 250000, 'fp' || i, $endpoint,
       CASE WHEN i % 3 = 0 THEN 10 ELSE 6 END,
       CASE WHEN i % 50 = 0 THEN 'failed' WHEN i % 97 = 0 THEN 'cancelled' ELSE 'succeeded' END,
       'run-' || (i // 500),
       TIMESTAMP '2025-11-01' + to_seconds(i * 34),
       TIMESTAMP '2025-11-01' + to_seconds(i * 34 + 1),
       TIMESTAMP '2025-11-01' + to_seconds(i * 34 + 20),
       TIMESTAMP '2025-11-01' + to_seconds(i * 34 + 80),
       19 + i % 7, 60 + i % 11, 80 + i % 13,
       CASE WHEN i % 3 = 0 THEN 'hailuo-2.3-fast-std-10s-2025-10' ELSE 'hailuo-2.3-fast-std-6s-2025-10' END,
       CASE WHEN i % 3 = 0 THEN 0.32 ELSE 0.19 END,
       CASE WHEN i % 50 = 0 OR i % 97 = 0 THEN 0 WHEN i % 3 = 0 THEN 0.32 ELSE 0.19 END,
       0
FROM range($rows) t(i)
"""


def timed(fn, repeat: int = 5) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def complete_at_once(path: str, worker: int, count: int, start_at: float, results) -> None:
    ledger = RequestLedger(DuckDBLedgerStore(path))
    keys = []
    for i in range(count):
        request = NewRequest(f"burst-{worker}-{i}", f"burst-fp-{worker}-{i}", ENDPOINT_ID, {}, 6, "burst", None, "w")
        key = ledger.claim(request, Budget()).row.request_key
        ledger.mark_submitted(key, f"burst-fal-{worker}-{i}")
        keys.append(key)
    Catalog(path).close()
    while time.time() < start_at:
        time.sleep(0.001)
    failures = 0
    for i, key in enumerate(keys):
        try:
            ledger.mark_completed(key, {"video": {"url": "u"}}, "u", 1.0)
            ledger.record_video(
                key,
                VideoRow(
                    f"burst-fal-{worker}-{i}",
                    key,
                    f"burst-{worker}-{i}",
                    "/dev/null",
                    "0" * 64,
                    1,
                    1366,
                    768,
                    25.0,
                    150,
                    6.0,
                    "u",
                ),
            )
        except Exception:  # any lock failure counts against the claim
            failures += 1
    Catalog(path).close()
    results.put(failures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--completions", type=int, default=200)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hailuo-catalog-bench-"))
    path = root / "data" / "catalog.duckdb"
    catalog = Catalog(path)
    started = time.perf_counter()
    with catalog.connect() as conn:
        conn.execute(FILL_SQL, {"endpoint": ENDPOINT_ID, "rows": args.rows})
    catalog.close()
    fill = time.perf_counter() - started

    import duckdb

    def bare() -> None:
        with duckdb.connect(str(path), read_only=True) as conn:
            conn.execute("SELECT count(*), sum(cost_usd) FROM requests").fetchall()

    def report() -> None:
        build_report(catalog, Budget.from_usd(50.0, 100000.0))
        catalog.close()

    baseline = timed(bare)
    report_seconds = timed(report)

    env = {**os.environ, "HAILUO_DATA_DIR": str(root / "data"), "PYTHONPATH": str(REPO)}
    cli_seconds = timed(
        lambda: subprocess.run(
            [sys.executable, "-m", "hailuo_pipeline.cli", "report"], env=env, check=True, capture_output=True
        ),
        repeat=3,
    )

    os.environ["HAILUO_DATA_DIR"] = str(root / "data")
    from dagster import DagsterInstance, materialize

    from hailuo_pipeline.defs.assets.cost_report import cost_report
    from hailuo_pipeline.defs.definitions import build_definitions

    resources = build_definitions().resources
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [cost_report], instance=instance, resources={"catalog": resources["catalog"], "budget": resources["budget"]}
        )
        step = next(e for e in result.all_events if e.event_type_value == "STEP_SUCCESS")
        asset_seconds = step.event_specific_data.duration_ms / 1000

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = 4
    start_at = time.time() + 8
    processes = [
        context.Process(target=complete_at_once, args=(str(path), w, args.completions // workers, start_at, results))
        for w in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    burst_wall = time.time() - start_at
    failures = sum(results.get() for _ in processes)
    with catalog.connect(read_only=True) as conn:
        recorded = conn.execute("SELECT count(*) FROM videos WHERE request_id LIKE 'burst-%'").fetchone()[0]
    catalog.close()

    print(f"rows: {args.rows:,} (filled in {fill:.1f} s)")
    print(f"baseline (bare count+sum, fresh connection): {baseline * 1000:.0f} ms")
    print(
        f"build_report: {report_seconds * 1000:.0f} ms  ratio to baseline {report_seconds / baseline:.2f}  "
        f"(target < 1000 ms: {'met' if report_seconds < 1 else 'MISSED'})"
    )
    print(f"`hailuo report` process, start to exit: {cli_seconds * 1000:.0f} ms")
    print(f"cost_report asset step (Dagster): {asset_seconds * 1000:.0f} ms")
    print(
        f"{args.completions} completions at once from {workers} processes: {recorded} recorded, "
        f"{failures} lock failures, {burst_wall:.2f} s"
    )


if __name__ == "__main__":
    main()
