"""Retraining follows new field data: past the threshold, and not before."""

import json

import dagster as dg
import pytest
from dagster import DagsterInstance, build_sensor_context

from conftest import encode, pixels
from sr_pipeline.storage import store
from sr_pipeline.defs.resources import PlantStorage, RetrainSettings
from sr_pipeline.defs.retraining import retraining_sensor
from sr_pipeline.intake.ingest import ingest_folder
from sr_pipeline.training.retraining import retraining_decision


def upload(layout, registry, tmp_path, camera, n, seed0, batch):
    src = tmp_path / batch
    src.mkdir()
    for i in range(n):
        (src / f"{camera}{seed0 + i}.png").write_bytes(encode(pixels(40, 40, seed=seed0 + i)))
    ingest_folder(layout, registry, src, camera, batch_key=batch)


def fake_model(layout, kind, version, created, **ids):
    folder = layout.models / kind / version
    folder.mkdir(parents=True)
    (folder / "training.json").write_text(json.dumps({"kind": kind, "version": version, "created": created, **ids}))


def ids(layout, role):
    return sorted(store.list_images(layout, role=role)["image_id"])


def test_no_teacher_means_no_automatic_training(layout, registry, tmp_path):
    upload(layout, registry, tmp_path, "ref_cam", 3, 0, "b-ref")
    d = retraining_decision(layout, student_threshold=1, teacher_threshold=1)
    assert d.target is None and "no teacher" in d.reason


def test_student_retrains_past_the_threshold_and_not_before(layout, registry, tmp_path):
    upload(layout, registry, tmp_path, "ref_cam", 3, 0, "b-ref")
    upload(layout, registry, tmp_path, "field_cam", 4, 100, "b-field1")
    fake_model(layout, "teacher", "t1", "2026-01-01T00:00:00", image_ids=ids(layout, "hr_reference"))
    fake_model(layout, "student", "s1", "2026-01-02T00:00:00", image_ids=ids(layout, "hr_reference"),
               field_image_ids=ids(layout, "field_lr"))
    assert retraining_decision(layout, 3, 10).target is None  # nothing new since the student
    upload(layout, registry, tmp_path, "field_cam", 2, 200, "b-field2")
    below = retraining_decision(layout, 3, 10)
    assert below.target is None and below.new_field == 2
    upload(layout, registry, tmp_path, "field_cam", 1, 300, "b-field3")
    past = retraining_decision(layout, 3, 10)
    assert past.target == "student" and past.new_field == 3 and past.new_hr == 0
    assert past.key != below.key


def test_teacher_retrains_at_its_larger_threshold(layout, registry, tmp_path):
    upload(layout, registry, tmp_path, "ref_cam", 2, 0, "b-ref1")
    fake_model(layout, "teacher", "t1", "2026-01-01T00:00:00", image_ids=ids(layout, "hr_reference"))
    upload(layout, registry, tmp_path, "ref_cam", 4, 50, "b-ref2")
    assert retraining_decision(layout, 2, 5).target == "student"
    assert retraining_decision(layout, 2, 4).target == "teacher"
    with pytest.raises(ValueError):
        retraining_decision(layout, 0, 4)


def test_sensor_requests_the_student_job_once_past_the_threshold(layout, registry, tmp_path, cameras_file):
    upload(layout, registry, tmp_path, "ref_cam", 2, 0, "b-ref")
    fake_model(layout, "teacher", "t1", "2026-01-01T00:00:00", image_ids=ids(layout, "hr_reference"))
    storage = PlantStorage(data_root=str(layout.root), cameras_file=str(cameras_file))
    resources = {"storage": storage, "retrain": RetrainSettings(student_threshold=5, teacher_threshold=50)}
    with DagsterInstance.ephemeral() as instance:
        skipped = retraining_sensor(build_sensor_context(instance=instance, resources=resources))
        assert isinstance(skipped, dg.SkipReason) and "below the threshold" in skipped.skip_message
        upload(layout, registry, tmp_path, "field_cam", 3, 100, "b-field")
        request = retraining_sensor(build_sensor_context(instance=instance, resources=resources))
    assert isinstance(request, dg.RunRequest)
    assert request.job_name == "student_retraining_job"
    assert request.run_key == "student-hr2-field3"
