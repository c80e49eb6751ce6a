"""Shots as partitions: one dynamic partition per manifest row, many of them per run."""

from dagster import BackfillPolicy, DynamicPartitionsDefinition

from hailuo_pipeline.settings import SHOTS_PER_RUN

SHOTS = "shots"
shots_partitions = DynamicPartitionsDefinition(name=SHOTS)

# A backfill is one run (its one step fans out over the shots with asyncio, bounded by fal): runs of a
# fixed size would each drain fal's queue of the batch's requests before the next one starts.
shots_backfill_policy = (
    BackfillPolicy.single_run()
    if SHOTS_PER_RUN is None
    else BackfillPolicy.multi_run(max_partitions_per_run=SHOTS_PER_RUN)
)
