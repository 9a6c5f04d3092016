"""The Dagster code location: every asset, job, sensor and resource of sr_pipeline.

Loading it imports no torch (training runs in separate processes), so the UI starts fast.
"""

from __future__ import annotations

import dagster as dg

from sr_pipeline.defs.ingest import ingest_job, raw_plant_images
from sr_pipeline.defs.resources import PlantStorage, TrainingSettings
from sr_pipeline.defs.sensors import camera_upload_sensor
from sr_pipeline.defs.training import teacher_checkpoint, training_job


def build_definitions(storage: PlantStorage | None = None, training: TrainingSettings | None = None) -> dg.Definitions:
    return dg.Definitions(
        assets=[raw_plant_images, teacher_checkpoint],
        jobs=[ingest_job, training_job],
        sensors=[camera_upload_sensor],
        resources={
            "storage": storage or PlantStorage(),
            "training": training or TrainingSettings(),
            "pipes_subprocess_client": dg.PipesSubprocessClient(),
        },
    )


defs = build_definitions()
