"""Retraining follows new field data, per field camera: past the threshold, and not before."""

import json

import dagster as dg
import pytest
from dagster import DagsterInstance, build_sensor_context

from conftest import encode, pixels
from sr_pipeline.defs.plant.resources import PlantStorage
from sr_pipeline.defs.training.resources import RetrainSettings
from sr_pipeline.defs.training.sensors import retraining_sensor
from sr_pipeline.common.cameras import CameraRegistry
from sr_pipeline.intake.ingest import ingest_folder
from sr_pipeline.storage import store
from sr_pipeline.training.retraining import retraining_decisions

TWO_CAMERAS = """\
cameras:
  ref_cam: {role: hr_reference}
  field_cam: {role: field_lr, min_field_images: 2}
  grey_cam: {role: field_lr, min_field_images: 3}
"""


@pytest.fixture
def two_cameras(tmp_path):
    path = tmp_path / "two.yaml"
    path.write_text(TWO_CAMERAS)
    return path


@pytest.fixture
def reg(two_cameras):
    from sr_pipeline.common.cameras import load_registry

    return load_registry(two_cameras)


def upload(layout, registry, tmp_path, camera, n, seed0, batch):
    src = tmp_path / batch
    src.mkdir()
    for i in range(n):
        (src / f"{camera}{seed0 + i}.png").write_bytes(encode(pixels(40, 40, seed=seed0 + i)))
    ingest_folder(layout, registry, src, camera, batch_key=batch)


def fake_model(layout, kind, version, created, **info):
    folder = layout.models / kind / version
    folder.mkdir(parents=True)
    (folder / "training.json").write_text(json.dumps({"kind": kind, "version": version, "created": created, **info}))


def ids(layout, role, camera=None):
    return sorted(store.list_images(layout, role=role, cameras=[camera] if camera else None)["image_id"])


def by_camera(decisions):
    return {d.camera: d for d in decisions}


def test_no_teacher_means_no_automatic_training(layout, reg, tmp_path):
    upload(layout, reg, tmp_path, "ref_cam", 3, 0, "b-ref")
    [d] = retraining_decisions(layout, reg, student_threshold=1, teacher_threshold=1)
    assert d.target is None and "no teacher" in d.reason


def test_a_cameras_student_retrains_on_its_own_new_images_only(layout, reg, tmp_path):
    upload(layout, reg, tmp_path, "ref_cam", 3, 0, "b-ref")
    upload(layout, reg, tmp_path, "field_cam", 4, 100, "b-field1")
    upload(layout, reg, tmp_path, "grey_cam", 3, 500, "b-grey1")
    fake_model(layout, "teacher", "t1", "2026-01-01T00:00:00", image_ids=ids(layout, "hr_reference"))
    for camera, version in (("field_cam", "s1"), ("grey_cam", "s2")):
        fake_model(layout, "student", version, "2026-01-02T00:00:00", camera=camera, teacher={"version": "t1"},
                   image_ids=ids(layout, "hr_reference"), field_image_ids=ids(layout, "field_lr", camera))
    assert all(d.target is None for d in retraining_decisions(layout, reg, 3, 10))  # nothing new
    upload(layout, reg, tmp_path, "field_cam", 2, 200, "b-field2")
    below = by_camera(retraining_decisions(layout, reg, 3, 10))
    assert below["field_cam"].target is None and below["field_cam"].new_field == 2
    upload(layout, reg, tmp_path, "field_cam", 1, 300, "b-field3")
    past = by_camera(retraining_decisions(layout, reg, 3, 10))
    assert past["field_cam"].target == "student" and past["field_cam"].new_field == 3 and past["field_cam"].new_hr == 0
    assert past["field_cam"].key != below["field_cam"].key
    assert past["grey_cam"].target is None and past["grey_cam"].new_field == 0  # the other camera's data is not its


def test_a_newer_teacher_retrains_every_cameras_student(layout, reg, tmp_path):
    upload(layout, reg, tmp_path, "ref_cam", 2, 0, "b-ref")
    upload(layout, reg, tmp_path, "field_cam", 2, 100, "b-field")
    fake_model(layout, "teacher", "t1", "2026-01-01T00:00:00", image_ids=ids(layout, "hr_reference"))
    fake_model(layout, "student", "s1", "2026-01-02T00:00:00", camera="field_cam", teacher={"version": "t1"},
               image_ids=ids(layout, "hr_reference"), field_image_ids=ids(layout, "field_lr", "field_cam"))
    assert by_camera(retraining_decisions(layout, reg, 5, 50))["field_cam"].target is None
    fake_model(layout, "teacher", "t2", "2026-01-03T00:00:00", image_ids=ids(layout, "hr_reference"))
    d = by_camera(retraining_decisions(layout, reg, 5, 50))["field_cam"]
    assert d.target == "student" and "newer teacher" in d.reason and d.key.endswith("teacher-t2")


