"""The weekly re-evaluation (Monday 06:00, plant time zone) and the new-calibration-pairs sensor."""

import subprocess
import sys
from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
import numpy as np
import pytest
from dagster import DagsterInstance, build_schedule_context, build_sensor_context

from conftest import encode, pixels
from sr_pipeline.defs.evaluation.resources import GateSettings
from sr_pipeline.defs.evaluation.assets import evaluation_job, evaluation_report, promotion_gate
from sr_pipeline.defs.plant.resources import PlantStorage
from sr_pipeline.defs.evaluation.schedules import CAMERA_INPUTS, TEACHER, WEEKLY_CRON, build_weekly_evaluation_schedule
from sr_pipeline.defs.evaluation.sensors import calibration_pairs_sensor
from sr_pipeline.intake.ingest import ingest_folder


def add_pairs(layout, registry, tmp_path, names, batch):
    src = tmp_path / batch
    for i, name in enumerate(names):
        hr = pixels(64, 64, seed=i)
        lr = np.asarray(hr[::4, ::4])
        for side, img in (("hr", hr), ("lr", lr)):
            (src / "pairs" / name / side).mkdir(parents=True)
            (src / "pairs" / name / side / "x.png").write_bytes(encode(img))
    ingest_folder(layout, registry, src, "field_cam", batch_key=batch)


def trained(instance, camera="field_cam"):
    """The teacher and one field camera's student and downsampler, as runless materialisations."""
    if camera not in instance.get_dynamic_partitions("field_cameras"):
        instance.add_dynamic_partitions("field_cameras", [camera])
    instance.report_runless_asset_event(dg.AssetMaterialization(TEACHER))
    for key in CAMERA_INPUTS:
        instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=camera))


def test_weekly_schedule_runs_monday_0600_in_the_plant_time_zone(monkeypatch):
    monkeypatch.delenv("SR_PIPELINE_PLANT_TZ", raising=False)
    utc = build_weekly_evaluation_schedule()
    assert WEEKLY_CRON == "0 6 * * 1" and utc.cron_schedule == "0 6 * * 1"
    assert utc.execution_timezone == "UTC" and utc.job_name == "evaluation_job"
    monkeypatch.setenv("SR_PIPELINE_PLANT_TZ", "America/Chicago")
    assert build_weekly_evaluation_schedule().execution_timezone == "America/Chicago"
    assert build_weekly_evaluation_schedule("Asia/Tokyo").execution_timezone == "Asia/Tokyo"
    monkeypatch.setenv("SR_PIPELINE_PLANT_TZ", "Nowhere/Atlantis")
    with pytest.raises(ValueError, match="SR_PIPELINE_PLANT_TZ"):
        build_weekly_evaluation_schedule()


