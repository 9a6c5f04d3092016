"""``sr-pipeline demo``: the order of its runs and what each selects (the runs themselves are stubbed)."""

from pathlib import Path

from sr_pipeline import demo
from sr_pipeline.evaluation import promotion
from sr_pipeline.storage.layout import DataLayout


def _record_runs(monkeypatch) -> list[tuple[str, dict]]:
    calls: list[tuple[str, dict]] = []
    monkeypatch.setattr(demo, "_run", lambda job, instance, **kw: calls.append((job.name, kw)))
    return calls


def test_demo_ingests_without_the_archive_and_skips_it_when_nothing_is_promoted(tmp_path, monkeypatch, instance):
    calls = _record_runs(monkeypatch)
    demo.run_demo(DataLayout(tmp_path / "data"), instance)
    names = [name for name, _ in calls]
    ingest = [kw for name, kw in calls if name == "ingest_job"]
    cameras = sorted(instance.get_dynamic_partitions("field_cameras"))
    assert cameras == ["field_cam", "grey_cam"]  # the demo's two field cameras, each its own partition
    assert names == (["ingest_job"] * len(ingest) + ["teacher_job"] + ["camera_training_job"] * len(cameras)
                     + ["evaluation_job"] * len(cameras))
    assert [kw["partition_key"] for name, kw in calls if name != "ingest_job" and name != "teacher_job"] == cameras * 2
    assert len(ingest) >= 3  # the reference camera and the two field cameras' batches at least
    # ingest_job is ingestion alone; each field batch is also a partition of its camera's archive.
    assert all("asset_selection" not in kw for kw in ingest)
    for camera in cameras:
        mine = {kw["partition_key"] for kw in ingest if kw["partition_key"].startswith(f"{camera}-")}
        assert mine and set(instance.get_dynamic_partitions(f"upload_batches__{camera}")) == mine
    assert not any(instance.get_dynamic_partitions(f"upload_batches__{c}") for c in ("ref_cam",))


def test_demo_archives_the_field_batches_then_writes_the_reports(tmp_path, monkeypatch, instance):
    calls = _record_runs(monkeypatch)
    monkeypatch.setattr(promotion, "served_student", lambda layout, registry, camera: Path("/models/student/v1"))
    demo.run_demo(DataLayout(tmp_path / "data"), instance)
    names = [name for name, _ in calls]
    trained = len(names) - names[::-1].index("camera_training_job")
    archive = calls[trained:names.index("evaluation_job")]
    # The reports come last, so each one describes the archive its camera's batches were just written to.
    assert names[names.index("evaluation_job"):] == ["evaluation_job"] * 2
    # Each field batch by its own camera's archive job.
    assert archive and all(name == f"archive_{kw['partition_key'].split('-')[0]}_job" for name, kw in archive)
    assert {name for name, _ in archive} == {"archive_field_cam_job", "archive_grey_cam_job"}
    field_keys = {kw["partition_key"] for _, kw in archive}
    ingested = {kw["partition_key"] for name, kw in calls if name == "ingest_job"}
    assert field_keys < ingested  # a strict subset: the HR reference batches are not archived
