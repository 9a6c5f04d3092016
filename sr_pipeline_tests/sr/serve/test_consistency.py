"""Is a restored image consistent with what the camera recorded? The measure, its verdict and map,
``sr-pipeline upscale``'s judging of its outputs and the ``sr-pipeline consistency`` audit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_sr_model
from sr_pipeline.cli import main
from sr_pipeline.serving.audit import match_pairs
from sr_pipeline.serving.consistency import load_check
from sr_pipeline.serving.consistency import stored_consistency
from sr_pipeline.serving.upscale import EnforcedUpscaler
from sr_pipeline.sr.serve.consistency import (
    BicubicCamera, ConsistencyPass, LearnedCamera, Thresholds, enforce_consistency, load_thresholds, measure,
    summarise,
)
from sr_pipeline.sr.serve.consistency_map import LEGEND, LINE, panel_map_box
from sr_pipeline.sr.images.decode import read_image
from sr_pipeline.sr.models.downsampler import LearnedDownsampler
from sr_pipeline.sr.images.png_stream import TEXT_PREFIX, png_text
from sr_pipeline.sr.images.tensors import downsample, upsample
from sr_pipeline.sr.serve.upscaler import Upscaler
from sr_pipeline.sr.train.shared import save_model_dir

FAST = ["--tile", "16", "--overlap", "4"]


# ---------------------------------------------------------------- helpers


def _unit(img: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> (1, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None] / 127.5 - 1.0


def _uint8(x: torch.Tensor) -> np.ndarray:
    return ((x[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def _scene(h: int = 160, w: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth HR scene (what a camera could resolve): sines, no texture above the LR Nyquist band."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    phase = rng.uniform(0, 6, 3)
    img = np.stack([128 + 60 * np.sin(xx / 9 + phase[c]) + 40 * np.cos(yy / 11 + c) for c in range(3)], -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def _camera_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(LR = bicubic-down of a scene, output = bicubic-up of that LR)."""
    lr = _uint8(downsample(_unit(_scene(seed=seed)), 4))
    return lr, _uint8(upsample(_unit(lr), 4))


def _tiny_g(seed: int = 0) -> LearnedDownsampler:
    """A tiny G whose every weight is non-zero (so its residual is not bicubic-down's)."""
    torch.manual_seed(seed)
    g = LearnedDownsampler(scale=4, channels=8, num_blocks=1, norm_num_groups=4)
    for p in g.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return g.eval()


def _save_g(path, seed: int = 0):
    return save_model_dir(path, _tiny_g(seed).save_pretrained, {"kind": "downsampler", "version": path.name})


def _image(path, array: np.ndarray, mode: str | None = None):
    Image.fromarray(array, mode=mode).save(path)
    return path


