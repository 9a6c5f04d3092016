"""Faults of the disk, the operator and the bytes around ``sr-pipeline upscale`` and its neighbours:
degenerate outputs, damaged kept outputs, --out inside the input, concurrent runs, lost heat maps,
long names, looping links, huge numbers, corrupt training.json, and the CLI's habits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_sr_model
from sr_pipeline.cli import main
from sr_pipeline.serving import upscale as upscale_mod

FAST = ["--tile", "16", "--overlap", "4"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def student_dir(tmp_path):
    return tiny_sr_model(tmp_path / "models" / "student" / "s1", {"kind": "student", "version": "s1"})


def _image(path: Path, seed: int = 0, size=(20, 16)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _upscale(capsys, *argv) -> tuple[int, dict | None, str]:
    code = main(["upscale", *map(str, argv), *FAST, "--json"])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if out.out.strip() else None), out.err


def _one_line_error(capsys, argv) -> str:
    code = main(list(map(str, argv)))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------- operator: empty strings and magnitudes


def test_empty_strings_are_never_the_current_folder(tmp_path, capsys, monkeypatch, student_dir):
    monkeypatch.chdir(tmp_path)
    img = _image(tmp_path / "a.png")
    before = sorted(os.listdir(tmp_path))
    for argv in (["--data", "", "models"], ["upscale", img, "--out", "", "--model", student_dir],
                 ["upscale", img, "--out", "o", "--consistency-map", "", "--model", student_dir],
                 ["consistency", "--lr", img, "--sr", img, "--map", ""],
                 ["evaluate", "--pairs", tmp_path, "--out", ""], ["ingest", "", "--camera", "ref_cam"]):
        err = _one_line_error(capsys, argv)
        assert "''" in err and "empty" in err
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("option, value", [("--batch", "99999999999999999999999999"), ("--noise-scale", "1e26"),
                                           ("--enforce-iterations", "1e26"), ("--enforce-iterations", "101"),
                                           ("--tile", "inf"), ("--memory-budget", "1e26"), ("--seed", "1e26")])
def test_absurd_magnitudes_are_refused_before_the_model_loads(tmp_path, capsys, option, value):
    img = _image(tmp_path / "a.png")
    err = _one_line_error(capsys, ["upscale", img, "--out", tmp_path / "o", "--model", tmp_path / "nothing",
                                   option, value])
    assert option in err and value in err and not (tmp_path / "o").exists()


def test_the_memory_planner_finishes_at_once_for_any_batch(student_dir):
    from sr_pipeline.sr.models.checkpoints import load_sr_model
    from sr_pipeline.sr.serve.upscaler import TileSettings, Upscaler

    model = load_sr_model(student_dir, "cpu")
    for budget in (256 * 2**20, 2**30):
        up = Upscaler(model, tiles=TileSettings(tile=64, overlap=8, batch=10**20), memory_budget=budget)
        t0 = time.perf_counter()
        plan = up.plan(2000, 2000)
        assert time.perf_counter() - t0 < 1 and 1 <= plan.batch < 10**20 and plan.total <= budget
        bigger = Upscaler(model, tiles=TileSettings(tile=64, overlap=8, batch=plan.batch + 1), memory_budget=budget)
        assert bigger.plan(2000, 2000).batch == plan.batch  # the largest batch that fits, as one step at a time found


def test_stable_seconds_refuses_nan_and_infinity(monkeypatch):
    from sr_pipeline.intake.uploads import stable_seconds_from_env

    for value in ("nan", "inf", "-inf", "", "1e26"):
        monkeypatch.setenv("SR_PIPELINE_STABLE_SECONDS", value)
        with pytest.raises(ValueError, match="SR_PIPELINE_STABLE_SECONDS"):
            stable_seconds_from_env()


# ---------------------------------------------------------------- bytes: degenerate and damaged outputs


def test_a_non_finite_output_is_never_published(tmp_path, capsys):
    model = tiny_sr_model(tmp_path / "m" / "bad", {"kind": "student", "version": "bad"},
                          perturb=lambda net: [p.data.fill_(float("nan")) for p in net.parameters()])
    img = _image(tmp_path / "a.png")
    code, report, _ = _upscale(capsys, img, "--out", tmp_path / "o", "--model", model, "--no-consistency")
    [row] = report["files"]
    assert code == 1 and row["status"] == "failed" and "NaN" in row["reason"] and str(model) in row["reason"], row
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_a_flat_output_of_a_textured_input_is_never_published(tmp_path, capsys, student_dir, monkeypatch):
    import torch

    from sr_pipeline.sr.serve.upscaler import Upscaler

    monkeypatch.setattr(Upscaler, "run_tiles", lambda self, lr, noise=None: torch.zeros(
        lr.shape[0], 3, lr.shape[2] * self.scale, lr.shape[3] * self.scale))
    img = _image(tmp_path / "a.png")
    code, report, _ = _upscale(capsys, img, "--out", tmp_path / "o", "--model", student_dir, "--no-consistency",
                               "--noise-scale", "3")
    [row] = report["files"]
    assert code == 1 and row["status"] == "failed" and "flat" in row["reason"], row
    assert "--noise-scale 3" in row["reason"]  # the setting to change is named
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_a_damaged_kept_output_is_made_again(tmp_path, capsys, student_dir):
    img = _image(tmp_path / "a.png", size=(40, 32))
    out = tmp_path / "o"
    assert _upscale(capsys, img, "--out", out, "--model", student_dir)[0] == 0
    target = out / "a_x4.png"
    good = target.read_bytes()
    data = bytearray(good)
    middle = data.index(b"IDAT") + 40
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])  # the end marker stays intact
    target.write_bytes(bytes(data))
    code, report, _ = _upscale(capsys, img, "--out", out, "--model", student_dir)
    [row] = report["files"]
    assert code == 0 and row["status"] == "upscaled" and "damaged" in row["note"], row
    with Image.open(target) as im:
        im.load()
    code, report, _ = _upscale(capsys, img, "--out", out, "--model", student_dir)
    assert report["files"][0]["status"] == "skipped"

    # Cut in half (a copy or a disk that stopped mid-file): still ours by its provenance, so made again.
    target.write_bytes(good[: len(good) // 2])
    code, report, _ = _upscale(capsys, img, "--out", out, "--model", student_dir)
    [row] = report["files"]
    assert code == 0 and row["status"] == "upscaled" and "damaged" in row["note"], row
    with Image.open(target) as im:
        im.load()


# ---------------------------------------------------------------- disk: folders, concurrency, names, links


def test_out_inside_the_input_folder_is_not_upscaled_again(tmp_path, capsys, student_dir):
    src = tmp_path / "in"
    src.mkdir()
    _image(src / "a.png", 1)
    _image(src / "b.png", 2)
    for expected in ((2, 0), (0, 2)):
        code, report, _ = _upscale(capsys, src, "--out", src / "out", "--model", student_dir,
                                   "--consistency-map", src / "maps")
        assert code == 0 and (report["upscaled"], report["skipped"]) == expected, report["files"]
    assert sorted(p.name for p in (src / "out").iterdir()) == ["a_x4.png", "b_x4.png"]


def test_an_output_finished_meanwhile_by_another_run_is_skipped(tmp_path, capsys, student_dir, monkeypatch):
    img = _image(tmp_path / "a.png")
    assert _upscale(capsys, img, "--out", tmp_path / "first", "--model", student_dir)[0] == 0
    real = upscale_mod.write_upscaled_png

    def racing(upscaler, src, target, *args, **kwargs):  # the other run publishes while this one computes
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "first" / "a_x4.png", target)
        return real(upscaler, src, target, *args, **kwargs)

    monkeypatch.setattr(upscale_mod, "write_upscaled_png", racing)
    code, report, _ = _upscale(capsys, img, "--out", tmp_path / "second", "--model", student_dir)
    [row] = report["files"]
    assert code == 0 and row["status"] == "skipped" and "another run" in row["reason"], row
    assert report["failed"] == 0 and report["succeeded"] == 1


def test_a_lost_heat_map_is_counted_apart_from_its_output(tmp_path, capsys, student_dir, monkeypatch):
    img = _image(tmp_path / "a.png")
    real = upscale_mod.write_map

    def unwritable(*args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "maps"))

    monkeypatch.setattr(upscale_mod, "write_map", unwritable)
    code, report, err = _upscale(capsys, img, "--out", tmp_path / "o", "--model", student_dir,
                                 "--consistency-map", tmp_path / "maps")
    [row] = report["files"]
    assert code == 1 and row["status"] == "upscaled" and (report["upscaled"], report["failed"]) == (1, 0)
    assert (report["maps_written"], report["maps_failed"]) == (0, 1) and "Permission denied" in row["consistency_map_failed"]
    monkeypatch.setattr(upscale_mod, "write_map", real)
    code, report, _ = _upscale(capsys, img, "--out", tmp_path / "o", "--model", student_dir,
                               "--consistency-map", tmp_path / "maps")
    assert code == 0 and report["skipped"] == 1 and report["maps_written"] == 1
    assert (tmp_path / "maps" / "a_x4_consistency.png").is_file()


def test_a_long_input_name_whose_output_fits_is_upscaled(tmp_path, capsys, student_dir):
    src = tmp_path / "in"
    src.mkdir()
    img = _image(src / ("n" * 246 + ".png"))  # 250 bytes; its output name, 253 bytes, fits in 255
    code, report, _ = _upscale(capsys, img, "--out", tmp_path / "o", "--model", student_dir, "--no-consistency")
    assert code == 0 and report["upscaled"] == 1, report["files"]
    assert not [p for p in (tmp_path / "o").iterdir() if p.name.startswith(".")]


def test_every_entry_not_taken_gets_a_line(tmp_path, capsys, student_dir):
    src = tmp_path / "in"
    src.mkdir()
    _image(src / "a.png")
    os.symlink("loop.png", src / "loop.png")  # a link to itself
    os.symlink(tmp_path / "nowhere.png", src / "dangling.png")
    code = main(["upscale", str(src), "--out", str(tmp_path / "o"), "--model", str(student_dir), *FAST])
    err = capsys.readouterr().err
    assert code == 0
    assert f"{src / 'loop.png'}: skipped (a link that loops" in err
    assert f"{src / 'dangling.png'}: skipped (a link to nothing" in err


# ---------------------------------------------------------------- corrupt model files


def test_a_corrupt_training_json_is_named_never_worked_around(tmp_path, capsys, student_dir):
    data = tmp_path / "data"
    shutil.copytree(student_dir, data / "models" / "student" / "s1")
    img = _image(tmp_path / "a.png")
    info = data / "models" / "student" / "s1" / "training.json"
    info.write_text('{"kind": "student", "vers')
    for argv in (["--data", data, "models"],
                 ["consistency", "--lr", img, "--sr", img, "--model", info.parent],
                 ["upscale", img, "--out", tmp_path / "o", "--model", info.parent]):
        assert str(info) in _one_line_error(capsys, argv)


def test_an_unknown_camera_with_a_model_is_refused(tmp_path, capsys, student_dir):
    img = _image(tmp_path / "a.png")
    for argv in (["upscale", img, "--out", tmp_path / "o", "--model", student_dir, "--camera", "bogus"],
                 ["consistency", "--lr", img, "--sr", img, "--model", student_dir, "--camera", "bogus"]):
        err = _one_line_error(capsys, argv)
        assert "'bogus'" in err and "field_cam" in err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- CLI habits


def test_data_after_the_command_and_version(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    assert main(["models", "--data", str(tmp_path / "d"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["models"] == []
    run = subprocess.run([sys.executable, "-m", "sr_pipeline.cli", "--version"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0 and run.stdout.startswith("sr-pipeline ") and run.stdout.split()[1][0].isdigit()


def test_json_counts_files_done_apart_from_verdicts(tmp_path, capsys, student_dir, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        _image(src / f"{i}.png", i)
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    code, report, err = _upscale(capsys, src, "--out", tmp_path / "o", "--model", student_dir)
    assert code == 0 and report["succeeded"] == 3 == report["upscaled"]
    verdicts = [f["consistency_verdict"] for f in report["files"]]
    assert (report["ok"], report["check"]) == (verdicts.count("ok"), verdicts.count("check"))
    assert f"loading the model in {student_dir}" in err  # a person at a terminal is told what the wait is


@pytest.mark.parametrize("profile", [[1], {"colearn": {"start_noise_scale": "big"}}, {"colearn": [2]},
                                     {"colearn": {"start_noise_scale": -1}}])
def test_a_damaged_profile_in_training_json_never_gives_a_traceback(tmp_path, capsys, profile):
    """A profile of the wrong shape records no start noise (served at 0, the fidelity-first default); a start
    noise that is not a number >= 0 is refused in one sentence naming the file."""
    import json

    from conftest import tiny_sr_model

    from sr_pipeline.cli import main

    model = tiny_sr_model(tmp_path / "models" / "student" / "s1", {"kind": "student", "profile": profile})
    assert json.loads((model / "training.json").read_text())["profile"] == profile
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "lr.png")
    code = main(["--data", str(tmp_path), "upscale", str(tmp_path / "lr.png"), "--out", str(tmp_path / "out"),
                 "--model", str(model)])
    err = capsys.readouterr().err
    bad_number = isinstance(profile, dict) and isinstance(profile["colearn"], dict)
    if bad_number:
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "training.json" in err, err
    else:
        assert code == 0 and "Traceback" not in err
