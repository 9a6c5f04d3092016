"""The upscaled archive: per-batch outputs and manifest, idempotence, the asset, and the sensor's run."""

from __future__ import annotations

import hashlib
import json

import dagster as dg
import numpy as np
import pytest
from dagster import build_sensor_context, materialize
from PIL import Image

from conftest import tiny_sr_model
from sr_pipeline.storage import store
from sr_pipeline.serving.archive import (
    archive_batch,
    field_images,
    manifest_path,
    output_path,
    preview_strip,
    read_manifest,
)
from sr_pipeline.definitions import build_definitions
from sr_pipeline.defs.archive.assets import build_camera_archive
from sr_pipeline.defs.intake.assets import raw_plant_images
from sr_pipeline.intake.ingest import ingest_batch
from sr_pipeline.defs.plant.resources import PlantStorage
from sr_pipeline.storage.registry import record_promotion
from sr_pipeline.sr.images.png_stream import png_text
from sr_pipeline.sr.serve.tiles import TileSettings

TILES = TileSettings(tile=16, overlap=4)  # small images: several tiles each

BATCH = "field_cam-20260101T000000Z-abc123"


def make_student(layout, version: str, seed: int = 0, promote: bool = True, camera: str = "field_cam"):
    """A tiny random student folder of a field camera, recorded as promoted (as ``promoted_student`` does)."""
    path = tiny_sr_model(layout.models / "student" / version, {"kind": "student", "version": version,
                                                              "camera": camera}, seed=seed)
    if promote:
        record_promotion(layout, version, str(path), "test", camera)
    return path


@pytest.fixture
def field_batch(layout, registry, put_incoming, make_image):
    """An ingested batch: two field LR images, a duplicate of one, a calibration pair and a broken file."""
    put_incoming(BATCH, "field_cam/a.png", make_image(40, 32, seed=1))
    put_incoming(BATCH, "field_cam/b.jpg", make_image(36, 28, seed=2, fmt="JPEG"))
    put_incoming(BATCH, "field_cam/a_again.png", make_image(40, 32, seed=1))
    put_incoming(BATCH, "field_cam/pairs/p1/hr/p1.png", make_image(64, 64, seed=5))
    put_incoming(BATCH, "field_cam/pairs/p1/lr/p1.png", make_image(16, 16, seed=6))
    put_incoming(BATCH, "field_cam/broken.png", b"")
    ingest_batch(layout, registry, BATCH)
    return BATCH