def _rgb(seed: int, size=(20, 16)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


@pytest.fixture
def student_dir(tmp_path):
    return tiny_sr_model(tmp_path / "student" / "s1", {"kind": "student", "version": "s1"})


def _run(capsys, *argv) -> tuple[int, dict | None, str]:
    code = main([*map(str, argv), "--json"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out.strip() else None), captured.err


def _upscale(capsys, tmp_path, *argv):
    return _run(capsys, "--data", tmp_path / "data", "upscale", *argv, *FAST)


def _audit(capsys, tmp_path, *argv):
    return _run(capsys, "--data", tmp_path / "data", "consistency", *argv)


FIGURES = ("consistency_verdict", "consistency_psnr_y", "consistency_flagged_share", "consistency_peak",
           "consistency_colour_shift", "consistency_intensity_shift", "consistency_camera", "consistency_reasons")


def _figures(row: dict) -> dict:
    return {k: row[k] for k in FIGURES}


# ---------------------------------------------------------------- the measure


def test_bicubic_up_of_a_bicubic_down_image_is_ok():
    lr, out = _camera_pair()
    result = measure(BicubicCamera(4), out, lr, Thresholds())
    assert result.verdict == "ok" and not result.reasons
    assert result.psnr_y > 40 and result.flagged_share == 0 and result.peak < 5


def test_a_model_that_invents_a_colour_cast_is_checked():
    lr, out = _camera_pair()
    cast = np.clip(out.astype(int) + [0, 0, 12], 0, 255).astype(np.uint8)
    result = measure(BicubicCamera(4), cast, lr, Thresholds())
    assert result.verdict == "check" and any("colour" in r for r in result.reasons)
    assert result.colour_shift[2] == pytest.approx(12, abs=1) and abs(result.colour_shift[0]) < 1


def _paste(out: np.ndarray, kind: str) -> tuple[np.ndarray, tuple[slice, slice]]:
    """A defect the LR does not support, and its HR box."""
    out = out.copy()
    box = (slice(60, 62), slice(20, 100)) if kind == "dark line" else (slice(80, 84), slice(60, 64))
    out[box] = 0 if kind == "dark line" else 255
    return out, box


@pytest.mark.parametrize("kind", ["dark line", "bright spot"])
def test_a_pasted_defect_is_flagged_and_located_by_the_map(kind):
    lr, out = _camera_pair()
    clean = measure(BicubicCamera(4), out, lr, Thresholds(), keep_map=True)
    defect, box = _paste(out, kind)
    result = measure(BicubicCamera(4), defect, lr, Thresholds(), keep_map=True)
    assert clean.verdict == "ok" and result.verdict == "check"
    flagged = result.map > 1
    assert flagged.any() and not (clean.map > 1).any()
    pasted = np.zeros_like(flagged)
    pasted[box[0].start // 4:-(-box[0].stop // 4), box[1].start // 4:-(-box[1].stop // 4)] = True
    assert (flagged & pasted).any(), "the flagged region misses the pasted defect"
    grown = np.zeros_like(flagged)  # the defect's LR box, grown by the camera's and the map's reach
    grown[max(0, box[0].start // 4 - 3):box[0].stop // 4 + 4, max(0, box[1].start // 4 - 3):box[1].stop // 4 + 4] = True
    assert not (flagged & ~grown).any(), "pixels far from the defect are flagged"


@pytest.mark.parametrize("band", [1, 3, 4, 7, 16, 33, 1000])
def test_feeding_rows_in_any_bands_gives_the_whole_image_measure(band):
    lr, out = _camera_pair()
    out, _ = _paste(out, "bright spot")
    whole = measure(BicubicCamera(4), out, lr, Thresholds(), keep_map=True)
    cp = ConsistencyPass(BicubicCamera(4), lr, Thresholds(), keep_map=True)
    for r in range(0, out.shape[0], band):
        cp.feed(out[r:r + band])
    banded = cp.finish()
    assert banded.record() == whole.record()
    np.testing.assert_allclose(banded.map, whole.map, atol=1e-5)


@pytest.mark.parametrize("band", [1, 5, 64])
def test_streaming_with_a_learned_camera_equals_g_on_the_whole_image(band):
    lr, out = _camera_pair()
    camera = LearnedCamera(_tiny_g(), "G test")
    reference = summarise(camera(_unit(out))[0], _unit(lr)[0], camera.name, Thresholds(), keep_map=True)
    assert reference.record() != summarise(downsample(_unit(out), 4)[0], _unit(lr)[0], "x", Thresholds()).record()
    cp = ConsistencyPass(camera, lr, Thresholds(), keep_map=True)
    for r in range(0, out.shape[0], band):
        cp.feed(out[r:r + band])
    streamed = cp.finish()
    assert streamed.verdict == reference.verdict
    assert streamed.psnr_y == pytest.approx(reference.psnr_y, abs=1e-3)
    assert streamed.peak == pytest.approx(reference.peak, abs=1e-3)
    np.testing.assert_allclose(streamed.colour_shift, reference.colour_shift, atol=1e-3)
    np.testing.assert_allclose(streamed.map, reference.map, atol=1e-4)


def test_enforcing_consistency_raises_the_consistency_psnr():
    lr, out = _camera_pair()
    noisy = np.clip(out.astype(int) + np.random.default_rng(0).normal(0, 12, out.shape), 0, 255).astype(np.uint8)
    for camera in (BicubicCamera(4), LearnedCamera(_tiny_g(), "G test")):
        before = measure(camera, noisy, lr, Thresholds())
        after = measure(camera, _uint8(enforce_consistency(camera, _unit(noisy), _unit(lr), 3)), lr, Thresholds())
        assert after.psnr_y > before.psnr_y + 3, camera.name


@pytest.mark.parametrize("setting, says", [
    ({"pixel": -1}, "pixel"), ({"peak": float("nan")}, "peak"), ({"psnr": float("inf")}, "psnr"),
    ({"share": 1.0}, "share"), ({"share": -0.1}, "share"), ({"colour": 0}, "colour"),
    ({"pixels": 3}, "pixels"), ({"peak": "20"}, "peak"), ({"share": True}, "share"),
])
def test_a_bad_threshold_setting_is_a_clear_error(tmp_path, setting, says):
    with pytest.raises(ValueError, match=says):
        Thresholds.from_dict(setting)
    path = tmp_path / "consistency.json"
    path.write_text(json.dumps({"cameras": {"field_cam": setting}}))
    with pytest.raises(ValueError) as err:
        load_thresholds(path)
    assert str(path) in str(err.value) and says in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- sr-pipeline upscale


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "I;16"])
def test_every_input_mode_is_judged_end_to_end_and_the_audit_agrees(tmp_path, student_dir, capsys, mode):
    src = tmp_path / "in"
    src.mkdir()
    rgb = _rgb(1)
    if mode == "RGB":
        _image(src / "a.png", rgb)
    elif mode == "L":
        _image(src / "a.png", rgb[:, :, 0])
    elif mode == "RGBA":
        _image(src / "a.png", np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)]))
    else:
        Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257).save(src / "a.png")
    code, report, _ = _upscale(capsys, tmp_path, src, "--out", tmp_path / "out", "--model", student_dir)
    assert code == 0, report
    row = report["files"][0]
    assert row["consistency_verdict"] in ("ok", "check") and row["consistency_camera"] == "bicubic"
    assert math.isfinite(row["consistency_psnr_y"])
    assert len(row["consistency_colour_shift"]) == (1 if mode in ("L", "I;16") else 3)
    out = read_image(tmp_path / "out" / "a_x4.png")
    assert out.bit_depth == (16 if mode == "I;16" else 8) and (out.alpha is not None) == (mode == "RGBA")
    whole = measure(BicubicCamera(4), out.colour, read_image(src / "a.png").colour, Thresholds())
    assert whole.record() == _figures(row)
    code, audit, _ = _audit(capsys, tmp_path, "--lr", src, "--sr", tmp_path / "out")
    assert _figures(audit["pairs"][0]) == _figures(row)
    assert code == (0 if row["consistency_verdict"] == "ok" else 1)


