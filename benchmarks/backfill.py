"""Backfill throughput: the pipeline against a bare fal_client script, on the same emulator, in one run.

    python benchmarks/backfill.py [--shots 200] [--concurrency 16] [--queue-seconds 2] [--inference-seconds 3]
                                  [--catalog duckdb|postgres]

Starts `hailuo emulator` in its own process (fixed latency, no jitter), then runs, each in its own process:
  1. bare:      fal_client.AsyncClient, N submits with C in flight, handle.get() (fal_client's default
                0.1 s polling), each video downloaded into memory: the floor that the remote service sets;
  2. pipeline:  `hailuo materialize`: one run of N shots (validation, inputs' and videos' materializations,
                C in flight, ledger, download, probe, catalog, asset checks);
  3. per-run:   the run-per-partition path (one Dagster run per shot) on a smaller set, for comparison.
Prints wall times, the ratio pipeline / bare (target <= 1.10), pipeline CPU seconds per shot and peak RSS.
`--catalog postgres` runs the pipeline in the shared mode: the ledger in a local PostgreSQL, videos in a local
S3 API (both started here), as runs on many machines would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from hailuo_pipeline.local_servers import free_port  # noqa: E402  (stdlib only: fal_client stays unimported)


def start_emulator(state_dir: Path, queue: float, inference: float) -> tuple[subprocess.Popen, dict[str, str]]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hailuo_pipeline.cli",
            "emulator",
            "--port",
            str(port),
            "--state-dir",
            str(state_dir),
            "--queue-seconds",
            str(queue),
            "--inference-seconds",
            str(inference),
            "--jitter-seconds",
            "0",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    fal_env = {
        "FAL_QUEUE_RUN_HOST": f"127.0.0.1:{port}",
        "SSL_CERT_FILE": str(state_dir / "emulator-ca.pem"),
        "FAL_KEY": "benchmark-key",
    }
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if (state_dir / "emulator-ca.pem").exists() and httpx.get(
                f"https://127.0.0.1:{port}/_emulator/health", verify=str(state_dir / "emulator-ca.pem")
            ).status_code == 200:
                return process, fal_env
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("emulator did not start")


def write_workspace(root: Path, shots: int) -> Path:
    from hailuo_pipeline.demo import draw_still
    from hailuo_pipeline.shots.manifest import write_manifest

    data = root / "data"
    (data / "images").mkdir(parents=True)
    draw_still((1280, 720), ((18, 40, 90), (250, 170, 90))).save(data / "images" / "still.jpg", quality=90)
    write_manifest(
        data / "shots.csv",
        [
            {
                "shot_id": f"shot-{i:04d}",
                "image": "images/still.jpg",
                "prompt": f"benchmark shot {i}",
                "duration": "6",
                "prompt_optimizer": "true",
            }
            for i in range(shots)
        ],
    )
    return data


def run_child(args: list[str], env: dict[str, str], log: Path | None = None) -> dict:
    """Run a child to completion: its wall time, and its output saved to `log` with each line stamped by
    the seconds since the child started (Dagster's own timestamps have whole seconds only). Also the
    time of the first submit and of the last delivery, read from those stamps."""
    started = time.perf_counter()
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    lines = [(time.perf_counter() - started, line.rstrip("\n")) for line in process.stdout]
    process.wait()
    wall = time.perf_counter() - started
    output = "\n".join(f"{at:8.2f} {line}" for at, line in lines)
    if log is not None:
        log.write_text(output)
    if process.returncode != 0:
        print(output[-4000:], file=sys.stderr)
        raise SystemExit(f"{args} failed with {process.returncode}")
    submits = [at for at, line in lines if ": submitted fal request" in line]
    deliveries = [at for at, line in lines if "delivered, verified and recorded" in line]
    return {
        "wall": wall,
        "first_submit": submits[0] if submits else None,
        "last_delivery": deliveries[-1] if deliveries else None,
    }


def measured(args: list[str], env: dict[str, str], log: Path | None = None) -> dict:
    """run_child, plus the child's CPU seconds and peak RSS (RUSAGE_CHILDREN; the maximum is over all
    children so far, so the larger pipeline child is measured after the smaller bare one)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_child(args, env, log)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["max_rss_mb"] = after.ru_maxrss / 1024  # the largest child so far (kilobytes on Linux)
    return result