def test_archive_writes_outputs_and_manifest_and_is_idempotent(layout, field_batch):
    v1 = make_student(layout, "v1")
    images = field_images(layout, field_batch)
    assert sorted(images["source_name"]) == ["a.png", "b.jpg"]  # accepted field LR only

    first = archive_batch(layout, field_batch, v1, tiles=TILES)
    assert (first.images, first.upscaled, first.skipped, first.failed) == (2, 2, 0, {})
    manifest = read_manifest(layout, field_batch)
    assert manifest_path(layout, field_batch) == layout.root / "archive" / field_batch / "manifest.parquet"
    assert set(manifest["source_image_id"]) == set(images["image_id"])
    assert set(manifest["model_version"]) == {"v1"} and manifest["upscaled_at"].notna().all()
    for row in manifest.itertuples():
        out = layout.root / row.output_path
        assert out == output_path(layout, field_batch, row.source_name.rsplit(".", 1)[0], 4)  # a.png -> a_x4.png
        src = images.set_index("image_id").loc[row.source_image_id]
        with Image.open(out) as im:
            assert im.size == (src["width"] * 4, src["height"] * 4) and im.mode == "RGB"
        text = png_text(out)
        assert text["sr_pipeline:model_version"] == "v1"
        assert text["sr_pipeline:source_image_id"] == row.source_image_id
        stored = store.resolve_path(layout, src["stored_path"])
        assert text["sr_pipeline:source_sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert [p[0] for p in first.previews] == sorted(images["source_name"])
    assert all(b.shape == m.shape == (96, 96, 3) and b.dtype == m.dtype == np.uint8 for _, b, m in first.previews)
    strip = Image.open(__import__("io").BytesIO(preview_strip(first.previews)))
    assert strip.size == (2 * 98 + 2, 2 * 98 + 2)  # a row per image: bicubic | student
    assert preview_strip([]) is None

    # Same model again: nothing is redone, nothing is rewritten.
    stamps = {p: p.stat().st_mtime_ns for p in (layout.archive / field_batch).iterdir()}
    again = archive_batch(layout, field_batch, v1, tiles=TILES)
    assert (again.upscaled, again.skipped) == (0, 2)
    assert {p: p.stat().st_mtime_ns for p in (layout.archive / field_batch).iterdir()} == stamps

    # A run that died before its manifest loses no work: the PNGs' metadata say what is done.
    manifest_path(layout, field_batch).unlink()
    recovered = archive_batch(layout, field_batch, v1, tiles=TILES)
    assert (recovered.upscaled, recovered.skipped) == (0, 2)
    assert set(read_manifest(layout, field_batch)["source_image_id"]) == set(images["image_id"])

    # A newly promoted model re-upscales (the backfill after a promotion).
    v2 = make_student(layout, "v2", seed=1)
    redo = archive_batch(layout, field_batch, v2, tiles=TILES)
    assert (redo.upscaled, redo.skipped) == (2, 0)
    assert set(read_manifest(layout, field_batch)["model_version"]) == {"v2"}
    assert all(png_text(layout.root / p)["sr_pipeline:model_version"] == "v2"
               for p in read_manifest(layout, field_batch)["output_path"])


def test_archive_reports_unreadable_sources_and_keeps_the_rest(layout, field_batch):
    model = make_student(layout, "v1")
    images = field_images(layout, field_batch)
    broken = images.iloc[0]
    store.resolve_path(layout, broken["stored_path"]).write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = archive_batch(layout, field_batch, model, tiles=TILES)
    assert list(result.failed) == [broken["image_id"]] and result.upscaled == 1
    assert list(read_manifest(layout, field_batch)["source_image_id"]) == [images.iloc[1]["image_id"]]




@pytest.fixture
def field_archive(registry):
    """field_cam's archive (asset, check, job) as the code location builds it from the registry."""
    return build_camera_archive(registry, "field_cam")


def add_batch_partitions(instance, camera: str, *batches: str) -> None:
    """What the upload sensor adds for a field camera's batch: the key in upload_batches and in the camera's batches."""
    instance.add_dynamic_partitions("upload_batches", list(batches))
    instance.add_dynamic_partitions(f"upload_batches__{camera}", list(batches))


def test_upscaled_archive_runs_in_its_own_pool(field_archive):
    assert field_archive.asset.op.pool == "upscale"


def test_upscaled_archive_asset(layout, storage, instance, field_batch, field_archive):
    add_batch_partitions(instance, "field_cam", field_batch)
    archive = field_archive.asset
    make_student(layout, "v0", promote=False)  # trained, but not promoted by the gate
    failed = materialize([archive], partition_key=field_batch, resources={"storage": storage},
                         instance=instance, raise_on_error=False)
    assert not failed.success

    make_student(layout, "v1")
    assert materialize([raw_plant_images], partition_key=field_batch, resources={"storage": storage},
                       instance=instance).success
    result = materialize([archive], partition_key=field_batch, resources={"storage": storage}, instance=instance)
    assert result.success
    [mat] = result.asset_materializations_for_node(archive.op.name)
    assert mat.asset_key == dg.AssetKey(["upscaled_archive", "field_cam"])
    md = mat.metadata
    assert (md["images"].value, md["upscaled"].value, md["skipped_already_done"].value) == (2, 2, 0)
    assert md["model_version"].value == "v1" and md["dagster/row_count"].value == 2
    assert md["manifest"].value == layout.relative(manifest_path(layout, field_batch))  # no machine path
    assert md["previews"].value.startswith("![bicubic | student")
    assert archive.partitions_def.name == "upload_batches__field_cam"
    assert {k.to_user_string() for k in archive.dependency_keys} == {"raw_plant_images", "promoted_student"}

    again = materialize([archive], partition_key=field_batch, resources={"storage": storage},
                        instance=instance)
    [mat2] = again.asset_materializations_for_node(archive.op.name)
    assert (mat2.metadata["upscaled"].value, mat2.metadata["skipped_already_done"].value) == (0, 2)
    assert mat2.tags["dagster/data_version"] == mat.tags["dagster/data_version"]


def test_a_batch_of_another_camera_is_refused_by_this_cameras_archive(layout, storage, instance, field_batch,
                                                                      tmp_path):
    """A key added by hand to the wrong camera's batches fails with where it belongs, writing nothing."""
    cameras = tmp_path / "two_field.yaml"
    cameras.write_text(TWO_FIELD_CAMERAS)
    from sr_pipeline.common.cameras import load_registry

    grey = build_camera_archive(load_registry(cameras), "grey_cam")
    instance.add_dynamic_partitions("upload_batches__grey_cam", [field_batch])
    make_student(layout, "g1", camera="grey_cam")
    run = materialize([grey.asset], partition_key=field_batch, instance=instance, raise_on_error=False,
                      resources={"storage": PlantStorage(data_root=str(layout.root), cameras_file=str(cameras))})
    assert not run.success
    [failure] = [e for e in run.all_events if e.is_step_failure]
    assert "upscaled_archive/field_cam" in failure.event_specific_data.error.message
    assert not (layout.archive / field_batch).exists()


def _ticker(sensor_def, instance, storage):
    def tick(cursor=None):
        return sensor_def(build_sensor_context(cursor=cursor, instance=instance, resources={"storage": storage}))
    return tick


def test_the_upload_sensor_requests_the_archive_once_the_batch_is_ingested_and_served(layout, storage, instance,
                                                                                     put_landing, make_image,
                                                                                     monkeypatch):
    monkeypatch.setenv("SR_PIPELINE_STABLE_SECONDS", "0")
    defs = build_definitions(storage)
    dg.Definitions.validate_loadable(defs)
    sensor_def = defs.resolve_sensor_def("camera_upload_sensor")
    assert {t.job_name for t in sensor_def.targets} == {"ingest_job", "archive_field_cam_job"}
    ingest = defs.resolve_job_def("ingest_job")
    assert ingest.asset_layer.selected_asset_keys == {raw_plant_images.key}
    archive_job = defs.resolve_job_def("archive_field_cam_job")
    assert archive_job.asset_layer.selected_asset_keys == {dg.AssetKey(["upscaled_archive", "field_cam"])}
    tick = _ticker(sensor_def, instance, storage)

    def apply(result):  # what the sensor daemon does with a tick's partition requests
        for add in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(add.partitions_def_name, list(add.partition_keys))

    put_landing("field_cam/a.png", make_image(seed=1))
    put_landing("ref_cam/r.png", make_image(seed=3))
    make_student(layout, "v0", promote=False)
    claimed = tick()
    apply(claimed)
    by_camera = {r.tags["sr_pipeline/camera"]: r for r in claimed.run_requests}
    field, ref = by_camera["field_cam"], by_camera["ref_cam"]
    assert {r.job_name for r in claimed.run_requests} == {"ingest_job"}
    assert (field.tags["sr_pipeline/archive"], ref.tags["sr_pipeline/archive"]) == ("pending", "false")
    batch, ref_batch = field.partition_key, ref.partition_key
    adds = {a.partitions_def_name: list(a.partition_keys) for a in claimed.dynamic_partitions_requests}
    assert adds == {"upload_batches": sorted([batch, ref_batch], key=[r.partition_key for r in claimed.run_requests].index),
                    "upload_batches__field_cam": [batch]}  # no partition for the HR reference batch
    assert json.loads(claimed.cursor)["archive_pending"] == {batch: "field_cam"}

    # Not ingested yet, and no student: nothing to request; the batch stays pending.
    waiting = tick(claimed.cursor)
    assert not waiting.run_requests and "1 for a student" in waiting.skip_reason.skip_message
    make_student(layout, "v1")
    waiting = tick(waiting.cursor)
    assert not waiting.run_requests and "1 for ingestion" in waiting.skip_reason.skip_message

    # A failed ingestion keeps it pending; the re-execution that materialises it releases the archive run.
    assert ingest.execute_in_process(partition_key=batch, instance=instance, raise_on_error=False,
                                     run_config={"resources": {"storage": {"config": {"data_root": "/nonexistent/x"}}}}
                                     ).success is False
    assert not tick(waiting.cursor).run_requests
    for key in (batch, ref_batch):
        assert ingest.execute_in_process(partition_key=key, instance=instance).success
    ready = tick(waiting.cursor)
    [request] = ready.run_requests
    assert (request.job_name, request.partition_key, request.run_key) == ("archive_field_cam_job", batch,
                                                                          f"{batch}:archive")
    assert request.tags == {"sr_pipeline/camera": "field_cam", "sr_pipeline/archive": "true"}
    assert not ready.dynamic_partitions_requests and json.loads(ready.cursor)["archive_pending"] == {}
    assert not tick(ready.cursor).run_requests  # requested once

    run = archive_job.execute_in_process(partition_key=batch, instance=instance)
    assert run.success
    [archived] = run.asset_materializations_for_node("upscaled_archive__field_cam")
    assert archived.partition == batch
    manifest = read_manifest(layout, batch)
    assert list(manifest["source_name"]) == ["a.png"] and set(manifest["model_version"]) == {"v1"}
    out = layout.root / manifest["output_path"][0]
    assert np.asarray(Image.open(out)).shape == (160, 192, 3)


def test_a_field_camera_added_after_the_code_location_loaded_waits_for_its_reload(layout, tmp_path, instance,
                                                                                 put_landing, make_image, capfd,
                                                                                 monkeypatch):
    """The sensor of the old code location ingests the new camera's batch and says the archive needs a reload;
    the reloaded code location's sensor, with the same cursor, adds its archive partition and requests the run."""
    monkeypatch.setenv("SR_PIPELINE_STABLE_SECONDS", "0")
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text(TWO_FIELD_CAMERAS.replace("  grey_cam: {role: field_lr}\n", ""))
    storage = PlantStorage(data_root=str(layout.root), cameras_file=str(cameras))
    old = build_definitions(storage).resolve_sensor_def("camera_upload_sensor")
    cameras.write_text(TWO_FIELD_CAMERAS)  # grey_cam added while the code location runs
    put_landing("grey_cam/g.png", make_image(seed=4))
    claimed = _ticker(old, instance, storage)()
    [request] = claimed.run_requests
    batch = request.partition_key
    assert request.tags["sr_pipeline/archive"] == "pending"
    assert [a.partitions_def_name for a in claimed.dynamic_partitions_requests] == ["upload_batches"]
    said = capfd.readouterr().err  # the sensor's log
    assert "grey_cam has no archive asset" in said and "reload the code location" in said
    instance.add_dynamic_partitions("upload_batches", [batch])
    reloaded = build_definitions(storage)
    assert reloaded.resolve_job_def("ingest_job").execute_in_process(partition_key=batch, instance=instance).success
    make_student(layout, "g1", camera="grey_cam")
    assert not _ticker(old, instance, storage)(claimed.cursor).run_requests  # still no asset to materialise
    ready = _ticker(reloaded.resolve_sensor_def("camera_upload_sensor"), instance, storage)(claimed.cursor)
    [archive] = ready.run_requests
    assert (archive.job_name, archive.partition_key) == ("archive_grey_cam_job", batch)
    [add] = ready.dynamic_partitions_requests
    assert (add.partitions_def_name, list(add.partition_keys)) == ("upload_batches__grey_cam", [batch])


TWO_FIELD_CAMERAS = """\
cameras:
  ref_cam: {role: hr_reference}
  field_cam: {role: field_lr}
  grey_cam: {role: field_lr}
  line2_cam: {role: field_lr, fallback_camera: field_cam}
"""


def test_promoting_one_cameras_student_leaves_the_other_cameras_archive_fresh(layout, tmp_path, put_incoming,
                                                                              make_image, capsys):
    """The lineage through ``promoted_student``, read with Dagster's stale-status API on the code location's own
    asset graph: a promotion for grey_cam (as ``sr-pipeline promote`` reports it: a ``promoted_student``
    materialisation of partition grey_cam) marks grey_cam's archived batches stale and no other camera's; one for
    field_cam marks field_cam's and line2_cam's (served by field_cam's student as its fallback) stale. No archive
    has a partition it could never materialise: the HR reference batch and other cameras' batches are none of its."""
    import argparse

    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._core.definitions.partitions.utils import get_builtin_partition_mapping_types
    from dagster._core.loader import LoadingContextForTest

    from sr_pipeline.defs.evaluation.promotion_events import promote_cli

    cameras = tmp_path / "cameras.yaml"
    cameras.write_text(TWO_FIELD_CAMERAS)
    storage = PlantStorage(data_root=str(layout.root), cameras_file=str(cameras))
    defs = build_definitions(storage)
    graph = defs.resolve_asset_graph()
    keys = {c: dg.AssetKey(["upscaled_archive", c]) for c in ("field_cam", "grey_cam", "line2_cam")}
    assert {k for k in graph.get_all_asset_keys() if k.path[0] == "upscaled_archive"} == set(keys.values())
    for key in keys.values():  # only Dagster's own mappings: the webserver's snapshot keeps them, same lineage
        assert all(isinstance(m, get_builtin_partition_mapping_types()) for m in graph.get(key).partition_mappings.values())
    batches = {c: f"{c}-20260101T000000-0000000{i}" for i, c in enumerate(("ref_cam", *keys))}
    for i, (camera, batch) in enumerate(batches.items()):
        put_incoming(batch, f"{camera}/x.png", make_image(24, 20, seed=20 + i))
    for version, camera in (("f1", "field_cam"), ("f2", "field_cam"), ("g1", "grey_cam"), ("g2", "grey_cam")):
        make_student(layout, version, seed=len(version + camera), promote=False, camera=camera)

    def promote(version):
        assert promote_cli(argparse.Namespace(version=version, reason=None, json=False, layout=layout)) == 0
        assert "reported to Dagster" in capsys.readouterr().out

    def status(instance):
        resolver = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))
        return {c: resolver.get_status(key, batches[c]) for c, key in keys.items()}

    with dg.DagsterInstance.get() as instance:  # the test's own DAGSTER_HOME (conftest), where promote reports
        instance.add_dynamic_partitions("upload_batches", list(batches.values()))
        for camera in keys:
            instance.add_dynamic_partitions(f"upload_batches__{camera}", [batches[camera]])
        for batch in batches.values():
            assert defs.resolve_job_def("ingest_job").execute_in_process(partition_key=batch, instance=instance).success
        for camera, key in keys.items():  # phantom partitions: none
            assert graph.get(key).partitions_def.get_partition_keys(dynamic_partitions_store=instance) == [batches[camera]]
    promote("f1")
    promote("g1")
    with dg.DagsterInstance.get() as instance:
        for camera in keys:
            run = defs.resolve_job_def(f"archive_{camera}_job").execute_in_process(partition_key=batches[camera],
                                                                                   instance=instance)
            assert run.success
        assert status(instance) == dict.fromkeys(keys, StaleStatus.FRESH)
    promote("g2")
    with dg.DagsterInstance.get() as instance:
        assert status(instance) == {"field_cam": StaleStatus.FRESH, "grey_cam": StaleStatus.STALE,
                                    "line2_cam": StaleStatus.FRESH}
    promote("f2")
    with dg.DagsterInstance.get() as instance:
        assert status(instance) == dict.fromkeys(keys, StaleStatus.STALE)
    assert set(read_manifest(layout, batches["grey_cam"])["model_version"]) == {"g1"}  # stale until re-run


