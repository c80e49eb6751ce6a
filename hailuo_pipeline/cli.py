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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hailuo_pipeline import settings

DEMO_KEY = "emulator-demo-key"


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
        # the `fal` pool bounds simultaneous fal steps across runs; tune with `dagster instance concurrency set`.
        # The instance hailuo creates for itself opts out of Dagster's usage statistics (its notice would
        # otherwise interrupt the command's output); say so in the file, where Dagster documents the switch.
        config.write_text(
            "concurrency:\n  pools:\n    default_limit: 4\n"
            "# created by `hailuo`; set enabled: true to send Dagster usage statistics\n"
            "telemetry:\n  enabled: false\n"
        )
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


def _console_logger():
    """The `hailuo` command's console: the pipeline's own lines, timestamped. Dagster's events (step
    failures with their stack traces among them) stay in the instance's event log; the command prints
    each failed shot's cause and fix itself."""
    import logging

    from dagster import logger

    class PipelineLinesOnly(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            meta = getattr(record, "dagster_meta", None) or {}
            if meta.get("dagster_event") is not None:
                return False
            record.msg, record.args = meta.get("orig_message", record.getMessage()), ()
            return True

    @logger(description="hailuo's console: the pipeline's own log lines, without Dagster's events")
    def hailuo_console(_init_context) -> logging.Logger:
        console = logging.getLogger("hailuo.console")
        for old in list(console.handlers):  # one handler, on the current stdout
            console.removeHandler(old)
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        handler.addFilter(PipelineLinesOnly())
        console.addHandler(handler)
        console.setLevel(logging.INFO)
        console.propagate = False
        return console

    return hailuo_console


def materialize(
    shot_ids: list[str] | None = None,
    *,
    new_take: bool = False,
    resubmit_ambiguous: bool = False,
    retry_refused: bool = False,
    concurrency: int = 16,
    shots_per_run: int = 100,
    say: Callable[[str], object] = lambda _line: None,
) -> dict[str, Any]:
    """Validate and generate pending (or the named) shots in the current DAGSTER_HOME instance, many
    shots per run, the way the sensor plans them, after resuming what earlier runs left behind. `say`
    hears what will be done and left alone before the runs start. Returns what succeeded and, for each
    other shot, its cause and fix."""
    from dagster import DagsterEventType

    from hailuo_pipeline.automation.partitions import shots_partitions
    from hailuo_pipeline.automation.registration import plan_shot_runs, range_tags
    from hailuo_pipeline.catalog.duckdb_ledger import DuckDBLedgerStore
    from hailuo_pipeline.catalog.ledger import RequestLedger
    from hailuo_pipeline.definitions import build_definitions
    from hailuo_pipeline.generation.planning import plan_shots

    if not os.environ.get("FAL_KEY", "").strip():
        raise SystemExit("error: FAL_KEY is not set; export your fal key (or run `hailuo demo` to try it offline)")
    instance = _instance()
    manifest = sync(instance)["manifest"]
    registered = instance.get_dynamic_partitions(shots_partitions.name)
    unknown = [s for s in shot_ids or [] if s not in registered]
    if unknown:
        raise SystemExit(f"error: not registered shot(s): {', '.join(unknown)} (check shots.csv)")
    plan = plan_shots(registered, manifest, RequestLedger(DuckDBLedgerStore(settings.catalog_path())).standings())
    if shot_ids:
        targets = list(shot_ids)
        notes: list[str] = []
    else:
        targets = plan.targets(resubmit_ambiguous=resubmit_ambiguous, retry_refused=retry_refused)
        notes = plan.notes(resubmit_ambiguous=resubmit_ambiguous, retry_refused=retry_refused)
    for note in notes:
        say(note)
    job = build_definitions().resolve_job_def("generate_shots").with_logger_defs({"console": _console_logger()})
    config = {
        "new_take": new_take,
        "resubmit_ambiguous": resubmit_ambiguous,
        "retry_refused": retry_refused,
        "concurrency": concurrency,
    }
    run_config = {"ops": {"hailuo_shots": {"config": config}}, "loggers": {"console": {}}}
    delivered: set[str] = set()
    failed: dict[str, dict[str, Any]] = {}
    run_ids = []
    wanted = {DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.STEP_FAILURE}
    for start, end in plan_shot_runs(registered, targets, manifest, shots_per_run):
        kwargs: dict[str, Any] = {"partition_key": start} if start == end else {"tags": range_tags(start, end)}
        with one_planned_event_per_range():
            result = job.execute_in_process(instance=instance, run_config=run_config, raise_on_error=False, **kwargs)
        run_ids.append(result.run_id)
        # read from the instance: each shot's materialization is stored as it is delivered, also when a
        # later shot fails the step; the last failure of a retried step holds each failed shot's reason
        for record in instance.all_logs(result.run_id, of_type=wanted):
            event = record.dagster_event
            if event is None:
                continue
            if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
                materialization = event.step_materialization_data.materialization
                if materialization.asset_key.to_user_string() == "hailuo_video":
                    delivered.add(materialization.partition)
            else:
                failed.update(_failed_shots(event.step_failure_data, targets))
    succeeded = [s for s in targets if s in delivered]
    for shot in targets:  # a shot a retry delivered is no longer failed
        if shot in delivered:
            failed.pop(shot, None)
        else:
            failed.setdefault(
                shot, {"cause": "its run stopped before the shot was tried", "fix": "run `hailuo materialize` again"}
            )
    return {"requested": targets, "succeeded": succeeded, "failed": failed, "run_ids": run_ids, "notes": notes}


def _failed_shots(failure: Any, targets: list[str]) -> dict[str, dict[str, Any]]:
    """Each failed shot's cause and fix, from the step failure's structured metadata; a failure of the
    step itself (no such metadata) is every target's reason."""
    data = failure.user_failure_data
    shots = data.metadata.get("shots") if data is not None else None
    if shots is not None:
        return dict(shots.value)
    message = failure.error.message.strip() if failure.error else "the step failed"
    return {s: {"cause": message, "fix": "see the run's log in Dagster"} for s in targets}


def cmd_materialize(args: argparse.Namespace) -> int:
    summary = materialize(
        args.shot or None,
        new_take=args.new_take,
        resubmit_ambiguous=args.resubmit_ambiguous,
        retry_refused=args.retry_refused,
        concurrency=args.concurrency,
        shots_per_run=args.shots_per_run,
        say=print,
    )
    print_outcome(summary)
    return 0 if not summary["failed"] else 1


def print_outcome(summary: dict[str, Any]) -> None:
    print(f"{len(summary['succeeded'])} of {len(summary['requested'])} shot(s) delivered")
    for shot, reason in summary["failed"].items():
        print(f"  failed {shot}: {reason['cause']}")
        print(f"    Fix: {reason['fix']}")


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
    if s["lost_requests"]:
        lines.append(f"lost ${s['lost_usd']:.2f}: {s['lost_requests']} paid request(s) whose video fal no longer had")
    if s["orphans"]:
        lines.append(
            f"orphans {s['orphans']} holding ${s['orphan_usd']:.2f}, oldest {s['orphan_oldest_age_seconds']:.0f} s: "
            "paid requests no run follows; `hailuo materialize` resumes them by id"
        )
        lines.append(report.orphans.to_string(index=False))
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
        summary = materialize(None, say=print)
    finally:
        if server is not None:
            server.stop()
    print_outcome(summary)
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
    run.add_argument(
        "--resubmit-ambiguous",
        action="store_true",
        help="submit again where a submit got no answer (every such shot, or the named ones); may pay twice",
    )
    run.add_argument(
        "--retry-refused",
        action="store_true",
        help="send again inputs fal refused for good (every such shot, or the named ones); fal may bill again",
    )
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
