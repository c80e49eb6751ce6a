"""The Dagster assets: validated inputs -> hailuo_video -> cost_report, with asset checks."""
