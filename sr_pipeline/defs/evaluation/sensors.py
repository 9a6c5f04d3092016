"""``calibration_pairs_sensor``: re-evaluates a field camera when new calibration pairs of it are catalogued.

Its cursor holds the number of calibration pairs last evaluated per camera (JSON); each new count
requests one run (``run_key`` per camera and count), and a report that already covered the pairs (its
``calibration_pairs`` metadata) counts as evaluated. Like the weekly schedule it skips a camera whose
student has not been trained.
"""

import json

import dagster as dg

from sr_pipeline.defs.evaluation.assets import evaluation_job
from sr_pipeline.defs.evaluation.schedules import REPORT, ready_cameras
from sr_pipeline.defs.plant.partitions import latest_materialization
from sr_pipeline.defs.plant.resources import PlantStorage

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
    description="Re-evaluates a field camera when new gate pairs of it (calibration pairs that are not fit pairs) are catalogued (one run per camera "
    "and pair count).",
)
def calibration_pairs_sensor(context: dg.SensorEvaluationContext, storage: PlantStorage):
    from sr_pipeline.evaluation.calibration import split_calibration_pairs

    layout, registry = storage.layout(), storage.registry()
    cursor = _cursor(context.cursor)
    ready, waiting = ready_cameras(context.instance)
    requests, notes = [], list(waiting)
    for camera in ready:
        # the gate pairs only, as the report counts them: a camera's fit pairs train its G, never judge it
        try:
            count = len(split_calibration_pairs(layout, camera, registry)[1])
        except ValueError as exc:  # this camera's split leaves no gate pair: the others are still looked at
            notes.append(str(exc))
            continue
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
