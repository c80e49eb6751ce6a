"""Auditing a day of N requests against fal's records, on the emulator's Platform APIs over HTTPS (paged, 100 per
page, as fal pages), against the bare listing of the same day in the same run (the baseline):

    python benchmarks/audit.py [--requests 10000] [--ambiguous 100]

- bare: the day's request history paged through with httpx alone (no parsing beyond JSON);
- reconcile: `audit_day` (usage, the history of the day and the day before, billed_at written, the comparison);
- settle: `settle_with_fal` for `--ambiguous` ambiguous submits of the day (the history with payloads).
The emulator holds N finished jobs of today and the ledger (embedded DuckDB) N matching paid rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from hailuo_pipeline.catalog.backends import open_catalog  # noqa: E402
from hailuo_pipeline.catalog.ledger import RequestLedger  # noqa: E402
from hailuo_pipeline.catalog.reconcile import audit_day  # noqa: E402
from hailuo_pipeline.catalog.store import Catalog  # noqa: E402
from hailuo_pipeline.emulator.faults import PLATFORM_ADMIN_KEY  # noqa: E402
from hailuo_pipeline.emulator.server import EmulatorServer  # noqa: E402
from hailuo_pipeline.emulator.state import Job  # noqa: E402
from hailuo_pipeline.fal.platform import PlatformClient  # noqa: E402
from hailuo_pipeline.generation.settle import settle_with_fal  # noqa: E402
from hailuo_pipeline.generation.submit import arguments_digest  # noqa: E402
from hailuo_pipeline.model_limits import ENDPOINT_ID  # noqa: E402


def fill(server: EmulatorServer, catalog_path: Path, count: int, ambiguous: int) -> None:
    """N jobs that finished over the last hours of today (UTC), and the ledger's rows for them; the first
    `ambiguous` rows lost their answer (no id, the digest of what they sent)."""
    rendered: Future[bytes] = Future()
    rendered.set_result(b"\0" * 1000)
    now_wall, now_mono = time.time(), time.monotonic()
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    span = max(60.0, now_wall - midnight - 120)
    rows = []
    for i in range(count):
        body = {"prompt": f"shot {i}", "image_url": "https://images.example/x.jpg", "prompt_optimizer": True}
        body["duration"] = "6"
        ago = span * (count - i) / count + 60
        job = Job(str(uuid.uuid4()), ENDPOINT_ID, "x", now_mono - ago, 1.0, 2.0, 6, rendered, body=body)
        job.sent_wall = now_wall - ago
        server.state.jobs[job.request_id] = job
        sent = datetime.fromtimestamp(job.sent_wall, UTC).replace(tzinfo=None)
        lost_answer = i < ambiguous
        rows.append(
            (
                f"k{i}",
                None if lost_answer else job.request_id,
                f"shot-{i}",
                "ambiguous" if lost_answer else "succeeded",
                sent - timedelta(seconds=0.5),
                sent + timedelta(seconds=3),
                0 if lost_answer else 0.19,
                0.19 if lost_answer else 0,
                arguments_digest(body),
            )
        )
    with Catalog(catalog_path).connect() as conn:
        conn.executemany(
            "INSERT INTO requests (request_key, request_id, shot_id, take, fingerprint, endpoint, duration_seconds, "
            "status, created_at, completed_at, price_usd, cost_usd, reserved_usd, arguments_sha256) "
            "VALUES (?, ?, ?, 1, 'f', ?, 6, ?, ?, ?, 0.19, ?, ?, ?)",
            [(k, r, s, ENDPOINT_ID, st, c, d, cost, res, dig) for k, r, s, st, c, d, cost, res, dig in rows],
        )


def bare_listing(server: EmulatorServer, day_start: datetime) -> tuple[float, int]:
    started = time.perf_counter()
    items, cursor = 0, None
    with httpx.Client(verify=str(server.tls.ca), timeout=60) as http:
        while True:
            params = {
                "endpoint_id": ENDPOINT_ID,
                "start": day_start.isoformat(),
                "end": (day_start + timedelta(days=1)).isoformat(),
                "limit": 100,
                **({"cursor": cursor} if cursor else {}),
            }
            page = json.loads(
                http.get(
                    f"{server.url}/v1/models/requests/by-endpoint",
                    params=params,
                    headers={"Authorization": "Key k"},
                ).content
            )
            items += len(page["items"])
            if not page["has_more"]:
                return time.perf_counter() - started, items
            cursor = page["next_cursor"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--ambiguous", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hailuo-audit-bench-"))
    catalog_path = work / "catalog.duckdb"
    open_catalog(catalog_path)  # created and migrated
    with EmulatorServer(work / "emulator") as server:
        fill(server, catalog_path, args.requests, args.ambiguous)
        import os

        os.environ["SSL_CERT_FILE"] = str(server.tls.ca)
        platform = PlatformClient(f"{server.url}/v1", "bench-key", PLATFORM_ADMIN_KEY, deadline_seconds=600)
        today = datetime.now(UTC).date()
        day_start = datetime.combine(today, datetime.min.time(), tzinfo=UTC)
        bare, listed = bare_listing(server, day_start)
        catalog = open_catalog(catalog_path)
        started = time.perf_counter()
        result = audit_day(catalog, platform, ENDPOINT_ID, today)
        reconcile = time.perf_counter() - started
        started = time.perf_counter()
        settled = settle_with_fal(RequestLedger(catalog), platform, ENDPOINT_ID, margin_seconds=300)
        settle = time.perf_counter() - started
    adopted = sum(1 for s in settled if s.outcome == "adopted")
    print(f"{args.requests} requests of {today} listed by the bare client: {listed} items in {bare:.2f} s")
    print(f"reconcile (audit_day): {reconcile:.2f} s, ratio {reconcile / bare:.2f} ({result.said()[:120]})")
    print(f"settle {args.ambiguous} ambiguous submits: {settle:.2f} s, ratio {settle / bare:.2f}, {adopted} adopted")


if __name__ == "__main__":
    main()
