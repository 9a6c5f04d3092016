"""``camera_upload_sensor``: claims stable camera uploads into batches, requests their ingestion and,
once a field camera's batch is ingested and a student serves the camera, that batch's archive run.

The cursor (JSON) holds the first-seen size and mtime of each waiting file, the batches already
requested and the field batches whose archive run is still to be requested (``archive_pending``:
batch -> camera); Dagster stores it together with the run requests and the partition additions, so a
tick either happens completely or not at all.

A claimed batch's key is added to ``upload_batches`` and, for a field camera, to that camera's own
batch partitions (``upload_batches__<camera>``, the partitions of its archive asset); the ingestion
run (``ingest_job``, ``raw_plant_images`` only, ``run_key`` the batch key) is tagged
``sr_pipeline/archive: pending`` for a field camera's batch, ``false`` otherwise. On a later tick,
once the batch's ``raw_plant_images`` partition is materialised and a student serves the camera (its
own promoted one, or its configured fallback camera's: ``served_student``), the sensor requests the
camera's ``archive_<camera>_job`` for the batch (``run_key`` ``<batch>:archive``, tag
``sr_pipeline/archive: true``), each once. A batch whose ingestion failed stays pending until a
re-execution materialises it; a camera without a student keeps its batches pending until one serves
it. A field camera added to cameras.yaml after the code location loaded has no archive asset yet: its
batches are ingested and wait, logged, for the code location's reload.
"""


import json
import time
from collections.abc import Callable, Mapping

