"""sr-pipeline doctor: stale temp files and unfinished batches are found, cleared and finished."""

from __future__ import annotations

import json
import os
import time

from conftest import encode, pixels

from sr_pipeline.cli import main
from sr_pipeline.intake import doctor
from sr_pipeline.intake.ingest import claim_files
from sr_pipeline.intake.uploads import batch_lock, names_path, scan_tree
from sr_pipeline.storage import store

HOUR = 3600


def _file(path, data=b"x", age_s=0.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if age_s:
        t = time.time() - age_s
        os.utime(path, (t, t))
    return path


def _leftovers(layout):
    """What killed writes leave: old temp files in every folder, one young one, a temp model folder."""
    old = [
        _file(layout.image_store / "ab" / ".abcd.png.x1y2z3.tmp", age_s=2 * HOUR),
        _file(layout.catalog / "images" / ".b1.parquet.q1w2e3.tmp", age_s=2 * HOUR),
        _file(layout.models / "teacher" / "v1" / ".model.safetensors.k9.tmp", age_s=2 * HOUR),
        _file(layout.archive / "b1" / ".x.png.r4.tmp", age_s=2 * HOUR),
        _file(layout.reports / "2026-01-01" / ".summary.json.a1.tmp", age_s=2 * HOUR),
    ]
    young = _file(layout.catalog / "images" / ".b2.parquet.young.tmp")
    temp_model = _file(layout.models / "student" / ".v3.ab12cd34" / "model.bin", b"12345").parent
    t = time.time() - 2 * HOUR
    os.utime(temp_model, (t, t))
    # a field camera's report folder being written when the process died: reports/<camera>/.<date>.<tmp>/
    temp_report = _file(layout.reports / "field_cam" / ".2026-01-01.k2j3" / "index.html").parent
    os.utime(temp_report, (t, t))
    old.append(temp_report)
    keep = [_file(layout.catalog / "images" / ".ingest.lock", age_s=2 * HOUR), _file(layout.models / "teacher" / "v1" / "info.json", age_s=2 * HOUR)]
    return old, young, temp_model, keep


def test_stale_temp_files_are_reported_then_removed(layout):
    old, young, temp_model, keep = _leftovers(layout)
    report = doctor.examine(layout)
    assert sorted(t.path for t in report.stale_temps) == sorted(map(str, [*old, temp_model]))
    assert all(p.exists() for p in [*old, young, temp_model])  # looking changes nothing

    report = doctor.examine(layout, clean=True)
    assert report.problems_left() == 0
    assert not any(p.exists() for p in [*old, temp_model])
    assert young.exists() and all(p.exists() for p in keep)


def _crashed_cli_ingest(layout, tmp_path, n=3) -> str:
    """What `sr-pipeline ingest` leaves when it dies after claiming: a batch in incoming, no catalog."""
    src = tmp_path / "src"
    for i in range(n):
        _file(src / f"shot {i}.png", encode(pixels(seed=i)))
    claim_files(layout, "ref_cam-crashed", "ref_cam", scan_tree(src, "ref_cam"))
    return "ref_cam-crashed"


def test_unfinished_batches_are_listed_with_their_command_and_finished(layout, tmp_path, cameras_file):
    batch = _crashed_cli_ingest(layout, tmp_path)
    [found] = doctor.examine(layout).unfinished
    assert (found.batch, found.state, found.files) == (batch, "claimed", 3)
    assert found.command == f"sr-pipeline --data {layout.root} doctor --finish --batch {batch}"

    with batch_lock(layout, batch):  # someone is ingesting it right now: left alone
        [busy] = doctor.examine(layout, finish_batches=True, cameras_file=cameras_file).unfinished
        assert busy.state == "busy" and busy.finished is None

    [done] = doctor.examine(layout, finish_batches=True, cameras_file=cameras_file).unfinished
    assert done.finished == {"files_in": 3, "accepted": 3, "duplicate": 0, "quarantined": 0}
    assert store.read_catalog(layout)["original_name"].tolist() == ["shot 0.png", "shot 1.png", "shot 2.png"]
    assert doctor.examine(layout).unfinished == [] and not names_path(layout, batch).exists()


def test_an_empty_reserved_batch_folder_is_removed_by_finish(layout, cameras_file):
    (layout.incoming / "ref_cam-reserved").mkdir(parents=True)
    [found] = doctor.examine(layout).unfinished
    assert found.state == "empty"
    assert doctor.examine(layout, finish_batches=True, cameras_file=cameras_file).problems_left() == 0
    assert not (layout.incoming / "ref_cam-reserved").exists()


def test_a_leftover_name_file_of_a_finished_batch_is_cleaned(layout, tmp_path, cameras_file):
    batch = _crashed_cli_ingest(layout, tmp_path, n=1)
    doctor.examine(layout, finish_batches=True, cameras_file=cameras_file)
    _file(names_path(layout, batch), b"{}", age_s=2 * HOUR)  # as if the run died after its catalog
    young = _file(names_path(layout, "ref_cam-claiming"), b"{}")  # a claim writing its files right now
    assert doctor.examine(layout).leftover_name_files == [str(names_path(layout, batch))]
    doctor.examine(layout, clean=True)
    assert not names_path(layout, batch).exists() and young.exists()


def test_doctor_command_line(layout, tmp_path, cameras_file, capsys):
    _leftovers(layout)
    batch = _crashed_cli_ingest(layout, tmp_path)
    base = ["--data", str(layout.root), "doctor", "--cameras", str(cameras_file)]
    assert main([*base, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert len(out["stale_temps"]) == 7 and [b["batch"] for b in out["unfinished"]] == [batch]

    assert main([*base]) == 1
    assert f"doctor --finish --batch {batch}" in capsys.readouterr().out
    assert main([*base, "--clean", "--finish", "--min-age", "0"]) == 0
    out = capsys.readouterr().out
    assert f"{batch}: finished now: 3 files, 3 accepted, 0 duplicate and 0 quarantined" in out and "removed" in out
    assert "{" not in out  # sentences, never a raw dict
    assert main([*base, "--min-age", "0"]) == 0
    assert main([*base, "--min-age", "-1"]) == 2
