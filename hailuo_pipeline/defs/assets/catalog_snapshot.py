"""catalog_snapshot (shared mode): the PostgreSQL ledger copied into the DuckDB catalog file users query."""

from datetime import UTC

from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field

from hailuo_pipeline.catalog.snapshot import SnapshotResult, write_snapshot
from hailuo_pipeline.defs.assets.shots import hailuo_video
from hailuo_pipeline.defs.partitions import ASSET_GROUP
from hailuo_pipeline.defs.resources import CatalogResource


class SnapshotConfig(Config):
    full: bool = Field(default=False, description="Copy every row again instead of what changed since the last one")


@asset(
    deps=[hailuo_video],
    group_name=ASSET_GROUP,
    kinds={"duckdb", "postgres"},
    description="The shared ledger (PostgreSQL) as a DuckDB catalog file with the embedded mode's tables and "
    "views: refreshed after each batch and hourly, written atomically, copying only what changed.",
)
def catalog_snapshot(
    context: AssetExecutionContext, config: SnapshotConfig, catalog: CatalogResource
) -> MaterializeResult:
    if not catalog.shared:
        raise Failure(description="the catalog is the embedded DuckDB file already; set url to snapshot a shared one")
    result = write_snapshot(catalog.catalog(), catalog.database, full=config.full)
    context.log.info(describe(result))
    return MaterializeResult(metadata=snapshot_metadata(result))


def describe(result: SnapshotResult) -> str:
    return (
        f"snapshot of the ledger at {result.taken_at:%Y-%m-%d %H:%M:%S} UTC written to {result.destination} "
        f"({'incremental' if result.incremental else 'full'}: {sum(result.rows_copied.values())} rows copied)"
    )


def snapshot_metadata(result: SnapshotResult) -> dict:
    return {
        "destination": MetadataValue.path(result.destination),
        "ledger_time": MetadataValue.timestamp(result.taken_at.replace(tzinfo=UTC).timestamp()),
        "incremental": result.incremental,
        "requests": result.rows_total["requests"],
        "videos": result.rows_total["videos"],
        "rows_copied": sum(result.rows_copied.values()),
        "bytes": result.bytes,
    }
