"""The test suite never touches state it did not create: a user's Dagster instance and data root
stay as they were while the suite's promotion operations run."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

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


def _instance(home: Path, *trained: str) -> Path:
    """A Dagster instance in ``home`` whose runs trained these students of field_cam (co_trained_student
    materialisations with the version as data version, as the camera training job records them)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("")

    @dg.asset(name="co_trained_student", partitions_def=dg.StaticPartitionsDefinition(["field_cam"]))
    def trained_student(context) -> dg.Output:
        return dg.Output(None, data_version=dg.DataVersion(context.run.tags["version"]))

    with dg.DagsterInstance.from_config(str(home)) as instance:
        for version in trained:
            assert dg.materialize([trained_student], instance=instance, partition_key="field_cam",
                                  tags={"version": version}).success
    return home


def _root(path: Path, *versions: str) -> DataLayout:
    layout = DataLayout(path)
    for version in versions:
        tiny_sr_model(layout.model_dir("student", version), {"kind": "student", "version": version,
                                                               "camera": "field_cam"})
    return layout


def _promote(layout: DataLayout, version: str, capsys, json: bool = False) -> tuple[str, str]:
    import argparse

    from sr_pipeline.defs.evaluation.promotion_events import promote_cli

    assert promote_cli(argparse.Namespace(version=version, reason=None, json=json, layout=layout)) == 0
    said = capsys.readouterr()
    return said.out, said.err


def test_promote_does_not_report_into_another_data_roots_instance(tmp_path, monkeypatch, capsys):
    home = _instance(tmp_path / "plant_a_home", "a1")  # the operator's DAGSTER_HOME: plant A's, with its own a1
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    plant_b = _root(tmp_path / "plant_b", "b1", "b2")
    out, err = _promote(plant_b, "b1", capsys)
    assert "reported to Dagster" not in out and "promoted student b1" in out
    assert "warning: not reported to Dagster: the runs of DAGSTER_HOME=" in err and "knows none of them" in err
    assert promoted_events(home) == []  # plant A's instance is as it was

    # the advice works: promoting the same version again, with this root's own instance, reports it there
    own = _instance(plant_b.dagster_home)
    monkeypatch.setenv("DAGSTER_HOME", str(own))
    out, err = _promote(plant_b, "b1", capsys)
    assert out.startswith("b1 is already the promoted student of field camera field_cam; nothing recorded; "
                          f"reported to Dagster in {own}, which did not show it yet") and not err
    assert promoted_events(own) == [("field_cam", "b1")]
    out, _ = _promote(plant_b, "b1", capsys)  # now it shows it: nothing more is written
    assert out.strip() == "b1 is already the promoted student of field camera field_cam; nothing recorded"
    assert promoted_events(own) == [("field_cam", "b1")]

    # without DAGSTER_HOME the data root's own instance is used
    monkeypatch.delenv("DAGSTER_HOME")
    out, _ = _promote(plant_b, "b2", capsys)
    assert f"reported to Dagster in {own}" in out and ("field_cam", "b2") in promoted_events(own)


def test_promote_reports_to_this_roots_instance_when_its_recorded_students_are_gone(tmp_path, monkeypatch, capsys):
    import shutil

    layout = _root(tmp_path / "plant", "s1", "s0")
    home = _instance(tmp_path / "home")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    _promote(layout, "s1", capsys)
    shutil.rmtree(layout.model_dir("student", "s1"))  # the promoted student's folder is lost: roll back to s0
    out, err = _promote(layout, "s0", capsys)
    assert f"reported to Dagster in {home}" in out and not err  # s1 is in this root's promotion log: its instance
    assert promoted_events(home)[0] == ("field_cam", "s0")


@pytest.mark.parametrize("case", ["unset", "missing", "file", "relative", "empty", "corrupt"])
def test_promote_says_why_it_did_not_report_to_dagster(tmp_path, monkeypatch, capsys, case):
    layout = _root(tmp_path / "plant", "s1")
    home = tmp_path / "home"
    if case == "unset":
        monkeypatch.delenv("DAGSTER_HOME", raising=False)
    else:
        monkeypatch.setenv("DAGSTER_HOME", "home" if case == "relative" else str(home))
    if case == "file":
        home.write_text("")
    if case in ("empty", "corrupt"):
        home.mkdir()
    if case == "corrupt":
        (home / "dagster.yaml").write_bytes(b"\xff\xfe\x00garbage\x80")
    out, err = _promote(layout, "s1", capsys)
    assert out.startswith("promoted student s1") and "reported to Dagster" not in out
    expected = {"unset": f"DAGSTER_HOME is unset and {layout.dagster_home} does not exist",
                "missing": f"DAGSTER_HOME={home} does not exist", "file": f"DAGSTER_HOME={home} is not a folder",
                "relative": "DAGSTER_HOME=home is not an absolute path, which Dagster needs",
                "empty": f"DAGSTER_HOME={home} holds no Dagster instance (no dagster.yaml, no run history)",
                "corrupt": "could not report the promotion to Dagster (UnicodeDecodeError"}[case]
    assert err.startswith("warning: not reported to Dagster: ") and expected in err
    assert not home.is_dir() or sorted(p.name for p in home.iterdir()) == (["dagster.yaml"] if case == "corrupt" else [])
    out, _ = _promote(layout, "s1", capsys, json=True)  # JSON: the recorded entry, its path under the root
    import json as json_module

    said = json_module.loads(out)
    assert said["path"] == "models/student/s1" and said["recorded_now"] is False and said["dagster_home"] is None


def test_a_stray_promote_into_an_empty_instance_does_not_lock_its_own_root_out(tmp_path, monkeypatch, capsys):
    home = _instance(tmp_path / "plant_a_home")  # plant A's instance, nothing trained yet
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    plant_a, plant_b = _root(tmp_path / "plant_a", "a1"), _root(tmp_path / "plant_b", "b1")
    _promote(plant_b, "b1", capsys)  # by mistake: plant B's promotion lands in plant A's empty instance
    out, err = _promote(plant_a, "a1", capsys)
    assert f"reported to Dagster in {home}" in out and not err  # a hand promotion is no evidence of ownership
    # the root's own dagster_home is its own, whatever it recorded
    own = _instance(plant_b.dagster_home, "x1")
    monkeypatch.delenv("DAGSTER_HOME")
    capsys.readouterr()  # the instance's own run logs
    out, err = _promote(plant_b, "b1", capsys)
    assert f"reported to Dagster in {own}, which did not show it yet" in out and not err
