"""`hailuo`: the emulator, headless sync / materialize / report, and the offline demo.

Heavy imports happen inside the commands: fal_client reads FAL_QUEUE_RUN_HOST when it is imported,
so `demo` must point it at the emulator before anything imports it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hailuo_pipeline import settings

DEMO_KEY = "emulator-demo-key"
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def _instance():
    from dagster import DagsterInstance

    if not os.environ.get("DAGSTER_HOME"):
        home = settings.data_dir() / "dagster_home"
        os.environ["DAGSTER_HOME"] = str(home)
        print(f"DAGSTER_HOME is not set; using {home}", file=sys.stderr)
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        # the `fal` pool bounds simultaneous fal steps across runs; tune with `dagster instance concurrency set`
        config.write_text("concurrency:\n  pools:\n    default_limit: 4\n")
    return DagsterInstance.get()


def cmd_emulator(args: argparse.Namespace) -> int:
    from hailuo_pipeline.emulator.server import EmulatorServer
    from hailuo_pipeline.emulator.state import Latency, Settings

    latency = Latency(args.queue_seconds, args.inference_seconds, args.jitter_seconds)
    server = EmulatorServer(Path(args.state_dir), port=args.port, settings=Settings(latency=latency))
    print(f"fal emulator on {server.url}; point fal_client at it with:")
    for key, value in server.env().items():
        print(f"  export {key}={value}")
    print("  export FAL_KEY=any-non-empty-key", flush=True)
    server.serve_forever()
    return 0


def sync(instance) -> dict[str, Any]:
    from hailuo_pipeline.automation.partitions import shots_partitions
    from hailuo_pipeline.automation.registration import record_shots
    from hailuo_pipeline.catalog.store import Catalog
    from hailuo_pipeline.shots.manifest import read_manifest

    manifest = read_manifest(settings.manifest_path())
    existing = instance.get_dynamic_partitions(shots_partitions.name)
    plan = record_shots(Catalog(settings.catalog_path()), manifest, set(existing))
    if plan.new:
        instance.add_dynamic_partitions(shots_partitions.name, plan.new)
    return {"manifest": manifest, "new": plan.new, "changed": plan.changed, "errors": manifest.errors}


def cmd_sync(args: argparse.Namespace) -> int:
    from hailuo_pipeline.shots.manifest import ManifestError

    try:
        result = sync(_instance())
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for error in result["errors"]:
        print(f"skipped: {error}", file=sys.stderr)
    print(
        f"{len(result['manifest'].shots)} shot(s) in the manifest: {len(result['new'])} new, "
        f"{len(result['changed'])} edited, {len(result['errors'])} bad row(s)"
    )
    return 0


def pending_shots(registered: list[str], in_manifest: set[str]) -> list[str]:
    """Registered shots in the manifest with no delivered or in-flight request."""
    from hailuo_pipeline.catalog.ledger import RequestLedger
    from hailuo_pipeline.catalog.store import Catalog

    settled = RequestLedger(Catalog(settings.catalog_path())).settled_shots()
    return [s for s in registered if s in in_manifest and s not in settled]


@contextmanager
def one_planned_event_per_range() -> Iterator[None]:
    """Create runs with one "materialization planned" event per asset for the run's range, instead of one
    per shot and asset (600 SQLite writes, about 4.5 s, for 200 shots before the first request). Dagster
    then cannot mark failed shots itself; the step plans those individually (InstanceWriter.mark_failed).
    A value set in the environment is left as it is."""
    name = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"
    if name in os.environ:
        yield
        return
    os.environ[name] = "true"
    try:
        yield
    finally:
        del os.environ[name]


def materialize(
    shot_ids: list[str] | None = None,
    *,
    new_take: bool = False,
    resubmit_ambiguous: bool = False,
    concurrency: int = 16,
    shots_per_run: int = 100,
) -> dict[str, Any]:
    """Validate and generate pending (or the named) shots in the current DAGSTER_HOME instance, many
    shots per run, the way the sensor plans them. Returns what succeeded and why the rest failed."""
    from dagster import DagsterEventType

    from hailuo_pipeline.automation.partitions import shots_partitions
    from hailuo_pipeline.automation.registration import plan_shot_runs, range_tags
    from hailuo_pipeline.definitions import build_definitions

    instance = _instance()
    manifest = sync(instance)["manifest"]
    registered = instance.get_dynamic_partitions(shots_partitions.name)
    unknown = [s for s in shot_ids or [] if s not in registered]
    if unknown:
        raise SystemExit(f"error: not registered shot(s): {', '.join(unknown)} (check shots.csv)")
    targets = shot_ids or pending_shots(registered, set(manifest.shots))
    job = build_definitions().resolve_job_def("generate_shots")
    config = {"new_take": new_take, "resubmit_ambiguous": resubmit_ambiguous, "concurrency": concurrency}
    run_config = {**QUIET_CONSOLE, "ops": {"hailuo_shots": {"config": config}}}
    delivered: set[str] = set()
    failed: dict[str, str] = {}
    run_ids = []
    wanted = {DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.STEP_FAILURE}
    for start, end in plan_shot_runs(registered, targets, manifest, shots_per_run):
        kwargs: dict[str, Any] = {"partition_key": start} if start == end else {"tags": range_tags(start, end)}
        with one_planned_event_per_range():
            result = job.execute_in_process(instance=instance, run_config=run_config, raise_on_error=False, **kwargs)
        run_ids.append(result.run_id)
        # read from the instance: each shot's materialization is stored as it is delivered, also when a
        # later shot fails the step
        for record in instance.all_logs(result.run_id, of_type=wanted):
            event = record.dagster_event
            if event is None:
                continue
            if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
                materialization = event.step_materialization_data.materialization
                if materialization.asset_key.to_user_string() == "hailuo_video":
                    delivered.add(materialization.partition)
            elif event.step_failure_data.error:
                for line in event.step_failure_data.error.message.splitlines():
                    shot, _, reason = line.partition(": ")
                    if shot in targets and reason:
                        failed.setdefault(shot, reason.strip())
    succeeded = [s for s in targets if s in delivered]
    for shot in targets:
        if shot not in delivered and shot not in failed:
            failed[shot] = "not delivered; see its run's log in Dagster"
    return {"requested": targets, "succeeded": succeeded, "failed": failed, "run_ids": run_ids}


def cmd_materialize(args: argparse.Namespace) -> int:
    summary = materialize(
        args.shot or None,
        new_take=args.new_take,
        resubmit_ambiguous=args.resubmit_ambiguous,
        concurrency=args.concurrency,
        shots_per_run=args.shots_per_run,
    )
    print(f"{len(summary['succeeded'])} of {len(summary['requested'])} shot(s) delivered")
    for shot, reason in summary["failed"].items():
        print(f"  failed {shot}: {reason}")
    return 0 if not summary["failed"] else 1


def report_text(fmt: str) -> str:
    from hailuo_pipeline.catalog.ledger import Budget
    from hailuo_pipeline.catalog.report import build_report
    from hailuo_pipeline.catalog.store import Catalog

    budget = Budget.from_usd(
        settings.budget_usd_from_env(settings.DAILY_BUDGET_ENV), settings.budget_usd_from_env(settings.TOTAL_BUDGET_ENV)
    )
    report = build_report(Catalog(settings.catalog_path()), budget)
    if fmt == "json":
        return json.dumps(report.as_dict(), indent=2, default=str)
    if fmt == "csv":
        return "metric,value\n" + "\n".join(f"{k},{'' if v is None else v}" for k, v in report.summary.items())
    s = report.summary
    lines = [
        f"catalog: {settings.catalog_path()}",
        f"spend today ${s['spend_today_usd']:.2f} | month to date ${s['spend_month_to_date_usd']:.2f} | "
        f"all time ${s['spend_all_time_usd']:.2f} | reserved ${s['reserved_usd']:.2f}",
        f"requests {s['requests']} | succeeded {s['succeeded']} | retries {s['retries']} | failures "
        f"{s['failures']} | cancelled {s['cancellations']} | ambiguous {s['ambiguous']}",
    ]
    if s["latency_mean_seconds"] is not None:
        lines.append(f"latency mean {s['latency_mean_seconds']:.1f} s | p95 {s['latency_p95_seconds']:.1f} s")
    for name in ("daily", "total"):
        if s[f"{name}_budget_usd"] is not None:
            lines.append(f"{name} budget ${s[f'{name}_budget_usd']:.2f}, used {100 * s[f'{name}_budget_used']:.1f}%")
    if not report.by_duration.empty:
        lines.append(report.by_duration.to_string(index=False))
    return "\n".join(lines)


def cmd_report(args: argparse.Namespace) -> int:
    print(report_text(args.format))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from hailuo_pipeline.demo import write_demo_shots

    live = bool(os.environ.get("FAL_KEY"))
    if live and not args.live:
        print(
            "FAL_KEY is set: the demo would spend real money on fal (3 videos, $0.70). "
            "Run `hailuo demo --live` to do that, or unset FAL_KEY to run offline on the emulator.",
            file=sys.stderr,
        )
        return 2
    write_demo_shots(settings.data_dir())
    server = None
    if not live:
        from hailuo_pipeline.emulator.server import EmulatorServer
        from hailuo_pipeline.emulator.state import Latency, Settings

        if "fal_client" in sys.modules:
            raise SystemExit("internal error: fal_client was imported before the emulator was configured")
        server = EmulatorServer(settings.data_dir() / "emulator", settings=Settings(latency=Latency(1.0, 3.0, 0.5)))
        server.start()
        os.environ.update(server.env())
        os.environ["FAL_KEY"] = DEMO_KEY
        print(f"offline: fal emulator on {server.url} (no money is spent)")
    try:
        summary = materialize(None)
    finally:
        if server is not None:
            server.stop()
    print(f"{len(summary['succeeded'])} of {len(summary['requested'])} shot(s) delivered")
    for shot, reason in summary["failed"].items():
        print(f"  failed {shot}: {reason}")
    print(report_text("table"))
    print(
        f"videos in {settings.videos_dir()}; open the UI with `dagster dev` (DAGSTER_HOME={os.environ['DAGSTER_HOME']})"
    )
    return 0 if not summary["failed"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hailuo", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    emulator = commands.add_parser("emulator", help="serve the fal-compatible emulator over HTTPS")
    emulator.add_argument("--port", type=int, default=8443)
    emulator.add_argument("--state-dir", default=str(settings.data_dir() / "emulator"))
    emulator.add_argument("--queue-seconds", type=float, default=1.0)
    emulator.add_argument("--inference-seconds", type=float, default=3.0)
    emulator.add_argument("--jitter-seconds", type=float, default=0.5)
    emulator.set_defaults(func=cmd_emulator)

    commands.add_parser("sync", help="register the manifest's shots as partitions").set_defaults(func=cmd_sync)

    run = commands.add_parser("materialize", help="generate pending (or named) shots in DAGSTER_HOME")
    run.add_argument("--shot", action="append", help="a shot id (repeatable); default: every pending shot")
    run.add_argument("--new-take", action="store_true", help="pay for new videos even where one exists")
    run.add_argument("--resubmit-ambiguous", action="store_true", help="resubmit after an unanswered submit")
    run.add_argument("--concurrency", type=int, default=16, help="shots in flight at once per run")
    run.add_argument("--shots-per-run", type=int, default=100)
    run.set_defaults(func=cmd_materialize)

    report = commands.add_parser("report", help="print the catalog's cost summary")
    report.add_argument("--format", choices=["table", "csv", "json"], default="table")
    report.set_defaults(func=cmd_report)

    demo = commands.add_parser("demo", help="offline end-to-end demo on the emulator (or --live on fal)")
    demo.add_argument("--live", action="store_true", help="with FAL_KEY set: really spend on fal")
    demo.set_defaults(func=cmd_demo)

    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGINT))  # `kill` acts like Ctrl-C: cancel at fal
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
