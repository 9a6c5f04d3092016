"""The Dagster code location: every asset, job, sensor and resource of sr_pipeline.

Loading it imports no torch (training runs in separate processes), so the UI starts fast. It reads
the camera registry (``storage.registry()``): each field camera gets its own archive asset, check and
job (defs/archive/assets.py), so a camera added to cameras.yaml gets them when the code location is reloaded.
"""

from __future__ import annotations

import dagster as dg

from sr_pipeline.defs.archive.assets import build_archive_definitions
from sr_pipeline.defs.evaluation.resources import GateSettings
from sr_pipeline.defs.evaluation.assets import evaluation_job, evaluation_report, promoted_student, promotion_gate
from sr_pipeline.defs.intake.assets import ingest_job, raw_plant_images
from sr_pipeline.defs.training.resources import LRSetSettings, RetrainSettings, TrainingSettings
from sr_pipeline.defs.plant.resources import PlantStorage
from sr_pipeline.defs.training.sensors import retraining_sensor
from sr_pipeline.defs.evaluation.sensors import calibration_pairs_sensor
from sr_pipeline.defs.evaluation.schedules import weekly_evaluation_schedule
from sr_pipeline.defs.intake.sensors import build_camera_upload_sensor
from sr_pipeline.defs.training.assets import camera_training_job, co_trained_student_and_downsampler, learned_degradation_lr_sets, teacher_checkpoint, teacher_job


def step_values_io_manager(storage: PlantStorage) -> dg.FilesystemIOManager:
    """Values passed between steps (checkpoint and report paths), kept under the data root's ``dagster_io/``.

    Not Dagster's default (``$DAGSTER_HOME/storage``): every run worker, every step process and every
    pod sees the data root, but on Kubernetes each pod has its own ``DAGSTER_HOME`` (docs/deploy.md)."""
    return dg.FilesystemIOManager(base_dir=str(storage.layout().root / "dagster_io"))


def build_definitions(storage: PlantStorage | None = None, training: TrainingSettings | None = None) -> dg.Definitions:
    storage = storage or PlantStorage()
    archives = build_archive_definitions(storage.registry())  # one per field camera of cameras.yaml
    return dg.Definitions(
        assets=[raw_plant_images, teacher_checkpoint, co_trained_student_and_downsampler, learned_degradation_lr_sets,
                promoted_student, evaluation_report, *(a.asset for a in archives.values())],
        asset_checks=[promotion_gate, *(a.check for a in archives.values())],
        jobs=[ingest_job, teacher_job, camera_training_job, evaluation_job, *(a.job for a in archives.values())],
        schedules=[weekly_evaluation_schedule],
        sensors=[build_camera_upload_sensor(archives=archives), retraining_sensor, calibration_pairs_sensor],
        resources={
            "storage": storage,
            "io_manager": step_values_io_manager(storage),
            "training": training or TrainingSettings(),
            "lr_sets": LRSetSettings(),
            "retrain": RetrainSettings(),
            "gate": GateSettings(),
            "pipes_subprocess_client": dg.PipesSubprocessClient(),
        },
    )


defs = build_definitions()