@pytest.mark.parametrize("tile", ["16", "32"])
def test_the_tiled_upscaler_measures_what_a_whole_image_pass_measures(tmp_path, student_dir, capsys, tile):
    img = _image(tmp_path / "a.png", _rgb(2, size=(40, 36)))
    code = main(["--data", str(tmp_path / "data"), "upscale", str(img), "--out", str(tmp_path / "out"),
                 "--model", str(student_dir), "--tile", tile, "--overlap", "4", "--json"])
    row = json.loads(capsys.readouterr().out)["files"][0]
    assert code == 0
    whole = measure(BicubicCamera(4), read_image(tmp_path / "out" / "a_x4.png").colour, read_image(img).colour,
                    Thresholds())
    assert whole.record() == _figures(row)


def test_the_png_text_carries_the_verdict_and_a_resumed_run_reports_it(tmp_path, student_dir, capsys):
    img = _image(tmp_path / "a.png", _rgb(3))
    out = tmp_path / "out"
    code, first, _ = _upscale(capsys, tmp_path, img, "--out", out, "--model", student_dir)
    row = first["files"][0]
    text = png_text(out / "a_x4.png")
    assert code == 0 and text[f"{TEXT_PREFIX}consistency"] == row["consistency_verdict"]
    assert float(text[f"{TEXT_PREFIX}consistency_psnr_y"]) == pytest.approx(row["consistency_psnr_y"], abs=0.01)
    before = (out / "a_x4.png").read_bytes()
    code, again, _ = _upscale(capsys, tmp_path, img, "--out", out, "--model", student_dir)
    kept = again["files"][0]
    assert code == 0 and kept["status"] == "skipped" and (out / "a_x4.png").read_bytes() == before
    assert kept["consistency_verdict"] == row["consistency_verdict"] and again["check"] == first["check"]
    for key in ("consistency_psnr_y", "consistency_peak", "consistency_flagged_share", "consistency_intensity_shift"):
        assert kept[key] == pytest.approx(row[key], abs=0.06), key
    assert stored_consistency({}) is None


