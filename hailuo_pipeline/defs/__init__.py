"""The Dagster wing: the only package that imports Dagster."""
