"""``retraining_sensor``: retrains when enough new data has been catalogued since the last training:
a field camera's student (and downsampler) past one threshold of that camera's new images (or when a
newer teacher exists), the teacher past a larger threshold of new HR references.

A sensor rather than declarative automation because the rule counts images across every upload
partition against what each camera's last models were trained on; ``run_key`` makes each catalogue
state request at most one run per camera. Manual materialisation always works alongside it.
"""

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from sr_pipeline.defs.plant.partitions import field_cameras, missing_field_camera_partitions
from sr_pipeline.defs.plant.resources import PlantStorage
from sr_pipeline.defs.training.resources import RetrainSettings
from sr_pipeline.defs.training.assets import camera_training_job, teacher_job
from sr_pipeline.training.retraining import retraining_decisions


@sensor(
    name="retraining_sensor",
    jobs=[teacher_job, camera_training_job],
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.RUNNING,
    description="Retrains a field camera's student after SR_PIPELINE_RETRAIN_STUDENT new images of it (or a newer "
    "teacher), the teacher after SR_PIPELINE_RETRAIN_TEACHER new HR references.",
)
def retraining_sensor(context: SensorEvaluationContext, storage: PlantStorage, retrain: RetrainSettings):
    decisions = retraining_decisions(storage.layout(), storage.registry(), retrain.student_threshold,
                                     retrain.teacher_threshold)
    due = [d for d in decisions if d.target is not None]
    if not due:
        return SkipReason("; ".join(d.reason for d in decisions))
    requests, cameras = [], []
    for d in due:
        tags = {"sr_pipeline/retrain_reason": d.reason}
        if d.target == "teacher":
            requests.append(RunRequest(run_key=d.key, job_name=teacher_job.name, tags=tags))
        else:
            cameras.append(d.camera)
            requests.append(RunRequest(run_key=d.key, job_name=camera_training_job.name, partition_key=d.camera,
                                       tags=tags | {"sr_pipeline/camera": d.camera}))
    # Images ingested outside Dagster (sr-pipeline ingest) never added their camera's partition.
    new = missing_field_camera_partitions(context.instance, cameras)
    return SensorResult(run_requests=requests,
                        dynamic_partitions_requests=[field_cameras.build_add_request(new)] if new else [])
