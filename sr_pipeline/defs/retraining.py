"""``retraining_sensor``: retrains when enough new field data has been catalogued since the last
training: the student (and downsampler) past one threshold, teacher and student past a larger one.

A sensor rather than declarative automation because the rule counts images across every upload
partition against what the last models were trained on; ``run_key`` makes each catalogue state
request at most one run. Manual materialisation always works alongside it.
"""

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SkipReason, sensor

from sr_pipeline.defs.resources import PlantStorage, RetrainSettings
from sr_pipeline.defs.training import student_retraining_job, training_job
from sr_pipeline.training.retraining import retraining_decision


@sensor(
    name="retraining_sensor",
    jobs=[training_job, student_retraining_job],
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.RUNNING,
    description="Retrains the student after SR_PIPELINE_RETRAIN_STUDENT new images, the teacher (and student) "
    "after SR_PIPELINE_RETRAIN_TEACHER new HR references.",
)
def retraining_sensor(context: SensorEvaluationContext, storage: PlantStorage, retrain: RetrainSettings):
    decision = retraining_decision(storage.layout(), retrain.student_threshold, retrain.teacher_threshold)
    if decision.target is None:
        return SkipReason(decision.reason)
    job = training_job if decision.target == "teacher" else student_retraining_job
    return RunRequest(run_key=decision.key, job_name=job.name,
                      tags={"sr_pipeline/retrain_reason": decision.reason})
