"""A data root is a folder that can be moved: paths stored under it are relative to it, a copy made
with docs/deploy.md's backup recipe serves its own students, and a broken promotion log is one line
naming the file."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest

from conftest import tiny_sr_model
from sr_pipeline.cli import main
from sr_pipeline.evaluation.promotion import served_student
from sr_pipeline.intake.ingest import ingest_batch
from sr_pipeline.serving.archive import archive_batch, read_manifest
from sr_pipeline.sr.images.png_stream import png_text
from sr_pipeline.storage.layout import DataLayout
from sr_pipeline.storage.registry import PROMOTIONS_FILE, promoted_student_dir, promotions, record_promotion
from sr_pipeline.sr.serve.tiles import TileSettings

TILES = TileSettings(tile=16, overlap=4)  # small images: several tiles each

BATCH = "field_cam-20260101T000000Z-move01"
FAST = ["--tile", "16", "--overlap", "4"]


def restore(src: DataLayout, dest: DataLayout) -> None:
    """docs/deploy.md's backup, restored at another path: the store before the catalog, the model folders
    before promotions.json, then the archive and the quarantine."""
    for part in ("store", "catalog"):
        shutil.copytree(src.root / part, dest.root / part)
    shutil.copytree(src.models, dest.models, ignore=shutil.ignore_patterns(PROMOTIONS_FILE))
    shutil.copy2(src.models / PROMOTIONS_FILE, dest.models / PROMOTIONS_FILE)
    for part in ("archive", "quarantine"):
        if (src.root / part).is_dir():
            shutil.copytree(src.root / part, dest.root / part)


def test_promotions_are_stored_relative_to_the_data_root(layout):
    student = tiny_sr_model(layout.model_dir("student", "s1"), {"kind": "student", "version": "s1",
                                                                "camera": "field_cam"})
    entry = record_promotion(layout, "s1", str(student), "test", "field_cam")
    [stored] = json.loads((layout.models / PROMOTIONS_FILE).read_text())
    assert stored["path"] == "models/student/s1" and entry["path"] == str(student)
    assert promoted_student_dir(layout, "field_cam") == student


@pytest.mark.parametrize("legacy", [False, True], ids=["relative", "absolute-from-before"])
def test_a_restored_copy_serves_its_own_students(layout, registry, put_incoming, make_image, tmp_path, capsys,
                                                 legacy):
    put_incoming(BATCH, "field_cam/astronaut.png", make_image(24, 20, seed=1))
    ingest_batch(layout, registry, BATCH)
    old = tiny_sr_model(layout.model_dir("student", "s-old"), {"kind": "student", "version": "s-old",
                                                               "camera": "field_cam"})
    new = tiny_sr_model(layout.model_dir("student", "s-new"), {"kind": "student", "version": "s-new",
                                                               "camera": "field_cam"}, seed=1)
    record_promotion(layout, "s-new", str(new), "gate", "field_cam")
    record_promotion(layout, "s-old", str(old), "rollback", "field_cam")
    if legacy:  # a log written before paths were relative names the original folders
        log = layout.models / PROMOTIONS_FILE
        log.write_text(json.dumps([e | {"path": str(layout.root / e["path"])} for e in json.loads(log.read_text())]))
    archived = archive_batch(layout, BATCH, old, tiles=TILES)
    assert archived.upscaled == 1

    copy = DataLayout(tmp_path / "elsewhere" / "data")
    restore(layout, copy)
    shutil.rmtree(layout.root)  # the original is gone: nothing may still be read from it

    assert promoted_student_dir(copy, "field_cam") == copy.model_dir("student", "s-old")
    assert main(["--data", str(copy.root), "models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    rows = {r["version"]: r for r in listed["models"]}
    assert rows["s-old"]["promoted_for"] == ["field_cam"] and rows["s-new"]["promoted_for"] == []
    assert all(e["path"].startswith(str(copy.root)) for e in listed["promotions"])

    img = tmp_path / "in" / "a.png"
    img.parent.mkdir()
    img.write_bytes(make_image(20, 16, seed=3))
    code = main(["--data", str(copy.root), "upscale", str(img), "--out", str(tmp_path / "out"), "--camera",
                 "field_cam", *FAST])
    assert code == 0, capsys.readouterr().err
    assert png_text(tmp_path / "out" / "a_x4.png")["sr_pipeline:model_version"] == "s-old"

    served = served_student(copy, registry, "field_cam")
    again = archive_batch(copy, BATCH, served.path, tiles=TILES)
    assert (again.upscaled, again.skipped, again.failed) == (0, 1, {})  # the copied outputs are the copy's
    [row] = read_manifest(copy, BATCH).itertuples()
    assert (copy.root / row.output_path).is_file() and copy.resolve(row.model_path) == served.path
    assert not row.model_path.startswith("/")


BROKEN = {
    "empty": "",
    "truncated": '[{"version": "s1", "path": "models/stud',
    "not a list": '{"version": "s1"}',
    "bad entry": '[{"version": "s1"}]',
    "camera a number": '[{"version": "s1", "path": "models/student/s1", "camera": 5}]',
    "camera a list": '[{"version": "s1", "path": "models/student/s1", "camera": ["a"]}]',
    "empty path": '[{"version": "s1", "path": "", "camera": "field_cam"}]',
}


@pytest.mark.parametrize("text", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_promotion_log_is_one_line_naming_the_file(tmp_path, capsys, make_image, text):
    data = tmp_path / "data"
    layout = DataLayout(data)
    tiny_sr_model(layout.model_dir("student", "s1"), {"kind": "student", "version": "s1", "camera": "field_cam"})
    log = layout.models / PROMOTIONS_FILE
    log.write_text(text)
    img = tmp_path / "a.png"
    img.write_bytes(make_image(20, 16))
    for argv in (["models"], ["models", "--json"], ["promote", "s1"],
                 ["upscale", str(img), "--out", str(tmp_path / "out"), "--camera", "field_cam", *FAST]):
        assert main(["--data", str(data), *argv]) == 2, argv
        out, err = capsys.readouterr()
        assert not out and len(err.strip().splitlines()) == 1, (argv, err)
        assert str(log) in err and "restore it from a backup" in err and "Traceback" not in err, (argv, err)
    assert log.read_text() == text  # never overwritten by the promotion that failed
    assert not (tmp_path / "out").exists()


def test_a_corrupt_training_json_elsewhere_does_not_block_a_rollback_with_a_traceback(layout, capsys):
    tiny_sr_model(layout.models / "student" / "s1", {"kind": "student", "version": "s1", "camera": "field_cam"})
    broken = tiny_sr_model(layout.models / "teacher" / "tbad", {"kind": "teacher", "version": "tbad"})
    (broken / "training.json").write_text('{"kind": "teach')  # cut off mid-write
    code = main(["--data", str(layout.root), "promote", "s1"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "tbad" in err and "training.json" in err and "corrupt" in err
    assert not (layout.models / PROMOTIONS_FILE).exists()  # nothing recorded


@pytest.mark.parametrize("legacy", [False, True], ids=["relative", "absolute-from-before"])
def test_a_moved_data_root_gate_and_report_find_their_teacher_challenger_and_downsampler(layout, registry, tmp_path,
                                                                                          legacy):
    from datetime import date

    from test_evaluation import STRICT, FakeLPIPS, add_pairs, save_downsampler, save_sr

    from sr_pipeline.evaluation import calibration as ev
    from sr_pipeline.evaluation.promotion import promote_after_gate
    from sr_pipeline.serving.consistency import co_trained_downsampler
    from sr_pipeline.sr.models.checkpoints import link_path, recorded_teacher

    add_pairs(layout, registry, tmp_path, [1, 2], "calib-1")
    co_dir = layout.model_dir("student", "s-co")
    teacher = save_sr(layout, "teacher", "t1")
    g = save_downsampler(layout, "s-co")
    # what co-learning records (sr/train/stages/colearn.py), or the absolute paths folders from before carried
    link = (lambda p: str(p.resolve())) if legacy else (lambda p: link_path(p, co_dir))
    save_sr(layout, "student", "fixed-t1", challenger=True, teacher={"version": "t1", "path": link(teacher)})
    save_sr(layout, "student", "s-co", camera="field_cam", teacher={"version": "t1", "path": link(teacher)},
            downsampler=link(g))
    decision = ev.evaluate_gate(layout, co_dir, None, STRICT, lpips=FakeLPIPS(), device="cpu", camera="field_cam")
    assert decision.challenge is not None  # the challenger took part

    copy = DataLayout(tmp_path / "elsewhere" / "data")
    shutil.copytree(layout.root, copy.root)
    shutil.rmtree(layout.root)  # the original is gone: nothing may still be read from it
    co = copy.model_dir("student", "s-co")

    assert recorded_teacher(co) == copy.model_dir("teacher", "t1")
    assert co_trained_downsampler(co) == copy.model_dir("downsampler", "s-co")
    assert ev.fixed_degradation_challenger(copy, co) == copy.model_dir("student", "fixed-t1")
    done = promote_after_gate(copy, co, "field_cam")  # the gate's kept decision, read in the copy
    assert done.path.is_relative_to(copy.root.resolve())
    out = ev.run_evaluation(copy, recorded_teacher(co), co, None, co_trained_downsampler(co), date(2026, 3, 2), STRICT,
                            lpips=FakeLPIPS(), device="cpu", camera="field_cam")
    models = out.summary["models"]
    assert {r: m["path"] for r, m in models.items() if m} == {
        "teacher": "models/teacher/t1", "candidate": "models/student/s-co", "challenger": "models/student/fixed-t1",
        "downsampler": "models/downsampler/s-co"}
    assert all(copy.resolve(m["path"]).is_dir() for m in models.values() if m)
    assert "candidate" in out.reused  # the gate's scores, kept before the move, still count
    for name in ("summary.json", "index.html"):
        text = (out.report_dir / name).read_text()
        assert str(tmp_path) not in text, name  # no machine path in what a manager reads


def test_models_lists_the_promotion_log_as_its_json_does(layout, capsys):
    one = tiny_sr_model(layout.model_dir("student", "s1"), {"kind": "student", "version": "s1", "camera": "field_cam"})
    record_promotion(layout, "s1", str(one), "passed the gate", "field_cam")
    assert main(["--data", str(layout.root), "models", "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)["promotions"]
    assert main(["--data", str(layout.root), "models"]) == 0
    out, err = capsys.readouterr()
    [line] = [x for x in out.splitlines() if x.startswith("  ")]
    assert "s1 for field_cam (models/student/s1): passed the gate" in line and str(layout.root) not in out
    assert line.strip().startswith(entry["promoted_at"][:10]) and "UTC" in line and "T" not in line.split()[1]
    assert "promotions (1 entry, oldest first" in out and not err


def test_a_promotion_whose_folder_is_missing_is_named_alike_by_promote_upscale_and_models(layout, tmp_path, capsys,
                                                                                          make_image):
    tiny_sr_model(layout.model_dir("student", "s1"), {"kind": "student", "version": "s1", "camera": "field_cam"})
    record_promotion(layout, "s1", str(layout.model_dir("student", "s1")), "gate", "field_cam")
    # the folder was moved (a hand tidy-up): the log's newest entry for field_cam names nothing
    shutil.move(layout.model_dir("student", "s1"), layout.model_dir("student", "s1-moved"))
    img = tmp_path / "a.png"
    img.write_bytes(make_image(20, 16))
    upscale = ["--data", str(layout.root), "upscale", str(img), "--out", str(tmp_path / "out"), *FAST]
    for argv in (upscale, [*upscale, "--camera", "field_cam"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "student s1 is the promoted student for field camera 'field_cam'" in err, err
        assert "models/student/s1 " in err and "is missing" in err and "promote a student again" in err
    assert main(["--data", str(layout.root), "models"]) == 0
    out, err = capsys.readouterr()
    assert "[folder missing]" in out and "is missing" in err
    assert promoted_student_dir(layout, "field_cam") is None

    assert main(["--data", str(layout.root), "promote", "s1"]) == 0  # never "already promoted"
    out = capsys.readouterr().out
    assert "promoted student s1" in out and "named models/student/s1, which is missing" in out
    assert promoted_student_dir(layout, "field_cam") == layout.model_dir("student", "s1-moved")
    assert main(upscale) == 0, capsys.readouterr().err
    assert main(["--data", str(layout.root), "promote", "s1"]) == 0
    assert "already the promoted student" in capsys.readouterr().out  # now it is


def test_promote_json_names_the_missing_folder_it_replaced(layout, capsys):
    tiny_sr_model(layout.model_dir("student", "s1"), {"kind": "student", "version": "s1", "camera": "field_cam"})
    record_promotion(layout, "s1", str(layout.model_dir("student", "s1")), "gate", "field_cam")
    shutil.move(layout.model_dir("student", "s1"), layout.model_dir("student", "s1-moved"))
    assert main(["--data", str(layout.root), "promote", "s1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["recorded_now"] and out["path"] == "models/student/s1-moved"
    assert out["replaced_missing"] == [{"version": "s1", "path": "models/student/s1"}]
    assert main(["--data", str(layout.root), "promote", "s1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["replaced_missing"] == []  # nothing replaced the second time


def test_promote_names_a_promoted_student_whose_folder_is_gone(layout, capsys):
    tiny_sr_model(layout.model_dir("student", "s1"), {"kind": "student", "version": "s1", "camera": "field_cam"})
    record_promotion(layout, "s1", str(layout.model_dir("student", "s1")), "gate", "field_cam")
    shutil.rmtree(layout.model_dir("student", "s1"))
    assert main(["--data", str(layout.root), "promote", "s1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "is missing" in err and "restore the folder" in err


def test_a_data_root_that_does_not_exist_is_refused_by_the_commands_that_only_read_one(tmp_path, capsys):
    typo = tmp_path / "dta"
    for argv in (["models"], ["models", "--json"], ["doctor"], ["doctor", "--finish"], ["promote", "s1"]):
        assert main(["--data", str(typo), *argv]) == 2, argv
        out, err = capsys.readouterr()
        assert not out and f"the data root {typo} does not exist" in err and len(err.strip().splitlines()) == 1
    assert not typo.exists()  # nothing was created on the way


@pytest.mark.parametrize("camera", [[], ["--camera", "field_cam"]], ids=["without-camera", "with-camera"])
def test_upscale_names_an_unreadable_camera_registry(layout, tmp_path, capsys, make_image, monkeypatch, camera):
    student = tiny_sr_model(layout.model_dir("student", "s1"), {"kind": "student", "version": "s1",
                                                                "camera": "field_cam"})
    record_promotion(layout, "s1", str(student), "gate", "field_cam")
    broken = tmp_path / "cameras.yaml"
    broken.write_text("cameras: [unclosed\n")
    monkeypatch.setenv("SR_PIPELINE_CAMERAS", str(broken))
    img = tmp_path / "a.png"
    img.write_bytes(make_image(20, 16))
    code = main(["--data", str(layout.root), "upscale", str(img), "--out", str(tmp_path / "out"), *camera, *FAST])
    err = capsys.readouterr().err
    assert code == 2 and str(broken) in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_a_copy_missing_a_promoted_folder_never_serves_the_originals(layout, tmp_path):
    """An old absolute path into the original data root: the copy's own folder or none, never the original's."""
    (layout.catalog).mkdir(parents=True, exist_ok=True)
    student = tiny_sr_model(layout.model_dir("student", "s1"), {"kind": "student", "version": "s1",
                                                                "camera": "field_cam"})
    (layout.models / PROMOTIONS_FILE).write_text(json.dumps([{
        "version": "s1", "path": str(student), "camera": "field_cam", "reason": "test",
        "promoted_at": "2026-01-01T00:00:00+00:00"}]))
    copy = DataLayout(tmp_path / "copy")
    shutil.copytree(layout.root, copy.root)
    shutil.rmtree(copy.model_dir("student", "s1"))
    assert student.is_dir() and promoted_student_dir(copy, "field_cam") is None


def test_without_camera_a_missing_folder_does_not_make_another_cameras_student_the_only_one(layout):
    from sr_pipeline.storage.registry import promoted_student_for

    student = tiny_sr_model(layout.model_dir("student", "s1"), {"kind": "student", "version": "s1",
                                                                "camera": "field_cam"})
    record_promotion(layout, "s1", str(student), "test", "field_cam")
    record_promotion(layout, "gone", str(layout.model_dir("student", "gone")), "test", "grey_cam")
    with pytest.raises(ValueError, match="say whose with --camera"):
        promoted_student_for(layout, None)
    assert promoted_student_for(layout, "field_cam") == student


def test_promote_for_a_camera_nobody_knows_is_refused(layout, capsys):
    tiny_sr_model(layout.model_dir("student", "s1"), {"kind": "student", "version": "s1", "camera": "field_cam"})
    tiny_sr_model(layout.model_dir("student", "fixed-t1"), {"kind": "student", "version": "fixed-t1", "challenger": True})
    for typo in ("feild_cam", "field cam", "<b>x</b>"):
        assert main(["--data", str(layout.root), "promote", "fixed-t1", "--camera", typo]) == 2
        err = capsys.readouterr().err
        assert "is not a known field camera" in err and "field_cam" in err and "nothing was promoted" in err
    assert promotions(layout) == []


@pytest.mark.parametrize("state", [errno.EROFS, errno.ENOSPC])
def test_promote_on_a_read_only_or_full_disk_is_one_sentence(layout, capsys, monkeypatch, state):
    import sr_pipeline.evaluation.promotion as promotion

    tiny_sr_model(layout.model_dir("student", "s1"), {"kind": "student", "version": "s1", "camera": "field_cam"})

    def refused(*_, **__):
        raise OSError(state, os.strerror(state), str(layout.models / ".promotions.json.x1.tmp"))

    monkeypatch.setattr(promotion, "record_promotion", refused)
    assert main(["--data", str(layout.root), "promote", "s1"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"cannot write in {layout.models}" in err and ("read-only" in err or "disk is full" in err)