def test_a_check_output_is_counted_and_printed_but_not_a_failure(tmp_path, student_dir, capsys):
    img = _image(tmp_path / "a.png", _rgb(4))
    strict = tmp_path / "strict.json"
    strict.write_text(json.dumps({"cameras": {"all": {"psnr": 90.0}}}))
    code, report, _ = _upscale(capsys, tmp_path, img, "--out", tmp_path / "out", "--model", student_dir,
                               "--consistency-thresholds", strict)
    assert code == 0 and report["check"] == 1 and report["files"][0]["consistency_verdict"] == "check"
    assert "below 90.0 dB" in report["files"][0]["consistency_reasons"]
    assert report["consistency"]["thresholds"]["psnr"] == 90.0
    code = main(["--data", str(tmp_path / "data"), "upscale", str(img), "--out", str(tmp_path / "out2"),
                 "--model", str(student_dir), *FAST, "--consistency-thresholds", str(strict)])
    err = capsys.readouterr().err
    assert code == 0 and "consistency check: consistency PSNR-Y" in err and "1 of 1 output needs a person's look" in err


def test_no_consistency_skips_the_measure(tmp_path, student_dir, capsys):
    img = _image(tmp_path / "a.png", _rgb(5))
    code, report, _ = _upscale(capsys, tmp_path, img, "--out", tmp_path / "out", "--model", student_dir,
                               "--no-consistency")
    assert code == 0 and report["consistency"] is None and "consistency_verdict" not in report["files"][0]
    assert f"{TEXT_PREFIX}consistency" not in png_text(tmp_path / "out" / "a_x4.png")


