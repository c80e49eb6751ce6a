"""Backfill throughput on the paths users take, with their defaults, against a bare fal_client script, in one run.

    python benchmarks/backfill.py [--shots 200] [--concurrency 16] [--queue-seconds 2] [--inference-seconds 3]
                                  [--catalog duckdb|postgres] [--paths cli,daemon,sensor] [--per-run-shots N]

Starts `hailuo emulator` in its own process (fixed latency, no jitter), then, each with a data directory,
catalog and Dagster instance of its own:
  1. bare:    fal_client.AsyncClient, N submits with C in flight, handle.get() (fal_client's default 0.1 s
              polling), each video downloaded into memory: the floor that the remote service sets;
  2. cli:     `hailuo materialize`, no flags (validation, inputs' and videos' materializations, C in flight,
              ledger, download, probe, catalog, asset checks), timed from process start to exit;
  3. daemon:  `dagster dev` (webserver, daemon, run queue) already up; a backfill of every shot's
              `source_image`, `prompt` and `hailuo_video` launched as the UI's "Materialize" does, timed from
              the launch until the daemon reports it complete;
  4. sensor:  `dagster dev` already up; `shots_generation_sensor` turned on as Automation's toggle does,
              timed from turning it on until the runs it requested have ended;
  5. per-run: with --per-run-shots N, one run per shot (`--shots-per-run 1`) on N shots, for comparison.
C other than the default 16 is given to the pipeline paths as HAILUO_CONCURRENCY, the one setting a UI
backfill or a sensor's run reads. Prints each path's wall time and ratio to bare, CPU seconds per shot and
peak memory (the CLI's process; the whole `dagster dev` process tree for the daemon and sensor paths).
`--catalog postgres` runs the pipeline in the shared mode: the ledger in a local PostgreSQL, videos in a local
S3 API (both started here).
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
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from hailuo_pipeline.local_servers.dagster_dev import LocalDagsterDev  # noqa: E402
from hailuo_pipeline.local_servers.emulator import start_emulator_process  # noqa: E402  (stdlib only: fal_client stays unimported)
from hailuo_pipeline.settings import DEFAULT_CONCURRENCY  # noqa: E402


def start_emulator(state_dir: Path, queue: float, inference: float) -> tuple[subprocess.Popen, dict[str, str], str]:
    """The emulator (fixed latency, no jitter), the environment that points fal_client at it, and its admin
    token (for `at_fal`)."""
    started = start_emulator_process(
        state_dir,
        ["--queue-seconds", str(queue), "--inference-seconds", str(inference), "--jitter-seconds", "0"],
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return started.process, {**started.fal_env, "FAL_KEY": "benchmark-key"}, started.admin_token


def at_fal(fal_env: dict[str, str], admin: str, first_job: int, jobs: int) -> float:
    """How many of one path's jobs fal held on average (its jobs are the `jobs` created after the first
    `first_job`): C means the pipeline kept every place at fal busy from its first submit to its last end."""
    import httpx

    from hailuo_pipeline.emulator.state import mean_at_fal

    stats = httpx.get(
        f"https://{fal_env['FAL_QUEUE_RUN_HOST']}/_emulator/stats",
        headers={"x-emulator-admin": admin},
        verify=fal_env["SSL_CERT_FILE"],
    ).json()
    return round(mean_at_fal(tuple(span) for span in stats["spans_at_fal"][first_job : first_job + jobs]), 1)


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


LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) { __typename ... on PartitionBackfill { status } }
}"""
START_SENSOR = """
mutation($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) { __typename ... on PythonError { message } }
}"""
RUNS_TAGGED = """
query($key: String!, $value: String!) {
  runsOrError(filter: {tags: [{key: $key, value: $value}]}) {
    ... on Runs { results { runId status creationTime startTime endTime } }
  }
}"""
UNFINISHED = {"REQUESTED", "CANCELING", "FAILING"}
RUN_ENDED = {"SUCCESS", "FAILURE", "CANCELED"}
GENERATION_SENSOR = "shots_generation_sensor"

Runs = list[dict]


def graphql(url: str, query: str, variables: dict) -> dict:
    import httpx

    return httpx.post(url, json={"query": query, "variables": variables}, timeout=60).json()["data"]


def tagged_runs(url: str, key: str, value: str) -> Runs:
    return graphql(url, RUNS_TAGGED, {"key": key, "value": value})["runsOrError"]["results"]


