"""``camera_upload_sensor``: claims stable camera uploads into batches and requests their ingestion.
The cursor (JSON) holds the first-seen size and mtime of each waiting file and the batches already
requested; Dagster stores it together with the run requests and the partition additions, so a tick
either happens completely or not at all. ``run_key`` is the batch key, which makes each batch's run
unique forever.

Once a student serves the batch's field camera (its own promoted one, or its configured fallback
camera's: ``served_student``), the run of that camera's batch also materialises ``upscaled_archive``
for that batch; otherwise the run selects ``raw_plant_images`` alone. The tag ``sr_pipeline/archive``
says which.
"""


import json
import time
from collections.abc import Callable

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from sr_pipeline.common.cameras import CameraRegistry, CameraRole, UnknownCameraError
from sr_pipeline.defs.ingest import ingest_job, raw_plant_images
from sr_pipeline.defs.partitions import upload_batches
from sr_pipeline.defs.resources import PlantStorage
from sr_pipeline.evaluation.promotion import served_student
from sr_pipeline.intake.uploads import poll_landing, stable_seconds_from_env

INTERVAL_ENV = "SR_PIPELINE_SENSOR_INTERVAL"
DEFAULT_INTERVAL_SECONDS = 30


def _interval_from_env() -> int:
    """``$SR_PIPELINE_SENSOR_INTERVAL`` through the shared validator (empty, NaN, huge: refused)."""
    from sr_pipeline.common.env_settings import ENV_SETTINGS

    return ENV_SETTINGS[INTERVAL_ENV]()


def _archives(layout, registry: CameraRegistry, camera: str) -> bool:
    """Whether a batch of ``camera`` is upscaled in its ingestion run: a field camera that a student serves."""
    try:
        if registry.get(camera).role != CameraRole.field_lr:
            return False
    except UnknownCameraError:
        return False
    return served_student(layout, registry, camera) is not None


def build_camera_upload_sensor(
    name: str = "camera_upload_sensor",
    *,
    minimum_interval_seconds: int | None = None,
    stable_seconds: float | None = None,
    clock: Callable[[], float] = time.time,
    default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING,
) -> SensorDefinition:
    """The upload sensor; ``stable_seconds`` defaults to ``$SR_PIPELINE_STABLE_SECONDS`` (10) read
    at each tick, ``minimum_interval_seconds`` to ``$SR_PIPELINE_SENSOR_INTERVAL`` (30)."""

    @sensor(
        name=name,
        job=ingest_job,
        minimum_interval_seconds=minimum_interval_seconds or _interval_from_env(),
        default_status=default_status,
        description=(
            "Claims camera uploads in <data>/landing/<camera>/ once their size and mtime are stable, "
            "one upload batch per camera per tick, adds the batch partition and requests its ingestion "
            "(and, once a student serves the batch's field camera, the batch's upscaled archive)."
        ),
    )
    def _camera_upload_sensor(context: SensorEvaluationContext, storage: PlantStorage) -> SensorResult:
        state = json.loads(context.cursor) if context.cursor else {}
        wait = stable_seconds if stable_seconds is not None else stable_seconds_from_env()
        layout, registry = storage.layout(), storage.registry()
        result = poll_landing(layout, registry, state, now=clock(), stable_seconds=wait)
        cursor = json.dumps(result.state, sort_keys=True)
        if result.unknown_folders:
            context.log.warning(f"landing folders of unregistered cameras (left untouched): {result.unknown_folders}")
        if not result.batches:
            return SensorResult(
                skip_reason=SkipReason(f"no stable uploads ({result.waiting} file(s) waiting to be stable for {wait:g} s)"),
                cursor=cursor,
            )
        for batch in result.batches:
            what = "recovered unrequested batch" if batch.recovered else f"claimed {len(batch.files)} file(s)"
            context.log.info(f"{batch.batch_key}: {what}")
        keys = [b.batch_key for b in result.batches]
        requests = []
        for b in result.batches:
            archive = _archives(layout, registry, b.camera)
            requests.append(RunRequest(
                run_key=b.batch_key,
                partition_key=b.batch_key,
                # None runs the whole job: ingestion, then the batch's archive.
                asset_selection=None if archive else [raw_plant_images.key],
                tags={"sr_pipeline/camera": b.camera, "sr_pipeline/files": str(len(b.files)),
                      "sr_pipeline/archive": str(archive).lower()},
            ))
        return SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[upload_batches.build_add_request(keys)],
            cursor=cursor,
        )

    return _camera_upload_sensor


camera_upload_sensor = build_camera_upload_sensor()