def test_weekly_schedule_makes_one_report_per_trained_field_camera():
    schedule = build_weekly_evaluation_schedule("Europe/Berlin")
    monday = datetime(2026, 3, 2, 6, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    with dg.instance_for_test() as instance:  # a schedule context needs an instance with a ref
        instance.add_dynamic_partitions("field_cameras", ["field_cam", "grey_cam"])
        skipped = schedule(build_schedule_context(instance=instance, scheduled_execution_time=monday))
        assert isinstance(skipped, dg.SkipReason) and "co_trained_student[field_cam]" in skipped.skip_message
        trained(instance, "field_cam")
        [request] = schedule(build_schedule_context(instance=instance, scheduled_execution_time=monday))
        assert request.run_key == "weekly-2026-03-02-field_cam" and request.partition_key == "field_cam"
        assert request.tags["sr_pipeline/trigger"] == "weekly"
        trained(instance, "grey_cam")
        requests = schedule(build_schedule_context(instance=instance, scheduled_execution_time=monday))
    assert [r.partition_key for r in requests] == ["field_cam", "grey_cam"]


def test_sensor_fires_on_new_calibration_pairs_only(layout, registry, tmp_path, cameras_file):
    resources = {"storage": PlantStorage(data_root=str(layout.root), cameras_file=str(cameras_file))}
    with DagsterInstance.ephemeral() as instance:
        def tick(cursor=None):
            return calibration_pairs_sensor(build_sensor_context(instance=instance, cursor=cursor, resources=resources))

        none = tick()
        assert isinstance(none, dg.SkipReason) and "no field camera" in none.skip_message
        add_pairs(layout, registry, tmp_path, ["a", "b", "c"], "calib-1")
        instance.add_dynamic_partitions("field_cameras", ["field_cam"])
        untrained = tick()
        assert isinstance(untrained, dg.SkipReason) and "never materialised" in untrained.skip_message

        trained(instance)
        first = tick()
        assert isinstance(first, dg.SensorResult) and first.cursor == '{"field_cam": 3}'
        [req] = first.run_requests
        assert req.run_key == "calibration-pairs-field_cam-3" and req.partition_key == "field_cam"
        assert req.job_name is None and calibration_pairs_sensor.job_name == "evaluation_job"  # the sensor's one job

        same = tick(cursor=first.cursor)
        assert isinstance(same, dg.SkipReason) and "3 already evaluated" in same.skip_message
        add_pairs(layout, registry, tmp_path, ["d"], "calib-2")
        more = tick(cursor=first.cursor)
        assert more.cursor == '{"field_cam": 4}' and more.run_requests[0].run_key == "calibration-pairs-field_cam-4"
        assert more.run_requests[0].tags["sr_pipeline/trigger"] == "1 new calibration pairs"
        assert tick(cursor="3").cursor == '{"field_cam": 4}'  # an old single-count cursor starts afresh

        # A report of the camera that already covered the pairs (e.g. the weekly one) counts as evaluated.
        instance.report_runless_asset_event(dg.AssetMaterialization("evaluation_report", partition="field_cam",
                                                                    metadata={"calibration_pairs": 4}))
        assert isinstance(tick(cursor=first.cursor), dg.SkipReason)

        # A camera's fit pairs train its G and never judge it: they are not counted as new pairs to evaluate.
        cameras_file.write_text(cameras_file.read_text().replace("    min_field_images: 2",
                                                                 "    min_field_images: 2\n    fit_pairs: [e]"))
        add_pairs(layout, registry, tmp_path, ["e"], "calib-3")
        assert isinstance(tick(cursor='{"field_cam": 4}'), dg.SkipReason)

        # A split that leaves no gate pair is said in the skip reason, not a failed tick.
        cameras_file.write_text(cameras_file.read_text().replace("fit_pairs: [e]", "fit_pairs: 5"))
        none_left = tick(cursor='{"field_cam": 4}')
        assert isinstance(none_left, dg.SkipReason)
        assert "field_cam: all 5 calibration pairs would fit the camera model and none would gate" in none_left.skip_message


def test_definitions_with_the_evaluation_layer_load_without_torch():
    code = (
        "import sys, dagster as dg\n"
        "from sr_pipeline.definitions import defs\n"
        "dg.Definitions.validate_loadable(defs)\n"
        "job = defs.resolve_job_def('evaluation_job')\n"
        "assert defs.resolve_schedule_def('weekly_evaluation_schedule')\n"
        "assert defs.resolve_sensor_def('calibration_pairs_sensor')\n"
        "print(sorted(k.to_user_string() for k in job.asset_layer.executable_asset_keys), 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "['evaluation_report'] False"


def test_gate_checks_are_blocking_and_on_the_student():
    specs = {s.name: s for s in promotion_gate.check_specs}
    assert set(specs) == {"valid_outputs", "not_worse_than_bicubic", "not_worse_than_promoted", "not_over_sharpened"}
    assert all(s.blocking and s.asset_key == dg.AssetKey("co_trained_student") for s in specs.values())
    assert not promotion_gate.node_def.input_defs or all(  # no input: it would load every camera's student
        i.dagster_type.is_nothing for i in promotion_gate.node_def.input_defs)
    spec = evaluation_report.specs_by_key[dg.AssetKey("evaluation_report")]
    assert spec.group_name == "evaluation"
    assert {d.asset_key.to_user_string() for d in spec.deps} == {"teacher_checkpoint", "co_trained_student",
                                                                 "learned_downsampler", "promoted_student"}
    assert evaluation_job.name == "evaluation_job"


def test_promoted_student_sits_between_the_student_and_the_archive():
    from sr_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    promoted = dg.AssetKey("promoted_student")
    assert graph.get(promoted).parent_keys == {dg.AssetKey("co_trained_student")}
    for camera in ("field_cam", "grey_cam"):  # configs/cameras.yaml's field cameras, each its own archive
        archive_parents = graph.get(dg.AssetKey(["upscaled_archive", camera])).parent_keys
        assert archive_parents == {promoted, dg.AssetKey("raw_plant_images")}
    assert not graph.has(dg.AssetKey(["upscaled_archive", "ref_cam"]))
    # the gate's checks and the promotion run with the student, per field camera
    selected = defs.resolve_job_def("camera_training_job").asset_layer.selected_asset_keys
    assert {dg.AssetKey("co_trained_student"), promoted} <= selected
    for key in ("co_trained_student", "learned_downsampler", "promoted_student", "evaluation_report",
                "learned_degradation_lr_sets"):
        assert graph.get(dg.AssetKey(key)).partitions_def.name == "field_cameras"
    assert graph.get(dg.AssetKey("teacher_checkpoint")).partitions_def is None


def test_gate_settings_read_the_environment(monkeypatch):
    monkeypatch.setenv("SR_PIPELINE_GATE_PSNR_TOLERANCE_DB", "0.2")
    monkeypatch.setenv("SR_PIPELINE_GATE_LPIPS_TOLERANCE", "0.01")
    monkeypatch.setenv("SR_PIPELINE_GATE_REQUIRE_LPIPS", "false")
    t = GateSettings().thresholds()
    assert (t.psnr_tolerance_db, t.lpips_tolerance, t.require_lpips) == (0.2, 0.01, False)
    assert GateSettings(psnr_tolerance_db=0.0).thresholds().psnr_tolerance_db == 0.0