THREE_CAMERAS = """\
cameras:
  ref_cam: {role: hr_reference}
  field_cam: {role: field_lr}
  line2_cam: {role: field_lr, fallback_camera: field_cam}
  line3_cam: {role: field_lr}
"""


def test_each_batch_is_upscaled_by_its_cameras_student_or_its_configured_fallback(layout, tmp_path, put_incoming,
                                                                                   make_image):
    """One student per field camera; a camera without one uses its fallback camera's only if cameras.yaml says so."""
    from sr_pipeline.evaluation.promotion import served_student
    from sr_pipeline.common.cameras import load_registry

    cameras = tmp_path / "three.yaml"
    cameras.write_text(THREE_CAMERAS)
    registry = load_registry(cameras)
    storage = PlantStorage(data_root=str(layout.root), cameras_file=str(cameras))
    batches = {}
    for i, camera in enumerate(("field_cam", "line2_cam", "line3_cam")):
        batches[camera] = f"{camera}-20260101T000000Z-{i}"
        put_incoming(batches[camera], f"{camera}/x.png", make_image(24, 20, seed=10 + i))
        ingest_batch(layout, registry, batches[camera])
    own = make_student(layout, "v-field", camera="field_cam")

    with dg.DagsterInstance.ephemeral() as instance:
        runs = {}
        for c, b in batches.items():
            instance.add_dynamic_partitions(f"upload_batches__{c}", [b])
            runs[c] = materialize([build_camera_archive(registry, c).asset], partition_key=b, instance=instance,
                                  resources={"storage": storage}, raise_on_error=False)
    assert runs["field_cam"].success and runs["line2_cam"].success
    [md] = [m.metadata for m in runs["line2_cam"].asset_materializations_for_node("upscaled_archive__line2_cam")]
    assert md["camera"].value == "line2_cam" and md["student_camera"].value == "field_cam"
    assert md["fallback_student"].value is True
    assert set(read_manifest(layout, batches["line2_cam"])["model_version"]) == {"v-field"}
    assert not runs["line3_cam"].success  # no student, no fallback: a clear message, nothing written
    [failure] = [e for e in runs["line3_cam"].all_events if e.is_step_failure]
    message = failure.event_specific_data.error.message
    assert "no student has been promoted for field camera 'line3_cam'" in message and "fallback_camera" in message
    assert not (layout.archive / batches["line3_cam"]).exists()

    # line2_cam's own student, once promoted, replaces the fallback; the other cameras keep theirs.
    mine = make_student(layout, "v-line2", seed=1, camera="line2_cam")
    assert served_student(layout, registry, "line2_cam").path == mine
    assert served_student(layout, registry, "field_cam").path == own
    assert served_student(layout, registry, "line3_cam") is None
    redo = archive_batch(layout, batches["line2_cam"], mine, tiles=TILES)
    assert redo.upscaled == 1 and set(read_manifest(layout, batches["line2_cam"])["model_version"]) == {"v-line2"}