from dagster import (
    AddDynamicPartitionsRequest,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from sr_pipeline.defs.archive.assets import CameraArchive
from sr_pipeline.defs.intake.assets import ingest_job, raw_plant_images
from sr_pipeline.defs.plant.partitions import camera_batches, latest_materialization, upload_batches
from sr_pipeline.defs.plant.resources import PlantStorage
from sr_pipeline.evaluation.promotion import served_student
from sr_pipeline.common.cameras import CameraRegistry, CameraRole, UnknownCameraError
from sr_pipeline.intake.uploads import poll_landing, stable_seconds_from_env

INTERVAL_ENV = "SR_PIPELINE_SENSOR_INTERVAL"
DEFAULT_INTERVAL_SECONDS = 30
PENDING = "archive_pending"
"""The cursor's key of the field batches whose archive run is not requested yet (batch -> camera)."""

RELOAD = ("field camera {camera} has no archive asset in this code location yet (added to cameras.yaml after it "
          "loaded): batch {batch} is ingested and waits; reload the code location (UI: Deployment -> Reload, or "
          "restart it) to get upscaled_archive/{camera}, and this sensor then requests the batch's archive run")


def _interval_from_env() -> int:
    """``$SR_PIPELINE_SENSOR_INTERVAL`` through the shared validator (empty, NaN, huge: refused)."""
    from sr_pipeline.common.env_settings import ENV_SETTINGS

    return ENV_SETTINGS[INTERVAL_ENV]()


def _read_cursor(text: str | None, log) -> tuple[dict, dict[str, str]]:
    """The landing state and the batches whose archive run is still to be requested, from the cursor. A cursor
    this sensor did not write (set by hand in the UI) is dropped with a warning rather than failing every tick:
    run keys are batch keys, so starting afresh never requests a batch twice."""
    try:
        state = json.loads(text) if text else {}
        if not isinstance(state, dict):
            raise ValueError(f"a JSON {type(state).__name__}, not an object")
        pending = state.pop(PENDING, {})
        if not isinstance(pending, dict) or not all(isinstance(v, str) for v in pending.values()):
            raise ValueError(f"{PENDING} is not an object of batch -> camera")
        return state, {str(k): v for k, v in pending.items()}
    except ValueError as exc:
        log.warning(f"the sensor's cursor is not one it wrote ({exc}); starting afresh: waiting uploads are timed "
                    "again, and a batch whose archive run was still to be requested needs it run by hand "
                    "(docs/archive.md)")
        return {}, {}


def _is_field(registry: CameraRegistry, camera: str) -> bool:
    try:
        return registry.get(camera).role == CameraRole.field_lr
    except UnknownCameraError:
        return False


def build_camera_upload_sensor(
    name: str = "camera_upload_sensor",
    *,
    archives: Mapping[str, CameraArchive] | None = None,
    minimum_interval_seconds: int | None = None,
    stable_seconds: float | None = None,
    clock: Callable[[], float] = time.time,
    default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING,
) -> SensorDefinition:
    """The upload sensor; ``archives`` are the field cameras' archives of the code location (by camera,
    ``build_archive_definitions``; none: it ingests only and keeps field batches pending).
    ``stable_seconds`` defaults to ``$SR_PIPELINE_STABLE_SECONDS`` (10) read at each tick,
    ``minimum_interval_seconds`` to ``$SR_PIPELINE_SENSOR_INTERVAL`` (30)."""
    archives = dict(archives or {})

    @sensor(
        name=name,
        jobs=[ingest_job, *(a.job for a in archives.values())],
        minimum_interval_seconds=minimum_interval_seconds or _interval_from_env(),
        default_status=default_status,
        description=(
            "Claims camera uploads in <data>/landing/<camera>/ once their size and mtime are stable, "
            "one upload batch per camera per tick, adds the batch partition and requests its ingestion; "
            "once a field camera's batch is ingested and a student serves the camera, requests the batch's run "
            "of the camera's archive job."
        ),
    )
    def _camera_upload_sensor(context: SensorEvaluationContext, storage: PlantStorage) -> SensorResult:
        state, pending = _read_cursor(context.cursor, context.log)
        wait = stable_seconds if stable_seconds is not None else stable_seconds_from_env()
        layout, registry = storage.layout(), storage.registry()
        try:
            result = poll_landing(layout, registry, state, now=clock(), stable_seconds=wait)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:  # a cursor edited by hand, not by us
            context.log.warning(f"the sensor's cursor holds state it did not write ({exc!r}); starting afresh: "
                                "waiting uploads are timed again")
            result = poll_landing(layout, registry, {}, now=clock(), stable_seconds=wait)
        if result.unknown_folders:
            context.log.warning(f"landing folders of unregistered cameras (left untouched): {result.unknown_folders}")

        requests: list[RunRequest] = []
        # partitions definition name -> keys to add: every claimed batch, and a field camera's in its own batches
        added: dict[str, list[str]] = {upload_batches.name: [b.batch_key for b in result.batches]} if result.batches else {}
        for b in result.batches:
            what = "recovered unrequested batch" if b.recovered else f"claimed {len(b.files)} file(s)"
            context.log.info(f"{b.batch_key}: {what}")
            field = _is_field(registry, b.camera)
            if field:
                pending[b.batch_key] = b.camera
                if b.camera in archives:
                    added.setdefault(camera_batches(b.camera).name, []).append(b.batch_key)
                else:
                    context.log.warning(RELOAD.format(camera=b.camera, batch=b.batch_key))
            requests.append(RunRequest(
                run_key=b.batch_key,
                job_name=ingest_job.name,
                partition_key=b.batch_key,
                tags={"sr_pipeline/camera": b.camera, "sr_pipeline/files": str(len(b.files)),
                      # pending: this camera's archive job follows in its own run once ingested and served.
                      "sr_pipeline/archive": "pending" if field else "false"},
            ))
        claimed = {b.batch_key for b in result.batches}

        served: dict[str, bool] = {}
        waiting_for = {"ingestion": 0, "a student": 0, "a reload": 0}
        for batch, camera in sorted(pending.items()):
            if not _is_field(registry, camera):
                context.log.warning(f"{batch}: camera {camera} is no longer a field camera of cameras.yaml: "
                                    "its batch is not archived")
                del pending[batch]
                continue
            if camera not in archives:
                waiting_for["a reload"] += 1
                continue
            if camera not in served:
                served[camera] = served_student(layout, registry, camera) is not None
            if not served[camera]:
                waiting_for["a student"] += 1
                continue
            if batch in claimed or latest_materialization(context.instance, raw_plant_images.key, batch) is None:
                waiting_for["ingestion"] += 1
                continue
            name = camera_batches(camera).name
            if not context.instance.has_dynamic_partition(name, batch):  # claimed before the camera's archive existed
                added.setdefault(name, []).append(batch)
            requests.append(RunRequest(
                run_key=f"{batch}:archive",
                job_name=archives[camera].job.name,
                partition_key=batch,
                tags={"sr_pipeline/camera": camera, "sr_pipeline/archive": "true"},
            ))
            del pending[batch]

        cursor = json.dumps({**result.state, PENDING: pending}, sort_keys=True)
        waits = ", ".join(f"{n} for {what}" for what, n in waiting_for.items() if n)
        if not requests:
            return SensorResult(
                skip_reason=SkipReason(
                    f"no stable uploads ({result.waiting} file(s) waiting to be stable for {wait:g} s)"
                    + (f"; field batches waiting for their archive run: {waits}" if waits else "")),
                cursor=cursor,
            )
        return SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[AddDynamicPartitionsRequest(partitions_def_name=name, partition_keys=keys)
                                         for name, keys in added.items()],
            cursor=cursor,
        )

    return _camera_upload_sensor

