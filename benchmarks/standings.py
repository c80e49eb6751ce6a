"""Planning at scale: the shots' standings that every plain `hailuo materialize`, the nightly sweep and the
CLI's notes read, against reading every request row (the baseline), on the same catalog in one run.

    python benchmarks/standings.py [--rows 1000000]

The catalog holds N request rows over N/4 shots: mostly delivered, 1 % failed, 0.1 % still in queue.
Prints both times and the ratio (standings / every row); both must decide the same standings.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hailuo_pipeline.catalog.backends import open_catalog  # noqa: E402
from hailuo_pipeline.catalog.decisions import ClaimOptions, judge  # noqa: E402
from hailuo_pipeline.catalog.ledger import RequestLedger  # noqa: E402
from hailuo_pipeline.catalog.rows import RequestRow, utcnow  # noqa: E402
from hailuo_pipeline.catalog.store import Catalog  # noqa: E402


def build(path: Path, rows: int) -> None:
    shots = max(1, rows // 4)  # each shot's takes share its inputs (one fingerprint), as in a real catalog
    with Catalog(path).connect() as conn:
        conn.execute(
            f"""
            INSERT INTO requests (request_key, request_id, shot_id, take, fingerprint, endpoint, duration_seconds,
                                  status, created_at, price_usd, cost_usd, reserved_usd, attempts)
            SELECT 'k' || i, 'r' || i, 'shot-' || (i % {shots}), 1, 'f' || (i % {shots}), 'e', 6,
                   CASE WHEN i % 97 = 0 THEN 'failed' WHEN i % 1009 = 0 THEN 'in_queue' ELSE 'succeeded' END,
                   TIMESTAMP '2026-01-01' + INTERVAL (i) SECOND, 0.19, 0.19, 0, 1
            FROM range({rows}) t(i)
            """
        )


def every_row(ledger: RequestLedger) -> dict[str, str]:
    with ledger.store.transaction(read_only=True) as t:
        rows = t.requests()
    by_shot: dict[str, list[RequestRow]] = {}
    for row in rows:
        by_shot.setdefault(row.shot_id, []).append(row)
    now = utcnow()
    return {
        s: judge(
            found, same_inputs=same_inputs, now=now, lease_seconds=ledger.lease_seconds, options=ClaimOptions()
        ).kind.value
        for s, found in by_shot.items()
    }


def same_inputs(row: RequestRow) -> bool:
    return True  # every row of a shot was sent with the inputs it has now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    path = Path(tempfile.mkdtemp(prefix="hailuo-standings-")) / "catalog.duckdb"
    build(path, args.rows)
    ledger = RequestLedger(open_catalog(path))
    started = time.perf_counter()
    baseline = every_row(ledger)
    baseline_seconds = time.perf_counter() - started
    started = time.perf_counter()
    decisions = ledger.judge_shots(dict.fromkeys(baseline, same_inputs), ClaimOptions())
    standings = {s: decision.kind.value for s, decision in decisions.items()}
    seconds = time.perf_counter() - started
    assert standings == baseline, "the two readings disagree"
    print(f"{args.rows} rows, {len(standings)} shots")
    print(f"every row (baseline): {baseline_seconds:.2f} s")
    print(f"judge_shots():       {seconds:.2f} s")
    print(f"ratio standings / every row = {seconds / baseline_seconds:.3f}")


if __name__ == "__main__":
    main()
