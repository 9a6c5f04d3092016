"""`sr-pipeline upscale` reliability: resuming after a crash, usage errors, output permissions."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_sr_model
from sr_pipeline.cli import main
from sr_pipeline.sr.images.png_stream import png_text
from sr_pipeline.storage.layout import DataLayout

FAST = ["--tile", "16", "--overlap", "4"]


@pytest.fixture
def student_dir(tmp_path):
    return tiny_sr_model(tmp_path / "student" / "s1", {"kind": "student", "version": "s1"})


def _image(path, seed=0, size=(20, 16)):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _upscale(capsys, *argv):
    code = main(["upscale", *map(str, argv), *FAST, "--json"])
    out = capsys.readouterr().out
    return code, (json.loads(out) if out.strip() else None)


def test_a_resumed_run_keeps_finished_outputs_and_succeeds(tmp_path, student_dir, capsys):
    src = tmp_path / "in"
    src.mkdir()
    _image(src / "a.png", 1)
    _image(src / "b.png", 2)
    out = tmp_path / "out"
    # The run that "crashed" after its first image.
    assert _upscale(capsys, src / "a.png", "--out", out, "--model", student_dir)[0] == 0
    before = (out / "a_x4.png").read_bytes()
    code, report = _upscale(capsys, src, "--out", out, "--model", student_dir)
    assert code == 0
    assert (report["upscaled"], report["skipped"], report["failed"]) == (1, 1, 0)
    kept = {f["input"]: f for f in report["files"]}[str(src / "a.png")]
    assert kept["status"] == "skipped" and "already done" in kept["reason"]
    assert (out / "a_x4.png").read_bytes() == before and (out / "b_x4.png").is_file()


def test_an_output_of_another_source_or_model_is_a_conflict(tmp_path, student_dir, capsys):
    src = tmp_path / "in"
    src.mkdir()
    out = tmp_path / "out"
    _image(src / "a.png", 1)
    assert _upscale(capsys, src / "a.png", "--out", out, "--model", student_dir)[0] == 0
    before = (out / "a_x4.png").read_bytes()
    _image(src / "a.png", 9)  # the source changed since
    code, report = _upscale(capsys, src / "a.png", "--out", out, "--model", student_dir)
    assert code == 1 and (report["upscaled"], report["skipped"], report["failed"]) == (0, 0, 1)
    assert "another source" in report["files"][0]["reason"] and "--overwrite" in report["files"][0]["reason"]
    other = tiny_sr_model(tmp_path / "student" / "s2", {"kind": "student", "version": "s2"}, seed=1)
    _image(src / "a.png", 1)
    code, report = _upscale(capsys, src / "a.png", "--out", out, "--model", other)
    assert code == 1 and "model s1" in report["files"][0]["reason"]
    (out / "c_x4.png").write_bytes(b"someone else's file")
    _image(src / "c.png", 3)
    code, report = _upscale(capsys, src / "c.png", "--out", out, "--model", student_dir)
    assert code == 1 and "not an output of sr-pipeline upscale" in report["files"][0]["reason"]
    assert (out / "a_x4.png").read_bytes() == before
    code, report = _upscale(capsys, src / "a.png", "--out", out, "--model", other, "--overwrite")
    assert code == 0 and report["upscaled"] == 1


def _usage_error(capsys, *argv) -> str:
    code = main(["upscale", *map(str, argv)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_out_naming_a_file_is_a_usage_error(tmp_path, student_dir, capsys):
    img = _image(tmp_path / "a.png")
    (tmp_path / "result.png").write_bytes(b"x")
    err = _usage_error(capsys, img, "--out", tmp_path / "result.png", "--model", student_dir)
    assert "--out" in err and "names a file" in err and "folder" in err


@pytest.mark.parametrize("option, value, allowed", [
    ("--tile", "0", ">= 1"), ("--tile", "-8", ">= 1"), ("--overlap", "-1", ">= 0"), ("--overlap", "16", "0..15"),
    ("--batch", "0", ">= 1"), ("--memory-budget", "-1", ">= 0"), ("--memory-budget", "inf", ">= 0"),
    ("--memory-budget", "nan", ">= 0"), ("--steps", "0", ">= 1"), ("--steps", "9", "1..4"),
    ("--noise-scale", "-0.5", ">= 0"),
])
def test_bad_numbers_name_the_value_and_the_range(tmp_path, student_dir, capsys, option, value, allowed):
    teacher = tiny_sr_model(tmp_path / "teacher" / "t1", {"kind": "teacher", "version": "t1"})
    img = _image(tmp_path / "a.png")
    args = [img, "--out", tmp_path / "out", "--model", teacher, "--tile", "16", "--overlap", "4", option, value]
    err = _usage_error(capsys, *args)
    assert option in err and value in err and allowed in err
    assert not (tmp_path / "out").exists()


def test_missing_input_and_unreadable_model_are_usage_errors(tmp_path, student_dir, capsys):
    img = _image(tmp_path / "a.png")
    err = _usage_error(capsys, img, tmp_path / "nope.png", "--out", tmp_path / "out", "--model", student_dir)
    assert "nope.png" in err and "does not exist" in err
    err = _usage_error(capsys, img, "--out", tmp_path / "out", "--model", tmp_path / "no-model")
    assert "no-model" in err
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in student_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    for f in broken.glob("*.safetensors"):
        f.write_bytes(b"garbage")
    err = _usage_error(capsys, img, "--out", tmp_path / "out", "--model", broken)
    assert "broken" in err
    assert not (tmp_path / "out").exists()


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_outputs_follow_the_umask(tmp_path, student_dir, capsys, umask_022):
    img = _image(tmp_path / "a.png")
    assert _upscale(capsys, img, "--out", tmp_path / "out", "--model", student_dir)[0] == 0
    assert stat.S_IMODE((tmp_path / "out" / "a_x4.png").stat().st_mode) == 0o644


def test_an_enforced_and_a_plain_output_are_different_outputs_on_resume(tmp_path, student_dir, capsys):
    img = _image(tmp_path / "a.png")
    out = tmp_path / "out"
    assert _upscale(capsys, img, "--out", out, "--model", student_dir)[0] == 0
    code, report = _upscale(capsys, img, "--out", out, "--model", student_dir, "--enforce-consistency")
    assert code == 1 and "enforced consistency none, not bicubic, 1 iteration;" in report["files"][0]["reason"]
    enforced = tmp_path / "enforced"
    assert _upscale(capsys, img, "--out", enforced, "--model", student_dir, "--enforce-consistency")[0] == 0
    code, report = _upscale(capsys, img, "--out", enforced, "--model", student_dir, "--enforce-consistency")
    assert code == 0 and report["skipped"] == 1
    code, report = _upscale(capsys, img, "--out", enforced, "--model", student_dir, "--enforce-consistency",
                            "--enforce-iterations", "5")
    assert code == 1 and "not bicubic, 5 iterations" in report["files"][0]["reason"]
    code, report = _upscale(capsys, img, "--out", enforced, "--model", student_dir)
    assert code == 1 and "enforced consistency bicubic, 1 iteration, not none" in report["files"][0]["reason"]


@pytest.mark.parametrize("extra, named", [
    (["--consistency-map", "MAPFILE"], "--consistency-map"),
    (["--consistency-map", "MAPS", "--no-consistency"], "--no-consistency"),
    (["--camera-model", "NOWHERE"], "--camera-model"),
    (["--camera-model", "EMPTY"], "not a downsampler folder"),
    (["--consistency-thresholds", "NOWHERE"], "--consistency-thresholds"),
])
def test_bad_consistency_options_are_usage_errors(tmp_path, student_dir, capsys, extra, named):
    img = _image(tmp_path / "a.png")
    (tmp_path / "map.png").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    where = {"MAPFILE": tmp_path / "map.png", "MAPS": tmp_path / "maps", "NOWHERE": tmp_path / "nowhere",
             "EMPTY": tmp_path / "empty"}
    err = _usage_error(capsys, img, "--out", tmp_path / "out", "--model", student_dir,
                       *[where.get(e, e) for e in extra])
    assert named in err
    assert not (tmp_path / "out").exists()


def test_the_default_model_is_the_named_cameras_promoted_student(tmp_path, capsys):
    """One promoted student per field camera: without --model, --camera picks whose (needed once several have one)."""
    from sr_pipeline.storage.registry import record_promotion

    data = tmp_path / "data"
    models = {}
    for i, camera in enumerate(("field_cam", "grey_cam")):
        models[camera] = tiny_sr_model(data / "models" / "student" / f"s-{camera}",
                                       {"kind": "student", "version": f"s-{camera}", "camera": camera}, seed=i)
        record_promotion(DataLayout(data), f"s-{camera}", str(models[camera]), "test", camera)
    img = _image(tmp_path / "a.png")
    code = main(["--data", str(data), "upscale", str(img), "--out", str(tmp_path / "o"), *FAST])
    err = capsys.readouterr().err
    assert code == 2 and "field_cam, grey_cam" in err and "--camera" in err and not (tmp_path / "o").exists()
    code = main(["--data", str(data), "upscale", str(img), "--out", str(tmp_path / "o"), "--camera", "grey_cam", *FAST])
    assert code == 0, capsys.readouterr().err
    out = next((tmp_path / "o").glob("*.png"))
    assert png_text(out)["sr_pipeline:model_version"] == "s-grey_cam"
    code = main(["--data", str(data), "upscale", str(img), "--out", str(tmp_path / "o2"), "--camera", "line3", *FAST])
    assert code == 2 and "no student has been promoted for field camera 'line3'" in capsys.readouterr().err
    # `sr-pipeline models` says which camera each student is promoted for
    assert main(["--data", str(data), "models", "--json"]) == 0
    rows = {r["version"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert rows["s-grey_cam"]["promoted_for"] == ["grey_cam"] and rows["s-grey_cam"]["camera"] == "grey_cam"
    assert main(["--data", str(data), "models"]) == 0
    table = capsys.readouterr().out
    assert "promoted for" in table and any(line.startswith("student") and line.rstrip().endswith("field_cam")
                                          for line in table.splitlines())


def test_promote_by_hand_is_per_field_camera(tmp_path, capsys):
    from sr_pipeline.storage.registry import promoted_student_dir, record_promotion

    data = tmp_path / "data"
    layout = DataLayout(data)
    old = tiny_sr_model(data / "models" / "student" / "s-old", {"kind": "student", "version": "s-old",
                                                               "camera": "field_cam"})
    new = tiny_sr_model(data / "models" / "student" / "s-new", {"kind": "student", "version": "s-new",
                                                               "camera": "field_cam"}, seed=1)
    fixed = tiny_sr_model(data / "models" / "student" / "fixed-t1", {"kind": "student", "version": "fixed-t1",
                                                                    "challenger": True}, seed=2)
    grey = tiny_sr_model(data / "models" / "student" / "s-grey", {"kind": "student", "version": "s-grey",
                                                                 "camera": "grey_cam"}, seed=3)
    for version, path, camera in (("s-old", old, "field_cam"), ("s-new", new, "field_cam"), ("s-grey", grey, "grey_cam")):
        record_promotion(layout, version, str(path), "test", camera)
    assert main(["--data", str(data), "promote", "s-old"]) == 0  # the rollback, for the camera it was trained for
    assert "field camera field_cam's images" in capsys.readouterr().out
    assert promoted_student_dir(layout, "field_cam") == old and promoted_student_dir(layout, "grey_cam") == grey
    assert main(["--data", str(data), "promote", "s-old", "--camera", "grey_cam"]) == 2
    assert "trained for field camera 'field_cam', not 'grey_cam'" in capsys.readouterr().err
    assert main(["--data", str(data), "promote", "fixed-t1"]) == 2  # the challenger serves whom? it must be said
    assert "--camera" in capsys.readouterr().err
    assert main(["--data", str(data), "promote", "fixed-t1", "--camera", "grey_cam"]) == 0
    assert promoted_student_dir(layout, "grey_cam") == fixed and promoted_student_dir(layout, "field_cam") == old


def test_the_challenger_needs_a_camera_even_before_any_promotion(tmp_path, capsys):
    """An empty promotion log: a camera-less promotion of the challenger would serve every camera, so --camera is
    asked for as soon as this root has a student trained for a camera."""
    from sr_pipeline.storage.registry import promoted_student_dir, promotions

    data = tmp_path / "data"
    layout = DataLayout(data)
    tiny_sr_model(data / "models" / "student" / "s-cam", {"kind": "student", "version": "s-cam", "camera": "field_cam"})
    fixed = tiny_sr_model(data / "models" / "student" / "fixed-t1", {"kind": "student", "version": "fixed-t1",
                                                                    "challenger": True}, seed=2)
    assert main(["--data", str(data), "promote", "fixed-t1"]) == 2
    assert "--camera" in capsys.readouterr().err and promotions(layout) == []
    assert main(["--data", str(data), "promote", "fixed-t1", "--camera", "field_cam", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["camera"] == "field_cam" and out["replaced_missing"] == []
    assert promoted_student_dir(layout, "field_cam") == fixed


def test_models_labels_a_promotion_from_before_cameras_as_standing_for_all(tmp_path, capsys):
    """A camera-less (older) promotion is listed as 'all', not mistaken for the newest camera's student."""
    from sr_pipeline.storage.registry import record_promotion

    data = tmp_path / "data"
    layout = DataLayout(data)
    old = tiny_sr_model(data / "models" / "student" / "s-old", {"kind": "student", "version": "s-old"})
    new = tiny_sr_model(data / "models" / "student" / "s-cam", {"kind": "student", "version": "s-cam",
                                                               "camera": "field_cam"}, seed=1)
    record_promotion(layout, "s-old", str(old), "before cameras")
    record_promotion(layout, "s-cam", str(new), "test", "field_cam")
    assert main(["--data", str(data), "models", "--json"]) == 0
    rows = {r["version"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert rows["s-old"]["promoted_for"] == ["all"] and rows["s-cam"]["promoted_for"] == ["field_cam"]
