"""The shared mode (ledger in PostgreSQL, videos in S3) against the bare fal_client script and the embedded
mode, on the same emulator, in one run.

    python benchmarks/shared.py [--shots 100] [--concurrency 16] [--queue-seconds 2] [--inference-seconds 3]

Starts the emulator, a local PostgreSQL (the machine's package) and an S3 API (moto), then measures, each in
its own processes:
  1. bare:        fal_client, N submits with C in flight, each video downloaded (the floor fal sets);
  2. embedded:    `hailuo materialize` with its defaults, catalog.duckdb and local videos;
  3. shared:      `hailuo materialize` with its defaults, HAILUO_CATALOG_URL + HAILUO_VIDEO_STORE;
  4. 4 workers:   four `hailuo materialize` at once, each with its own data directory, DAGSTER_HOME and
                  N shots of its own, sharing only the servers: their wall time against one worker's (3);
  5. decisions:   ledger claims per second (claim + submitted + completed each) from 8 writer processes, on
                  PostgreSQL and on the DuckDB file.
Prints the figures as JSON and the ratios.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backfill import REPO, measured, run_child, start_emulator, write_workspace

sys.path.insert(0, str(REPO))


def _writer(location: str, worker: int, seconds: float, start_at: float, results) -> None:  # type: ignore[no-untyped-def]
    from hailuo_pipeline.catalog.backends import open_catalog
    from hailuo_pipeline.catalog.ledger import RequestLedger
    from hailuo_pipeline.catalog.rows import Budget, NewRequest
    from hailuo_pipeline.model_limits import ENDPOINT_ID

    ledger = RequestLedger(open_catalog(location))
    ledger.prices(ENDPOINT_ID, {6})  # connect and migrate before the clock starts
    while time.time() < start_at:
        time.sleep(0.001)
    done, deadline = 0, time.time() + seconds
    while time.time() < deadline:
        shot = f"w{worker}-{done}-{uuid.uuid4().hex[:6]}"
        request = NewRequest(shot, f"fp-{shot}", ENDPOINT_ID, {}, 6, "bench", shot, f"writer-{worker}")
        row = ledger.claim(request, Budget(total_usd=None)).row
        assert row is not None
        ledger.mark_submitted(row.request_key, f"id-{shot}")
        ledger.mark_completed(row.request_key, {"video": {"url": "u"}}, "u", 1.0)
        done += 1
    results.put(done)


def decisions_per_second(location: str, writers: int = 8, seconds: float = 10.0) -> float:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 8  # every writer imported and connected first
    processes = [
        context.Process(target=_writer, args=(location, w, seconds, start_at, results)) for w in range(writers)
    ]
    for process in processes:
        process.start()
    total = sum(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    return total / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--queue-seconds", type=float, default=2.0)
    parser.add_argument("--inference-seconds", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    from hailuo_pipeline.local_servers.postgres import LocalPostgres
    from hailuo_pipeline.local_servers.s3 import LocalS3

    root = Path(tempfile.mkdtemp(prefix="hailuo-bench-shared-"))
    emulator, fal_env, _ = start_emulator(root / "emulator", args.queue_seconds, args.inference_seconds)
    postgres = LocalPostgres().start()
    s3 = LocalS3().start()
    try:
        base = {**os.environ, **fal_env, **s3.env(), "PYTHONPATH": str(REPO)}

        def machine(name: str, shared: bool, first_shot: int = 0) -> dict[str, str]:
            folder = root / name
            data = write_workspace(folder, args.shots)
            if first_shot:  # shots of its own: the same image, other prompts (other fingerprints)
                text = (data / "shots.csv").read_text().replace("benchmark shot ", f"benchmark shot {first_shot}-")
                (data / "shots.csv").write_text(text.replace("shot-0", f"shot-{first_shot}-0"))
            home = folder / "dagster_home"
            home.mkdir()
            (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
            (folder / "tmp").mkdir()
            env = {**base, "HAILUO_DATA_DIR": str(data), "DAGSTER_HOME": str(home), "TMPDIR": str(folder / "tmp")}
            env["BENCH_IMAGE"] = str(data / "images" / "still.jpg")
            if shared:
                env["HAILUO_CATALOG_URL"] = postgres.url
                env["HAILUO_VIDEO_STORE"] = "s3://hailuo-bench/videos"
            return env

        s3.create_bucket("hailuo-bench")
        bare_cmd = [sys.executable, str(REPO / "benchmarks" / "backfill.py"), "--bare"]
        materialize = [sys.executable, "-m", "hailuo_pipeline.cli", "materialize"]
        warm = machine("warm", False)
        run_child([*bare_cmd, "--shots", "2", "--concurrency", "2"], warm)  # the emulator's render cache
        bare = measured([*bare_cmd, "--shots", str(args.shots), "--concurrency", str(args.concurrency)], warm)
        embedded = measured(materialize, machine("embedded", False), root / "embedded.log")
        shared = measured(materialize, machine("shared", True), root / "shared.log")

        started = time.perf_counter()
        envs = [machine(f"worker{w}", True, first_shot=w + 1) for w in range(args.workers)]
        children = [
            subprocess.Popen(materialize, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for env in envs
        ]
        outputs = [child.communicate()[0] for child in children]
        many_wall = time.perf_counter() - started
        for output, child in zip(outputs, children, strict=True):
            if child.returncode != 0:
                raise SystemExit(output[-4000:])
        delivered = [f"{args.shots} of {args.shots} shot(s) delivered" in out for out in outputs]

        pg_rate = decisions_per_second(f"{postgres.url}?schema=decisions")
        duck_rate = decisions_per_second(str(root / "decisions.duckdb"))
    finally:
        s3.stop()
        postgres.remove()
        emulator.terminate()
        emulator.wait(timeout=30)
    figures = {
        "shots": args.shots,
        "concurrency": args.concurrency,
        "latency_seconds": args.queue_seconds + args.inference_seconds,
        "bare_wall_seconds": round(bare["wall"], 2),
        "embedded_wall_seconds": round(embedded["wall"], 2),
        "shared_wall_seconds": round(shared["wall"], 2),
        "ratio_embedded_to_bare": round(embedded["wall"] / bare["wall"], 3),
        "ratio_shared_to_bare": round(shared["wall"] / bare["wall"], 3),
        "shared_cpu_seconds_per_shot": round(shared["cpu"] / args.shots, 4),
        "embedded_cpu_seconds_per_shot": round(embedded["cpu"] / args.shots, 4),
        "workers": args.workers,
        "workers_all_delivered": all(delivered),
        "workers_wall_seconds": round(many_wall, 2),
        "ratio_workers_to_one_worker": round(many_wall / shared["wall"], 3),
        "ledger_decisions_per_second_postgres_8_writers": round(pg_rate, 1),
        "ledger_decisions_per_second_duckdb_8_writers": round(duck_rate, 1),
    }
    print(json.dumps(figures, indent=2))
    print(f"logs: {root}")
    print(
        f"ratio shared/bare = {figures['ratio_shared_to_bare']} (target <= 1.10); "
        f"{args.workers} workers / 1 worker = {figures['ratio_workers_to_one_worker']}"
    )
    shutil.rmtree(root / "warm", ignore_errors=True)


if __name__ == "__main__":
    main()
