"""Partitions: one dynamic partition per upload batch (ingest), one per field camera (co-learning,
the learned downsampler and LR sets, the gate, promotion and the report), and per field camera one per
batch of that camera (``upload_batches__<camera>``: that camera's archive asset, defs/archive/assets.py).

A camera's archive has its own batch partitions, not ``upload_batches``: every key of
``upload_batches`` would otherwise be a partition of every camera's archive, one that could never be
materialised (an HR reference camera's batch, another camera's batch). The upload sensor adds a
field camera's batch key to both definitions in the same tick, so the keys are equal and the
archive maps to ``raw_plant_images`` with Dagster's ``IdentityPartitionMapping``.

A field camera's partition is added when its first images are ingested (``raw_plant_images`` and
the upload sensor add it), so the partitions follow the cameras that actually upload; its key is the
camera id of ``configs/cameras.yaml``.
"""

from dagster import AssetKey, AssetRecordsFilter, DynamicPartitionsDefinition

upload_batches = DynamicPartitionsDefinition(name="upload_batches")
field_cameras = DynamicPartitionsDefinition(name="field_cameras")


def camera_batches(camera: str) -> DynamicPartitionsDefinition:
    """The batches of one field camera: the partitions of its archive asset (``upload_batches__<camera>``)."""
    return DynamicPartitionsDefinition(name=f"upload_batches__{camera}")


def missing_field_camera_partitions(instance, cameras) -> list[str]:
    """The ``cameras`` that the instance has no field_cameras partition for yet, sorted."""
    return sorted(set(cameras) - set(instance.get_dynamic_partitions(field_cameras.name)))


def add_field_camera_partitions(instance, cameras) -> list[str]:
    """Add the partitions of ``cameras`` that the instance does not have yet; the ones added."""
    new = missing_field_camera_partitions(instance, cameras)
    if new:
        instance.add_dynamic_partitions(field_cameras.name, new)
    return new


def latest_materialization(instance, key: AssetKey, partition: str | None = None):
    """The newest materialisation of ``key`` (of one partition when given), or None."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1).records
    return records[0].asset_materialization if records else None
