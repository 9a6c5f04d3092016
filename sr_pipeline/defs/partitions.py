"""Partitions shared by the ingest and archive assets: one dynamic partition per upload batch."""

from dagster import DynamicPartitionsDefinition

upload_batches = DynamicPartitionsDefinition(name="upload_batches")
