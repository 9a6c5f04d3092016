"""When the evaluation report is remade: every Monday at 06:00 plant time, and when new calibration
pairs are catalogued.

The plant's time zone is ``$SR_PIPELINE_PLANT_TZ`` (an IANA name, default UTC), read when the code
location loads. Both skip while no student has been trained (``evaluation_job`` would have nothing
to load). The sensor's cursor is the number of calibration pairs last evaluated; each new count
requests one run (``run_key`` per count), and a report that already covered the pairs (its
``calibration_pairs`` metadata) counts as evaluated.
"""


import dagster as dg

from sr_pipeline.defs.evaluation import evaluation_job
from sr_pipeline.defs.resources import PlantStorage

WEEKLY_CRON = "0 6 * * 1"  # Monday 06:00
REPORT = dg.AssetKey("evaluation_report")
REPORT_INPUTS = (dg.AssetKey("teacher_checkpoint"), dg.AssetKey("co_trained_student"), dg.AssetKey("learned_downsampler"))


def missing_inputs(instance: dg.DagsterInstance) -> list[str]:
    """The report's upstream assets that have never been materialised."""
    return [k.to_user_string() for k in REPORT_INPUTS if instance.get_latest_materialization_event(k) is None]


def build_weekly_evaluation_schedule(timezone: str | None = None,
                                     default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.RUNNING,
                                     ) -> dg.ScheduleDefinition:
    """The Monday 06:00 schedule in ``timezone`` (default ``$SR_PIPELINE_PLANT_TZ`` or UTC)."""
    from sr_pipeline.evaluation.calibration import plant_timezone

    tz = plant_timezone(timezone).key

    @dg.schedule(
        name="weekly_evaluation_schedule",
        job=evaluation_job,
        cron_schedule=WEEKLY_CRON,
        execution_timezone=tz,
        default_status=default_status,
        description=f"The weekly management report: Monday 06:00 {tz} (SR_PIPELINE_PLANT_TZ).",
    )
    def _weekly(context: dg.ScheduleEvaluationContext):
        missing = missing_inputs(context.instance)
        if missing:
            return dg.SkipReason(f"nothing to evaluate yet: {', '.join(missing)} never materialised")
        when = context.scheduled_execution_time
        key = when.strftime("%Y-%m-%d") if when else None
        return dg.RunRequest(run_key=f"weekly-{key}" if key else None, tags={"sr_pipeline/trigger": "weekly"})

    return _weekly


def _reported_pairs(instance: dg.DagsterInstance) -> int:
    event = instance.get_latest_materialization_event(REPORT)
    if event is None or event.asset_materialization is None:
        return 0
    value = event.asset_materialization.metadata.get("calibration_pairs")
    return int(value.value) if value is not None else 0


@dg.sensor(
    name="calibration_pairs_sensor",
    job=evaluation_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Re-evaluates when new calibration pairs are catalogued (one run per pair count).",
)
def calibration_pairs_sensor(context: dg.SensorEvaluationContext, storage: PlantStorage):
    from sr_pipeline.storage.store import calibration_pairs

    count = len(calibration_pairs(storage.layout()))
    evaluated = max(int(context.cursor or 0), _reported_pairs(context.instance))
    if count <= evaluated:
        return dg.SkipReason(f"{count} calibration pairs, {evaluated} already evaluated")
    missing = missing_inputs(context.instance)
    if missing:
        return dg.SkipReason(f"{count} calibration pairs but nothing to evaluate yet: {', '.join(missing)} "
                             "never materialised")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"calibration-pairs-{count}",
                                    tags={"sr_pipeline/trigger": f"{count - evaluated} new calibration pairs"})],
        cursor=str(count),
    )


weekly_evaluation_schedule = build_weekly_evaluation_schedule()
