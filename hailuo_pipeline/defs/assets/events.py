"""One step, many shot partitions: each shot's materializations are logged the moment the shot is ready,
by a worker thread, so Dagster's bookkeeping overlaps the wait for fal instead of following it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    AssetRecordsFilter,
    DataVersion,
    Failure,
    MetadataValue,
)

from hailuo_pipeline.defs.compat import (
    CODE_VERSION_TAG,
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
    DEFAULT_DATA_VERSION,
    NULL_EVENT_POINTER,
    AssetMaterializationPlannedData,
    DagsterEvent,
    compute_logical_data_version,
    get_input_data_version_tag,
    get_input_event_pointer_tag,
)
from hailuo_pipeline.generation.errors import ShotFailure
from hailuo_pipeline.redact import redact


class InstanceWriter:
    """Each run-log line and each materialization is a write to the Dagster instance (5 to 10 ms on
    SQLite). Called from the event loop, they would stall submits and polls whenever many shots finish
    together; this hands them, in order, to one worker thread, and `drain()` waits for them.

    Materializations go through `context.log_event`, which stores them at once: a shot delivered early
    in a long batch is visible in the UI while the batch runs, and kept if a later shot fails the step."""

    def __init__(self, context: AssetExecutionContext) -> None:
        self._context = context
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dagster-instance-writes")
        self._pending: list[Future] = []
        self.materialized: set[tuple[AssetKey, str]] = set()

    def _submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._pending.append(self._worker.submit(fn, *args))

    def info(self, message: str) -> None:
        self._submit(self._context.log.info, redact(message))

    def warning(self, message: str) -> None:
        self._submit(self._context.log.warning, redact(message))

    def error(self, message: str) -> None:
        self._submit(self._context.log.error, redact(message))

    def materialize(
        self, asset_key: AssetKey, partition: str, metadata: Mapping[str, Any], data_version: str | None = None
    ) -> None:
        """A materialization of one partition, versioned the way Dagster versions an asset's output:
        by `data_version` when given, else from its code version and its parents' current versions."""
        self._submit(self._log_materialization, asset_key, partition, dict(metadata), data_version)

    def _log_materialization(
        self, asset_key: AssetKey, partition: str, metadata: dict[str, Any], data_version: str | None
    ) -> None:
        tags = self._version_tags(asset_key, partition, data_version)
        self._context.log_event(AssetMaterialization(asset_key, partition=partition, metadata=metadata, tags=tags))
        self.materialized.add((asset_key, partition))

    def _version_tags(self, asset_key: AssetKey, partition: str, data_version: str | None) -> dict[str, str]:
        # Dagster records these tags on a step's outputs; a multi-partition step gets one set for all of
        # its partitions, so they are built here per partition: staleness then follows each shot's inputs.
        assets_def = self._context.assets_def
        code_version = assets_def.code_versions_by_key.get(asset_key) or self._context.run_id
        tags = {CODE_VERSION_TAG: code_version}
        if data_version is not None:
            tags.update({DATA_VERSION_TAG: data_version, DATA_VERSION_IS_USER_PROVIDED_TAG: "true"})
            return tags
        parents: dict[AssetKey, DataVersion] = {}
        for parent in sorted(assets_def.asset_deps.get(asset_key, ()), key=str):
            records = self._context.instance.fetch_materializations(
                AssetRecordsFilter(asset_key=parent, asset_partitions=[partition]), limit=1
            ).records
            record = records[0] if records else None
            materialization = record.asset_materialization if record else None
            version = (materialization.tags or {}).get(DATA_VERSION_TAG) if materialization else None
            parents[parent] = DataVersion(version) if version else DEFAULT_DATA_VERSION
            tags[get_input_data_version_tag(parent)] = parents[parent].value
            tags[get_input_event_pointer_tag(parent)] = str(record.storage_id) if record else NULL_EVENT_POINTER
        tags[DATA_VERSION_TAG] = compute_logical_data_version(code_version, parents).value
        return tags

    def drain(self) -> None:
        self._worker.shutdown(wait=True)
        for future in self._pending:
            future.result()  # surface any failure of a write

    def mark_failed(self, asset_keys: set[AssetKey], failure: ShotFailure) -> None:
        """Make Dagster show the shot's partitions as failed once the run fails, and say why there. Dagster
        shows partitions failed for those it planned one by one; a run planned with one event per range
        (DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS, see README) needs the failed ones planned
        individually. Its open-source instance keeps no failed-materialization event (Dagster+ only), so the
        cause and fix are an observation of the shot's first failed asset (`hailuo_video`, when it is among
        them): its events then say why, not only "Run ... failed". One a shot: each is a write to the instance.
        Call after drain()."""
        step = self._context.get_step_execution_context()
        shot = failure.shot_id
        failed = [key for key in sorted(asset_keys, key=str) if (key, shot) not in self.materialized]
        for asset_key in failed:
            planned = AssetMaterializationPlannedData(asset_key, partition=shot)
            event = DagsterEvent.build_asset_materialization_planned_event(step.job_name, step.step.key, planned)
            self._context.instance.report_dagster_event(event, self._context.run_id)
        if not failed:
            return
        self._context.log_event(
            AssetObservation(
                failed[0],
                partition=shot,
                description=f"not made: {failure.cause}. Fix: {failure.fix}",
                metadata={
                    "failed": MetadataValue.text(failure.cause),
                    "fix": MetadataValue.text(failure.fix),
                    "retryable": not failure.permanent,
                    "run": MetadataValue.dagster_run(self._context.run_id),
                },
            )
        )


def shots_failure(failed: Mapping[str, ShotFailure], total: int) -> Failure:
    """The step's failure when some shots failed: the refusals first, each shot once with its cause and
    fix, and the same as structured metadata (`shots`: shot -> cause, fix, retryable) for tools to read.
    The shots that succeeded are already materialized and stay so. Dagster's retry policy applies only
    when some shot may still succeed; a retry resumes requests and refuses what fal refused before."""
    succeeded = total - len(failed)
    lines = [f"{shot}: {failure.cause}. Fix: {failure.fix}" for shot, failure in sorted(failed.items())]
    return Failure(
        description="\n".join(lines)
        + f"\n({len(failed)} of {total} shot(s) failed"
        + (f"; {succeeded} materialized)" if succeeded else ")"),
        metadata={"shots": MetadataValue.json({shot: f.as_metadata() for shot, f in sorted(failed.items())})},
        allow_retries=any(not f.permanent for f in failed.values()),
    )
