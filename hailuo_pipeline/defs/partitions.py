"""Shots as partitions: one dynamic partition per manifest row, many of them per run."""

from dagster import BackfillPolicy, DynamicPartitionsDefinition

from hailuo_pipeline.settings import SHOTS_PER_RUN

SHOTS = "shots"
shots_partitions = DynamicPartitionsDefinition(name=SHOTS)

# Many shots per run: one step fans out over its shots with asyncio, bounded by the remote service.
shots_backfill_policy = BackfillPolicy.multi_run(max_partitions_per_run=SHOTS_PER_RUN)