def test_the_map_is_written_per_output_and_locates_a_pasted_defect(tmp_path, student_dir, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    _image(src / "sub" / "a.png", _rgb(6))
    code, report, _ = _upscale(capsys, tmp_path, src, "--out", tmp_path / "out", "--model", student_dir,
                               "--consistency-map", tmp_path / "maps")
    heat = tmp_path / "maps" / "sub" / "a_x4_consistency.png"
    assert code == 0 and report["files"][0]["consistency_map"] == str(heat)
    with Image.open(heat) as im:  # the map (a panel LR | output | map when flagged), with its legend
        assert im.mode == "RGB" and max(im.size) >= 256 and im.height >= len(LEGEND) * LINE + 20
    # The audit's map finds a spot pasted into the output.
    lr, out = _camera_pair()
    pairs = tmp_path / "pairs"
    (pairs / "lr").mkdir(parents=True)
    (pairs / "sr").mkdir()
    _image(pairs / "lr" / "p.png", lr)
    defect, box = _paste(out, "bright spot")
    _image(pairs / "sr" / "p_x4.png", defect)
    code, audit, _ = _audit(capsys, tmp_path, "--lr", pairs / "lr", "--sr", pairs / "sr", "--map", tmp_path / "amaps")
    assert code == 1 and audit["check"] == 1 and audit["pairs"][0]["consistency_verdict"] == "check"
    panel = np.asarray(Image.open(tmp_path / "amaps" / "p_x4_consistency.png"))  # LR | output | map
    top, left, h, w = panel_map_box(lr.shape[:2])
    k = h // lr.shape[0]
    picture = panel[top:top + h, left:left + w]
    red = (picture[..., 0] > 200) & (picture[..., 1] < 100)
    ys, xs = np.nonzero(red)
    assert len(ys), "the map shows no flagged region"
    assert box[0].start // 4 - 2 <= ys.min() // k and ys.max() // k <= box[0].stop // 4 + 2
    assert box[1].start // 4 - 2 <= xs.min() // k and xs.max() // k <= box[1].stop // 4 + 2


@pytest.mark.parametrize("grey16", [False, True])
def test_enforced_outputs_are_more_consistent_and_marked(tmp_path, student_dir, capsys, grey16):
    rgb = _rgb(7)
    img = _image(tmp_path / "a.png", rgb[:, :, 0].astype(np.uint16) * 257 if grey16 else rgb)
    _, plain, _ = _upscale(capsys, tmp_path, img, "--out", tmp_path / "plain", "--model", student_dir)
    code, enforced, _ = _upscale(capsys, tmp_path, img, "--out", tmp_path / "enf", "--model", student_dir,
                                 "--enforce-consistency", "--enforce-iterations", "4")
    assert code == 0
    assert enforced["files"][0]["consistency_psnr_y"] > plain["files"][0]["consistency_psnr_y"] + 3
    assert png_text(tmp_path / "enf" / "a_x4.png")[f"{TEXT_PREFIX}consistency_enforced"] == "bicubic, 4 iterations"
    assert f"{TEXT_PREFIX}consistency_enforced" not in png_text(tmp_path / "plain" / "a_x4.png")


def test_enforcing_refuses_an_image_whose_whole_output_does_not_fit_the_budget(tmp_path, student_dir):
    upscaler = Upscaler.from_dir(student_dir, memory_budget=200 * 2**20)
    enforced = EnforcedUpscaler(upscaler, BicubicCamera(4), 3)
    lr = np.zeros((512, 512, 3), np.uint8)
    upscaler.plan(512, 512)  # the plain upscaler fits
    with pytest.raises(MemoryError, match="--enforce-consistency holds the whole 2048x2048 output"):
        next(enforced.iter_rows(lr))


def test_the_co_trained_g_and_the_model_thresholds_judge_by_default(tmp_path, student_dir, capsys):
    _save_g(tmp_path / "downsampler" / "s1")
    (student_dir / "consistency.json").write_text(json.dumps(
        {"cameras": {"field_cam": {"psnr": 5.0, "colour": 50.0, "peak": 200.0}, "all": {"psnr": 80.0}}}))
    img = _image(tmp_path / "a.png", _rgb(8))
    code, report, _ = _upscale(capsys, tmp_path, img, "--out", tmp_path / "o1", "--model", student_dir)
    row = report["files"][0]
    assert code == 0 and row["consistency_camera"] == "G s1" and row["consistency_verdict"] == "check"
    assert report["consistency"]["thresholds_file"] == str(student_dir / "consistency.json")
    code, report, _ = _upscale(capsys, tmp_path, img, "--out", tmp_path / "o2", "--model", student_dir,
                               "--camera", "field_cam")
    field_row = report["files"][0]
    assert field_row["consistency_verdict"] == "ok" and report["consistency"]["thresholds"]["psnr"] == 5.0
    code, report, _ = _upscale(capsys, tmp_path, img, "--out", tmp_path / "o3", "--model", student_dir,
                               "--camera-model", "bicubic")
    assert report["files"][0]["consistency_camera"] == "bicubic"
    # The audit with the same model finds the same figures as the upscaler.
    code, audit, _ = _audit(capsys, tmp_path, "--lr", img, "--sr", tmp_path / "o2" / "a_x4.png",
                            "--model", student_dir, "--camera", "field_cam")
    assert code == 0 and audit["pairs"][0]["consistency_camera"] == "G s1"
    assert _figures(audit["pairs"][0]) == _figures(field_row)


def test_a_resumed_output_without_its_map_is_measured_again(tmp_path, student_dir, capsys):
    img = _image(tmp_path / "a.png", _rgb(9))
    _, first, _ = _upscale(capsys, tmp_path, img, "--out", tmp_path / "out", "--model", student_dir)
    code, again, _ = _upscale(capsys, tmp_path, img, "--out", tmp_path / "out", "--model", student_dir,
                              "--consistency-map", tmp_path / "maps")
    kept = again["files"][0]
    assert code == 0 and kept["status"] == "skipped" and (tmp_path / "maps" / "a_x4_consistency.png").is_file()
    assert _figures(kept) == _figures(first["files"][0])


def test_the_camera_model_must_match_the_model_scale(tmp_path, student_dir, capsys):
    g = LearnedDownsampler(scale=2, channels=8, num_blocks=1, norm_num_groups=4)
    g2 = save_model_dir(tmp_path / "g2", g.save_pretrained, {"kind": "downsampler"})
    with pytest.raises(ValueError, match="x2"):
        load_check(student_dir, 4, camera_model=str(g2))
    code = main(["--data", str(tmp_path / "data"), "upscale", str(_image(tmp_path / "a.png", _rgb(1))),
                 "--out", str(tmp_path / "out"), "--model", str(student_dir), "--camera-model", str(g2)])
    err = capsys.readouterr().err
    assert code == 2 and "x2" in err and err.count("\n") == 1 and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- sr-pipeline consistency


def test_pairs_are_matched_by_name(tmp_path):
    lr, sr = tmp_path / "lr", tmp_path / "sr"
    for d in (lr / "cam", sr / "cam"):
        d.mkdir(parents=True)
    for name in ("a.png", "b.jpg", "cam/c.png", "d.png", "d.tif"):
        (lr / name).write_bytes(b"x")
    for name in ("a_x4.png", "b.png", "cam/c_x2.png", "c.png", "d_x4.png", "e_x4.png", "a_x4_consistency.png"):
        (sr / name).write_bytes(b"x")
    found = {s.name: (l.name if l else problem) for l, s, problem in match_pairs(lr, sr)}
    assert found["a_x4.png"] == "a.png" and found["b.png"] == "b.jpg" and found["c_x2.png"] == "c.png"
    assert "no LR image named c.*" in found["c.png"]  # c.png is in lr/cam, not lr/
    assert "2 LR images match" in found["d_x4.png"] and "no LR image named e.* or e_x4.*" in found["e_x4.png"]
    assert "a_x4_consistency.png" not in found
    assert [(l, s) for l, s, _ in match_pairs(lr / "a.png", sr / "b.png")] == [(lr / "a.png", sr / "b.png")]
    assert [(l, s) for l, s, _ in match_pairs(lr / "a.png", sr)] == [(lr / "a.png", sr / "a_x4.png")]
    assert [(l, s) for l, s, _ in match_pairs(lr, sr / "b.png")] == [(lr / "b.jpg", sr / "b.png")]
    (none,) = match_pairs(lr / "a.png", sr / "cam")
    assert none[0] is None and "no image in" in none[2] and "a_x<scale>.png or a.*" in none[2]


def test_the_audit_says_which_pairs_it_could_not_score(tmp_path, capsys):
    lr_img, out = _camera_pair()
    lr, sr = tmp_path / "lr", tmp_path / "sr"
    lr.mkdir()
    sr.mkdir()
    _image(lr / "good.png", lr_img)
    _image(sr / "good_x4.png", out)
    _image(lr / "odd.png", lr_img)
    _image(sr / "odd.png", out[:-1])  # 159 rows over 40: not a whole-number scale
    _image(lr / "wide.png", lr_img)
    _image(sr / "wide.png", np.ascontiguousarray(out[::2]))  # 2x tall, 4x wide
    _image(lr / "named.png", lr_img)
    _image(sr / "named_x2.png", out)
    _image(sr / "orphan_x4.png", out)
    (sr / "broken.png").write_bytes(b"not a png")
    _image(lr / "broken.png", lr_img)
    code, audit, _ = _audit(capsys, tmp_path, "--lr", lr, "--sr", sr)
    rows = {p["sr"].rsplit("/", 1)[1]: p for p in audit["pairs"]}
    assert code == 1 and (audit["ok"], audit["check"], audit["failed"]) == (1, 0, 5)
    assert rows["good_x4.png"]["consistency_verdict"] == "ok" and rows["good_x4.png"]["scale"] == 4
    assert "not a whole-number scale" in rows["odd.png"]["reason"]
    assert "4x wide but 2x tall" in rows["wide.png"]["reason"]
    assert "named x2 but is 4x" in rows["named_x2.png"]["reason"]
    assert "no LR image named orphan.*" in rows["orphan_x4.png"]["reason"]
    assert rows["broken.png"]["status"] == "failed"
    code, audit, _ = _audit(capsys, tmp_path, "--lr", lr / "good.png", "--sr", sr / "good_x4.png")
    assert code == 0 and audit["ok"] == 1
    code = main(["--data", str(tmp_path / "data"), "consistency", "--lr", str(lr / "good.png"),
                 "--sr", str(sr / "good_x4.png")])
    said = capsys.readouterr().out
    assert code == 0 and "good_x4.png: ok" in said and "1 pair: 1 ok" in said


def test_another_tools_output_at_another_scale_is_judged_with_bicubic(tmp_path, capsys):
    lr = _uint8(downsample(_unit(_scene()), 2))
    _image(tmp_path / "x.png", lr)
    _image(tmp_path / "x_sr.png", _uint8(upsample(_unit(lr), 2)))
    code, audit, _ = _audit(capsys, tmp_path, "--lr", tmp_path / "x.png", "--sr", tmp_path / "x_sr.png")
    assert code == 0 and audit["pairs"][0]["scale"] == 2 and audit["pairs"][0]["consistency_camera"] == "bicubic"
    g = _save_g(tmp_path / "g")
    code, audit, _ = _audit(capsys, tmp_path, "--lr", tmp_path / "x.png", "--sr", tmp_path / "x_sr.png",
                            "--camera-model", g)
    assert code == 1 and "x4 and this pair is x2" in audit["pairs"][0]["reason"]


@pytest.mark.parametrize("body, says", [
    ("{not json", "JSONDecodeError"), ('{"cameras": {"all": {"share": 1.5}}}', "share"),
    ('{"cameras": {"all": {"pixel": -2}}}', "pixel"), ('{"cameras": {"all": {"peak": NaN}}}', "peak"),
    ('{"cameras": {"all": {"sharre": 0.1}}}', "sharre"), ('{"thresholds": {}}', "cameras"),
])
def test_a_bad_thresholds_file_is_one_sentence_and_exit_2_for_both_commands(tmp_path, student_dir, capsys, body, says):
    bad = tmp_path / "t.json"
    bad.write_text(body)
    img = _image(tmp_path / "a.png", _rgb(1))
    for argv in (["upscale", img, "--out", tmp_path / "out", "--model", student_dir],
                 ["consistency", "--lr", img, "--sr", img]):
        code = main(["--data", str(tmp_path / "data"), *map(str, argv), "--consistency-thresholds", str(bad)])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert str(bad) in err and says in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    # The model folder's own consistency.json is read the same way.
    (student_dir / "consistency.json").write_text(body)
    code = main(["--data", str(tmp_path / "data"), "upscale", str(img), "--out", str(tmp_path / "out"),
                 "--model", str(student_dir)])
    err = capsys.readouterr().err
    assert code == 2 and "consistency.json" in err and err.count("\n") == 1
