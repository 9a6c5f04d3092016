"""Partitions: one dynamic partition per upload batch (ingest, archive) and one per field camera
(co-learning, the learned downsampler and LR sets, the gate, promotion and the report).

A field camera's partition is added when its first images are ingested (``raw_plant_images`` and
the upload sensor add it), so the partitions follow the cameras that actually upload; its key is the
camera id of ``configs/cameras.yaml``.
"""

from dagster import DynamicPartitionsDefinition

upload_batches = DynamicPartitionsDefinition(name="upload_batches")
field_cameras = DynamicPartitionsDefinition(name="field_cameras")


def add_field_camera_partitions(instance, cameras) -> list[str]:
    """Add the partitions of ``cameras`` that the instance does not have yet; the ones added."""
    have = set(instance.get_dynamic_partitions(field_cameras.name))
    new = sorted(set(cameras) - have)
    if new:
        instance.add_dynamic_partitions(field_cameras.name, new)
    return new
