"""The headless API: what `hailuo sync` and `hailuo materialize` do, callable from Python and tests.

Runs go through the Dagster instance in DAGSTER_HOME (so they show in the UI), many shots per run, the
way the sensor plans them. Results are typed: each shot's outcome with its cause and fix."""

from __future__ import annotations

import fcntl
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from dagster import AssetMaterialization, DagsterEventType, DagsterInstance, logger

from hailuo_pipeline.catalog.backends import is_shared, open_catalog
from hailuo_pipeline.catalog.decisions import ClaimOptions
from hailuo_pipeline.catalog.ledger import RequestLedger
from hailuo_pipeline.catalog.registry import record_shots
from hailuo_pipeline.catalog.rows import Budget
from hailuo_pipeline.catalog.snapshot import SnapshotResult, write_snapshot
from hailuo_pipeline.defs.assets.catalog_snapshot import catalog_snapshot, describe, snapshot_metadata
from hailuo_pipeline.defs.automation.run_requests import STEP, run_target
from hailuo_pipeline.defs.compat import LOG_RECORD_METADATA_ATTR
from hailuo_pipeline.defs.definitions import build_definitions
from hailuo_pipeline.defs.partitions import SHOTS
from hailuo_pipeline.errors import HailuoError
from hailuo_pipeline.fal.config import checked_fal_key
from hailuo_pipeline.generation.estimate import BatchEstimate, estimate_batch
from hailuo_pipeline.generation.planning import ShotPlan, plan_shot_runs, plan_shots, stray_partitions
from hailuo_pipeline.generation.settle import prices_from_fal, settle_on_default_path
from hailuo_pipeline.model_limits import DURATIONS_SECONDS, ENDPOINT_ID
from hailuo_pipeline.settings import SHOTS_PER_RUN, Settings
from hailuo_pipeline.shots.manifest import Manifest, RowError, read_manifest


@dataclass(frozen=True)
class SyncResult:
    manifest: Manifest
    new: list[str]  # shots registered as partitions now
    changed: list[str]  # registered shots whose row changed
    errors: list[RowError]  # rows skipped, each naming its line
    removable: list[str] = field(default_factory=list)  # partitions with no row, never requested
    removed: list[str] = field(default_factory=list)  # those of them removed now (--prune)
    kept: list[str] = field(default_factory=list)  # partitions with no row that the ledger has requests for


@dataclass(frozen=True)
class ShotReason:
    cause: str
    fix: str
    retryable: bool = False


@dataclass
class MaterializeSummary:
    requested: list[str]
    succeeded: list[str] = field(default_factory=list)
    failed: dict[str, ShotReason] = field(default_factory=dict)
    run_ids: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was done and left alone, said before the runs
    estimate: BatchEstimate | None = None  # --dry-run: what the run would pay for, and nothing was run


