from dagster import DynamicPartitionsDefinition

shots_partitions = DynamicPartitionsDefinition(name="shots")
