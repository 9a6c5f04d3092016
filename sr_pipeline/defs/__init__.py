"""The Dagster layer: assets, sensors, jobs and resources that wire the core to storage."""
