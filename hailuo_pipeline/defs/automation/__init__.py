"""Partitions, sensors and schedules: how shots are registered and swept unattended."""
