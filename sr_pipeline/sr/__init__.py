"""The ML core: no Dagster imports."""
