"""The weekly evaluation schedule: every Monday at 06:00 plant time, one report per field camera.

The plant's time zone is ``$SR_PIPELINE_PLANT_TZ`` (an IANA name, default UTC), read when the code
location loads. It skips a camera whose student has not been trained (``evaluation_job`` would have
nothing to load); ``ready_cameras`` says which are ready, for the calibration-pairs sensor too.
"""

import dagster as dg

from sr_pipeline.defs.evaluation.assets import evaluation_job
from sr_pipeline.defs.plant.partitions import field_cameras, latest_materialization

WEEKLY_CRON = "0 6 * * 1"  # Monday 06:00
REPORT = dg.AssetKey("evaluation_report")
TEACHER = dg.AssetKey("teacher_checkpoint")
CAMERA_INPUTS = (dg.AssetKey("co_trained_student"), dg.AssetKey("learned_downsampler"))


def missing_inputs(instance: dg.DagsterInstance, camera: str) -> list[str]:
    """The camera's report inputs that have never been materialised."""
    missing = [TEACHER.to_user_string()] if latest_materialization(instance, TEACHER) is None else []
    return missing + [f"{k.to_user_string()}[{camera}]" for k in CAMERA_INPUTS
                      if latest_materialization(instance, k, camera) is None]


def ready_cameras(instance: dg.DagsterInstance) -> tuple[list[str], list[str]]:
    """(field cameras whose report can be made, why the others cannot)."""
    ready, waiting = [], []
    for camera in sorted(instance.get_dynamic_partitions(field_cameras.name)):
        missing = missing_inputs(instance, camera)
        if missing:
            waiting.append(f"{camera}: {', '.join(missing)} never materialised")
        else:
            ready.append(camera)
    return ready, waiting


def build_weekly_evaluation_schedule(timezone: str | None = None,
                                     default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.RUNNING,
                                     ) -> dg.ScheduleDefinition:
    """The Monday 06:00 schedule in ``timezone`` (default ``$SR_PIPELINE_PLANT_TZ`` or UTC)."""
    from sr_pipeline.common.clock import plant_timezone

    tz = plant_timezone(timezone).key

    @dg.schedule(
        name="weekly_evaluation_schedule",
        job=evaluation_job,
        cron_schedule=WEEKLY_CRON,
        execution_timezone=tz,
        default_status=default_status,
        description=f"The weekly management reports, one per field camera: Monday 06:00 {tz} (SR_PIPELINE_PLANT_TZ).",
    )
    def _weekly(context: dg.ScheduleEvaluationContext):
        ready, waiting = ready_cameras(context.instance)
        if not ready:
            return dg.SkipReason("nothing to evaluate yet: " + ("; ".join(waiting) or "no field camera has uploaded"))
        when = context.scheduled_execution_time
        key = when.strftime("%Y-%m-%d") if when else None
        return [dg.RunRequest(run_key=f"weekly-{key}-{camera}" if key else None, partition_key=camera,
                              tags={"sr_pipeline/trigger": "weekly", "sr_pipeline/camera": camera})
                for camera in ready]

    return _weekly


weekly_evaluation_schedule = build_weekly_evaluation_schedule()
