"""The pipeline on a Dagster instance kept in a real PostgreSQL server (dagster-postgres).

The main path runs through the code location's public Definitions (``build_definitions``), the way
the daemon would: the camera-upload sensor claims the uploads, its run requests ingest the batches,
one run trains the teacher and co-trains the student (the promotion gate runs on it), the
``evaluation_job`` writes the report, and the sensor's next tick requests the field batch's archive run
(the camera's ``archive_field_cam_job``), which upscales it. A second instance opened
on the same database, from another DAGSTER_HOME, then sees the same runs, materialisations,
asset-check results, dynamic partitions and the sensor's cursor.

A run worker killed with SIGKILL in the middle of an ingestion leaves its run unfinished in the
database and loses no file: the next run of the partition accounts for every upload.

Skipped without a reachable server (see :mod:`deploy_fixtures`); with ``CI=true`` they fail instead.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, build_sensor_context

from conftest import encode, pixels
from deploy_fixtures import (REPO_ROOT, child_env, pg_database, pg_home, start_group, step_seconds,  # noqa: F401
                             stop_group, write_home)
from sr_pipeline.definitions import build_definitions
from sr_pipeline.defs.plant.resources import PlantStorage
from sr_pipeline.defs.training.resources import TrainingSettings
from sr_pipeline.sr.images.tensors import to_tensor, to_uint8, upsample
from sr_pipeline.storage import store
from sr_pipeline.evaluation.calibration import read_gate_record
from sr_pipeline.storage.registry import challenger_dir, promoted_student_dir
from test_evaluation import lr_texture, one_thread  # noqa: F401  (autouse: tiny networks, one torch thread)
from test_training_assets import TINY_PROFILE

pytestmark = pytest.mark.postgres

# The only names of the asset graph this module relies on (everything else is derived from it):
# the main path ends in these two assets; the assets upstream of them, but ingestion, are "training"
# (the teacher, then the field camera's partition of the rest).
REPORT, ARCHIVE = dg.AssetKey("evaluation_report"), dg.AssetKey(["upscaled_archive", "field_cam"])
RAW, STUDENT = dg.AssetKey("raw_plant_images"), dg.AssetKey("co_trained_student")
SENSOR, INGEST_JOB, EVALUATION_JOB, PARTITIONS = "camera_upload_sensor", "ingest_job", "evaluation_job", "upload_batches"
TEACHER_JOB, CAMERA_JOB, CAMERA = "teacher_job", "camera_training_job", "field_cam"
ARCHIVE_JOB, CAMERA_BATCHES = "archive_field_cam_job", "upload_batches__field_cam"


@pytest.fixture
def plant(tmp_path, cameras_file, monkeypatch):
    """The data root, the Definitions pointed at it (tiny training profile) and the storage resource."""
    profile = tmp_path / "tiny.yaml"
    profile.write_text(TINY_PROFILE)
    for name, value in {"SR_PIPELINE_STABLE_SECONDS": "0", "SR_PIPELINE_GATE_REQUIRE_LPIPS": "0",
                        "SR_PIPELINE_EVAL_DEVICE": "cpu"}.items():
        monkeypatch.setenv(name, value)
    storage = PlantStorage(data_root=str(tmp_path / "data"), cameras_file=str(cameras_file))
    defs = build_definitions(storage=storage, training=TrainingSettings(profile=str(profile), use_accelerate=False))
    return defs, storage


def upload_plant_images(landing: Path) -> None:
    """HR references, unpaired field LR images and calibration pairs, as the cameras upload them.

    Each pair's HR is the network's own bicubic enlargement of its LR plus a little noise (as in
    test_evaluation), so a barely trained student beats plain bicubic and the gate promotes it.
    """
    rng = np.random.default_rng(0)
    files = {f"ref_cam/ref{i}.png": pixels(64, 56, seed=i) for i in range(3)}
    files |= {f"field_cam/f{i}.png": pixels(24, 20, seed=10 + i) for i in range(3)}
    for seed in (1, 2, 3):
        lr = lr_texture(seed, 16, 16)
        hr = to_uint8(upsample(to_tensor(lr), 4).clamp(-1, 1)).astype(float)
        files[f"field_cam/pairs/p{seed}/lr/x.png"] = lr
        files[f"field_cam/pairs/p{seed}/hr/x.png"] = np.clip(hr + rng.normal(0, 1, hr.shape), 0, 255).astype(np.uint8)
    for rel, image in files.items():
        (landing / rel).parent.mkdir(parents=True, exist_ok=True)
        (landing / rel).write_bytes(encode(image))


def training_keys(defs: dg.Definitions) -> list[dg.AssetKey]:
    """The assets upstream of the report and the archive but ingestion (teacher, student, ...)."""
    graph = defs.resolve_asset_graph()
    upstream = dg.AssetSelection.assets(REPORT, ARCHIVE).upstream().resolve(graph)
    return sorted(k for k in upstream if k not in (REPORT, ARCHIVE, RAW))


def sensor_cursor(instance: DagsterInstance) -> str | None:
    [state] = [s for s in instance.all_instigator_state() if s.name == SENSOR]
    return state.instigator_data.cursor


def store_cursor(home: Path, cursor: str) -> None:
    """Persist the tick's cursor the way an operator can: ``dagster sensor cursor --set``."""
    cmd = [sys.executable, "-m", "dagster", "sensor", "cursor", SENSOR, "--set", cursor, "-w", "workspace.yaml"]
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=child_env(DAGSTER_HOME=str(home)), capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_main_path_on_postgres_is_seen_by_a_second_instance(pg_home, plant, tmp_path):
    defs, storage = plant
    layout = storage.layout()
    upload_plant_images(layout.landing)
    trained = training_keys(defs)

    with DagsterInstance.from_config(str(pg_home)) as instance:
        # The sensor tick, applied as the daemon applies it: partitions first, then the run requests.
        tick = defs.resolve_sensor_def(SENSOR)(
            build_sensor_context(instance=instance, resources={"storage": storage}))
        batches = {r.tags["sr_pipeline/camera"]: r.partition_key for r in tick.run_requests}
        assert set(batches) == {"ref_cam", "field_cam"}
        adds = {a.partitions_def_name: list(a.partition_keys) for a in tick.dynamic_partitions_requests}
        assert adds.keys() == {PARTITIONS, CAMERA_BATCHES} and adds[CAMERA_BATCHES] == [batches["field_cam"]]
        for name, keys in adds.items():
            instance.add_dynamic_partitions(name, keys)
        ingest = defs.resolve_job_def(INGEST_JOB)
        run_ids = set()
        for request in tick.run_requests:
            assert request.job_name == INGEST_JOB and request.asset_selection is None  # ingestion alone
            done = ingest.execute_in_process(instance=instance, partition_key=request.partition_key,
                                             tags=request.tags)
            assert done.success
            run_ids.add(done.run_id)
        store_cursor(pg_home, tick.cursor)

        teacher = defs.resolve_job_def(TEACHER_JOB).execute_in_process(instance=instance)
        assert teacher.success
        assert instance.get_dynamic_partitions("field_cameras") == [CAMERA]  # added by the field batch's ingestion
        training = defs.resolve_job_def(CAMERA_JOB).execute_in_process(instance=instance, partition_key=CAMERA)
        assert training.success
        checks = training.get_asset_check_evaluations()
        assert checks and all(c.passed for c in checks), [(c.check_name, c.metadata) for c in checks]
        student = layout.resolve(defs.load_asset_value(STUDENT, instance=instance, partition_key=CAMERA))
        # the gate served the better of the co-learned student and the fixed-degradation challenger
        served = Path(read_gate_record(layout, student.name)["served_path"])
        assert promoted_student_dir(layout, CAMERA) == served and served in (student.resolve(), challenger_dir(
            layout, json.loads((student / "training.json").read_text())["teacher"]["version"]).resolve())

        report = defs.resolve_job_def(EVALUATION_JOB).execute_in_process(instance=instance, partition_key=CAMERA)
        assert report.success
        report_path = instance.get_latest_materialization_event(REPORT).asset_materialization.metadata["report"].value
        assert (layout.root / report_path).is_file()  # under the data root: no machine path in the metadata

        # The next tick: the field batch is ingested and a student now serves its camera.
        claimed_cursor = tick.cursor
        tick = defs.resolve_sensor_def(SENSOR)(
            build_sensor_context(instance=instance, cursor=tick.cursor, resources={"storage": storage}))
        [request] = tick.run_requests
        assert (request.job_name, request.partition_key) == (ARCHIVE_JOB, batches["field_cam"])
        store_cursor(pg_home, tick.cursor)
        archive = defs.resolve_job_def(ARCHIVE_JOB).execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=request.tags)
        assert archive.success
        run_ids |= {teacher.run_id, training.run_id, report.run_id, archive.run_id}
        times = {f"{instance.get_run_by_id(r).job_name}/{r[:8]}": step_seconds(instance, r) for r in run_ids}
        print("\nseconds per step (single process):", json.dumps(times, indent=1))

    # Another machine (another DAGSTER_HOME, same database) sees all of it.
    with DagsterInstance.from_config(str(write_home(tmp_path / "other_home", with_postgres=True))) as other:
        assert {r.run_id for r in other.get_runs()} == run_ids
        assert all(r.status == DagsterRunStatus.SUCCESS for r in other.get_runs())
        assert set(other.get_dynamic_partitions(PARTITIONS)) == set(batches.values())
        assert other.get_dynamic_partitions(CAMERA_BATCHES) == [batches["field_cam"]]  # no HR batch
        assert other.get_dynamic_partitions("field_cameras") == [CAMERA]
        assert other.get_materialized_partitions(RAW) == set(batches.values())
        assert other.get_materialized_partitions(ARCHIVE) == {batches["field_cam"]}
        for key in [*trained, REPORT]:
            assert other.get_latest_materialization_event(key) is not None, key
        latest = other.get_latest_materialization_event(REPORT).asset_materialization
        assert latest.metadata["report"].value == report_path and latest.metadata["promoted"].value is True
        archived = other.get_latest_materialization_event(ARCHIVE).asset_materialization
        assert archived.metadata["upscaled"].value == 3  # the field camera's three unpaired LR images
        evaluations = other.all_logs(training.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
        assert sorted(e.dagster_event.event_specific_data.check_name for e in evaluations) == sorted(
            c.check_name for c in checks)

        stored = sensor_cursor(other)
        # The claiming tick's cursor recorded both batches as requested (dropped once ingested); the
        # stored one, the archive tick's, has no batch left waiting for its archive run.
        assert set(json.loads(claimed_cursor)["requested"]) == set(batches.values())
        assert stored == tick.cursor and json.loads(stored)["archive_pending"] == {}
        # The daemon on the other machine resumes from the stored cursor: nothing is requested twice.
        resumed = defs.resolve_sensor_def(SENSOR)(
            build_sensor_context(instance=other, cursor=stored, resources={"storage": storage}))
        assert not resumed.run_requests


BATCH = "field_cam-20260301T000000-kill"
UNIQUE, DUPLICATES, CORRUPT = 160, 6, 4


def fill_batch(incoming: Path) -> int:
    """A big batch claimed into incoming/: unique images, byte-identical duplicates, corrupt files."""
    folder = incoming / BATCH / "field_cam"
    folder.mkdir(parents=True)
    base = pixels(192, 160, seed=7)
    for i in range(UNIQUE):
        image = base.copy()
        image[0, 0] = (i % 256, i // 256, 0)  # one pixel apart: a distinct image id each
        data = encode(image)
        (folder / f"img{i:03d}.png").write_bytes(data)
        if i < DUPLICATES:
            (folder / f"copy{i:03d}.png").write_bytes(data)
    for i in range(CORRUPT):
        (folder / f"bad{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    return UNIQUE + DUPLICATES + CORRUPT


def test_a_run_worker_killed_mid_ingestion_loses_no_file(pg_home, plant, tmp_path):
    defs, storage = plant
    layout = storage.layout()
    files_in = fill_batch(layout.incoming)
    catalog = store.batch_catalog_path(layout, BATCH)
    with DagsterInstance.from_config(str(pg_home)) as instance:
        instance.add_dynamic_partitions(PARTITIONS, [BATCH])
        cmd = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "sr_pipeline.definitions",
               "--select", "raw_plant_images", "--partition", BATCH]
        env = child_env(DAGSTER_HOME=str(pg_home), SR_PIPELINE_DATA=str(layout.root),
                        SR_PIPELINE_CAMERAS=storage.cameras_file)
        worker = start_group(cmd, tmp_path / "worker.log", env)
        try:
            deadline = time.monotonic() + 240
            while not any(layout.image_store.rglob("*.png")):
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the ingestion run never started storing images"
                time.sleep(0.02)
        finally:
            stop_group(worker, signal.SIGKILL)
        assert not catalog.exists(), "the run finished before it was killed: make the batch bigger"
        stored_before = len(list(layout.image_store.rglob("*.png")))
        assert 0 < stored_before < UNIQUE

        [killed] = instance.get_runs()
        assert killed.status == DagsterRunStatus.STARTED  # the worker died without reporting
        # It still holds its `ingest` pool slot: a retry would wait for it forever. What the operator
        # (terminate in the UI) or the launcher's health check does, then the daemon's run monitoring
        # (dagster.yaml: free_slots_after_run_end_seconds): the run ends as failed, its slots are freed.
        assert instance.event_log_storage.get_concurrency_info("ingest").active_run_ids == {killed.run_id}
        instance.report_run_failed(killed, "the run worker was killed")
        instance.event_log_storage.free_concurrency_slots_for_run(killed.run_id)
        retry = defs.resolve_job_def(INGEST_JOB).execute_in_process(
            instance=instance, partition_key=BATCH, asset_selection=[dg.AssetKey("raw_plant_images")])
        assert retry.success
        [mat] = retry.asset_materializations_for_node("raw_plant_images")

    md = {k: v.value for k, v in mat.metadata.items() if k in ("files_in", "accepted", "duplicate", "quarantined")}
    assert md == {"files_in": files_in, "accepted": UNIQUE, "duplicate": DUPLICATES, "quarantined": CORRUPT}
    rows = store.read_batch_catalog(layout, BATCH)
    assert len(rows) == files_in and rows["source_name"].is_unique
    assert len(list(layout.image_store.rglob("*.png"))) == UNIQUE
    assert len(list((layout.quarantine / BATCH).glob("*.json"))) == CORRUPT
    assert not (layout.incoming / BATCH).exists()
