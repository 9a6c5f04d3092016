"""When the evaluation reports are remade: every Monday at 06:00 plant time (one report per field
camera), and when new calibration pairs of a camera are catalogued.

The plant's time zone is ``$SR_PIPELINE_PLANT_TZ`` (an IANA name, default UTC), read when the code
location loads. Both skip a camera whose student has not been trained (``evaluation_job`` would have
nothing to load). The sensor's cursor holds the number of calibration pairs last evaluated per
camera (JSON); each new count requests one run (``run_key`` per camera and count), and a report that
already covered the pairs (its ``calibration_pairs`` metadata) counts as evaluated.
"""

import json

import dagster as dg

from sr_pipeline.defs.evaluation import evaluation_job
from sr_pipeline.defs.partitions import field_cameras, latest_materialization
from sr_pipeline.defs.resources import PlantStorage

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


def _reported_pairs(instance: dg.DagsterInstance, camera: str) -> int:
    event = latest_materialization(instance, REPORT, camera)
    if event is None:
        return 0
    value = event.metadata.get("calibration_pairs")
    return int(value.value) if value is not None else 0


def _cursor(text: str | None) -> dict[str, int]:
    """The evaluated pair count per camera (an old single-count cursor starts afresh)."""
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return {str(k): int(v) for k, v in value.items()} if isinstance(value, dict) else {}


@dg.sensor(
    name="calibration_pairs_sensor",
    job=evaluation_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Re-evaluates a field camera when new calibration pairs of it are catalogued (one run per camera "
    "and pair count).",
)
def calibration_pairs_sensor(context: dg.SensorEvaluationContext, storage: PlantStorage):
    from sr_pipeline.storage.store import calibration_pairs

    layout = storage.layout()
    cursor = _cursor(context.cursor)
    ready, waiting = ready_cameras(context.instance)
    requests, notes = [], list(waiting)
    for camera in ready:
        count = len(calibration_pairs(layout, [camera]))
        evaluated = max(cursor.get(camera, 0), _reported_pairs(context.instance, camera))
        if count <= evaluated:
            notes.append(f"{camera}: {count} calibration pairs, {evaluated} already evaluated")
            continue
        requests.append(dg.RunRequest(run_key=f"calibration-pairs-{camera}-{count}", partition_key=camera,
                                      tags={"sr_pipeline/trigger": f"{count - evaluated} new calibration pairs",
                                            "sr_pipeline/camera": camera}))
        cursor[camera] = count
    if not requests:
        return dg.SkipReason("; ".join(notes) or "no field camera has uploaded")
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))


weekly_evaluation_schedule = build_weekly_evaluation_schedule()
