"""`hailuo`: the emulator, headless sync / materialize / report, and the offline demo.

Heavy imports happen inside the commands: fal_client reads FAL_QUEUE_RUN_HOST when it is imported,
so `demo` must point it at the emulator before anything imports it.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import signal
import sys
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, NoReturn

from hailuo_pipeline.errors import HailuoError
from hailuo_pipeline.local_servers.commands import serve_emulator, serve_local_servers
from hailuo_pipeline.local_servers.emulator import OFFLINE_KEY, start_offline_fal
from hailuo_pipeline.redact import redact
from hailuo_pipeline.review.commands import review_command, verdict_command
from hailuo_pipeline.settings import DEFAULT_CONCURRENCY, SHOTS_PER_RUN, Settings

if TYPE_CHECKING:
    from hailuo_pipeline.defs.headless import MaterializeSummary


def cmd_sync(args: argparse.Namespace) -> int:
    from hailuo_pipeline.defs.headless import instance, sync

    settings = Settings.from_env()
    with instance(settings) as dagster:
        result = sync(dagster, settings, prune=args.prune)
    for error in result.errors:
        print(f"skipped: {error}", file=sys.stderr)
    print(
        f"{len(result.manifest.shots)} shot(s) in the manifest: {len(result.new)} new, "
        f"{len(result.changed)} edited, {len(result.errors)} bad row(s)"
    )
    if result.removed:
        print(f"removed {len(result.removed)} partition(s) with no row, never requested: {', '.join(result.removed)}")
    elif result.removable:
        print(
            f"{len(result.removable)} partition(s) have no row in shots.csv and were never requested: "
            f"{', '.join(result.removable)}; `hailuo sync --prune` removes them"
        )
    if result.kept:
        print(
            f"{len(result.kept)} partition(s) have no row but have requests in the ledger, kept so their money "
            f"and videos stay visible: {', '.join(result.kept)}"
        )
    return 0


def cmd_materialize(args: argparse.Namespace) -> int:
    from hailuo_pipeline.defs.headless import materialize

    summary = materialize(
        args.shot or None,
        new_take=args.new_take,
        resubmit_ambiguous=args.resubmit_ambiguous,
        retry_refused=args.retry_refused,
        repay_lost=args.repay_lost,
        retake_rejected=args.retake_rejected,
        dry_run=args.dry_run,
        concurrency=args.concurrency,
        shots_per_run=args.shots_per_run,
        say=print if args.format != "json" else lambda line: print(line, file=sys.stderr),  # stdout: the JSON
    )
    if summary.estimate is not None:
        estimate = summary.estimate
        print(json.dumps(estimate.as_dict(), indent=2) if args.format == "json" else "\n".join(estimate.lines()))
        return 0
    print_outcome(summary)
    return 0 if not summary.failed else 1


def print_outcome(summary: MaterializeSummary) -> None:
    print(f"{len(summary.succeeded)} of {len(summary.requested)} shot(s) delivered")
    for shot, reason in summary.failed.items():
        print(f"  failed {shot}: {reason.cause}")
        print(f"    Fix: {reason.fix}")


def cmd_reconcile(args: argparse.Namespace) -> int:
    """0: fal and the ledger agree on every day asked; 1: a day differs (listed); 3: a day could not be checked."""
    from hailuo_pipeline.defs.headless import reconcile

    today = datetime.now(UTC).date()
    days = args.day or [today - timedelta(days=1), today]
    audits = reconcile(sorted(set(days)))
    for audit in audits:
        print(audit.said, file=sys.stdout if audit.verdict == "agree" else sys.stderr)
    verdicts = {audit.verdict for audit in audits}
    return 1 if "mismatch" in verdicts else 3 if "unchecked" in verdicts else 0


def utc_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day written YYYY-MM-DD") from None


def report_text(fmt: str) -> str:
    from hailuo_pipeline.catalog.backends import open_catalog
    from hailuo_pipeline.catalog.report import render_report
    from hailuo_pipeline.catalog.rows import Budget

    settings = Settings.from_env()
    budget = Budget.from_usd(settings.daily_budget_usd, settings.total_budget_usd)
    return render_report(open_catalog(settings.catalog_location), budget, settings.lease_seconds, fmt)


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
    settings = Settings.from_env()
    write_demo_shots(settings.data_dir)
    server = None
    if not live:
        from hailuo_pipeline.emulator.server import EmulatorServer
        from hailuo_pipeline.emulator.state import EmulatorConfig, Latency

        if "fal_client" in sys.modules:
            raise SystemExit("internal error: fal_client was imported before the emulator was configured")
        config = EmulatorConfig(latency=Latency(1.0, 3.0, 0.5))
        server = EmulatorServer(settings.data_dir / "emulator", config=config)
        server.start()
        os.environ.update(server.env())
        os.environ["FAL_KEY"] = OFFLINE_KEY
        print(f"offline: fal emulator on {server.url} (no money is spent)")
    from hailuo_pipeline.defs.headless import instance, materialize, report_asset

    try:
        summary = materialize(None, say=print)
    finally:
        if server is not None:
            server.stop()
    with instance(settings) as dagster:  # the UI then opens on a cost_report that is there, not "never"
        report_asset(dagster, settings)
    print_outcome(summary)
    print(report_text("table"))
    print(
        f"videos in {settings.video_location}; watch them with `hailuo review`; open the UI on the emulator with "
        f"`hailuo ui --offline` (DAGSTER_HOME={os.environ['DAGSTER_HOME']})"
    )
    return 0 if not summary.failed else 1


def cmd_ui(args: argparse.Namespace) -> int:
    """Dagster's UI, daemon and code server on this project's instance (becomes `dagster dev`)."""
    from hailuo_pipeline.defs.headless import dagster_dev_command
    from hailuo_pipeline.local_servers.review import start_review_process
    from hailuo_pipeline.review.server import claim_review_port

    settings = Settings.from_env()
    claim_review_port(settings.review_url).close()  # in use: said (exit 2), and nothing is served elsewhere
    command, env = dagster_dev_command(settings, args.host, args.port)
    env["HAILUO_DAGSTER_URL"] = f"http://{args.host}:{args.port}"  # where the review pages link runs
    if args.offline:
        env.update(start_offline_fal(settings.data_dir / "emulator"))
        print(f"offline: fal emulator on {env['FAL_QUEUE_RUN_HOST']} for this session (no money is spent)")
    elif not env.get("FAL_KEY"):
        warning = "FAL_KEY is not set: runs that make videos will fail. Set it, or use `hailuo ui --offline`"
        print(f"{warning} (the bundled fal emulator; no money is spent)", file=sys.stderr)
    start_review_process(settings.data_dir / "review", env)
    print(f"review server at {settings.review_url}: the `watch` links of materializations open there")
    sys.stdout.flush()
    # a script's background job ignores Ctrl-C, and an ignored signal survives exec: dagster dev would
    # then map SIGTERM to "ignore" too and could never be stopped (it shuts down on SIGINT or SIGTERM)
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.SIG_DFL)
    os.execve(command[0], command, env)


def cmd_snapshot(args: argparse.Namespace) -> int:
    from hailuo_pipeline.defs.assets.catalog_snapshot import describe
    from hailuo_pipeline.defs.headless import instance, snapshot

    settings = Settings.from_env()
    if not settings.catalog_url:
        raise HailuoError("HAILUO_CATALOG_URL is not set; the embedded catalog.duckdb needs no snapshot")
    with instance(settings) as dagster:
        print(describe(snapshot(dagster, settings, full=args.full)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hailuo", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    emulator = commands.add_parser("emulator", help="serve the fal-compatible emulator over HTTPS")
    emulator.add_argument("--port", type=int, default=8443)
    emulator.add_argument("--state-dir", help="default: $HAILUO_DATA_DIR/emulator")
    emulator.add_argument("--queue-seconds", type=float, default=1.0)
    emulator.add_argument("--inference-seconds", type=float, default=3.0)
    emulator.add_argument("--jitter-seconds", type=float, default=0.5)
    emulator.set_defaults(func=serve_emulator)

    sync = commands.add_parser("sync", help="register the manifest's shots as partitions")
    sync.add_argument("--prune", action="store_true", help="remove partitions with no row that were never requested")
    sync.set_defaults(func=cmd_sync)

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
    run.add_argument(
        "--repay-lost",
        action="store_true",
        help="pay again for shots whose paid video was lost at fal (every such shot, or the named ones)",
    )
    run.add_argument(
        "--retake-rejected",
        action="store_true",
        help="pay for one new take of each shot whose latest take was rejected (all such shots, or the named ones)",
    )
    run.add_argument("--dry-run", action="store_true", help="say what it would pay for, and pay for nothing")
    run.add_argument("--format", choices=["table", "json"], default="table", help="--dry-run's output")
    run.add_argument(
        "--concurrency",
        type=int,
        help=f"shots in flight at once per run (default: HAILUO_CONCURRENCY, {DEFAULT_CONCURRENCY})",
    )
    run.add_argument(
        "--shots-per-run", type=int, default=SHOTS_PER_RUN, help="split the batch into runs (default: one run)"
    )
    run.set_defaults(func=cmd_materialize)

    report = commands.add_parser("report", help="print the catalog's cost summary")
    report.add_argument("--format", choices=["table", "csv", "json"], default="table")
    report.set_defaults(func=cmd_report)

    verdict = commands.add_parser("verdict", help="approve or reject a delivered take (default: the latest)")
    verdict.add_argument("shot")
    verdict.add_argument("verdict", choices=["approve", "reject", "withdraw"])
    verdict.add_argument("--take", type=int, help="the take number (default: the shot's latest delivered take)")
    verdict.add_argument("--note", help="why, kept with the verdict")
    verdict.set_defaults(func=verdict_command)

    audit = commands.add_parser("reconcile", help="check the ledger against what fal billed, per UTC day")
    audit.add_argument(
        "--day", action="append", type=utc_day, help="YYYY-MM-DD, repeatable (default: yesterday, today)"
    )
    audit.set_defaults(func=cmd_reconcile)

    review = commands.add_parser("review", help="write an HTML page to watch every take, with prompts and costs")
    review.add_argument("--serve", action="store_true", help="serve the review pages at HAILUO_REVIEW_URL")
    review.add_argument("--out", help="the page to write (default: $HAILUO_DATA_DIR/review/index.html)")
    review.add_argument("--dagster-url", help="where the page links runs to (default: HAILUO_DAGSTER_URL)")
    review.set_defaults(func=review_command)

    ui = commands.add_parser("ui", help="open the Dagster UI (dagster dev) on the instance the commands use")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.add_argument("--offline", action="store_true", help="run videos on the bundled fal emulator (no money is spent)")
    ui.set_defaults(func=cmd_ui)

    snap = commands.add_parser("snapshot", help="shared mode: copy the PostgreSQL ledger into a DuckDB catalog file")
    snap.add_argument("--full", action="store_true", help="copy every row, not only what changed")
    snap.set_defaults(func=cmd_snapshot)

    servers = commands.add_parser("servers", help="run a local PostgreSQL and S3 API to try the shared mode")
    servers.add_argument("--dir", help="default: $HAILUO_DATA_DIR/servers")
    servers.set_defaults(func=serve_local_servers)

    demo = commands.add_parser("demo", help="offline end-to-end demo on the emulator (or --live on fal)")
    demo.add_argument("--live", action="store_true", help="with FAL_KEY set: really spend on fal")
    demo.set_defaults(func=cmd_demo)

    return parser


READS_MANIFEST = {"materialize", "sync", "report", "review", "snapshot", "reconcile"}


def main(argv: list[str] | None = None) -> int:
    """The one boundary of every command: the project's own errors (a setting, the manifest, the key, the
    catalog, the video store) are said as `error: …` with exit code 2, never as a traceback."""
    args = build_parser().parse_args(argv)
    # `kill` acts like Ctrl-C (cancel at fal), also where a shell started us with Ctrl-C ignored (`cmd &`)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        settings = Settings.from_env()  # every setting checked before any command starts
        if args.command in READS_MANIFEST and settings.manifest_path.exists():
            from hailuo_pipeline.shots.manifest import read_manifest

            read_manifest(settings.manifest_path)  # an unreadable manifest is refused by every command alike
        return int(args.func(args) or 0)
    except HailuoError as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return 2


def run() -> NoReturn:
    """The `hailuo` command. Its work is done and stored when main() returns; what is left is the interpreter
    tearing down Dagster's and the clients' objects, 0.4 to 0.9 s measured after a batch, so the command
    runs the exit handlers (the catalog's connections are closed there), flushes its output and exits
    without that teardown."""
    code = main()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
