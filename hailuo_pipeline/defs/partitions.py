"""Shots as partitions (one dynamic partition per manifest row, many of them per run), and the assets' one group."""

from dagster import BackfillPolicy, DynamicPartitionsDefinition

from hailuo_pipeline.settings import SHOTS_PER_RUN

SHOTS = "shots"
# One group: Lineage opens on one graph, every asset named. Dagster draws a graph of several groups collapsed,
# each a box, until "Expand all groups"; seven assets read better as one open graph.
ASSET_GROUP = "hailuo"
shots_partitions = DynamicPartitionsDefinition(name=SHOTS)

# A backfill is one run (its one step fans out over the shots with asyncio, bounded by fal): runs of a
# fixed size would each drain fal's queue of the batch's requests before the next one starts.
shots_backfill_policy = (
    BackfillPolicy.single_run()
    if SHOTS_PER_RUN is None
    else BackfillPolicy.multi_run(max_partitions_per_run=SHOTS_PER_RUN)
)
