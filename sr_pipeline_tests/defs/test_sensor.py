"""The Dagster layer of ingestion: camera_upload_sensor, raw_plant_images and their Definitions."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
from dagster import SensorResult, build_sensor_context, materialize

from sr_pipeline.storage import store
from sr_pipeline.defs.intake.assets import ingest_job, raw_plant_images
from sr_pipeline.defs.plant.partitions import upload_batches
from sr_pipeline.defs.plant.resources import PlantStorage
from sr_pipeline.defs.intake.sensors import build_camera_upload_sensor

T0 = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now




def _tick(sensor_def, storage, instance, cursor=None):
    context = build_sensor_context(cursor=cursor, instance=instance, resources={"storage": storage})
    result = sensor_def(context)
    assert isinstance(result, SensorResult)
    return result


def test_sensor_waits_for_stable_files_then_requests_one_run_per_batch(layout, storage, instance, put_landing, make_image):
    clock = Clock()
    sensor_def = build_camera_upload_sensor(stable_seconds=10, clock=clock)
    put_landing("field_cam/a.png", make_image(seed=1))
    put_landing("field_cam/b.jpg", make_image(seed=2, fmt="JPEG"))
    put_landing("field_cam/c.png.part", make_image(seed=3))
    put_landing("field_cam/.d.png", make_image(seed=4))

    first = _tick(sensor_def, storage, instance)
    assert not first.run_requests and not first.dynamic_partitions_requests
    assert "2 file(s) waiting" in first.skip_reason.skip_message
    assert set(json.loads(first.cursor)["seen"]) == {"field_cam/a.png", "field_cam/b.jpg"}
    assert (layout.landing / "field_cam/a.png").exists()

    clock.now += 5
    early = _tick(sensor_def, storage, instance, first.cursor)
    assert not early.run_requests

    clock.now += 5
    second = _tick(sensor_def, storage, instance, early.cursor)
    assert len(second.run_requests) == 1
    request = second.run_requests[0]
    batch = request.partition_key
    assert request.run_key == batch and batch.startswith("field_cam-") and "..." not in batch
    assert request.tags["sr_pipeline/camera"] == "field_cam" and request.job_name == "ingest_job"
    # Without field_cam's archive (none given to this sensor) only upload_batches gets the key; the batch waits.
    [add] = second.dynamic_partitions_requests
    assert add.partitions_def_name == "upload_batches" and list(add.partition_keys) == [batch]
    assert json.loads(second.cursor)["archive_pending"] == {batch: "field_cam"}
    assert sorted(p.name for p in (layout.incoming / batch / "field_cam").iterdir()) == ["a.png", "b.jpg"]
    assert (layout.landing / "field_cam/c.png.part").exists() and (layout.landing / "field_cam/.d.png").exists()
    assert json.loads(second.cursor)["requested"] == [batch]

    clock.now += 30
    third = _tick(sensor_def, storage, instance, second.cursor)
    assert not third.run_requests  # the cursor makes the tick idempotent


def test_sensor_makes_one_batch_per_camera(storage, instance, put_landing, make_image):
    sensor_def = build_camera_upload_sensor(stable_seconds=0, clock=Clock())
    put_landing("field_cam/a.png", make_image(seed=1))
    put_landing("ref_cam/r1.png", make_image(seed=2))
    put_landing("ref_cam/sub/r2.png", make_image(seed=3))
    result = _tick(sensor_def, storage, instance)
    keys = [r.partition_key for r in result.run_requests]
    assert len(keys) == 2 and {k.split("-")[0] for k in keys} == {"field_cam", "ref_cam"}
    assert list(result.dynamic_partitions_requests[0].partition_keys) == keys
    assert {r.tags["sr_pipeline/files"] for r in result.run_requests} == {"1", "2"}


def test_stable_time_comes_from_the_environment(storage, instance, put_landing, make_image, monkeypatch):
    put_landing("ref_cam/r.png", make_image())
    monkeypatch.setenv("SR_PIPELINE_STABLE_SECONDS", "0")
    camera_upload_sensor = build_camera_upload_sensor()
    result = _tick(camera_upload_sensor, storage, instance)
    assert len(result.run_requests) == 1
    assert camera_upload_sensor.minimum_interval_seconds == 30
    assert camera_upload_sensor.job_name == "ingest_job"  # no archive given: the ingest job alone


def test_raw_plant_images_materialises_a_claimed_batch(layout, storage, instance, put_landing, make_image):
    sensor_def = build_camera_upload_sensor(stable_seconds=0, clock=Clock())
    put_landing("field_cam/a.png", make_image(seed=1))
    put_landing("field_cam/a_again.png", make_image(seed=1))
    put_landing("field_cam/broken.png", b"")
    put_landing("field_cam/pairs/p1/hr/p1.png", make_image(64, 64, seed=5))
    put_landing("field_cam/pairs/p1/lr/p1.jpg", make_image(16, 16, seed=6, fmt="JPEG"))
    batch = _tick(sensor_def, storage, instance).run_requests[0].partition_key
    instance.add_dynamic_partitions("upload_batches", [batch])

    result = materialize([raw_plant_images], partition_key=batch, resources={"storage": storage}, instance=instance)
    assert result.success
    [mat] = result.asset_materializations_for_node("raw_plant_images")
    md = mat.metadata
    assert (md["files_in"].value, md["accepted"].value, md["duplicate"].value, md["quarantined"].value) == (5, 3, 1, 1)
    assert md["catalog"].value == str(store.batch_catalog_path(layout, batch))
    assert "| field_cam | broken.png | field_lr | quarantined | empty_file |" in md["outcomes"].value
    assert md["thumbnails"].value.startswith("![accepted images](data:image/png;base64,")
    assert mat.tags.get("dagster/data_version")
    assert len(store.read_catalog(layout)) == 5
    assert [name for name, _, _ in store.calibration_pairs(layout)] == ["p1"]

    again = materialize([raw_plant_images], partition_key=batch, resources={"storage": storage}, instance=instance)
    assert again.success  # re-materialising a catalogued batch reads it back
    [mat2] = again.asset_materializations_for_node("raw_plant_images")
    assert mat2.metadata["accepted"].value == 3
    assert mat2.tags["dagster/data_version"] == mat.tags["dagster/data_version"]


def test_definitions_load(storage):
    defs = dg.Definitions(
        assets=[raw_plant_images],
        sensors=[build_camera_upload_sensor()],
        jobs=[ingest_job],
        resources={"storage": storage},
    )
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def("ingest_job")
    assert job.partitions_def == upload_batches
    assert defs.resolve_sensor_def("camera_upload_sensor").job_name == "ingest_job"


def test_the_code_locations_sensor_targets_ingestion_and_each_field_cameras_archive(storage):
    from sr_pipeline.definitions import build_definitions

    defs = build_definitions(storage)  # conftest's registry: ref_cam, field_cam
    targets = {t.job_name for t in defs.resolve_sensor_def("camera_upload_sensor").targets}
    assert targets == {"ingest_job", "archive_field_cam_job"}
    assert defs.resolve_job_def("ingest_job").asset_layer.selected_asset_keys == {raw_plant_images.key}


def test_plant_storage_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("SR_PIPELINE_DATA", str(tmp_path / "elsewhere"))
    storage = PlantStorage()
    assert storage.layout().root == (tmp_path / "elsewhere").resolve()
    assert set(storage.registry().ids()) == {"ref_cam", "field_cam", "grey_cam"}  # configs/cameras.yaml


def test_ingestion_runs_in_its_own_pool_limited_by_dagster_yaml():
    import yaml

    assert raw_plant_images.op.pool == "ingest"
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "dagster.yaml").read_text())
    assert config["concurrency"]["pools"]["default_limit"] == 1  # the ingest pool has no other limit


@pytest.mark.parametrize("cursor", ["{not json", "[1, 2]", '{"archive_pending": [1]}', '{"seen": "x"}'])
def test_a_cursor_edited_by_hand_is_dropped_with_a_warning_not_a_failing_tick(cursor, tmp_path):
    sensor = build_camera_upload_sensor(stable_seconds=0)
    with dg.DagsterInstance.ephemeral() as instance:
        context = build_sensor_context(instance=instance, cursor=cursor,
                                       resources={"storage": PlantStorage(data_root=str(tmp_path / "data"))})
        result = sensor(context)
    assert result.skip_reason is not None or result.run_requests == []