def test_outputs_keep_their_source_names_and_the_manifest_maps_both(layout, registry, put_incoming, make_image):
    """Outputs are named after the cleaned source name; a hash suffix only where two would share a name;
    outputs named by image id by older versions are renamed, not made again."""
    from sr_pipeline.serving.archive import map_path as heat_path

    batch = "field_cam-20260101T000000Z-names1"
    put_incoming(batch, "field_cam/astronaut_r2c2.png", make_image(24, 20, seed=1))
    put_incoming(batch, "field_cam/weld.png", make_image(24, 20, seed=2))
    put_incoming(batch, "field_cam/weld.jpg", make_image(24, 20, seed=3, fmt="JPEG"))
    put_incoming(batch, "field_cam/line 2/weld.png", make_image(24, 20, seed=4))
    ingest_batch(layout, registry, batch)
    v1 = make_student(layout, "v1")
    archive_batch(layout, batch, v1, tiles=TILES)
    manifest = read_manifest(layout, batch)
    names = dict(zip(manifest["source_name"], manifest["output_path"]))
    ids = dict(zip(manifest["source_name"], manifest["source_image_id"]))
    folder = f"archive/{batch}"
    assert names["astronaut_r2c2.png"] == f"{folder}/astronaut_r2c2_x4.png"
    assert names["weld.png"] == f"{folder}/weld-{ids['weld.png'][:8]}_x4.png"  # weld.jpg would share 'weld'
    assert names["weld.jpg"] == f"{folder}/weld-{ids['weld.jpg'][:8]}_x4.png"
    [sub] = [n for n in names if n.endswith("/weld.png")]
    assert names[sub] == f"{folder}/{sub.rsplit('/', 1)[0].replace('/', '__')}__weld_x4.png"
    assert len(set(names.values())) == 4 and all((layout.root / p).is_file() for p in names.values())
    assert sorted(p.name for p in (layout.archive / batch).glob("*.png")) == sorted(p.rsplit("/", 1)[1]
                                                                                 for p in names.values())

    # an archive written by an older version, named by image id: renamed in place, nothing redone
    old_name = layout.archive / batch / f"{ids['astronaut_r2c2.png']}_x4.png"
    (layout.root / names["astronaut_r2c2.png"]).rename(old_name)
    old_map = heat_path(layout, batch, ids["astronaut_r2c2.png"], 4)
    old_map.parent.mkdir(exist_ok=True)
    old_map.write_bytes(b"map")
    again = archive_batch(layout, batch, v1, tiles=TILES)
    assert (again.upscaled, again.skipped) == (0, 4) and not old_name.exists()
    assert (layout.root / names["astronaut_r2c2.png"]).is_file()
    assert heat_path(layout, batch, "astronaut_r2c2", 4).read_bytes() == b"map" and not old_map.exists()
    assert dict(zip(read_manifest(layout, batch)["source_name"], read_manifest(layout, batch)["output_path"])) == names