async def bare(shots: int, concurrency: int) -> None:
    import fal_client
    import httpx

    from hailuo_pipeline.model_limits import ENDPOINT_ID

    image = fal_client.encode_file(Path(os.environ["BENCH_IMAGE"]))
    client = fal_client.AsyncClient()
    gate = asyncio.Semaphore(concurrency)

    async with httpx.AsyncClient(timeout=300) as http:

        async def one(index: int) -> int:
            async with gate:
                handle = await client.submit(
                    ENDPOINT_ID, {"prompt": f"benchmark shot {index}", "image_url": image, "duration": "6"}
                )
                result = await handle.get()
                return len((await http.get(result["video"]["url"])).content)

        sizes = await asyncio.gather(*(one(i) for i in range(shots)))
    assert all(sizes)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--queue-seconds", type=float, default=2.0)
    parser.add_argument("--inference-seconds", type=float, default=3.0)
    parser.add_argument("--poll-interval", type=float, default=None, help="pipeline's first poll wait (default 1 s)")
    parser.add_argument("--per-run-shots", type=int, default=8, help="shots for the run-per-partition path")
    parser.add_argument("--catalog", choices=["duckdb", "postgres"], default="duckdb")
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        asyncio.run(bare(args.shots, args.concurrency))
        return

    root = Path(tempfile.mkdtemp(prefix="hailuo-bench-"))
    emulator, fal_env = start_emulator(root / "emulator", args.queue_seconds, args.inference_seconds)
    servers: list = []
    if args.catalog == "postgres":
        from hailuo_pipeline.local_servers.postgres import LocalPostgres
        from hailuo_pipeline.local_servers.s3 import LocalS3

        postgres, s3 = LocalPostgres().start(), LocalS3().start()
        servers = [s3, postgres]
        s3.create_bucket("bench")
        fal_env = {
            **fal_env,
            **s3.env(),
            "HAILUO_CATALOG_URL": postgres.url,
            "HAILUO_VIDEO_STORE": "s3://bench/videos",
        }
    try:
        data = write_workspace(root, args.shots)
        env = {
            **os.environ,
            **fal_env,
            "PYTHONPATH": str(REPO),
            "HAILUO_DATA_DIR": str(data),
            "DAGSTER_HOME": str(root / "dagster_home"),
            "BENCH_IMAGE": str(data / "images" / "still.jpg"),
        }
        if args.poll_interval is not None:
            env["HAILUO_FAL_POLL_INTERVAL_SECONDS"] = str(args.poll_interval)
        (root / "dagster_home").mkdir()
        (root / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        me = [sys.executable, str(Path(__file__).resolve())]
        run_child([*me, "--bare", "--shots", "2", "--concurrency", "2"], env)  # warm the emulator's render cache
        baseline = measured([*me, "--bare", "--shots", str(args.shots), "--concurrency", str(args.concurrency)], env)
        pipeline = measured(
            [
                sys.executable,
                "-m",
                "hailuo_pipeline.cli",
                "materialize",
                "--concurrency",
                str(args.concurrency),
                "--shots-per-run",
                str(args.shots),
            ],
            env,
            root / "pipeline.log",
        )
        per_run_data = write_workspace(root / "per-run", args.per_run_shots)
        per_run_env = {**env, "HAILUO_DATA_DIR": str(per_run_data), "DAGSTER_HOME": str(root / "dagster_home")}
        if "HAILUO_CATALOG_URL" in env:  # a ledger of its own, or it would reuse the videos of the same shot ids
            per_run_env["HAILUO_CATALOG_URL"] = env["HAILUO_CATALOG_URL"] + "?schema=per_run"
        per_run = measured(
            [sys.executable, "-m", "hailuo_pipeline.cli", "materialize", "--shots-per-run", "1"], per_run_env
        )
    finally:
        for server in servers:
            getattr(server, "remove", server.stop)()
        emulator.terminate()
        emulator.wait(timeout=30)
    figures = {
        "catalog": args.catalog,
        "shots": args.shots,
        "concurrency": args.concurrency,
        "latency_seconds": args.queue_seconds + args.inference_seconds,
        "pipeline_poll_interval_seconds": args.poll_interval or 1.0,
        "bare_wall_seconds": round(baseline["wall"], 2),
        "pipeline_wall_seconds": round(pipeline["wall"], 2),
        "pipeline_first_submit_seconds": _round(pipeline["first_submit"]),
        "pipeline_last_delivery_seconds": _round(pipeline["last_delivery"]),
        "ratio_pipeline_to_bare": round(pipeline["wall"] / baseline["wall"], 3),
        "pipeline_cpu_seconds_per_shot": round(pipeline["cpu"] / args.shots, 4),
        "pipeline_peak_rss_mb": round(pipeline["max_rss_mb"], 1),
        "run_per_partition_shots": args.per_run_shots,
        "run_per_partition_wall_seconds": round(per_run["wall"], 2),
        "run_per_partition_seconds_per_shot": round(per_run["wall"] / args.per_run_shots, 2),
        "batched_seconds_per_shot": round(pipeline["wall"] / args.shots, 3),
    }
    print(json.dumps(figures, indent=2))
    print(f"pipeline log: {root / 'pipeline.log'}")
    print(f"ratio pipeline/bare = {figures['ratio_pipeline_to_bare']} (target <= 1.10)")


if __name__ == "__main__":
    main()
