from dagster import BackfillPolicy, DynamicPartitionsDefinition

shots_partitions = DynamicPartitionsDefinition(name="shots")

SHOTS_PER_RUN = 100
# Many shots per run: one step fans out over its shots with asyncio, bounded by the remote service.
shots_backfill_policy = BackfillPolicy.multi_run(max_partitions_per_run=SHOTS_PER_RUN)
