"""The test suite never touches state it did not create: a user's Dagster instance and data root
stay as they were while the suite's promotion operations run."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import dagster as dg

from conftest import tiny_sr_model
from deploy_fixtures import REPO_ROOT, child_env
from sr_pipeline.defs.evaluation.promotion_events import report_promotion
from sr_pipeline.storage.layout import DataLayout
from sr_pipeline.storage.registry import record_promotion

# the tests that promote by hand (`sr-pipeline promote`, which reports to $DAGSTER_HOME) and list models
PROMOTING_TESTS = [
    "sr_pipeline_tests/serving/test_upscale_cli.py::test_promote_by_hand_is_per_field_camera",
    "sr_pipeline_tests/serving/test_upscale_cli.py::test_models_labels_a_promotion_from_before_cameras_as_standing_for_all",
]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and the sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def promoted_events(home: Path) -> list[tuple[str | None, str]]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.fetch_materializations(dg.AssetKey("promoted_student"), limit=100).records
        return [(r.asset_materialization.partition, r.asset_materialization.tags["dagster/data_version"])
                for r in records]


def test_the_suite_leaves_an_existing_instance_and_data_root_unchanged(own_dagster_home_and_data_root, tmp_path):
    # the fixture gives this test its own instance and data root, never the caller's
    import os

    assert Path(os.environ["DAGSTER_HOME"]).is_relative_to(own_dagster_home_and_data_root)
    assert Path(os.environ["SR_PIPELINE_DATA"]).is_relative_to(own_dagster_home_and_data_root)
    # a user's instance with a promotion in its event log, and their data root
    home, data = tmp_path / "user_home", tmp_path / "user_data"
    home.mkdir()
    layout = DataLayout(data)
    student = tiny_sr_model(layout.model_dir("student", "s-user"), {"kind": "student", "version": "s-user",
                                                                     "camera": "field_cam"})
    record_promotion(layout, "s-user", str(student), "the user's own", "field_cam")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        report_promotion(instance, "s-user", str(student), "the user's own", "field_cam")
    before_home, before_data = snapshot(home), snapshot(data)
    assert promoted_events(home) == [("field_cam", "s-user")]

    # the suite's promotion tests, run as `make test` would with the user's variables exported
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'inner'}",
         *PROMOTING_TESTS],
        cwd=REPO_ROOT, env=child_env(DAGSTER_HOME=str(home), SR_PIPELINE_DATA=str(data)),
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout
    assert promoted_events(home) == [("field_cam", "s-user")]
    assert snapshot(home) == before_home and snapshot(data) == before_data


def test_promote_does_not_report_into_another_data_roots_instance(tmp_path, monkeypatch, capsys):
    import argparse

    from sr_pipeline.defs.evaluation.promotion_events import promote_cli

    # the operator's DAGSTER_HOME belongs to plant A, which recorded its own student a1
    home = tmp_path / "plant_a_home"
    home.mkdir()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        report_promotion(instance, "a1", "/plant-a/models/student/a1", "plant A's", "field_cam")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    plant_b = DataLayout(tmp_path / "plant_b")
    for version in ("b1", "b2"):
        tiny_sr_model(plant_b.model_dir("student", version), {"kind": "student", "version": version,
                                                                "camera": "field_cam"})
    args = argparse.Namespace(version="b1", reason=None, json=False, layout=plant_b)
    assert promote_cli(args) == 0
    said = capsys.readouterr()
    assert "reported to Dagster" not in said.out and "promoted student b1" in said.out
    assert "records 1 student version(s), none of them under" in said.err and "was not reported there" in said.err
    assert promoted_events(home) == [("field_cam", "a1")]  # plant A's instance is as it was

    # an instance that knows this root's students (or none yet) gets the event
    with dg.DagsterInstance.from_config(str(home)) as instance:
        report_promotion(instance, "b1", str(plant_b.model_dir("student", "b1")), "plant B's", "field_cam")
    assert promote_cli(argparse.Namespace(version="b2", reason=None, json=False, layout=plant_b)) == 0
    assert "reported to Dagster in" in capsys.readouterr().out
    assert ("field_cam", "b2") in promoted_events(home)