def instance(settings: Settings) -> DagsterInstance:
    """The instance in DAGSTER_HOME; without one, a new instance under the data directory."""
    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(settings.default_dagster_home)
        print(f"DAGSTER_HOME is not set; using {settings.default_dagster_home}", file=sys.stderr)
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    # Two commands started together on a new instance would both write its dagster.yaml and create its SQLite
    # tables, and one of them fails ("table ... already exists"): the first to come does it, the other waits.
    with open(home / ".hailuo-instance.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        config = home / "dagster.yaml"
        if not config.exists():
            # the `fal` pool bounds simultaneous fal steps across runs; tune with `dagster instance concurrency
            # set`. The run queue starts a queued run within a second (Dagster's default waits up to 5 s). The
            # instance hailuo creates for itself opts out of Dagster's usage statistics (its notice would
            # otherwise interrupt the command's output); said in the file, where Dagster documents it.
            config.write_text(
                "concurrency:\n  pools:\n    default_limit: 4\n"
                "run_queue:\n  dequeue_interval_seconds: 1\n"
                "# created by `hailuo`; set enabled: true to send Dagster usage statistics\n"
                "telemetry:\n  enabled: false\n"
            )
        opened = DagsterInstance.get()
        for storage in ("run_storage", "event_log_storage", "schedule_storage"):
            getattr(opened, storage)  # created here, under the lock, where Dagster creates them lazily
        return opened


def sync(dagster: DagsterInstance, settings: Settings, prune: bool = False) -> SyncResult:
    """Register the manifest's shots as partitions and in the catalog; raises ManifestError. Partitions with
    no row are reported, and with `prune` removed when the ledger never had a request for them."""
    manifest = read_manifest(settings.manifest_path)
    existing = dagster.get_dynamic_partitions(SHOTS)
    catalog = open_catalog(settings.catalog_location)
    plan = record_shots(catalog, manifest, set(existing))
    if plan.new:
        dagster.add_dynamic_partitions(SHOTS, plan.new)
    removable, kept = stray_partitions(existing, manifest, RequestLedger(catalog).requested_shots)
    removed = []
    if prune:
        for shot_id in removable:
            dagster.delete_dynamic_partition(SHOTS, shot_id)
        removed = removable
    return SyncResult(manifest, plan.new, plan.changed, manifest.errors, removable, removed, kept)


def materialize(
    shot_ids: list[str] | None = None,
    *,
    new_take: bool = False,
    resubmit_ambiguous: bool = False,
    retry_refused: bool = False,
    repay_lost: bool = False,
    retake_rejected: bool = False,
    dry_run: bool = False,
    concurrency: int | None = None,
    shots_per_run: int | None = SHOTS_PER_RUN,
    say: Callable[[str], object] = lambda _line: None,
) -> MaterializeSummary:
    """Resume what earlier runs left behind, then validate and generate the pending (or the named) shots.
    `say` hears what will be done and left alone before the runs start."""
    checked_fal_key(os.environ.get("FAL_KEY", ""))  # FalKeyError, said by the command's boundary
    settings = Settings.from_env()
    with instance(settings) as dagster:  # entered: Dagster's definition loads read the instance from it
        manifest = sync(dagster, settings).manifest
        registered = dagster.get_dynamic_partitions(SHOTS)
        unknown = [s for s in shot_ids or [] if s not in registered]
        if unknown:
            raise HailuoError(f"not registered shot(s): {', '.join(unknown)} (check shots.csv)")
        ledger = RequestLedger(open_catalog(settings.catalog_location), lease_seconds=settings.lease_seconds)
        settled = [s.said for s in settle_on_default_path(ledger)]  # before planning: a released shot is paid once
        options = ClaimOptions(new_take, resubmit_ambiguous, retry_refused, repay_lost, retake_rejected)
        plan = plan_shots(registered, manifest, ledger, options)
        summary = MaterializeSummary(requested=list(shot_ids or plan.targets()))
        if not shot_ids:
            summary.notes = [*settled, *plan.notes()]
        else:
            summary.notes = settled
        for note in summary.notes:
            say(note)
        if dry_run:
            summary.estimate = dry_run_estimate(ledger, settings, plan, summary.requested, manifest, say)
            return summary
        job = build_definitions(settings).resolve_job_def("generate_shots").with_logger_defs({"console": console()})
        config = {
            "new_take": new_take,
            "resubmit_ambiguous": resubmit_ambiguous,
            "retry_refused": retry_refused,
            "repay_lost": repay_lost,
            "retake_rejected": retake_rejected,
            **({"concurrency": concurrency} if concurrency else {}),
        }
        delivered: set[str] = set()
        wanted = {DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.STEP_FAILURE}
        for run in plan_shot_runs(registered, summary.requested, manifest, shots_per_run):
            run_config = {"ops": {STEP: {"config": run.step_config(**config)}}, "loggers": {"console": {}}}
            with one_planned_event_per_range():
                result = job.execute_in_process(
                    instance=dagster, run_config=run_config, raise_on_error=False, **run_target(run)
                )
            summary.run_ids.append(result.run_id)
            # read from the instance: each shot's materialization is stored as it is delivered, also when a
            # later shot fails the step; the last failure of a retried step holds each failed shot's reason
            for record in dagster.all_logs(result.run_id, of_type=wanted):
                event = record.dagster_event
                if event is None:
                    continue
                if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
                    materialization = event.step_materialization_data.materialization
                    if materialization.asset_key.to_user_string() == "hailuo_video" and materialization.partition:
                        delivered.add(materialization.partition)
                else:
                    summary.failed.update(failed_shots(event.step_failure_data, summary.requested))
        if is_shared(settings.catalog_location) and summary.run_ids:
            say(describe(snapshot(dagster, settings)))
        summary.succeeded = [s for s in summary.requested if s in delivered]
        for shot in summary.requested:  # a shot a retry delivered is no longer failed
            if shot in delivered:
                summary.failed.pop(shot, None)
            else:
                summary.failed.setdefault(
                    shot, ShotReason("its run stopped before the shot was tried", "run `hailuo materialize` again")
                )
        return summary


@dataclass(frozen=True)
class DayAudit:
    day: date
    verdict: str  # "agree", "mismatch" or "unchecked"
    said: str


def reconcile(days: list[date]) -> list[DayAudit]:
    """Materialize `fal_usage` and its check for each day, on the instance (the runs show in the UI)."""
    settings = Settings.from_env()
    audits: list[DayAudit] = []
    with instance(settings) as dagster:
        job = build_definitions(settings).resolve_job_def("fal_usage_job").with_logger_defs({"console": console()})
        for day in days:
            result = job.execute_in_process(
                instance=dagster, partition_key=str(day), raise_on_error=False, run_config={"loggers": {"console": {}}}
            )
            evaluations = result.get_asset_check_evaluations()
            if not result.success:
                failures = result.get_step_failure_events()
                data = failures[0].step_failure_data.user_failure_data if failures else None
                told = (
                    data.description if data is not None and data.description else "the run failed; see it in Dagster"
                )
                audits.append(DayAudit(day, "unchecked", f"{day}: {told}"))
            elif not evaluations:
                why = "FAL_ADMIN_KEY is not set" if not settings.fal_admin_key else "FAL_KEY is not set"
                audits.append(DayAudit(day, "unchecked", f"{day}: not checked: {why} (fal's usage needs both)"))
            else:
                evaluation = evaluations[0]
                said = evaluation.description or f"{day}: checked"
                audits.append(DayAudit(day, "agree" if evaluation.passed else "mismatch", said))
    return audits


def dry_run_estimate(
    ledger: RequestLedger,
    settings: Settings,
    plan: ShotPlan,
    chosen: list[str],
    manifest: Manifest,
    say: Callable[[str], object],
) -> BatchEstimate:
    """What the run would pay for, at the price it would reserve at (fal's, checked as the run checks it)."""
    for said in prices_from_fal(ledger, ENDPOINT_ID):
        say(said)
    prices = ledger.prices(ENDPOINT_ID, set(DURATIONS_SECONDS))
    total, today = ledger.committed_usd()
    budget = Budget.from_usd(settings.daily_budget_usd, settings.total_budget_usd)
    return estimate_batch(plan, chosen, manifest, prices, budget, total, today)


def report_asset(dagster: DagsterInstance, settings: Settings) -> bool:
    """Materialize `cost_report` (one short run), so the UI shows the spend the command just printed."""
    job = build_definitions(settings).resolve_job_def("cost_report_job").with_logger_defs({"console": console()})
    run_config: dict[str, Any] = {"loggers": {"console": {}}}
    return job.execute_in_process(instance=dagster, run_config=run_config, raise_on_error=False).success


def snapshot(dagster: DagsterInstance, settings: Settings, full: bool = False) -> SnapshotResult:
    """Refresh the DuckDB snapshot of the shared ledger, recorded as a materialization of `catalog_snapshot`
    (without a run of its own: a second run would cost the command about a second for 0.1 s of work)."""
    result = write_snapshot(open_catalog(settings.catalog_location), settings.snapshot_location, full=full)
    dagster.report_runless_asset_event(
        AssetMaterialization(catalog_snapshot.key, description=describe(result), metadata=snapshot_metadata(result))
    )
    return result


def failed_shots(failure: Any, targets: list[str]) -> dict[str, ShotReason]:
    """Each failed shot's cause and fix, from the step failure's structured metadata; a failure of the
    step itself (no such metadata) is every target's reason."""
    data = failure.user_failure_data
    shots = data.metadata.get("shots") if data is not None else None
    if shots is not None:
        return {shot: ShotReason(**reason) for shot, reason in shots.value.items()}
    message = failure.error.message.strip() if failure.error else "the step failed"
    return {s: ShotReason(message, "see the run's log in Dagster") for s in targets}


PLANNED_EVENTS_PER_RANGE = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"
# glibc gives each thread that allocates an arena of its own (up to 8 per core); a batch's run worker runs
# a pool of threads (ledger, downloads, posters) and Dagster's servers run theirs. Two arenas held the
# `dagster dev` tree of a 500-shot batch at 990 MiB instead of 1,022, at the same speed (docs/benchmarks.md).
MALLOC_ARENAS = "MALLOC_ARENA_MAX"


def dagster_dev_command(settings: Settings, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """`dagster dev` on the instance the other commands use (created as they create it), from any folder,
    as the same code location as `dagster dev` in the repo root (sensors' on/off state is kept per location).
    Its daemon creates sensor and backfill runs with one "materialization planned" event per asset and range,
    as `hailuo materialize` does (see one_planned_event_per_range): 1,500 SQLite writes, about 20 s, before
    a 500-shot backfill's run could start."""
    home = Path(instance(settings).root_directory)
    workspace = home / "hailuo-workspace.yaml"
    workspace.write_text(
        f"load_from:\n  - python_module:\n      module_name: {build_definitions.__module__}\n"
        "      location_name: hailuo_pipeline\n"  # pyproject's [tool.dagster] code_location_name
    )
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    env.setdefault(PLANNED_EVENTS_PER_RANGE, "true")
    env.setdefault(MALLOC_ARENAS, "2")
    command = [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "-h", host, "-p", str(port)]
    return command, env


@contextmanager
def one_planned_event_per_range() -> Iterator[None]:
    """Create runs with one "materialization planned" event per asset for the run's range, instead of one
    per shot and asset (600 SQLite writes, about 4.5 s, for 200 shots before the first request). Dagster
    then cannot mark failed shots itself; the step plans those individually (InstanceWriter.mark_failed).
    A value set in the environment is left as it is."""
    if PLANNED_EVENTS_PER_RANGE in os.environ:
        yield
        return
    os.environ[PLANNED_EVENTS_PER_RANGE] = "true"
    try:
        yield
    finally:
        del os.environ[PLANNED_EVENTS_PER_RANGE]


def console():
    """The `hailuo` command's console: the pipeline's own lines, timestamped. Dagster's events (step
    failures with their stack traces among them) stay in the instance's event log; the command prints
    each failed shot's cause and fix itself."""

    class PipelineLinesOnly(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            meta = getattr(record, LOG_RECORD_METADATA_ATTR, None) or {}
            if meta.get("dagster_event") is not None:
                return False
            record.msg, record.args = meta.get("orig_message", record.getMessage()), ()
            return True

    @logger(description="hailuo's console: the pipeline's own log lines, without Dagster's events")
    def hailuo_console(_init_context) -> logging.Logger:
        lines = logging.getLogger("hailuo.console")
        for old in list(lines.handlers):  # one handler, on the current stdout
            lines.removeHandler(old)
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        handler.addFilter(PipelineLinesOnly())
        lines.addHandler(handler)
        lines.setLevel(logging.INFO)
        lines.propagate = False
        return lines

    return hailuo_console