def test_a_camera_below_its_min_field_images_waits_with_a_reason(layout, reg, tmp_path):
    upload(layout, reg, tmp_path, "ref_cam", 2, 0, "b-ref")
    upload(layout, reg, tmp_path, "grey_cam", 2, 100, "b-grey")
    fake_model(layout, "teacher", "t1", "2026-01-01T00:00:00", image_ids=ids(layout, "hr_reference"))
    d = by_camera(retraining_decisions(layout, reg, 1, 50))["grey_cam"]
    assert d.target is None and "min_field_images 3" in d.reason
    upload(layout, reg, tmp_path, "grey_cam", 1, 200, "b-grey2")
    d = by_camera(retraining_decisions(layout, reg, 1, 50))["grey_cam"]
    assert d.target == "student" and "first student" in d.reason


def test_teacher_retrains_at_its_larger_threshold(layout, reg, tmp_path):
    upload(layout, reg, tmp_path, "ref_cam", 2, 0, "b-ref1")
    upload(layout, reg, tmp_path, "field_cam", 2, 100, "b-field")
    fake_model(layout, "teacher", "t1", "2026-01-01T00:00:00", image_ids=ids(layout, "hr_reference"))
    upload(layout, reg, tmp_path, "ref_cam", 4, 50, "b-ref2")
    assert by_camera(retraining_decisions(layout, reg, 2, 5))["field_cam"].target == "student"
    [teacher] = retraining_decisions(layout, reg, 2, 4)
    assert teacher.target == "teacher" and teacher.camera is None
    with pytest.raises(ValueError):
        retraining_decisions(layout, reg, 0, 4)


def test_sensor_requests_the_camera_job_for_its_partition_once_past_the_threshold(layout, reg, tmp_path,
                                                                                  two_cameras):
    upload(layout, reg, tmp_path, "ref_cam", 2, 0, "b-ref")
    fake_model(layout, "teacher", "t1", "2026-01-01T00:00:00", image_ids=ids(layout, "hr_reference"))
    storage = PlantStorage(data_root=str(layout.root), cameras_file=str(two_cameras))
    resources = {"storage": storage, "retrain": RetrainSettings(student_threshold=6, teacher_threshold=50)}
    upload(layout, reg, tmp_path, "field_cam", 3, 100, "b-field")
    with DagsterInstance.ephemeral() as instance:
        skipped = retraining_sensor(build_sensor_context(instance=instance, resources=resources))
        assert isinstance(skipped, dg.SkipReason) and "below the threshold" in skipped.skip_message
        upload(layout, reg, tmp_path, "field_cam", 2, 200, "b-field2")
        result = retraining_sensor(build_sensor_context(instance=instance, resources=resources))
    [request] = result.run_requests
    assert request.job_name == "camera_training_job" and request.partition_key == "field_cam"
    assert request.run_key == "field_cam-student-hr2-field5"
    # images ingested outside Dagster: the sensor adds the camera's partition with its request
    [add] = result.dynamic_partitions_requests
    assert add.partitions_def_name == "field_cameras" and list(add.partition_keys) == ["field_cam"]


def test_registry_rejects_a_bad_fallback_camera():
    from pydantic import ValidationError

    base = {"ref_cam": {"role": "hr_reference"}, "a": {"role": "field_lr"}}
    for bad, words in (({"fallback_camera": "a"}, "itself"), ({"fallback_camera": "ref_cam"}, "not a field_lr"),
                       ({"fallback_camera": "nope"}, "not a field_lr"),
                       ({"fallback_camera": "a", "scale": 2}, "scale")):
        with pytest.raises(ValidationError, match=words):
            CameraRegistry.model_validate({"cameras": base | {"b" if bad.get("fallback_camera") != "nope" and
                                                               "itself" != words else "a": {"role": "field_lr", **bad}}})


@pytest.mark.parametrize("name", ["all", "ALL"])
def test_registry_reserves_the_name_all(name):
    """'all' labels the thresholds fitted on every camera's pairs and camera-less promotions: a camera of that name
    would read as them."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="is reserved"):
        CameraRegistry.model_validate({"cameras": {"ref_cam": {"role": "hr_reference"}, name: {"role": "field_lr"}}})


def test_registry_keeps_camera_model_choices_to_field_cameras():
    from sr_pipeline.common.cameras import CameraRegistry

    base = {"ref_cam": {"role": "hr_reference"}}
    registry = CameraRegistry.model_validate({"cameras": base | {"a": {"role": "field_lr",
                                                                       "camera_model": {"blur_model": "kernel"}}}})
    assert registry.camera_model_choice("a") == {"blur_model": "kernel"}
    assert registry.camera_model_choice("ref_cam") == {}
    with pytest.raises(ValueError, match="camera_model is for field_lr cameras only"):
        CameraRegistry.model_validate({"cameras": {"ref_cam": {"role": "hr_reference",
                                                               "camera_model": {"colour_transform": True}}}})
    with pytest.raises(ValueError, match="extra"):  # a typo is named, not ignored
        CameraRegistry.model_validate({"cameras": base | {"a": {"role": "field_lr", "camera_model": {"blur": "kernel"}}}})
