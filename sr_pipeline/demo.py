"""``sr-pipeline demo``: the main job on the bundled data, end to end, in a persistent Dagster instance.

It writes the demo camera uploads, claims them the way the camera-upload sensor does (without
waiting for files to settle, since nothing is still writing them), adds each batch's partition,
and materialises every asset in dependency order. Each run is recorded in ``$DAGSTER_HOME``, so
``make ui`` shows the runs, the lineage and the metadata afterwards.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import dagster as dg

from sr_pipeline.defs.plant.partitions import add_field_camera_partitions, camera_batches, field_cameras, upload_batches
from sr_pipeline.common.cameras import CameraRole
from sr_pipeline.storage.layout import DataLayout


# Dagster's notices about preview/beta APIs (Pipes internals, Output.data_version) are not for demo users.
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)

QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}  # progress, without Dagster's DEBUG events


def _run(job: dg.JobDefinition, instance: dg.DagsterInstance, allow_failure: bool = False, **kwargs) -> None:
    """Run a job in process; a failure stops the demo unless ``allow_failure`` (a camera whose student the
    gate rejected: the other cameras go on, and its report says why)."""
    started = time.perf_counter()
    result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET, **kwargs)
    label = job.name + (f" [{kwargs['partition_key']}]" if "partition_key" in kwargs else "")
    if not result.success:
        failed = [e.message for e in result.all_events if e.is_failure]
        message = f"{label} failed (run {result.run_id}):\n" + "\n".join(failed)
        if not allow_failure:
            raise SystemExit(message)
        print(f"  {message}", flush=True)
        return
    print(f"  {label}: ok in {time.perf_counter() - started:.0f} s (run {result.run_id})", flush=True)


def run_demo(layout: DataLayout, instance: dg.DagsterInstance) -> None:
    from sr_pipeline.defs.archive.assets import archive_job_name
    from sr_pipeline.defs.plant.resources import PlantStorage
    from sr_pipeline.definitions import build_definitions
    from sr_pipeline.evaluation.promotion import served_student
    from sr_pipeline.intake.demo_data import make_demo_data
    from sr_pipeline.intake.uploads import poll_landing

    print("1/5 writing the demo camera uploads", flush=True)
    make_demo_data(layout)
    storage = PlantStorage(data_root=str(layout.root))
    defs = build_definitions(storage=storage)
    registry = storage.registry()
    print("2/5 ingesting the upload batches", flush=True)
    polled = poll_landing(layout, registry, {}, now=time.time(), stable_seconds=0)
    keys = [b.batch_key for b in polled.batches]
    field_ids = registry.ids(CameraRole.field_lr)
    if keys:  # as the upload sensor does: every batch, and a field camera's also in its archive's partitions
        instance.add_dynamic_partitions(upload_batches.name, keys)
    for camera in field_ids:
        mine = [b.batch_key for b in polled.batches if b.camera == camera]
        if mine:
            instance.add_dynamic_partitions(camera_batches(camera).name, mine)
    for key in keys:  # ingestion; each field camera's archive job runs in step 4, once a student serves it
        _run(defs.resolve_job_def("ingest_job"), instance, partition_key=key)
    if not keys:
        print("  nothing new in the landing folder (the demo uploads were ingested before)")
    uploaded = {b.camera for b in polled.batches if b.camera in field_ids}
    add_field_camera_partitions(instance, uploaded)  # ingestion adds them too; a stubbed or earlier run may not
    cameras = sorted(instance.get_dynamic_partitions(field_cameras.name))
    print(f"3/5 training: the teacher, then per field camera ({', '.join(cameras)}) its camera model and student, "
          "the promotion gate, the promoted student and the learned LR sets (the long part)", flush=True)
    _run(defs.resolve_job_def("teacher_job"), instance)
    for camera in cameras:
        _run(defs.resolve_job_def("camera_training_job"), instance, partition_key=camera, allow_failure=True)
    print("4/5 the upscaled archive of the field camera batches", flush=True)
    for b in polled.batches:
        if b.camera not in field_ids:
            continue
        if served_student(layout, registry, b.camera) is None:
            print(f"  {b.batch_key}: skipped, no student serves field camera {b.camera} (the promotion gate "
                  "rejected it; see its report)")
            continue
        _run(defs.resolve_job_def(archive_job_name(b.camera)), instance, partition_key=b.batch_key)
    # After the archive, so each report's consistency section describes the archive as it now stands.
    print("5/5 the evaluation report of each field camera", flush=True)
    for camera in cameras:
        _run(defs.resolve_job_def("evaluation_job"), instance, partition_key=camera)


def _latest_reports(layout: DataLayout) -> str:
    """The newest report of each field camera (reports/<camera>/<date>/index.html)."""
    newest: dict[str, Path] = {}
    for path in sorted(layout.reports.glob("*/*/index.html"), key=lambda p: p.stat().st_mtime):
        newest[path.parent.parent.name] = path
    return "\n                 ".join(str(p) for p in newest.values()) or "(none written)"


def run_cli(args: argparse.Namespace) -> int:
    layout = args.layout
    # $DAGSTER_HOME when set (make demo sets it), else the data root's own instance.
    home = Path(os.environ.get("DAGSTER_HOME") or layout.dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run_demo(layout, instance)
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s. Where to look:\n"
          f"  reports:       {_latest_reports(layout)}\n"
          f"  models:        {layout.models} (sr-pipeline models: which student the gate promoted)\n"
          f"  archive:       {layout.archive} (upscaled field images, a manifest per batch)\n"
          f"  image catalog: {layout.catalog}\n"
          f"  quarantine:    {layout.quarantine}\n"
          f"  Dagster UI:    make ui, then http://127.0.0.1:3000 (runs, lineage, metadata)", flush=True)
    return 0


if __name__ == "__main__":
    from sr_pipeline.cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