def launch_backfill(shots: int) -> Callable[[str], Callable[[], Runs | None]]:
    """A backfill of every shot's inputs and video, launched as the UI's "Materialize" button does; done
    when the daemon reports it complete."""

    def launch(url: str) -> Callable[[], Runs | None]:
        params = {
            "assetSelection": [{"path": ["source_image"]}, {"path": ["prompt"]}, {"path": ["hailuo_video"]}],
            "partitionNames": [f"shot-{i:04d}" for i in range(shots)],
            "title": "benchmark",
        }
        launched = graphql(url, LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        if launched["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(f"backfill not launched: {launched}")

        def ended() -> Runs | None:
            answer = graphql(url, BACKFILL_STATUS, {"id": launched["backfillId"]})
            status = answer["partitionBackfillOrError"]["status"]
            if status in UNFINISHED:
                return None
            if status not in ("COMPLETED", "COMPLETED_SUCCESS"):
                raise RuntimeError(f"backfill ended {status}")
            return tagged_runs(url, "dagster/backfill", launched["backfillId"])

        return ended

    return launch


def start_generation_sensor(url: str) -> Callable[[], Runs | None]:
    """`shots_generation_sensor` turned on, as Automation's toggle does; done when every run it requested
    has ended (it requests the whole batch in one tick)."""
    selector = {
        "repositoryLocationName": "hailuo_pipeline",
        "repositoryName": "__repository__",
        "sensorName": GENERATION_SENSOR,
    }
    started = graphql(url, START_SENSOR, {"selector": selector})["startSensor"]
    if started["__typename"] != "Sensor":
        raise RuntimeError(f"sensor not started: {started}")

    def ended() -> Runs | None:
        runs = tagged_runs(url, "dagster/sensor_name", GENERATION_SENSOR)
        if not runs or any(r["status"] not in RUN_ENDED for r in runs):
            return None
        if any(r["status"] != "SUCCESS" for r in runs):
            raise RuntimeError(f"sensor runs ended {[r['status'] for r in runs]}")
        return runs

    return ended


def on_dagster_dev(env: dict[str, str], root: Path, launch: Callable[[str], Callable[[], Runs | None]]) -> dict:
    """A daemon's path: `dagster dev` (webserver, daemon, run queue) already up, as a user has it; `launch`
    starts the work through its GraphQL API, as the UI does. Timed from the launch until the work is done.
    Returns the wall time, the tree's peak memory, and when its runs were created, started and ended."""
    server = LocalDagsterDev(env, REPO, root / "dagster-dev.log").start(timeout_seconds=180)
    url = f"{server.url}/graphql"
    try:
        time.sleep(5)  # the daemon and the code server settle; a user's `dagster dev` has been up for a while
        memory = TreeMemory(server.pid)
        started = time.perf_counter()
        ended = launch(url)
        runs = None
        while runs is None:
            time.sleep(0.5)
            runs = ended()
        wall = time.perf_counter() - started
        launched_at = time.time() - wall
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}; see {root / 'dagster-dev.log'}") from exc
    finally:
        peak = memory.stop() if "memory" in locals() else 0.0
        server.stop()
    return {
        "wall": wall,
        "peak_tree_rss_mb": peak,
        "runs": len(runs),
        # the daemons' share: the backfill loop runs every 30 s, the sensor and the run queue every few seconds
        "first_run_created": min(r["creationTime"] for r in runs) - launched_at,
        "first_run_started": min(r["startTime"] for r in runs) - launched_at,
        "last_run_ended": max(r["endTime"] for r in runs) - launched_at,
        "runs_wall": max(r["endTime"] for r in runs) - min(r["startTime"] for r in runs),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


class TreeMemory:
    """Peak resident memory of a process and all its descendants, sampled from /proc every 0.2 s."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_mb, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_mb = max(self.peak_mb, tree_rss_mb(self.pid))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mb


def tree_rss_mb(root: int) -> float:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        grew, tree = bool(more), tree | more
    total = 0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def workspace_env(base: dict[str, str], root: Path, shots: int, schema: str) -> dict[str, str]:
    """A data directory, catalog and Dagster instance of their own for one measured path."""
    data = write_workspace(root, shots)
    (root / "dagster_home").mkdir()
    env = {**base, "HAILUO_DATA_DIR": str(data), "DAGSTER_HOME": str(root / "dagster_home")}
    if "HAILUO_CATALOG_URL" in base:  # a ledger of its own, or it would reuse the videos of the same shot ids
        env["HAILUO_CATALOG_URL"] = base["HAILUO_CATALOG_URL"] + f"?schema={schema}"
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--queue-seconds", type=float, default=2.0)
    parser.add_argument("--inference-seconds", type=float, default=3.0)
    parser.add_argument("--catalog", choices=["duckdb", "postgres"], default="duckdb")
    parser.add_argument(
        "--paths",
        default="cli,daemon,sensor",
        help="comma-separated: cli (hailuo materialize), daemon (a UI backfill), sensor (the generation sensor)",
    )
    parser.add_argument("--per-run-shots", type=int, default=0, help="also time one run per shot on this many")
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        asyncio.run(bare(args.shots, args.concurrency))
        return
    paths = [p for p in args.paths.split(",") if p]

    root = Path(tempfile.mkdtemp(prefix="hailuo-bench-"))
    emulator, fal_env, admin = start_emulator(root / "emulator", args.queue_seconds, args.inference_seconds)
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
    base = {**os.environ, **fal_env, "PYTHONPATH": str(REPO)}
    if args.concurrency != DEFAULT_CONCURRENCY:  # the one setting the comparison needs: the same C as the bare script
        base["HAILUO_CONCURRENCY"] = str(args.concurrency)
    hailuo = [sys.executable, "-m", "hailuo_pipeline.cli"]
    me = [sys.executable, str(Path(__file__).resolve())]
    figures: dict = {
        "catalog": args.catalog,
        "shots": args.shots,
        "concurrency": args.concurrency,
        "latency_seconds": args.queue_seconds + args.inference_seconds,
    }
    try:
        bare_env = workspace_env(base, root / "bare", args.shots, "bare")
        bare_env["BENCH_IMAGE"] = str(Path(bare_env["HAILUO_DATA_DIR"]) / "images" / "still.jpg")
        run_child([*me, "--bare", "--shots", "2", "--concurrency", "2"], bare_env)  # warm the emulator's render cache
        baseline = measured(
            [*me, "--bare", "--shots", str(args.shots), "--concurrency", str(args.concurrency)], bare_env
        )
        figures["bare_wall_seconds"] = round(baseline["wall"], 2)
        figures["bare_cpu_seconds_per_shot"] = round(baseline["cpu"] / args.shots, 4)
        figures["bare_mean_at_fal"] = at_fal(fal_env, admin, 2, args.shots)
        jobs_so_far = 2 + args.shots
        if "cli" in paths:
            env = workspace_env(base, root / "cli", args.shots, "cli")
            cli = measured([*hailuo, "materialize"], env, root / "cli" / "pipeline.log")
            figures.update(
                {
                    "cli_wall_seconds": round(cli["wall"], 2),
                    "cli_ratio": round(cli["wall"] / baseline["wall"], 3),
                    "cli_first_submit_seconds": _round(cli["first_submit"]),
                    "cli_last_delivery_seconds": _round(cli["last_delivery"]),
                    "cli_cpu_seconds_per_shot": round(cli["cpu"] / args.shots, 4),
                    "cli_peak_rss_mb": round(cli["max_rss_mb"], 1),
                    "cli_mean_at_fal": at_fal(fal_env, admin, jobs_so_far, args.shots),
                }
            )
            jobs_so_far += args.shots
        launches = {"daemon": launch_backfill(args.shots), "sensor": start_generation_sensor}
        for path in (p for p in ("daemon", "sensor") if p in paths):
            env = workspace_env(base, root / path, args.shots, path)
            run_child([*hailuo, "sync"], env)  # the shots are registered, as the manifest sensor does
            daemon = on_dagster_dev(env, root / path, launches[path])
            figures.update(
                {
                    f"{path}_wall_seconds": round(daemon["wall"], 2),
                    f"{path}_ratio": round(daemon["wall"] / baseline["wall"], 3),
                    f"{path}_peak_tree_rss_mb": round(daemon["peak_tree_rss_mb"], 1),
                    f"{path}_runs": daemon["runs"],
                    f"{path}_first_run_created_seconds": round(daemon["first_run_created"], 2),
                    f"{path}_first_run_started_seconds": round(daemon["first_run_started"], 2),
                    f"{path}_last_run_ended_seconds": round(daemon["last_run_ended"], 2),
                    f"{path}_runs_wall_seconds": round(daemon["runs_wall"], 2),
                    f"{path}_runs_ratio": round(daemon["runs_wall"] / baseline["wall"], 3),
                    f"{path}_mean_at_fal": at_fal(fal_env, admin, jobs_so_far, args.shots),
                }
            )
            jobs_so_far += args.shots
        if args.per_run_shots:
            env = workspace_env(base, root / "per-run", args.per_run_shots, "per_run")
            per_run = measured([*hailuo, "materialize", "--shots-per-run", "1"], env)
            figures["run_per_partition_seconds_per_shot"] = round(per_run["wall"] / args.per_run_shots, 2)
    finally:
        for server in servers:
            getattr(server, "remove", server.stop)()
        emulator.terminate()
        emulator.wait(timeout=30)
    print(json.dumps(figures, indent=2))
    print(f"logs under {root}")
    for path in paths:
        print(f"ratio {path}/bare = {figures[f'{path}_ratio']} (target <= 1.10 at 2 + 3 s, <= 1.05 at 5 + 25 s)")


if __name__ == "__main__":
    main()
