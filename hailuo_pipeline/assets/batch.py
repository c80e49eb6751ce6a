"""One step, many shot partitions: each succeeded shot is its own materialization, and a failed shot
fails the step by name without losing the others."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from dagster import AssetExecutionContext, AssetMaterialization, DataVersion, Failure, MaterializeResult
from dagster._core.definitions.data_version import DATA_VERSION_IS_USER_PROVIDED_TAG, DATA_VERSION_TAG


@dataclass
class PartitionOutcome:
    metadata: dict[str, Any] = field(default_factory=dict)
    data_version: str | None = None
    error: str | None = None
    retryable: bool = False


def finish_partitions(
    context: AssetExecutionContext, outcomes: dict[str, PartitionOutcome], *, metadata_added: bool = False
) -> Iterator[MaterializeResult | AssetMaterialization]:
    """Yield the step's result, or yield the successes' materializations and raise a Failure naming the
    failures (yielded, not logged: events logged by a step that then raises are not kept).
    `metadata_added`: the caller already gave each partition its metadata with add_asset_metadata."""
    failed = {key: o for key, o in outcomes.items() if o.error is not None}
    succeeded = {key: o for key, o in outcomes.items() if o.error is None}
    if not failed:
        if len(outcomes) == 1:
            (only,) = outcomes.values()
            version = DataVersion(only.data_version) if only.data_version else None
            yield MaterializeResult(metadata=only.metadata, data_version=version)
            return
        if not metadata_added:
            for key, outcome in succeeded.items():
                context.add_asset_metadata(outcome.metadata, partition_key=key)
        yield MaterializeResult()
        return
    for key, outcome in succeeded.items():
        tags = {}
        if outcome.data_version:
            tags = {DATA_VERSION_TAG: outcome.data_version, DATA_VERSION_IS_USER_PROVIDED_TAG: "true"}
        yield AssetMaterialization(asset_key=context.asset_key, partition=key, metadata=outcome.metadata, tags=tags)
    lines = [f"{key}: {outcome.error}" for key, outcome in sorted(failed.items())]
    retryable = any(outcome.retryable for outcome in failed.values())
    raise Failure(
        description=f"{len(failed)} of {len(outcomes)} shot(s) failed"
        + (f" ({len(succeeded)} materialized)" if succeeded else "")
        + ":\n"
        + "\n".join(lines),
        metadata={"failed_shots": sorted(failed), "succeeded_shots": sorted(succeeded)},
        allow_retries=retryable,
    )


class InstanceWriter:
    """Each run-log line and each `add_asset_metadata` is a write to the Dagster instance (~8 ms on
    SQLite). Called from the event loop, they would stall submits and polls whenever many shots finish
    together; this hands them, in order, to one worker thread, and `drain()` waits for them."""

    def __init__(self, context: AssetExecutionContext) -> None:
        self._context = context
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dagster-instance-writes")
        self._pending: list[Future] = []

    def _submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._pending.append(self._worker.submit(fn, *args, **kwargs))

    def info(self, message: str) -> None:
        self._submit(self._context.log.info, message)

    def warning(self, message: str) -> None:
        self._submit(self._context.log.warning, message)

    def error(self, message: str) -> None:
        self._submit(self._context.log.error, message)

    def add_asset_metadata(self, metadata: dict[str, Any], partition_key: str) -> None:
        self._submit(self._context.add_asset_metadata, metadata, partition_key=partition_key)

    def drain(self) -> None:
        self._worker.shutdown(wait=True)
        for future in self._pending:
            future.result()  # surface any failure of a write