def test_a_damaged_manifest_or_output_is_detected_and_rebuilt(layout, field_batch):
    from datetime import date

    from sr_pipeline.evaluation.archive_consistency import archive_consistency, archive_rows
    from sr_pipeline.storage.checked_parquet import DamagedFile

    v1 = make_student(layout, "v1")
    archive_batch(layout, field_batch, v1, tiles=TILES)
    path = manifest_path(layout, field_batch)
    good = read_manifest(layout, field_batch)
    rows, unread = archive_rows(layout)  # the report reads it with its own schema: the checksum holds there too
    assert len(rows) == 2 and unread == {}

    # One flipped byte inside a manifest value: caught on read, never merged into the report's counts.
    data = bytearray(path.read_bytes())
    at = bytes(data).index(b"v1")  # the model_version column's value
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedFile, match="manifest.parquet"):
        read_manifest(layout, field_batch)
    rows, unread = archive_rows(layout)
    assert rows == [] and field_batch in unread and "damaged" in unread[field_batch]
    assert str(layout.root) not in unread[field_batch]  # no machine path on a manager's page
    mine = archive_consistency(layout, date.today(), camera="field_cam")
    assert field_batch in mine.unread and "could not be read" in mine.manager_text()
    assert archive_consistency(layout, date.today(), camera="grey_cam").unread == {}  # not another camera's

    # Re-materialising rebuilds it from the outputs' own records, upscaling nothing again.
    said = []
    rebuilt = archive_batch(layout, field_batch, v1, tiles=TILES, log=said.append)
    assert (rebuilt.upscaled, rebuilt.skipped) == (0, 2) and any("damaged" in s for s in said)
    assert sorted(read_manifest(layout, field_batch)["output_path"]) == sorted(good["output_path"])

    # An output whose image data was damaged is not kept as done: it is made again.
    out = layout.root / good["output_path"].iloc[0]
    raw = bytearray(out.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 64] = bytes(b ^ 0xFF for b in raw[mid:mid + 64])
    out.write_bytes(bytes(raw))
    redo = archive_batch(layout, field_batch, v1, tiles=TILES)
    assert (redo.upscaled, redo.skipped) == (1, 1)
    with Image.open(out) as im:
        im.load()  # decodes whole again
